"""``load_chain(path)``: a chain file and the files it names → the topology and the cert set the harness runs.

    loaded = load_chain(Path("chain.yaml"))
    with open_target("local", topology=loaded.topology, certs=loaded.certs) as chain: ...
    for w in loaded.warnings: print(w)          # settings the harness does not model, by name

Every unusable input raises :class:`~harness.errors.InputError` with one line: the file (and YAML line), the key
path, the bad value and the fix. Paths inside the file are relative to the chain file's folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes

from harness.chainfile.certs import (
    CertMaterial,
    Identity,
    Trust,
    build_chain_cert_set,
    read_certificates,
    secret_material,
)
from harness.chainfile.k8s import Manifests, RawSecret, read_gateway_api, read_manifests
from harness.chainfile.policy import PolicyFacts, read_policy
from harness.errors import InputError, UsageError
from harness.model.chainfile import TLS_NAMES, ChainFile, IngressSpec, line_of, parse_chain_text
from harness.model.controller import CONTROLLER_DEFAULTS, ControllerSettings, parse_go_bool
from harness.model.topology import (
    ANNOTATION_PREFIX,
    Api,
    Apim,
    ClientAuth,
    Gateway,
    Ingress,
    IngressHop,
    K8sSecret,
    Listener,
    Pod,
    TLSVersion,
    Topology,
    Upstream,
)
from harness.pki.certset import CertSet
from harness.pki.x509 import fingerprint_sha256
from harness.render.envoy import EnvoyHop, render_envoy
from harness.render.nginx import Passthrough, render_nginx, uses_passthrough
from harness.render.nginx_admission import admission_refusal, annotation_warnings

__all__ = ["CHAIN_ENV", "LoadedChain", "load_chain"]

#: the environment variable every command reads when --chain is not given
CHAIN_ENV = "MTLS_HARNESS_CHAIN"

_GATEWAY_AUTH: dict[str, ClientAuth] = {"none": "none", "Strict": "required", "Passthrough": "optional"}
#: ingress-nginx ConfigMap keys the model holds
_CONFIG_MAP_KEYS = ("allow-cross-namespace-resources", *CONTROLLER_DEFAULTS)
_BOOL_KEYS = ("allow-cross-namespace-resources", "ssl-session-cache", "ssl-session-tickets", "use-http2", "hsts",
              "hsts-include-subdomains", "hsts-preload", "proxy-ssl-location-only", "allow-snippet-annotations",
              "ssl-reject-handshake")
_INT_KEYS = ("hsts-max-age", "upstream-keepalive-connections", "upstream-keepalive-timeout",
             "upstream-keepalive-requests")


@dataclass(frozen=True)
class LoadedChain:
    path: Path
    document: ChainFile
    topology: Topology
    certs: CertSet
    #: identity name -> "real" (the user's certificate and key) or "shadow" (a stand-in with the same profile)
    mode: Mapping[str, str]
    warnings: tuple[str, ...]
    #: the Ingress and Secret manifests as read (their file:line, for findings)
    manifests: Manifests = dataclasses.field(default_factory=lambda: Manifests((), (), ()))

    @property
    def accepted(self) -> Mapping[str, str]:
        """Finding id → the reason the chain file gives for accepting it."""
        return {a.finding: a.reason for a in self.document.accept}

    def where(self, setting: Any) -> str:
        """``file:line`` of the setting that causes a finding: the annotation in the user's manifest, the key in the
        chain file, the Secret's manifest or entry; the file alone when the setting is a default (not written).
        ``setting``: a :class:`harness.findings.predict.Setting` (a layer above this one)."""
        text = self.path.read_text(encoding="utf-8")
        if setting.annotation is not None:
            found = self.manifests.source_of(*setting.annotation)
            if found:
                return found
        if setting.secret is not None:
            ns, _, name = setting.secret.partition("/")
            for raw in self.manifests.secrets:
                if (raw.namespace, raw.name) == (ns, name):
                    return raw.source
            line = line_of(text, ["ingress", "secrets", name])
            if line:
                return f"{self.path}:{line}"
        if setting.chain_key is not None:
            line = line_of(text, list(setting.chain_key))
            if line:
                return f"{self.path}:{line}"
            return f"{self.path} ({'.'.join(map(str, setting.chain_key))} not set: its default)"
        return str(self.path)


def _tls(name: str) -> TLSVersion:
    return TLS_NAMES[name]  # type: ignore[return-value]


class _Resolver:
    """Names in the chain file → plan names, with one-line errors that carry the YAML line."""

    def __init__(self, path: Path, text: str, mat: CertMaterial) -> None:
        self.path, self.text, self.mat = path, text, mat
        self.trust_cas: Mapping[str, tuple[str, ...]] = {}

    def where(self, loc: Sequence[str | int]) -> str:
        line = line_of(self.text, loc)
        return f"{self.path}:{line}" if line else str(self.path)

    def identity(self, name: str | None, loc: Sequence[str | int]) -> str | None:
        if name is None:
            return None
        if name not in self.mat.identities:
            raise InputError(self.where(loc), f"{'.'.join(map(str, loc))}: {name!r} is not an identity "
                             f"(have: {', '.join(self.mat.identities) or 'none'})",
                             "name one of certificates.identities, or add it there")
        return name

    def check_trust(self, name: str, loc: Sequence[str | int]) -> str:
        if name not in self.mat.trusts:
            raise InputError(self.where(loc), f"{'.'.join(map(str, loc))}: {name!r} is not a trust list "
                             f"(have: {', '.join(self.mat.trusts) or 'none'})",
                             "name one of certificates.trust, or add it there")
        return name

    def ca(self, names: Sequence[str] | str | None, loc: Sequence[str | int], warnings: list[str]) -> str | None:
        """The CA name of the first trust list named (the model holds one trusted CA per consumer)."""
        if names is None or (not isinstance(names, str) and not names):
            return None
        listed = [names] if isinstance(names, str) else list(names)
        for i, n in enumerate(listed):
            self.check_trust(n, [*loc, i] if not isinstance(names, str) else loc)
        if len(listed) > 1:
            warnings.append(f"{self.where(loc)}: {'.'.join(map(str, loc))}: only the first trust list "
                            f"({listed[0]}) is modelled; {', '.join(listed[1:])} ignored")
        return self.trust_cas[listed[0]][0]


def _secrets(raws: Sequence[RawSecret], mat: CertMaterial, warnings: list[str]) -> list[tuple[RawSecret, str | None,
                                                                                                   tuple[str, ...],
                                                                                                   bool]]:
    """The Secret manifests, their identities and trust lists matched to the chain file's by fingerprint (or added
    under the Secret's name)."""
    leaf_fp = {fingerprint_sha256(i.chain[0]): n for n, i in mat.identities.items()}
    ca_fp = {fingerprint_sha256(c): n for n, t in mat.trusts.items() for c in t.certs}
    out = []
    for raw in raws:
        ident, cas, malformed = secret_material(raw)
        tls_name = None
        if ident is not None:
            tls_name = leaf_fp.get(fingerprint_sha256(ident.chain[0]))
            if tls_name is None:
                tls_name = raw.name if raw.name not in mat.identities else f"{raw.namespace}-{raw.name}"
                mat.identities[tls_name] = Identity(tls_name, ident.chain, ident.key, raw.source)
                leaf_fp[fingerprint_sha256(ident.chain[0])] = tls_name
        trust_names: list[str] = []
        unmatched = []
        for cert in cas or ():
            found = ca_fp.get(fingerprint_sha256(cert))
            if found is None:
                unmatched.append(cert)
            elif found not in trust_names:
                trust_names.append(found)
        if unmatched:
            name = raw.name if raw.name not in mat.trusts else f"{raw.namespace}-{raw.name}"
            mat.trusts[name] = Trust(name, tuple(unmatched), None, raw.source)
            ca_fp.update({fingerprint_sha256(c): name for c in unmatched})
            trust_names.append(name)
        if raw.ca_crl is not None:
            warnings.append(f"{raw.source}: Secret {raw.ref} ca.crl is not modelled (revocation is not checked)")
        out.append((raw, tls_name, tuple(trust_names), malformed))
    return out


