"""What every benchmark shares: the result shape, statistics, progress lines, and bounded timing loops.

A benchmark returns a :class:`Bench`: a title, rows, and either no skip reason or one sentence saying why it did not
run. A :class:`Row` is one figure: its value, its spread over the runs, and — where one exists — the floor it is
measured against in the same run and the ratio. The ratio is always "cost relative to the floor": ``value / floor``
for a time, ``floor / value`` for a rate, so a ratio of 3.0 reads "three times the floor's cost" either way.

Nothing here asserts a speed: benchmarks print figures (STYLE.md); tests check only their shape.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

HOST = "127.0.0.1"

Unit = Literal["s", "ms", "/s", "count"]


# ---------------------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spread:
    """Order statistics of one figure's samples."""

    n: int
    median: float
    min: float
    max: float
    p90: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        # nearest-rank p90: the smallest sample with at least 90 % of the samples at or below it
        p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
        return cls(n=len(ordered), median=statistics.median(ordered), min=ordered[0], max=ordered[-1], p90=p90)


@dataclass
class Row:
    """One figure. ``lower_is_better``: True for times, False for rates (decides how the ratio is taken)."""

    measure: str
    value: float | None
    unit: Unit
    spread: Spread | None = None
    floor: float | None = None
    floor_name: str | None = None
    note: str = ""
    lower_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.floor is None or self.value <= 0 or self.floor <= 0:
            return None
        return self.value / self.floor if self.lower_is_better else self.floor / self.value

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        return out


@dataclass
class Bench:
    """One benchmark's result: rows, or the reason it was skipped; ``details`` keeps the raw samples."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # wall time the benchmark itself took

    def row(self, measure: str) -> Row | None:
        return next((r for r in self.rows if r.measure == measure), None)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "skipped": self.skipped, "seconds": round(self.seconds, 2),
                "rows": [r.as_dict() for r in self.rows], "details": self.details}


def time_row(measure: str, samples: Sequence[float], *, floor: Sequence[float] | float | None = None,
             floor_name: str | None = None, note: str = "", unit: Unit = "s") -> Row:
    """A time figure: the median of ``samples`` with their spread; the floor is the median of its own samples."""
    spread = Spread.of(samples)
    floor_value = floor if isinstance(floor, float | int) or floor is None else Spread.of(floor).median
    return Row(measure, spread.median, unit, spread, float(floor_value) if floor_value is not None else None,
               floor_name, note)


def rate_row(measure: str, rate: float | None, *, floor: float | None = None, floor_name: str | None = None,
             note: str = "", samples: Sequence[float] = ()) -> Row:
    """A rate figure (per second); higher is better, so the ratio is floor / value."""
    spread = Spread.of(samples) if len(samples) > 1 else None
    return Row(measure, rate, "/s", spread, floor, floor_name, note, lower_is_better=False)


# ---------------------------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------------------------
class Progress:
    """Progress lines on stderr, each stamped with the seconds since the run began."""

    def __init__(self, stream: Any = None, quiet: bool = False) -> None:
        self.t0 = time.perf_counter()
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet

    def __call__(self, line: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:6.1f}s] {line}", file=self.stream, flush=True)


def silent(_line: str) -> None:
    """A progress callback that prints nothing (tests)."""


# ---------------------------------------------------------------------------------------------------------------
# bounded loops and readiness
# ---------------------------------------------------------------------------------------------------------------
def tcp_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def poll_ready(check: Callable[[], bool], *, timeout: float, alive: Callable[[], str | None],
               interval: float = 0.005) -> float:
    """Seconds until ``check()`` is true, polling every ``interval`` (5 ms: a floor must not be inflated by its own
    poll). Bounded: raises TimeoutError after ``timeout`` seconds, RuntimeError as soon as ``alive()`` names why the
    process will never be ready."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        if check():
            return time.perf_counter() - t0
        reason = alive()
        if reason is not None:
            raise RuntimeError(reason)
        if time.perf_counter() >= deadline:
            raise TimeoutError(f"not ready after {timeout:g}s")
        time.sleep(interval)


@dataclass
class Loop:
    """What a bounded loop did: iterations, how many succeeded, and the wall time."""

    count: int
    ok: int
    seconds: float
    failures: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this process's CPU time (all threads) during the loop

    @property
    def cpu_ms_each(self) -> float:
        return 1000 * self.cpu_seconds / self.count if self.count else 0.0

    @property
    def wall_ms_each(self) -> float:
        return 1000 * self.seconds / self.count if self.count else 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def bounded_loop(step: Callable[[], bool | str], *, seconds: float, max_count: int) -> Loop:
    """Call ``step`` until ``seconds`` have passed or it ran ``max_count`` times, whichever comes first.
    ``step`` returns True (success) or a failure description; the first few failures are kept."""
    if seconds <= 0 or max_count <= 0:
        raise ValueError("a loop needs a positive time and count bound")
    count = ok = 0
    failures: list[str] = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    deadline = t0 + seconds
    while count < max_count and time.perf_counter() < deadline:
        result = step()
        count += 1
        if result is True:
            ok += 1
        elif len(failures) < 5:
            failures.append(str(result))
    return Loop(count, ok, time.perf_counter() - t0, failures, time.process_time() - c0)


@contextlib.contextmanager
def child_cpu() -> Iterator[dict[str, float]]:
    """CPU seconds (user + system) used by child processes that were waited for inside the block, grandchildren
    included (nginx's workers are reaped by their master). Filled in on exit: ``{"cpu_s": …}``."""
    import resource

    out: dict[str, float] = {}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        yield out
    finally:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a running process has used so far, from /proc (Linux); None when
    it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def load_average() -> list[float]:
    """The 1/5/15-minute load averages (how busy the shared machine was)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
