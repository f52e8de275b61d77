"""mtls-harness: end-to-end mTLS tests for App Gateway → API Management → AKS ingress → pod chains.

The public API, importable from ``harness`` directly. Names are resolved lazily (PEP 562), so a process that needs
one small part — the echo pod, the probe runner inside a namespace — does not pay for importing the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys([
        "HarnessError", "InputError", "StartError", "ToolMissingError", "UsageError", "WaitTimeout",
    ], "harness.errors"),
    **dict.fromkeys(["Topology", "default_topology", "default_pki_plan", "OAuth"], "harness.model.topology"),
    **dict.fromkeys([
        "Outcome", "ok", "http_reject", "tls_alert", "server_untrusted", "upstream_failure", "unreachable",
        "protocol_error",
    ], "harness.probe.outcomes"),
    **dict.fromkeys([
        "CertSet", "LeafFiles", "cert_set_for", "generate_cert_set", "load_cert_set",
    ], "harness.pki.certset"),
    **dict.fromkeys(["check_cert_set"], "harness.pki.check"),
    **dict.fromkeys(["probe"], "harness.probe.handshake"),
    **dict.fromkeys(["ProbeResult"], "harness.probe.result"),
    **dict.fromkeys(["CATALOGUE"], "harness.cases.catalogue"),
    **dict.fromkeys(["Case", "run_case"], "harness.cases.model"),
    **dict.fromkeys(["open_target"], "harness.targets"),
    **dict.fromkeys(["RunningChain", "HopEndpoint"], "harness.targets.base"),
    **dict.fromkeys(["LocalTarget"], "harness.targets.local"),
    **dict.fromkeys(["rehearse"], "harness.rotation.rehearsal"),
    **dict.fromkeys(["LocalIssuer"], "harness.oauth.issuer"),
}

__all__ = [
    "CATALOGUE",
    "Case",
    "CertSet",
    "HarnessError",
    "HopEndpoint",
    "InputError",
    "LeafFiles",
    "LocalIssuer",
    "LocalTarget",
    "OAuth",
    "Outcome",
    "ProbeResult",
    "RunningChain",
    "StartError",
    "ToolMissingError",
    "Topology",
    "UsageError",
    "WaitTimeout",
    "cert_set_for",
    "check_cert_set",
    "default_pki_plan",
    "default_topology",
    "generate_cert_set",
    "http_reject",
    "load_cert_set",
    "ok",
    "open_target",
    "probe",
    "protocol_error",
    "rehearse",
    "run_case",
    "server_untrusted",
    "tls_alert",
    "unreachable",
    "upstream_failure",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from harness.cases.catalogue import CATALOGUE
    from harness.cases.model import Case, run_case
    from harness.errors import HarnessError, InputError, StartError, ToolMissingError, UsageError, WaitTimeout
    from harness.model.topology import OAuth, Topology, default_pki_plan, default_topology
    from harness.oauth.issuer import LocalIssuer
    from harness.pki.certset import CertSet, LeafFiles, cert_set_for, generate_cert_set, load_cert_set
    from harness.pki.check import check_cert_set
    from harness.probe.handshake import probe
    from harness.probe.outcomes import (
        Outcome,
        http_reject,
        ok,
        protocol_error,
        server_untrusted,
        tls_alert,
        unreachable,
        upstream_failure,
    )
    from harness.probe.result import ProbeResult
    from harness.rotation.rehearsal import rehearse
    from harness.targets import open_target
    from harness.targets.base import HopEndpoint, RunningChain
    from harness.targets.local import LocalTarget