def _ingress_hop(doc: ChainFile, man: Manifests, secrets: list[K8sSecret], r: _Resolver,
                 warnings: list[str]) -> IngressHop:
    spec = doc.ingress
    if not man.ingresses:
        raise InputError(r.where(["ingress", "manifests"]), "ingress.manifests hold no Ingress",
                         "list the file or folder with your Ingress manifest")
    # the home host is the one APIM's backend names (its Ingresses first, so the model's views start there); every
    # other host is served by the same controller and gets its own cases (harness.cases.catalogue.host_cases)
    backend_host = urlsplit(doc.apim.backend.url).hostname
    home = backend_host if any(i.host == backend_host for i in man.ingresses) else man.ingresses[0].host
    ingresses: list[Ingress] = []
    for ing in sorted(man.ingresses, key=lambda i: i.host != home):  # stable: the manifests' order otherwise
        if parse_go_bool(ing.annotation("ssl-passthrough")) and not spec.enable_ssl_passthrough:
            warnings.append(f"Ingress {ing.namespace}/{ing.name}: ssl-passthrough is ignored by ingress-nginx "
                            "without --enable-ssl-passthrough (ingress.enable_ssl_passthrough: true)")
        ingresses.append(ing)
    config: dict[str, str] = {}
    for key, value in spec.config_map.items():
        if key not in _CONFIG_MAP_KEYS:
            warnings.append(f"{r.where(['ingress', 'config_map', key])}: ingress-nginx ConfigMap key {key} is not "
                            "modelled")
            continue
        bad = ((key in _BOOL_KEYS and parse_go_bool(value) is None)
               or (key in _INT_KEYS and not value.strip().isdigit()))
        if bad:
            kind = "a boolean (true/false)" if key in _BOOL_KEYS else "a whole number"
            raise InputError(r.where(["ingress", "config_map", key]), f"ingress.config_map {key}: {value!r} is not "
                             f"{kind}", f"write {key}: \"{CONTROLLER_DEFAULTS.get(key, 'false')}\" (the default)")
        if key != "allow-cross-namespace-resources":
            config[key] = value
    hop = IngressHop(ingresses=tuple(ingresses), secrets=tuple(secrets), server_cert="",
                     allow_cross_namespace_resources=bool(parse_go_bool(
                         spec.config_map.get("allow-cross-namespace-resources", "false"))),
                     controller=ControllerSettings(spec.enable_ssl_passthrough, MappingProxyType(config)),
                     gateway_api=_gateway_api(spec, r))
    for ing in ingresses:
        refusal = admission_refusal(ing, hop.controller)
        if refusal is not None:
            raise _at_manifest(UsageError(refusal + "; the admission webhook refuses the Ingress"), man,
                               r.where(["ingress", "manifests"]))
    warnings += annotation_warnings(hop)
    for host in hop.hosts:
        first = next(i for i in ingresses if i.host == host)
        tls = hop.secret(f"{first.namespace}/{first.tls_secret}")
        if tls is None or tls.tls is None:
            raise InputError(r.where(["ingress", "manifests"]), f"Ingress {first.namespace}/{first.name}'s TLS Secret "
                             f"{first.namespace}/{first.tls_secret} (host {host}) holds no certificate here",
                             "add the Secret manifest to ingress.manifests, or list it under ingress.secrets with "
                             "tls:")
        if host == home:
            hop = dataclasses.replace(hop, server_cert=tls.tls)
    return hop


