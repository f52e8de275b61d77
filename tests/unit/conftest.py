"""tests/unit: the tests that start no process (no nginx, Envoy, Docker, namespace or subprocess of any kind), so
`pytest tests/unit` runs in seconds on any laptop. The guard below keeps it so: a unit test that starts a process
fails and says where such a test belongs (tests/integration)."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import pytest


class ProcessStarted(AssertionError):
    pass


# the Azure SDK's user agent asks platform.processor(), which runs `uname -p` once per process and caches it: ask it
# here, before the guard, so that library detail is not mistaken for a test starting a process
platform.processor()


@pytest.fixture(autouse=True)
def _no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ProcessStarted(f"a unit test started a process ({args[0] if args else kwargs.get('args')!r}): "
                             "move the test to tests/integration")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "fork", refuse)
