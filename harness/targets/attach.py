"""The attach target: a chain somebody else runs, described by a TOML file; read-only.

    with AttachTarget.from_file(Path("attach.toml")) as chain:
        chain.probe("ingress")            # as APIM would: its trust, SNI and client cert

The file gives, per hop, where it listens (``host``, ``port``), the name its caller sends and checks
(``server_name``), the CA bundle its server cert chains to (``ca_bundle``) and the identity its caller presents
(``client_cert`` + ``client_key``, or ``pfx`` + ``pfx_password_env``). Hops absent from the file are not in the
chain's endpoints, so cases about them skip. ``negatives = "generate"`` lets the harness make its own bad client
certs (``unknown-ca``, ``self-signed`` always; the other faults only for a CA whose key ``[cas.<name>]`` gives).
docs/azure.md has a complete example; :func:`attach_config_from_up_json` writes one from ``mtls-harness up --json``.

Nothing here changes the chain: :attr:`RunningChain.mutable` is False and :meth:`AttachTarget.reconfigure` refuses.
Key material from a PFX is written only to a private (0700) work directory that is removed on exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.errors import InputError, Unavailable, UsageError
from harness.model.topology import HOPS, HopName, LeafSpec, PKIPlan, Topology, Upstream, default_topology
from harness.pki.certset import CertSet, LeafFiles, leaf_files_in
from harness.pki.faults import Fault, build_fault
from harness.pki.x509 import cert_pem, issue_ca, key_pem, write_atomic
from harness.targets.base import (
    ChainLimits,
    HopEndpoint,
    RunningChain,
    TargetBase,
    config_error,
    config_file,
    config_path_from_env,
    read_toml_config,
)

__all__ = [
    "KEYLESS_FAULTS",
    "AttachConfig",
    "AttachHop",
    "AttachTarget",
    "attach_config_from_up_json",
    "dump_attach_config",
    "load_attach_config",
    "parse_attach_config",
]

Negatives = Literal["generate", "none"]

#: faults that need no key of the real issuing CA (a rogue root, or the leaf's own key, signs them)
KEYLESS_FAULTS: tuple[Fault, ...] = ("unknown-ca", "self-signed")

_HOP_KEYS = {"host", "port", "server_name", "ca_bundle", "client_cert", "client_key", "pfx", "pfx_password_env",
             "leaf"}
_TOP_KEYS = {"negatives", "hops", "cas", "key_type"}


@dataclass(frozen=True)
class AttachHop:
    """One hop as its caller reaches it. Paths are absolute (relative ones are resolved against the file)."""

    hop: HopName
    host: str
    port: int
    server_name: str
    ca_bundle: Path | None = None  # None: the system trust store
    client_cert: Path | None = None  # PEM: leaf, then intermediates (a key in the same file is used)
    client_key: Path | None = None
    pfx: Path | None = None
    pfx_password_env: str | None = None  # the NAME of the environment variable holding the PFX password
    leaf: str | None = None  # the plan's leaf name for this identity (default: what the topology's caller presents)

    @property
    def has_identity(self) -> bool:
        return self.client_cert is not None or self.pfx is not None


@dataclass(frozen=True)
class AttachConfig:
    hops: Mapping[HopName, AttachHop]
    negatives: Negatives = "generate"
    #: CAs whose key the user owns (name → (cert, key)): negatives issued by the right CA can be made for them
    cas: Mapping[str, tuple[Path, Path]] = field(default_factory=dict)
    source: Path | None = None


# ------------------------------------------------------------------------------------------------------------------
# reading and writing the file
# ------------------------------------------------------------------------------------------------------------------
def _hop(name: str, raw: Any, base: Path, source: Path | None) -> AttachHop:
    key = f"hops.{name}"
    if name not in HOPS:
        raise config_error(source, key, f"unknown hop {name!r}", f"use one of: {', '.join(HOPS)}")
    if not isinstance(raw, Mapping):
        raise config_error(source, key, "must be a table", f"write [{key}] with host, port and server_name")
    unknown = set(raw) - _HOP_KEYS
    if unknown:
        raise config_error(source, key, f"unknown key(s) {', '.join(sorted(unknown))}",
                           f"allowed: {', '.join(sorted(_HOP_KEYS))}")
    for req in ("host", "port"):
        if req not in raw:
            raise config_error(source, f"{key}.{req}", "is missing", "every hop needs host and port")
    port = raw["port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise config_error(source, f"{key}.port", f"must be a TCP port number, not {port!r}", "use 1-65535")
    host = raw["host"]
    if not isinstance(host, str) or not host:
        raise config_error(source, f"{key}.host", f"must be a host name or address, not {host!r}",
                           "e.g. host = \"10.1.2.4\"")
    server_name = raw.get("server_name", host)
    if not isinstance(server_name, str) or not server_name:
        raise config_error(source, f"{key}.server_name", f"must be a DNS name, not {server_name!r}",
                           "the name its caller sends")

    def opt(k: str) -> Path | None:
        return config_file(raw[k], base, source, f"{key}.{k}", "attach") if k in raw else None

    pfx_env = raw.get("pfx_password_env")
    if pfx_env is not None and (not isinstance(pfx_env, str) or not pfx_env):
        raise config_error(source, f"{key}.pfx_password_env", "must name an environment variable",
                           "e.g. \"APIM_PFX_PASSWORD\"")
    hop = AttachHop(hop=name, host=host, port=port, server_name=server_name,
                    ca_bundle=opt("ca_bundle"), client_cert=opt("client_cert"), client_key=opt("client_key"),
                    pfx=opt("pfx"), pfx_password_env=pfx_env, leaf=raw.get("leaf"))
    if hop.pfx and (hop.client_cert or hop.client_key):
        raise config_error(source, key, "gives both pfx and client_cert/client_key",
                           "give one identity: a PFX or PEM files")
    if hop.client_key and not hop.client_cert:
        raise config_error(source, f"{key}.client_key", "has no client_cert beside it",
                           "add client_cert (PEM, leaf first)")
    return hop


def parse_attach_config(doc: Mapping[str, Any], base: Path, source: Path | None = None) -> AttachConfig:
    """An :class:`AttachConfig` from parsed TOML; relative paths are resolved against ``base``."""
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise config_error(source, ", ".join(sorted(unknown)), "unknown top-level key(s)",
                           f"allowed: {', '.join(sorted(_TOP_KEYS))}")
    negatives = doc.get("negatives", "generate")
    if negatives not in ("generate", "none"):
        raise config_error(source, "negatives", f"must be \"generate\" or \"none\", not {negatives!r}",
                           "\"generate\" lets the harness make its own bad client certs")
    hops_raw = doc.get("hops", {})
    if not isinstance(hops_raw, Mapping) or not hops_raw:
        raise config_error(source, "hops", "no hop is configured",
                           "add at least [hops.gateway] with host, port, server_name")
    hops = {name: _hop(name, raw, base, source) for name, raw in hops_raw.items()}
    cas: dict[str, tuple[Path, Path]] = {}
    for name, raw in dict(doc.get("cas", {})).items():
        if not isinstance(raw, Mapping) or set(raw) != {"cert", "key"}:
            raise config_error(source, f"cas.{name}", "must have exactly cert and key", "or leave the CA out")
        cas[name] = (config_file(raw["cert"], base, source, f"cas.{name}.cert", "attach"),
                                 config_file(raw["key"], base, source, f"cas.{name}.key", "attach"))
    ordered = {h: hops[h] for h in HOPS if h in hops}
    return AttachConfig(hops=ordered, negatives=negatives, cas=cas, source=source)


def load_attach_config(path: Path) -> AttachConfig:
    """Read an attach config file (TOML)."""
    path = Path(path)
    return parse_attach_config(read_toml_config(path, "attach"), path.resolve().parent, path)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def dump_attach_config(config: AttachConfig) -> str:
    """The config as TOML text (absolute paths), readable by :func:`load_attach_config`."""
    lines = ["# mtls-harness attach config (see docs/azure.md)", f"negatives = {_toml_value(config.negatives)}"]
    for hop in config.hops.values():
        lines += ["", f"[hops.{hop.hop}]"]
        for f in dataclasses.fields(hop):
            value = getattr(hop, f.name)
            if f.name != "hop" and value is not None:
                lines.append(f"{f.name} = {_toml_value(value)}")
    for name, (cert, key) in config.cas.items():
        lines += ["", f"[cas.{json.dumps(name)}]", f"cert = {_toml_value(cert)}", f"key = {_toml_value(key)}"]
    return "\n".join(lines) + "\n"


def attach_config_from_up_json(doc: Mapping[str, Any], *, include_ca_keys: bool = True) -> str:
    """Turn ``mtls-harness up --json`` output into an attach config (TOML text) for that running chain.

    With ``include_ca_keys`` the cert set's CA keys are listed under ``[cas]``, so every negative the catalogue
    knows can be made; without, only :data:`KEYLESS_FAULTS` can.
    """
    hops = doc.get("hops")
    if not isinstance(hops, Mapping) or not hops:
        raise UsageError("the document has no \"hops\" — pass the output of `mtls-harness up --json`")
    out: dict[HopName, AttachHop] = {}
    for name, ep in hops.items():
        try:
            out[name] = AttachHop(
                hop=name, host=ep["host"], port=int(ep["port"]), server_name=ep["server_name"],
                ca_bundle=Path(ep["ca_bundle"]) if ep.get("ca_bundle") else None,
                client_cert=Path(ep["client_cert"]) if ep.get("client_cert") else None,
                client_key=Path(ep["client_key"]) if ep.get("client_key") else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"hops.{name} in the `up --json` document lacks {exc}") from None
    cas: dict[str, tuple[Path, Path]] = {}
    cert_dir = doc.get("cert_dir")
    if include_ca_keys and cert_dir:
        for d in sorted((Path(cert_dir) / "cas").glob("*")):
            if (d / "cert.pem").is_file() and (d / "key.pem").is_file():
                cas[d.name] = (d / "cert.pem", d / "key.pem")
    return dump_attach_config(AttachConfig(hops=out, cas=cas))


# ------------------------------------------------------------------------------------------------------------------
# the cert set an attached chain offers the cases
# ------------------------------------------------------------------------------------------------------------------
def _spec_from_cert(name: str, issuer: str, cert: x509.Certificate) -> LeafSpec:
    """The plan's view of a real leaf, so a generated negative looks like it (same subject, SANs and EKU)."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    try:
        sans = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                     .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = ()
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usage: Literal["server", "client"] = "client" if ExtendedKeyUsageOID.CLIENT_AUTH in ekus else "server"
    except x509.ExtensionNotFound:
        usage = "client"
    return LeafSpec(name, issuer, str(cns[0].value) if cns else name, usage, sans,
                    str(orgs[0].value) if orgs else "Contoso")


