"""``mtls-harness init [DIR]``: a topology and its cert set written as a chain file the user can edit.

    DIR/chain.yaml            the chain file (docs/chain-file.md)
    DIR/chain.schema.json     its JSON Schema (the YAML's first lines point editors at it)
    DIR/apim-policy.xml       the API's policy, as APIM keeps it
    DIR/k8s/ingress.yaml      the Ingress(es) as applied (ingress-nginx annotations)
    DIR/k8s/secrets.yaml      the Secrets they use (keys inside: 0600)
    DIR/certs/<name>.pem      every CA certificate and identity chain; <name>.key its private key (0600)

Loading DIR/chain.yaml gives back the same topology (:func:`harness.chainfile.load.load_chain`). The folder is built
aside and renamed into place: nothing half-written is left on an error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from harness.chainfile.policy import policy_xml
from harness.errors import InputError, UsageError
from harness.model.chainfile import (
    ApimBackend,
    ApimSpec,
    BackendSettings,
    Certificates,
    ChainFile,
    ClientAuthConfig,
    ClientSpec,
    GatewaySpec,
    IdentityFile,
    IngressSpec,
    PodSpec,
    SslPolicy,
    TrustFile,
    Waf,
    chain_json_schema,
    dump_chain_text,
)
from harness.model.topology import Listener, TLSVersion, Topology, Upstream
from harness.pki.certset import CertSet
from harness.render.k8s import render_manifests

__all__ = ["chain_document", "write_chain", "write_chain_files"]

_NAMES = {"1.0": "TLSv1_0", "1.1": "TLSv1_1", "1.2": "TLSv1_2", "1.3": "TLSv1_3"}
_MODES = {"none": "none", "required": "Strict", "optional": "Passthrough"}


def _v(version: TLSVersion) -> str:
    return _NAMES[version]


def _http2(listener: Listener, where: str) -> bool:
    if listener.alpn not in (("h2", "http/1.1"), ("http/1.1",)):
        raise UsageError(f"{where}: ALPN {listener.alpn} has no chain-file form — use ('h2', 'http/1.1') or "
                         "('http/1.1',)")
    return "h2" in listener.alpn


def _trusts(ca: str | None) -> list[str]:
    return [ca] if ca is not None else []


def chain_document(topology: Topology, policy_file: str = "apim-policy.xml") -> ChainFile:
    """The chain file of ``topology`` whose cert files are ``certs/<name>.pem`` (+ ``.key``)."""
    gw, ap, pd = topology.gateway, topology.apim, topology.pod
    if ap.listener.client_auth != "none":
        raise UsageError("apim: listener.client_auth has no chain-file form — APIM asks for a client cert through "
                         "negotiate_client_certificate")
    if ap.oauth is not None and not ap.oauth.enabled:
        raise UsageError("apim: a disabled OAuth has no chain-file form — drop it (oauth=None)")
    bs: Upstream = gw.upstream
    return ChainFile(
        name=topology.name,
        certificates=Certificates(
            identities={lf.name: IdentityFile(pem=f"certs/{lf.name}.pem", key=f"certs/{lf.name}.key")
                        for lf in topology.pki.leaves},
            trust={ca.name: TrustFile(pem=f"certs/{ca.name}.pem", key=f"certs/{ca.name}.key")
                   for ca in topology.pki.cas},
        ),
        client=ClientSpec(trusted_root=topology.client.trusted_ca, host_name=topology.client.hostname,
                          certificate=topology.client.client_cert, verify_chain=topology.client.verify_chain,
                          verify_name=topology.client.verify_name,
                          min_protocol_version=_v(topology.client.min_version),  # type: ignore[arg-type]
                          max_protocol_version=_v(topology.client.max_version)),  # type: ignore[arg-type]
        gateway=GatewaySpec(
            host_names=[gw.listener.hostname], listener_certificate=gw.listener.server_cert,
            enable_http2=_http2(gw.listener, "gateway"),
            ssl_policy=SslPolicy(min_protocol_version=_v(gw.listener.min_version),  # type: ignore[arg-type]
                                 max_protocol_version=_v(gw.listener.max_version)),  # type: ignore[arg-type]
            client_auth=ClientAuthConfig(mode=_MODES[gw.listener.client_auth],  # type: ignore[arg-type]
                                         trusted_client_certificates=_trusts(gw.listener.client_ca)),
            waf=Waf(enabled=bool(gw.waf_block), block_patterns=list(gw.waf_block)),
            backend_settings=BackendSettings(
                host_name=bs.hostname, trusted_root_certificates=_trusts(bs.trusted_ca),
                validate_cert_chain_and_expiry=bs.verify_chain, validate_sni=bs.verify_name,
                client_certificate=bs.client_cert,
                min_protocol_version=_v(bs.min_version), max_protocol_version=_v(bs.max_version)),  # type: ignore[arg-type]
        ),
        apim=ApimSpec(
            host_names=[ap.listener.hostname], custom_domain_certificate=ap.listener.server_cert,
            negotiate_client_certificate=ap.negotiate_client_certificate, enable_http2=_http2(ap.listener, "apim"),
            ca_certificates=_trusts(ap.listener.client_ca),
            min_protocol_version=_v(ap.listener.min_version),  # type: ignore[arg-type]
            max_protocol_version=_v(ap.listener.max_version),  # type: ignore[arg-type]
            policy=policy_file,
            backend=ApimBackend(
                url=f"https://{ap.upstream.hostname}/", validate_certificate_chain=ap.upstream.verify_chain,
                validate_certificate_name=ap.upstream.verify_name, client_certificate=ap.upstream.client_cert,
                trusted_root=ap.upstream.trusted_ca,
                min_protocol_version=_v(ap.upstream.min_version),  # type: ignore[arg-type]
                max_protocol_version=_v(ap.upstream.max_version)),  # type: ignore[arg-type]
        ),
        ingress=IngressSpec(
            enable_ssl_passthrough=topology.ingress.controller.enable_ssl_passthrough,
            config_map={**({"allow-cross-namespace-resources": "true"}
                           if topology.ingress.allow_cross_namespace_resources else {}),
                        **topology.ingress.controller.config},
            manifests=["k8s"],
        ),
        pod=PodSpec(name=pd.name, namespace=pd.namespace, host=pd.listener.hostname,
                    listener_certificate=pd.listener.server_cert, client_auth=pd.listener.client_auth,
                    client_ca=pd.listener.client_ca,
                    min_protocol_version=_v(pd.listener.min_version),  # type: ignore[arg-type]
                    max_protocol_version=_v(pd.listener.max_version),  # type: ignore[arg-type]
                    alpn=list(pd.listener.alpn)),
    )


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _fill(d: Path, topology: Topology, certs: CertSet) -> None:
    for ca in topology.pki.cas:
        _write(d / "certs" / f"{ca.name}.pem", certs.ca_cert(ca.name).read_bytes())
        _write(d / "certs" / f"{ca.name}.key", certs.ca_key(ca.name).read_bytes(), 0o600)  # fault variants
    for lf in topology.pki.leaves:
        files = certs.leaf(lf.name)
        _write(d / "certs" / f"{lf.name}.pem", files.chain.read_bytes())
        _write(d / "certs" / f"{lf.name}.key", files.key.read_bytes(), 0o600)
    docs = render_manifests(topology, certs)
    ingresses = [doc for doc in docs if doc["kind"] == "Ingress"]
    secrets = [doc for doc in docs if doc["kind"] == "Secret"]
    _write(d / "k8s" / "ingress.yaml", yaml.safe_dump_all(ingresses, sort_keys=False).encode())
    _write(d / "k8s" / "secrets.yaml", yaml.safe_dump_all(secrets, sort_keys=False).encode(), 0o600)
    document = chain_document(topology)
    _write(d / "apim-policy.xml", policy_xml(topology.apim).encode())
    _write(d / "chain.schema.json", json.dumps(chain_json_schema(), indent=2).encode() + b"\n")
    _write(d / "chain.yaml", dump_chain_text(document).encode())


def write_chain(directory: Path, topology: Topology, certs: CertSet, *, force: bool = False) -> Path:
    """Write ``topology`` with the certificates of ``certs`` as a chain-file folder; returns ``DIR/chain.yaml``."""
    return _write_folder(directory, lambda tmp: _fill(tmp, topology, certs), force=force)


def write_chain_files(directory: Path, files: Mapping[str, tuple[bytes, int]], *, force: bool = False,
                      check: Callable[[Path], object] | None = None) -> Path:
    """Write ``files`` (relative path → content, mode) as a chain-file folder; returns ``DIR/chain.yaml``.
    ``check(chain.yaml)`` runs on the folder before it is renamed into place (an error leaves nothing)."""
    def fill(tmp: Path) -> None:
        for rel, (data, mode) in files.items():
            _write(tmp / rel, data, mode)
        if check is not None:
            check(tmp / "chain.yaml")

    return _write_folder(directory, fill, force=force)


def _write_folder(directory: Path, fill: Callable[[Path], None], *, force: bool) -> Path:
    """Fill a folder built aside and rename it into place: nothing half-written is left on an error."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(directory, "is a file", "give a folder for the chain file (it is created when missing)")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise InputError(directory, "already holds files", "choose an empty or new folder, or pass --force")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.init-"))
    tmp.chmod(0o755)
    try:
        fill(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory / "chain.yaml"
