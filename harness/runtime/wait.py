"""One readiness helper for everything the harness starts."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import TypeVar

from harness.errors import WaitTimeout

__all__ = ["TRANSIENT_ERRORS", "wait_until"]

T = TypeVar("T")

#: errors that mean "not ready yet"; anything else fails at once
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, ssl.SSLError, TimeoutError, OSError)


def wait_until(
    check: Callable[[], T],
    what: str,
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    max_interval: float = 0.2,
    retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
    log_tail: Callable[[], str] | None = None,
    alive: Callable[[], str | None] | None = None,
) -> T:
    """Call ``check`` until it returns a truthy value; return that value.

    Retries only the errors in ``retry_on`` (a falsy result counts as "not yet"); any other error propagates at once.
    ``alive`` returns None while the awaited thing can still become ready, or a sentence saying why it never will
    (e.g. "exited with code 1"), which ends the wait early. Bounded in time: on timeout raises
    :class:`WaitTimeout` naming ``what``, the last error and the log tail.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    delay = interval
    attempts = 0
    while True:
        attempts += 1
        try:
            result = check()
        except retry_on as exc:
            last = exc
        else:
            if result:
                return result
            last = None
        reason = alive() if alive is not None else None
        if reason is not None or time.monotonic() >= deadline:
            parts = [f"{what}: not ready after {attempts} attempts in {timeout:g}s" if reason is None
                     else f"{what}: {reason}"]
            if last is not None:
                parts.append(f"last error: {type(last).__name__}: {last}")
            if log_tail is not None:
                tail = log_tail().strip()
                if tail:
                    parts.append("log tail:\n" + tail)
            raise WaitTimeout("\n".join(parts))
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, max_interval)
