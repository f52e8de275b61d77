"""The echo pod stops on SIGTERM even when the signal lands while it starts a connection's thread.

socketserver's ``_handle_request_noblock`` (CPython Lib/socketserver.py) catches every ``Exception`` raised by
``process_request`` and serves on; the pod's stop signal must not be one (found: CI saw the pod alive 5 s after
SIGTERM in tests/integration/test_causes.py under load, where starting a thread waits longer)."""

from __future__ import annotations

import socket

import pytest

from harness.model.topology import default_pki_plan
from harness.pki.certset import cert_set_for
from harness.pod import echo


def test_a_stop_raised_while_a_connection_starts_leaves_the_serve_loop() -> None:
    leaf = cert_set_for(default_pki_plan()).leaf("pod-server")
    server = echo.EchoServer(("127.0.0.1", 0), echo.make_context(cert=leaf.chain, key=leaf.key, client_ca=None,
                                                                 client_auth="none"))

    def signal_lands_here(_request: object, _address: object) -> None:
        raise echo._Stop("SIGTERM")  # what the pod's SIGTERM handler raises, wherever the main thread is

    try:
        server.process_request = signal_lands_here  # type: ignore[method-assign]
        with socket.create_connection(server.server_address[:2], timeout=5), pytest.raises(echo._Stop):
            server._handle_request_noblock()  # the serve loop's per-connection step
    finally:
        server.server_close()
