"""A probe runner (``python -m harness.isolation.runner --serve``) in another place — a network namespace
(``ip netns exec``), a container (``docker exec -i``) — driven over its stdin/stdout: one JSON request, one JSON
answer per line. The child runs in its own process group and gets SIGTERM if the harness dies; :meth:`ProbeRunner.stop`
ends it by its PID and process group only."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError, StartError, UsageError

if TYPE_CHECKING:
    from harness.probe.result import ProbeResult

__all__ = ["ProbeRunner"]


def _child_setup() -> None:  # between fork and exec: own process group, SIGTERM if the harness dies
    os.setpgid(0, 0)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ProbeRunner:
    """The probe runner at ``where`` (for messages: "namespace mtls-gw-1a2b", "container …"), started by ``argv``;
    one JSON request/answer per line."""

    def __init__(self, where: str, argv: Sequence[str], log_path: Path) -> None:
        self.where = where
        self.argv = list(argv)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._seq = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                             preexec_fn=_child_setup, close_fds=True)  # noqa: PLW1509
            except OSError as exc:
                raise StartError(f"probe runner in {self.where}: could not run {self.argv[0]}: {exc}") from exc

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _dead(self, why: str) -> HarnessError:
        tail = ""
        with contextlib.suppress(OSError):
            tail = self.log_path.read_text(errors="replace").strip()[-1500:]
        return HarnessError(f"the probe runner in {self.where} {why}" + (f"; its log: {tail}" if tail
                                                                                       else ""))

    def call(self, request: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request, return its answer; HarnessError if the runner is gone or silent past ``timeout``."""
        with self._lock:
            proc = self.proc
            if proc is None or proc.stdin is None or proc.stdout is None:
                raise self._dead("was never started")
            if proc.poll() is not None:
                raise self._dead(f"exited with code {proc.returncode}")
            self._seq += 1
            line = json.dumps({**request, "id": self._seq}).encode() + b"\n"
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except OSError as exc:
                raise self._dead(f"does not take requests ({exc})") from None
            deadline = time.monotonic() + timeout
            fd = proc.stdout.fileno()
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._dead(f"did not answer within {timeout:g}s")
                ready, _, _ = select.select([fd], [], [], left)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        proc.wait(timeout=5)
                        raise self._dead(f"exited with code {proc.returncode}")
                    self._buf += chunk
            raw, _, self._buf = self._buf.partition(b"\n")
            answer: dict[str, Any] = json.loads(raw)
            if answer.get("id") != self._seq:
                raise self._dead(f"answered request {answer.get('id')} to request {self._seq}")
            return answer

    def probe(self, host: str, port: int, kwargs: Mapping[str, Any], grace: float) -> ProbeResult:
        """One probe of ``host:port`` by the runner (``kwargs``: :func:`harness.probe.handshake.probe`'s), waiting
        its own timeout plus ``grace``; the probe's own input errors come back as UsageError."""
        from harness.isolation.runner import kwargs_to_wire, result_from_wire

        timeout = float(kwargs.get("timeout", 5.0)) + grace
        answer = self.call({"op": "probe", "host": host, "port": port, "kwargs": kwargs_to_wire(kwargs)}, timeout)
        if "error" in answer:
            err = answer["error"]
            cls = UsageError if err.get("type") in ("UsageError", "InputError") else HarnessError
            raise cls(str(err.get("message")))
        return result_from_wire(answer["result"])  # type: ignore[no-any-return]

    def stop(self) -> None:
        """End of input first (the runner exits), then SIGTERM, then SIGKILL: by PID and process group only."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()
