"""The azure target: discover the chain in Azure, turn it into an attach config, attach. Read-only.

    with AzureTarget(Path("azure.toml")) as chain:      # DefaultAzureCredential; a runner inside the VNet
        chain.probe("ingress")

What discovery can tell (each hop's address, port, the name its caller uses, App Gateway's trusted root for APIM)
fills the attach config; ``[runner.hops.<hop>]`` in the azure config adds or overrides the rest in the attach format
(client identities, CA bundles, an address the runner reaches a hop by). A hop with no address is left out, so its
cases skip. :attr:`AzureTarget.discovery` keeps what was found, for the posture checks.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from azure.core.credentials import TokenCredential

from harness.errors import UsageError
from harness.model.topology import HOPS, Topology
from harness.targets.attach import AttachTarget, parse_attach_config
from harness.targets.azure.chain import apim_host_sent
from harness.targets.azure.config import AzureConfig, load_azure_config
from harness.targets.azure.model import Discovery
from harness.targets.base import RunningChain, TargetBase, config_path_from_env

__all__ = ["AzureTarget", "attach_doc_from_discovery"]


def _gateway(disc: Discovery) -> dict[str, Any]:
    gw = disc.app_gateway
    if gw is None:
        return {}
    https = [lst for lst in gw.listeners if lst.protocol.lower() == "https"]
    if not https:
        return {}
    # prefer a private frontend: the runner sits inside the VNet
    lst = sorted(https, key=lambda x: x.frontend != "private")[0]
    out: dict[str, Any] = {"port": lst.port or 443}
    if lst.host_names:
        out["server_name"] = lst.host_names[0]
    if lst.frontend_address:
        out["host"] = lst.frontend_address
    return out


def _apim(disc: Discovery, workdir: Path) -> dict[str, Any]:
    apim = disc.apim
    if apim is None:
        return {}
    out: dict[str, Any] = {"port": 443}
    gw = disc.app_gateway
    chosen = apim_host_sent(disc)
    if chosen:
        out["server_name"] = chosen
    if apim.private_ip_addresses:
        out["host"] = apim.private_ip_addresses[0]
    if gw is not None:  # APIM's caller is App Gateway: trust what its https backend setting trusts
        for s in gw.backend_settings:
            pems = [gw.trusted_root_pems[n] for n in s.trusted_root_certificates if n in gw.trusted_root_pems]
            if s.protocol.lower() == "https" and pems:
                path = workdir / f"appgw-{s.name}-trusted-roots.pem"
                path.write_text("".join(pems))
                out["ca_bundle"] = str(path)
                break
    return out


def _ingress(disc: Discovery, config: AzureConfig) -> dict[str, Any]:
    for ing in disc.ingresses:
        if ing.hosts:
            out: dict[str, Any] = {"port": config.ingress_port, "server_name": ing.hosts[0]}
            address = config.ingress_address or (ing.addresses[0] if ing.addresses else None)
            if address:
                out["host"] = address
            return out
    return {}


def attach_doc_from_discovery(disc: Discovery, config: AzureConfig, workdir: Path) -> dict[str, Any]:
    """An attach config document (as :func:`~harness.targets.attach.parse_attach_config` reads it)."""
    found: dict[str, dict[str, Any]] = {"gateway": _gateway(disc), "apim": _apim(disc, workdir),
                                        "ingress": _ingress(disc, config), "pod": {}}
    hops: dict[str, dict[str, Any]] = {}
    for hop in HOPS:
        merged = found[hop] | dict(config.hops.get(hop, {}))
        if "host" in merged and "port" in merged:
            hops[hop] = merged
        elif merged:
            disc.notes.append(f"hop {hop}: no address the runner can reach — set host under [runner.hops.{hop}]")
    unknown = set(config.hops) - set(HOPS)
    if unknown:
        raise UsageError(f"{config.where}: runner.hops: unknown hop(s) {', '.join(sorted(unknown))} — use "
                         f"{', '.join(HOPS)}")
    return {"negatives": "generate", "hops": hops}


class AzureTarget(TargetBase):
    """``with AzureTarget(config) as chain:`` — discovery + attach; :attr:`discovery` holds what was found."""

    name = "azure"

    def __init__(self, config: AzureConfig | Path | str | None = None, topology: Topology | None = None, *,
                 credential: TokenCredential | None = None) -> None:
        if config is None:
            config = config_path_from_env("azure")
        self.config = config if isinstance(config, AzureConfig) else load_azure_config(Path(config))
        self.topology = topology
        self.credential = credential
        self.discovery: Discovery | None = None
        self._attach: AttachTarget | None = None
        self._workdir: Path | None = None


    def stop(self) -> None:
        if self._attach is not None:
            self._attach.stop()
            self._attach = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def reconfigure(self, topology: Topology) -> RunningChain:
        raise UsageError("the azure target is read-only: it never changes the Azure resources it reads")

    def _start(self) -> RunningChain:
        from harness.targets.azure.discovery import discover

        self.discovery = discover(self.config, self.credential)
        self._workdir = Path(tempfile.mkdtemp(prefix="mtls-harness-azure-"))
        doc = attach_doc_from_discovery(self.discovery, self.config, self._workdir)
        if not doc["hops"]:
            raise UsageError(f"{self.config.where}: discovery found no hop the runner can reach — add [runner.hops."
                             "gateway] host/port (see docs/azure.md)")
        attach_cfg = parse_attach_config(doc, self.config.base, self.config.source)
        self._attach = AttachTarget(attach_cfg, self.topology, target_name="azure")
        return self._attach.__enter__()
