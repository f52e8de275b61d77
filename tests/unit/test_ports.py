"""Free loopback ports under the registry lock (harness.runtime.ports): when the kernel keeps offering ports the
registry holds for other chains (many chains with many lanes in the last HOLD_SECONDS), the range is walked instead."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from harness.runtime import ports


def test_when_the_kernel_offers_only_held_ports_the_range_is_walked(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    registry = tmp_path / "ports.json"
    monkeypatch.setattr(ports, "_REGISTRY", registry)
    held = ports.free_ports(1)[0]
    monkeypatch.setattr(ports, "_kernel_port", lambda host: held)  # always the same, held port
    got = ports.free_ports(3)
    assert held not in got
    assert len(set(got)) == 3
    for port in got:  # each really free: it binds
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    assert set(map(str, [held, *got])) <= set(json.loads(registry.read_text()))  # and now held too


def test_a_used_up_range_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_REGISTRY", tmp_path / "ports.json")
    held = ports.free_ports(1)[0]
    monkeypatch.setattr(ports, "_kernel_port", lambda host: held)
    monkeypatch.setattr(ports, "_ephemeral_range", lambda: (held, held))
    with pytest.raises(OSError, match=f"the ephemeral range {held}-{held} is used up"):
        ports.free_ports(1)