def _gateway_api_manifests(spec: IngressSpec, topology: Topology, base: Path, r: _Resolver) -> Topology:
    """``topology`` with YOUR Gateway API resources (``ingress.gateway_api_manifests``), standing for its Ingresses,
    Secrets and cert set as loaded."""
    if not spec.gateway_api_manifests:
        return topology
    if topology.ingress.gateway_api is None:
        raise InputError(r.where(["ingress", "gateway_api_manifests"]), "ingress.gateway_api_manifests is for "
                         "controller: gateway-api", "write controller: gateway-api, or remove them")
    paths = [(_rel(base, m), f"ingress.gateway_api_manifests[{i}]")
             for i, m in enumerate(spec.gateway_api_manifests)]
    return topology.with_gateway_api_manifests(read_gateway_api(paths), ", ".join(str(p) for p, _ in paths))


def _gateway_api(spec: IngressSpec, r: _Resolver) -> str | None:
    """The Gateway API implementation serving the ingress hop, or None for ingress-nginx."""
    if spec.controller == "ingress-nginx":
        if spec.implementation is not None:
            raise InputError(r.where(["ingress", "implementation"]), f"ingress.implementation {spec.implementation!r} "
                             "is for controller: gateway-api", "remove it, or write controller: gateway-api")
        return None
    if spec.enable_ssl_passthrough:
        raise InputError(r.where(["ingress", "enable_ssl_passthrough"]), "enable_ssl_passthrough is an ingress-nginx "
                         "flag; a Gateway API twin of a passthrough chain needs a TLS listener and a TLSRoute, which "
                         "are not modelled", "remove it, or keep controller: ingress-nginx")
    return spec.implementation or "envoy-gateway"


