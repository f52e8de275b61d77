"""Child processes the harness owns: started, watched, and always stopped.

Each :class:`ManagedProcess` is a context manager. The child runs in its own process group (so a terminal's Ctrl-C
reaches only the harness, which then stops its children in order) and, on Linux, with a parent-death signal, so
that even if the harness itself is killed with SIGKILL the child gets SIGTERM. Only the PIDs the harness started
are ever signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from harness.errors import StartError

__all__ = ["ManagedProcess", "process_mark", "running_processes", "stop_all"]

_PR_SET_PDEATHSIG = 1
_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_SERIALS = itertools.count(1)  # start order within this interpreter; marks take a number too


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A child process with a log file; ``with ManagedProcess(...) as p:`` starts it and stops it on exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        #: start order within this interpreter (see :func:`process_mark`)
        self.serial = 0
        #: the stop signal was sent (:meth:`begin_stop`): :meth:`stop` only waits
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> ManagedProcess:
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    preexec_fn=_child_setup,  # noqa: PLW1509 - only async-signal-safe calls
                    close_fds=True,
                )
            except OSError as exc:
                raise StartError(f"{self.name}: could not run {self.argv[0]}: {exc}") from exc
        with _LIVE_LOCK:
            self.serial = next(_SERIALS)
            _LIVE.add(self)
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} not started")
        return self.proc.pid

    def exit_reason(self) -> str | None:
        """None while running; otherwise a sentence such as ``exited with code 1``."""
        if self.proc is None:
            return "never started"
        code = self.proc.poll()
        if code is None:
            return None
        if code < 0:
            return f"{self.name} was killed by signal {signal.Signals(-code).name}"
        return f"{self.name} exited with code {code}"

    def send_signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def begin_stop(self) -> None:
        """Send the stop signal and return: several processes then stop at once (:meth:`stop` waits for each)."""
        proc = self.proc
        if proc is not None and proc.poll() is None and not self._stopping:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, self.stop_signal)
            self._stopping = True

    def stop(self) -> None:
        """Stop the child (and its process group: nginx's workers), waiting at most ``stop_timeout`` seconds."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self.begin_stop()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout)
        # the group leader is gone; make sure no worker of its group outlives it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    #: log lines that say why a process died, shown even when a backtrace pushes them out of the tail
    _CAUSE_MARKERS = ("[critical]", "[emerg]", "assert failure", "error:", "Error:")

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the log, preceded by any earlier line that names the cause of a crash."""
        try:
            data = self.log_path.read_bytes()[-65536:]
        except OSError:
            return ""
        all_lines = data.decode(errors="replace").splitlines()
        tail = all_lines[-lines:]
        causes = [ln for ln in all_lines[:-lines] if any(m in ln for m in self._CAUSE_MARKERS)][-3:]
        return "\n".join([*causes, "…", *tail] if causes else tail)

    # -- context manager -----------------------------------------------------------------------------------------
    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self.proc is None else (self.exit_reason() or f"running pid {self.proc.pid}")
        return f"<ManagedProcess {self.name} {state}>"


def running_processes() -> list[ManagedProcess]:
    """Every process the harness started in this interpreter and has not stopped yet."""
    with _LIVE_LOCK:
        return [p for p in _LIVE if p.proc is not None and p.proc.poll() is None]


def process_mark() -> int:
    """A mark to pass to :func:`stop_all` later, so it stops only the processes started after this call."""
    with _LIVE_LOCK:
        return next(_SERIALS)


def stop_all(since: int = 0) -> int:
    """Safety net (pytest_sessionfinish, atexit): stop every process still running that was started after the mark
    ``since`` (all of them by default) — a nested pytest session stops only its own. Returns how many."""
    procs = [p for p in running_processes() if p.serial > since]
    for p in procs:
        p.stop()
    return len(procs)
