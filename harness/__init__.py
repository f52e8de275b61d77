"""mtls-harness: end-to-end mTLS tests for App Gateway → API Management → AKS ingress → pod chains."""

from __future__ import annotations

from harness.errors import HarnessError, InputError, StartError, ToolMissingError, UsageError, WaitTimeout
from harness.outcomes import (
    Outcome,
    http_reject,
    ok,
    protocol_error,
    server_untrusted,
    tls_alert,
    unreachable,
    upstream_failure,
)
from harness.topology import Topology, default_topology

__all__ = [
    "HarnessError",
    "InputError",
    "Outcome",
    "StartError",
    "ToolMissingError",
    "Topology",
    "UsageError",
    "WaitTimeout",
    "default_topology",
    "http_reject",
    "ok",
    "protocol_error",
    "server_untrusted",
    "tls_alert",
    "unreachable",
    "upstream_failure",
]

__version__ = "0.1.0"