class AttachCertSet(CertSet):
    """The identities an attach config gives, under the plan's leaf names, plus negatives made on demand.

    A leaf or fault that cannot be had on this chain raises :class:`harness.errors.Unavailable` with the reason, so the
    suite skips that case instead of failing it.
    """

    def __init__(self, directory: Path, plan: PKIPlan, *, negatives: Negatives, owned_cas: frozenset[str]) -> None:
        super().__init__(directory, plan)
        self.negatives = negatives
        self.owned_cas = owned_cas

    def leaf(self, name: str) -> LeafFiles:

        if "~" not in name and name not in self._leaves and not (self.directory / "leaves" / name).is_dir():
            raise Unavailable(f"the attach config gives no identity for {name!r} (add client_cert/client_key or pfx to "
                       "the hop whose caller presents it)")
        return super().leaf(name)

    def fault(self, kind: Fault, like: str) -> LeafFiles:

        name = f"{like}~{kind}"
        if name in self._leaves:
            return self._leaves[name]
        if self.negatives == "none":
            raise Unavailable(f"negatives = \"none\" in the attach config: no {kind} variant of {like!r} is made")
        if not (self.directory / "leaves" / like).is_dir():
            raise Unavailable(f"no {kind} variant of {like!r}: the attach config gives no identity for {like!r}")
        spec = self.plan.leaf(like)
        line = self.chain_cas(spec.issuer)
        if all(ca in self.owned_cas for ca in line) and kind != "revoked":
            return super().fault(kind, like)
        if kind == "revoked":
            raise Unavailable(f"a revoked variant of {like!r} needs a serial in the CRL its issuer publishes; an "
                              "attached "
                       "chain's CA does not reserve one")
        if kind not in KEYLESS_FAULTS:
            missing = ", ".join(ca for ca in line if ca not in self.owned_cas)
            article = "an" if kind[0] in "aeiou" else "a"
            raise Unavailable(f"{article} {kind} variant of {like!r} must be issued by {spec.issuer!r}; the attach "
                              "config "
                       f"holds no key for {missing} (only {', '.join(KEYLESS_FAULTS)} can be made without it)")
        # the issuer is not used by these kinds: a throwaway CA fills the arguments
        unused = issue_ca("unused", self.plan.key_type)
        material = build_fault(kind, spec, self.plan.key_type, issuer=unused, intermediates=(), root=unused,
                               revoked_serial=None)
        d = self.directory / "faults" / name
        write_atomic(d / "cert.pem", cert_pem(material.leaf))
        write_atomic(d / "chain.pem", cert_pem(*material.chain))
        write_atomic(d / "key.pem", key_pem(material.key.key), 0o600)
        for fname, certs in material.extra.items():
            write_atomic(d / fname, cert_pem(*certs))
        self._leaves[name] = leaf_files_in(name, d)
        return self._leaves[name]


