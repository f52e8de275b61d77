"""Targets: where the chain runs. ``open_target(name)`` returns a context manager yielding a RunningChain."""

from __future__ import annotations

from typing import Any

from harness.errors import UsageError, need_extra
from harness.model.topology import KeyType, Topology, default_topology
from harness.targets.base import TARGET_NAMES, HopEndpoint, RunningChain, Target

__all__ = ["TARGET_NAMES", "HopEndpoint", "RunningChain", "Target", "open_target"]


def open_target(name: str, *, topology: Topology | None = None, key_type: KeyType = "ecdsa",
                **options: Any) -> Target:
    """The target called ``name``, ready to be entered with ``with``."""
    topology = topology or default_topology(key_type)
    if name in ("containers", "kind", "azure"):  # heavy SDKs come as extras: one line with the pip command
        need_extra(name, f"the {name} target")
    if name == "local":
        from harness.targets.local import LocalTarget

        return LocalTarget(topology, **options)
    if name == "containers":  # options: envoy_image=, nginx_image=, pod_image= (default: $MTLS_HARNESS_*_IMAGE)
        from harness.targets.containers import ContainersTarget

        return ContainersTarget(topology, **options)
    if name == "kind":  # options: cluster_name=, keep_cluster= (default: $MTLS_HARNESS_KIND_KEEP_CLUSTER), …
        from harness.targets.kind import KindTarget

        return KindTarget(topology, **options)
    if name == "attach":  # options: config=<path or AttachConfig> (default: $MTLS_HARNESS_ATTACH_CONFIG)
        from harness.targets.attach import AttachTarget

        return AttachTarget(options.pop("config", None), topology, **options)
    if name == "azure":  # options: config=<path or AzureConfig> (default: $MTLS_HARNESS_AZURE_CONFIG), credential=
        from harness.targets.azure import AzureTarget

        return AzureTarget(options.pop("config", None), topology, **options)
    if name in TARGET_NAMES:
        raise UsageError(f"target {name!r} is not available in this version yet — use --target local")
    raise UsageError(f"unknown target {name!r} — choose one of: {', '.join(TARGET_NAMES)}")