def _policy_identity(facts: PolicyFacts, mat: CertMaterial, policy: Path) -> str | None:
    """The identity the policy's ``authentication-certificate`` names (certificate-id, or thumbprint: SHA-1 of the
    certificate, as APIM shows it), with the policy file in the error."""
    have = ", ".join(mat.identities) or "none"
    if facts.authentication_certificate is not None:
        if facts.authentication_certificate not in mat.identities:
            raise InputError(policy, f"authentication-certificate certificate-id={facts.authentication_certificate!r}"
                             f" is not an identity of the chain file (have: {have})",
                             "certificate-id must equal a name under certificates.identities: rename one of them")
        return facts.authentication_certificate
    if facts.authentication_thumbprint is not None:
        for name, ident in mat.identities.items():
            if ident.chain[0].fingerprint(hashes.SHA1()).hex().upper() == facts.authentication_thumbprint:  # noqa: S303
                return name
        raise InputError(policy, f"authentication-certificate thumbprint={facts.authentication_thumbprint} matches no "
                         f"identity's certificate (have: {have})",
                         "add the certificate under certificates.identities, or fix the thumbprint (SHA-1, hex)")
    return None


_ANNOTATION_ERROR = re.compile(r"^Ingress (?P<ref>[^\s:]+/[^\s:]+): annotation \S*?(?P<key>[\w.-]+)=")


def _at_manifest(exc: UsageError, man: Manifests, fallback: str) -> InputError:
    """``exc`` (a renderer's "Ingress ns/name: annotation …" line) located at the manifest's file:line."""
    message = str(exc)
    found = _ANNOTATION_ERROR.match(message)
    where = (man.source_of(found["ref"], found["key"].removeprefix(ANNOTATION_PREFIX)) if found else None) or fallback
    problem, _, fix = message.partition(" — ")
    return InputError(where, problem, fix or "fix the value")


def _dry_render(topology: Topology, certs: CertSet, man: Manifests, fallback: str) -> None:
    """Render every config ``up`` renders — the two Envoy stand-ins, nginx as ingress-nginx renders the Ingresses —
    into a throwaway folder, so what ``up`` refuses the load (and ``chain check``) refuses too, at the manifest's
    line. Nothing starts; the ports are placeholders."""
    local = "127.0.0.1"
    with tempfile.TemporaryDirectory(prefix="mtls-harness-check-") as tmp:
        work = Path(tmp)
        try:
            hops: tuple[EnvoyHop, ...] = ("gateway", "apim")
            for i, hop in enumerate(hops):
                render_envoy(topology, hop, certs, listen=(local, 10 + i), upstream=(local, 20 + i),
                             admin=(local, 30 + i), workdir=work / hop,
                             jwks={"keys": []} if hop == "apim" and topology.apim.oauth else None)
            render_nginx(topology, certs, listen=(local, 40), pod=(local, 41), workdir=work / "ingress",
                         passthrough=Passthrough(None, 42) if uses_passthrough(topology) else None)
        except InputError:
            raise
        except UsageError as exc:
            raise _at_manifest(exc, man, fallback) from None


