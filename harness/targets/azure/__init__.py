"""The azure target: attach to a real App Gateway → APIM → AKS chain, read-only, and judge its posture.

- :func:`discover` reads the resources an :class:`AzureConfig` names into a :class:`Discovery` (no secrets);
- :func:`evaluate` turns a Discovery into posture :class:`Verdict` rows (:data:`CHECKS`);
- :class:`AzureTarget` is discovery + the attach target: ``open_target("azure", config=...)``.

Every Azure request passes :class:`ReadOnlyPolicy` (GET/HEAD, plus listed read-only POSTs; AKS run command only on
opt-in). docs/azure.md documents the config, the checks and what needs which role.
"""

from __future__ import annotations

from harness.targets.azure.clients import READ_ONLY_POSTS, AzureClients, ReadOnlyPolicy, ReadOnlyViolation
from harness.targets.azure.config import AzureConfig, load_azure_config, parse_azure_config
from harness.targets.azure.discovery import discover
from harness.targets.azure.model import CertFact, Discovery
from harness.targets.azure.posture import CHECKS, Check, Verdict, evaluate, expiry_table
from harness.targets.azure.target import AzureTarget, attach_doc_from_discovery

__all__ = [
    "CHECKS",
    "READ_ONLY_POSTS",
    "AzureClients",
    "AzureConfig",
    "AzureTarget",
    "CertFact",
    "Check",
    "Discovery",
    "ReadOnlyPolicy",
    "ReadOnlyViolation",
    "Verdict",
    "attach_doc_from_discovery",
    "discover",
    "evaluate",
    "expiry_table",
    "load_azure_config",
    "parse_azure_config",
]