def _caller_leaf(topology: Topology, hop: HopName) -> str | None:
    return topology.caller_of(hop).client_cert


def _with_caller_leaf(topology: Topology, hop: HopName, leaf: str) -> Topology:
    """``topology`` where the caller of ``hop`` presents ``leaf`` (the pod's caller is set by annotations: kept)."""
    if hop == "gateway":
        return topology.replace(client=dataclasses.replace(topology.client, client_cert=leaf))
    if hop == "apim":
        up: Upstream = dataclasses.replace(topology.gateway.upstream, client_cert=leaf)
        return topology.replace(gateway=dataclasses.replace(topology.gateway, upstream=up))
    if hop == "ingress":
        up = dataclasses.replace(topology.apim.upstream, client_cert=leaf)
        return topology.replace(apim=dataclasses.replace(topology.apim, upstream=up))
    return topology


# ------------------------------------------------------------------------------------------------------------------
# the target
# ------------------------------------------------------------------------------------------------------------------
class AttachTarget(TargetBase):
    """``with AttachTarget(config) as chain:`` — a running chain someone else owns; nothing is started or changed."""

    name = "attach"

    def __init__(self, config: AttachConfig | Path | str | None = None, topology: Topology | None = None, *,
                 target_name: str = "attach") -> None:
        if config is None:
            config = config_path_from_env("attach")
        self.config = config if isinstance(config, AttachConfig) else load_attach_config(Path(config))
        self.topology = topology or default_topology()
        self.name = target_name
        self.workdir: Path | None = None
        self.chain: RunningChain | None = None

    @classmethod
    def from_file(cls, path: Path, topology: Topology | None = None) -> AttachTarget:
        return cls(load_attach_config(path), topology)


    def stop(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.chain = None

    def reconfigure(self, topology: Topology) -> RunningChain:
        raise UsageError(f"the {self.name} target is read-only: it cannot change the chain it attached to")

    def limits(self) -> ChainLimits:
        """What this target declares it cannot run: any variant (it never changes the chain it attached to), and the
        hops its config gives no endpoint for."""
        where = "the azure discovery (runner.hops)" if self.name == "azure" else "the attach config"
        return ChainLimits(
            unreachable={hop: f"{where} gives no endpoint for the {hop} hop (the runner cannot reach it)"
                         for hop in HOPS if hop not in self.config.hops},
            read_only=f"the {self.name} target is read-only: it never changes the chain it attached to, so a case "
                      "that needs a variant of the chain cannot run there")

    def _start(self) -> RunningChain:
        from harness.pki.load import load_identity

        self.workdir = Path(tempfile.mkdtemp(prefix="mtls-harness-attach-"))  # 0700: keys from a PFX land here
        certs_dir = self.workdir / "certs"
        topology = self.topology
        plan = topology.pki
        leaves = {lf.name: lf for lf in plan.leaves}
        endpoints: dict[HopName, HopEndpoint] = {}
        for hop, cfg in self.config.hops.items():
            leaf_files: tuple[Path, Path] | None = None
            if cfg.has_identity:
                leaf_name = cfg.leaf or _caller_leaf(topology, hop)
                if leaf_name is None:
                    raise config_error(self.config.source, f"hops.{hop}",
                                       f"the topology's caller of {hop} presents no client cert",
                                       "name the plan's leaf with leaf = \"consumer-client\"")
                password = None
                if cfg.pfx is not None and cfg.pfx_password_env:
                    password = os.environ.get(cfg.pfx_password_env)
                    if password is None:
                        raise config_error(self.config.source, f"hops.{hop}.pfx_password_env",
                                           f"the environment variable {cfg.pfx_password_env} is not set", "export it")
                source = cfg.pfx or cfg.client_cert
                assert source is not None
                try:
                    ident = load_identity(source, key_path=cfg.client_key, password=password)
                except InputError as exc:
                    if cfg.pfx is None or cfg.pfx_password_env:
                        raise
                    raise InputError(cfg.pfx, exc.problem, f"name the environment variable that holds its password "
                                     f"with pfx_password_env under [hops.{hop}]") from None
                if ident.key is None:
                    raise InputError(source, "holds no private key", "add client_key (PEM) to the hop's table")
                d = certs_dir / "leaves" / leaf_name
                write_atomic(d / "cert.pem", cert_pem(ident.cert))
                write_atomic(d / "chain.pem", cert_pem(ident.cert, *ident.chain))
                write_atomic(d / "key.pem", key_pem(ident.key), 0o600)  # type: ignore[arg-type]
                old = leaves.get(leaf_name)
                issuer = old.issuer if old else plan.cas[0].name
                leaves[leaf_name] = _spec_from_cert(leaf_name, issuer, ident.cert)
                if isinstance(ident.key, rsa.RSAPrivateKey):
                    plan = dataclasses.replace(plan, key_type="rsa")
                topology = _with_caller_leaf(topology, hop, leaf_name)
                leaf_files = (d / "chain.pem", d / "key.pem")
            endpoints[hop] = HopEndpoint(hop=hop, host=cfg.host, port=cfg.port, server_name=cfg.server_name,
                                         trust=cfg.ca_bundle, client_cert=leaf_files[0] if leaf_files else None,
                                         client_key=leaf_files[1] if leaf_files else None)
        for ca_name, (cert, key) in self.config.cas.items():
            if ca_name not in {c.name for c in plan.cas}:
                raise config_error(self.config.source, f"cas.{ca_name}", "the topology has no CA of that name",
                                   f"use one of: {', '.join(c.name for c in plan.cas)}")
            write_atomic(certs_dir / "cas" / ca_name / "cert.pem", cert.read_bytes())
            write_atomic(certs_dir / "cas" / ca_name / "key.pem", key.read_bytes(), 0o600)
        plan = dataclasses.replace(plan, leaves=tuple(leaves.values()))
        topology = topology.replace(pki=plan)
        certs = AttachCertSet(certs_dir, plan, negatives=self.config.negatives,
                              owned_cas=frozenset(self.config.cas))
        self.chain = RunningChain(target=self.name, topology=topology, certs=certs, endpoints=endpoints,
                                  mutable=False, limits=self.limits())
        return self.chain


# ------------------------------------------------------------------------------------------------------------------
# python -m harness.targets.attach --from-up-json up.json > attach.toml
# ------------------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.targets.attach",
                                     description="Write an attach config (TOML) for a chain `mtls-harness up --json` "
                                                 "printed.")
    parser.add_argument("--from-up-json", metavar="FILE", required=True,
                        help="the JSON `up --json` printed ('-': stdin)")
    parser.add_argument("--no-ca-keys", action="store_true", help="leave the cert set's CA keys out (fewer negatives)")
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.from_up_json == "-" else Path(args.from_up_json).read_text()
        doc = json.loads(text.strip().splitlines()[0] if text.strip() else "{}")
        sys.stdout.write(attach_config_from_up_json(doc, include_ca_keys=not args.no_ca_keys))
    except (OSError, ValueError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