def _build(path: Path, text: str, doc: ChainFile) -> LoadedChain:
    base = path.parent
    warnings: list[str] = []
    man = read_manifests([(_rel(base, m), f"ingress.manifests[{i}]") for i, m in enumerate(doc.ingress.manifests)])
    warnings += man.warnings
    mat = read_certificates(doc.certificates, base)
    r = _Resolver(path, text, mat)
    from_manifests = _secrets(man.secrets, mat, warnings)
    refs = []
    for ref, entry in doc.ingress.secrets.items():
        ns, _, name = ref.rpartition("/")
        loc = ["ingress", "secrets", ref]
        tls = r.identity(entry.tls, [*loc, "tls"])
        trusts = tuple(r.check_trust(t, [*loc, "ca", i]) for i, t in enumerate(entry.ca))
        refs.append((name, ns or "default", tls, trusts))
    if doc.apim.policy is not None:
        facts = read_policy(_rel(base, doc.apim.policy))
        warnings += facts.warnings
    else:
        facts = None
    auth_cert = _policy_identity(facts, mat, _rel(base, doc.apim.policy)) if facts and doc.apim.policy else None
    backend_cert = doc.apim.backend.client_certificate
    if auth_cert and backend_cert and auth_cert != backend_cert:
        raise InputError(r.where(["apim", "backend", "client_certificate"]),
                         f"apim.backend.client_certificate {backend_cert!r} differs from the policy's "
                         f"authentication-certificate {auth_cert!r}", "name the same identity in both, or drop one")
    apim_client = r.identity(backend_cert, ["apim", "backend", "client_certificate"]) or auth_cert

    chain_certs = build_chain_cert_set(mat)
    r.trust_cas = chain_certs.trust
    secrets = [K8sSecret(raw.name, raw.namespace, tls=tls, ca=tuple(c for t in trusts for c in r.trust_cas[t]),
                         malformed_ca=bad) for raw, tls, trusts, bad in from_manifests]
    secrets += [K8sSecret(name, ns, tls=tls, ca=tuple(c for t in trusts for c in r.trust_cas[t]))
                for name, ns, tls, trusts in refs]
    ingress = _ingress_hop(doc, man, secrets, r, warnings)

    gw = doc.gateway
    if len(gw.host_names) > 1:
        warnings.append(f"{r.where(['gateway', 'host_names'])}: gateway.host_names beyond the first are not modelled")
    if gw.client_auth.mode == "Strict" and not gw.client_auth.trusted_client_certificates:
        raise InputError(r.where(["gateway", "client_auth"]), "gateway.client_auth.mode Strict lists no "
                         "trusted_client_certificates", "name the trust list of the client CAs")
    bs = gw.backend_settings
    gateway = Gateway(
        listener=Listener(r.identity(gw.listener_certificate, ["gateway", "listener_certificate"]) or "",
                          gw.host_names[0], _GATEWAY_AUTH[gw.client_auth.mode],
                          r.ca(gw.client_auth.trusted_client_certificates,
                               ["gateway", "client_auth", "trusted_client_certificates"], warnings),
                          _tls(gw.ssl_policy.min_protocol_version), _tls(gw.ssl_policy.max_protocol_version),
                          ("h2", "http/1.1") if gw.enable_http2 else ("http/1.1",)),
        upstream=Upstream(bs.host_name, r.ca(bs.trusted_root_certificates,
                                             ["gateway", "backend_settings", "trusted_root_certificates"], warnings),
                          r.identity(bs.client_certificate, ["gateway", "backend_settings", "client_certificate"]),
                          bs.validate_cert_chain_and_expiry, bs.validate_sni, _tls(bs.min_protocol_version),
                          _tls(bs.max_protocol_version)),
        waf_block=tuple(gw.waf.block_patterns) if gw.waf.enabled else (),
    )
    cl = doc.client
    client = Upstream(cl.host_name or gw.host_names[0], r.ca(cl.trusted_root, ["client", "trusted_root"], warnings),
                      r.identity(cl.certificate, ["client", "certificate"]), cl.verify_chain, cl.verify_name,
                      _tls(cl.min_protocol_version), _tls(cl.max_protocol_version))
    ap = doc.apim
    be = ap.backend
    if facts is not None and facts.validate_client_certificate and not ap.negotiate_client_certificate:
        warnings.append(f"{r.where(['apim', 'negotiate_client_certificate'])}: the policy validates the client "
                        "certificate but negotiate_client_certificate is false: context.Request.Certificate is null "
                        "and APIM answers 401 to every request")
    if len(ap.host_names) > 1:
        warnings.append(f"{r.where(['apim', 'host_names'])}: apim.host_names beyond the first are not modelled")
    apim = Apim(
        listener=Listener(r.identity(ap.custom_domain_certificate, ["apim", "custom_domain_certificate"]) or "",
                          ap.host_names[0], "none", r.ca(ap.ca_certificates, ["apim", "ca_certificates"], warnings),
                          _tls(ap.min_protocol_version), _tls(ap.max_protocol_version),
                          ("h2", "http/1.1") if ap.enable_http2 else ("http/1.1",)),
        upstream=Upstream(urlsplit(be.url).hostname or "", r.ca(be.trusted_root, ["apim", "backend", "trusted_root"],
                                                                warnings),
                          apim_client, be.validate_certificate_chain, be.validate_certificate_name,
                          _tls(be.min_protocol_version), _tls(be.max_protocol_version)),
        negotiate_client_certificate=ap.negotiate_client_certificate,
        validate_client_certificate=bool(facts and facts.validate_client_certificate),
        oauth=facts.oauth if facts else None,
    )
    apim = dataclasses.replace(apim, apis=_apis(ap, ingress, r))
    pd = doc.pod
    pod = Pod(Listener(r.identity(pd.listener_certificate, ["pod", "listener_certificate"]) or "", pd.host,
                       pd.client_auth, r.ca(pd.client_ca, ["pod", "client_ca"], warnings),
                       _tls(pd.min_protocol_version), _tls(pd.max_protocol_version), tuple(pd.alpn)),
              pd.name, pd.namespace)
    topology = _gateway_api_manifests(doc.ingress, Topology(doc.name, chain_certs.certs.plan, client, gateway, apim,
                                                             ingress, pod), base, r)
    _dry_render(topology, chain_certs.certs, man, r.where(["ingress", "manifests"]))
    return LoadedChain(path, doc, topology, chain_certs.certs, chain_certs.mode, tuple(warnings), man)


