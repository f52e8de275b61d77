"""Processes, ports and readiness: the runtime every target shares."""

from __future__ import annotations

from harness.runtime.ports import free_port, free_ports, port_open
from harness.runtime.process import ManagedProcess, process_mark, running_processes, stop_all
from harness.runtime.wait import TRANSIENT_ERRORS, wait_until

__all__ = [
    "TRANSIENT_ERRORS",
    "ManagedProcess",
    "free_port",
    "free_ports",
    "port_open",
    "process_mark",
    "running_processes",
    "stop_all",
    "wait_until",
]
