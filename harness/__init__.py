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
    # errors
    "HarnessError": "harness.errors", "InputError": "harness.errors", "StartError": "harness.errors",
    "ToolMissingError": "harness.errors", "UsageError": "harness.errors", "WaitTimeout": "harness.errors",
    # the model
    "Topology": "harness.topology", "default_topology": "harness.topology", "default_pki_plan": "harness.topology",
    "OAuth": "harness.topology",
    # outcomes
    "Outcome": "harness.outcomes", "ok": "harness.outcomes", "http_reject": "harness.outcomes",
    "tls_alert": "harness.outcomes", "server_untrusted": "harness.outcomes", "upstream_failure": "harness.outcomes",
    "unreachable": "harness.outcomes", "protocol_error": "harness.outcomes",
    # certificates
    "CertSet": "harness.pki", "LeafFiles": "harness.pki", "cert_set_for": "harness.pki",
    "generate_cert_set": "harness.pki", "load_cert_set": "harness.pki", "check_cert_set": "harness.certcheck",
    # probing and the suite
    "probe": "harness.probe", "ProbeResult": "harness.probe", "CATALOGUE": "harness.cases", "Case": "harness.cases",
    "run_case": "harness.cases",
    # targets
    "open_target": "harness.targets", "RunningChain": "harness.targets.base", "HopEndpoint": "harness.targets.base",
    "LocalTarget": "harness.targets.local",
    # rotation and OAuth
    "rehearse": "harness.rotation", "LocalIssuer": "harness.oauth",
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
    from harness.cases import CATALOGUE, Case, run_case
    from harness.certcheck import check_cert_set
    from harness.errors import HarnessError, InputError, StartError, ToolMissingError, UsageError, WaitTimeout
    from harness.oauth import LocalIssuer
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
    from harness.pki import CertSet, LeafFiles, cert_set_for, generate_cert_set, load_cert_set
    from harness.probe import ProbeResult, probe
    from harness.rotation import rehearse
    from harness.targets import open_target
    from harness.targets.base import HopEndpoint, RunningChain
    from harness.targets.local import LocalTarget
    from harness.topology import OAuth, Topology, default_pki_plan, default_topology