def _apis(ap: Any, ingress: IngressHop, r: _Resolver) -> tuple[Api, ...]:
    """APIM's other APIs, each to an ingress host other than the home one (one line and exit 2 otherwise)."""
    out: list[Api] = []
    for i, spec in enumerate(ap.apis):
        where = r.where(["apim", "apis", i, "backend_url"])
        host = urlsplit(spec.backend_url).hostname or ""
        if host not in ingress.hosts:
            raise InputError(where, f"apim.apis[{i}] ({spec.name}) backend host {host} has no Ingress in "
                             f"ingress.manifests (hosts: {', '.join(ingress.hosts)})",
                             "add the Ingress of that host to the manifests, or fix the URL")
        if host == ingress.hosts[0]:
            raise InputError(where, f"apim.apis[{i}] ({spec.name}) backend host {host} is the home host, which "
                             "apim.backend already reaches", "give this API the backend of another host")
        for j, other in enumerate(ap.apis[:i]):
            if other.name == spec.name or other.path.rstrip("/") == spec.path.rstrip("/") or \
                    urlsplit(other.backend_url).hostname == host:
                raise InputError(r.where(["apim", "apis", i]), f"apim.apis[{i}] repeats the name, path or backend "
                                 f"host of apim.apis[{j}] ({other.name})", "give each API its own name, path and host")
        out.append(Api(spec.name, spec.path, host, spec.validate_certificate_chain, spec.validate_certificate_name))
    return tuple(out)


def _rel(base: Path, value: str) -> Path:
    p = Path(os.path.expandvars(value)).expanduser()
    return p if p.is_absolute() else base / p


def load_chain(path: Path | str) -> LoadedChain:
    """Load and resolve the chain file at ``path`` (one :class:`InputError` line for anything unusable)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist", "give the chain file's path (`mtls-harness init DIR` writes one)")
    if path.is_dir():
        if (path / "chain.yaml").is_file():
            path = path / "chain.yaml"
        else:
            raise InputError(path, "is a folder without chain.yaml", "give the chain file itself")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read ({exc})", "give a readable UTF-8 YAML file") from None
    return _build(path.resolve(), text, parse_chain_text(text, str(path)))
