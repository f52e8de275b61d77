"""What the ingress-nginx controller makes of the Ingress objects and Secrets, before any nginx text is written.

This module is the controller half of :mod:`harness.render.nginx`: it reads the annotations the way the controller's
annotation parsers do (``internal/ingress/annotations/authtls``, ``proxyssl``, ``backendprotocol``,
``sslpassthrough``), stores the referenced Secrets the way its secret store does (``internal/ingress/controller/store/
backend_ssl.go`` + ``internal/net/ssl/ssl.go``), and merges several Ingresses on one host into one server the way
``controller.go`` does. The result is a :class:`ServerPlan` per host, which the template half turns into text.

The behaviours worth knowing (each cited in docs/ingress-nginx-fidelity.md):

- an annotation that fails the controller's *validator* makes the controller drop the whole Ingress (the admission
  webhook refuses it): here that is an :class:`~harness.errors.UsageError`;
- ``auth-tls-verify-client`` / ``auth-tls-verify-depth`` with a bad value silently fall back to ``on`` / ``1``;
- a problem with the ``auth-tls-secret`` (bad ``ns/name``, another namespace, missing, unusable ``ca.crt``) fails the
  *host* closed: ``return 403``; a Secret with ``tls.crt``/``tls.key`` but no ``ca.crt`` silently disables mTLS;
- a problem with the ``proxy-ssl-secret`` denies the *location* (``return 503``); a Secret without ``ca.crt`` renders
  no ``proxy_ssl_verify`` at all (ingress-nginx #4503), and no ``proxy_ssl_certificate`` either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness.errors import UsageError
from harness.model.controller import parse_go_bool
from harness.model.topology import ANNOTATION_PREFIX, Ingress, IngressHop, K8sSecret
from harness.pki.certset import CertSet
from harness.render.nginx_admission import admission_refusal, re2_error

__all__ = [
    "MALFORMED_CA_PEM",
    "AuthTLS",
    "LocationPlan",
    "ProxySSL",
    "SecretFiles",
    "ServerPlan",
    "plan_servers",
    "wants_passthrough",
]


# -- validators, as internal/ingress/annotations/parser/validators.go defines them ----------------------------------
_ALNUM = r"\-\.\_\~a-zA-Z0-9\/:"
_BASIC_CHARS = re.compile(rf"^[/{_ALNUM}]*$")
_MALICIOUS = re.compile(r"\r|\n")
_VERIFY_CLIENT = re.compile(r"^(on|off|optional|optional_no_ca)$")
_REDIRECT = re.compile(r"^(@[A-Za-z0-9_-]+|((https?://)?[A-Za-z0-9\-.]+(:\d+)?)?(/[A-Za-z0-9\-_.]+)*/?)$")
_IS_VALID_REGEX = re.compile("^[/" + _ALNUM + re.escape(r"^$[](){}*+?|&=\\") + "]*$")
_ON_OFF = re.compile(r"^(on|off)$")
_PROTOCOLS = re.compile(r"^(TLSv1\.2|TLSv1\.3| )*$")
_CIPHERS = re.compile(r"^[A-Za-z0-9\+:\_\-!]*$")
_INT = re.compile(r"^[+-]?\d+$")
_BACKEND_PROTOCOLS = ("auto_http", "http", "https", "grpc", "grpcs", "fcgi")


def _regex_validator(regex: re.Pattern[str]) -> Callable[[str], bool]:
    def check(value: str) -> bool:  # ValidateRegex(regex, removeSpace=true)
        squeezed = value.replace(" ", "")
        return bool(regex.match(squeezed)) and not _MALICIOUS.search(squeezed)

    return check


def _match_cn_valid(value: str) -> bool:  # CommonNameAnnotationValidator: Go regexp, i.e. RE2 syntax
    return value.startswith("CN=") and re2_error(value[3:]) is None


def _server_name_valid(value: str) -> bool:  # ValidateServerName
    return bool(_IS_VALID_REGEX.match(value.strip()))


class _Annotations:
    """One Ingress's annotations read the way ``parser.GetStringAnnotation`` & co read them."""

    def __init__(self, ing: Ingress) -> None:
        self.ing = ing

    def raw(self, name: str) -> str | None:
        value = self.ing.annotation(name)
        return None if value is None or value == "" else value

    def string(self, name: str, valid: Callable[[str], bool]) -> tuple[str | None, bool]:
        """(normalized value or None when absent/empty, passed the validator)."""
        value = self.raw(name)
        if value is None:
            return None, True
        ok = valid(value)
        normalized = "\n".join(line.strip() for line in value.split("\n"))
        return (normalized or None), ok

    def reject(self, name: str, value: str, why: str) -> UsageError:
        return UsageError(
            f"Ingress {self.ing.namespace}/{self.ing.name}: annotation {ANNOTATION_PREFIX}{name}={value!r} {why}; "
            "ingress-nginx's validator refuses it, so the admission webhook rejects the Ingress and the controller "
            "would not serve it — fix the value"
        )


# -- what the secret store keeps ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SecretFiles:
    """The files ingress-nginx's secret store writes for one Secret (``ingress.SSLCert`` in the controller).

    ``pem_file``: ``<ns>-<name>.pem`` with tls.crt + tls.key + ca.crt, written only when the Secret has a ``ca.crt``;
    ``ca_file``: that same file, or ``ca-<ns>-<name>.pem`` for a CA-only Secret; ``crl_file``: ``crl-<ns>-<name>.pem``.
    ``tls`` is the certificate+key the dynamic-certificate Lua code serves for a host (the controller keeps it in
    memory; :meth:`_SecretStore.host_cert` writes it to a file only for a host that serves it).
    """

    ref: str
    pem_file: Path | None = None
    ca_file: Path | None = None
    crl_file: Path | None = None
    tls: tuple[bytes, bytes] | None = field(default=None, repr=False)  # (tls.crt, tls.key) as validated


class _SecretError(Exception):
    """The controller could not sync the Secret (its message is what the controller logs)."""


Writer = Callable[[Path, bytes, int], None]


#: the ``ca.crt`` of a Secret with ``malformed_ca``: PEM armour around bytes that are not a certificate
MALFORMED_CA_PEM: Final = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


class _SecretStore:
    """Emulates ``store.syncSecret`` → ``getPemCertificate``: validates and writes the Secret's files once."""

    def __init__(self, hop: IngressHop, certs: CertSet, ssl_dir: Path, write: Writer) -> None:
        self.hop, self.certs, self.ssl_dir, self.write = hop, certs, ssl_dir, write
        self._done: dict[str, SecretFiles | _SecretError] = {}

    def get(self, ref: str) -> SecretFiles:
        if ref not in self._done:
            try:
                self._done[ref] = self._sync(ref)
            except _SecretError as exc:
                self._done[ref] = exc
        result = self._done[ref]
        if isinstance(result, _SecretError):
            raise result
        return result

    def host_cert(self, ref: str) -> Path | None:
        """The PEM (tls.crt + tls.key) a host serves from its Ingress TLS Secret; None when it has no usable one."""
        try:
            files = self.get(ref)
        except _SecretError:
            return None
        if files.tls is None:
            return None
        path = self.ssl_dir / f"tls-{ref.replace('/', '-')}.pem"
        self.write(path, _join(*files.tls), 0o600)
        return path

    def _find(self, ref: str) -> K8sSecret:
        ns, _, name = ref.partition("/")
        for s in self.hop.secrets:
            if s.namespace == ns and s.name == name:
                return s
        raise _SecretError(f'secret "{ref}" not found in local store')

    def _sync(self, ref: str) -> SecretFiles:
        secret = self._find(ref)  # a deleted (missing) Secret is never kept: store.go 684 removes it
        try:
            return self._sync_secret(ref, secret)
        except _SecretError:
            if secret.last_good is None:
                raise
            # store/backend_ssl.go 38-50: an UPDATE that cannot be stored returns before sslStore.Update, so the
            # controller keeps the last good version (its PEM file, CA and SHA)
            return self._sync_secret(ref, secret.last_good)

    def _sync_secret(self, ref: str, secret: K8sSecret) -> SecretFiles:
        base = ref.replace("/", "-")  # namespace/secretName -> namespace-secretName
        tls: tuple[bytes, bytes] | None = None
        if secret.tls is not None:
            leaf = self.certs.leaf(secret.tls)
            tls = (leaf.chain.read_bytes(), leaf.key.read_bytes())
            _check_keypair(ref, *tls)
        ca: bytes | None = None
        if secret.malformed_ca:
            ca = MALFORMED_CA_PEM
        elif secret.ca:
            ca = self.certs.trust_bundle(*secret.ca).read_bytes()
        crl = self.certs.crl_chain(secret.crl) if secret.crl and ca is not None else None

        if tls is not None:
            if ca is None:  # a plain TLS Secret: no file on disk, no CA, no client cert for proxy-ssl
                return SecretFiles(ref, tls=tls)
            _check_ca(ref, ca)
            pem = self.ssl_dir / f"{base}.pem"
            self.write(pem, _join(*tls, ca), 0o600)
            return SecretFiles(ref, pem_file=pem, ca_file=pem, crl_file=self._crl(ref, base, crl), tls=tls)
        if ca is not None:
            _check_ca(ref, ca)
            ca_file = self.ssl_dir / f"ca-{base}.pem"
            self.write(ca_file, ca, 0o644)
            return SecretFiles(ref, ca_file=ca_file, crl_file=self._crl(ref, base, crl))
        raise _SecretError(f'secret "{ref}" contains no keypair or CA certificate')

    def _crl(self, ref: str, base: str, crl: bytes | None) -> Path | None:
        if crl is None:
            return None
        try:
            x509.load_pem_x509_crl(crl)
        except ValueError as exc:
            raise _SecretError(f"CRL of secret {ref!r} is not a PEM X509 CRL: {exc}") from None
        path = self.ssl_dir / f"crl-{base}.pem"
        self.write(path, crl, 0o644)
        return path


def _join(*parts: bytes) -> bytes:
    return b"\n".join(p if p.endswith(b"\n") else p + b"\n" for p in parts)


def _check_ca(ref: str, ca: bytes) -> None:  # ssl.CheckCACert
    try:
        if not x509.load_pem_x509_certificates(ca):
            raise ValueError("no certificate")
    except ValueError:
        raise _SecretError(f"parsing CA certificate of secret {ref!r}: error decoding CA certificate/s") from None


def _check_keypair(ref: str, chain: bytes, key: bytes) -> None:  # ssl.CreateSSLCert → tls.X509KeyPair
    if _keypair_ok(chain, key):
        return
    try:
        cert = x509.load_pem_x509_certificates(chain)[0]
        # the controller compares the public keys (tls.X509KeyPair); OpenSSL's full RSA check (primality) is not it
        private = serialization.load_pem_private_key(key, password=None, unsafe_skip_rsa_key_validation=True)
    except ValueError:
        raise _SecretError(f"secret {ref!r}: tls.crt or tls.key is not PEM") from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != private.public_key().public_bytes(*fmt):
        raise _SecretError(f"secret {ref!r}: certificate and private key does not have a matching public key")
    _KEYPAIRS_OK.add(hashlib.sha256(chain + b"\0" + key).digest())


#: key pairs already found to match (by digest of the PEM bytes): a chain with many lanes checks the same Secret's
#: pair once, not once per lane (a private key's parse is ~2 ms)
_KEYPAIRS_OK: set[bytes] = set()


def _keypair_ok(chain: bytes, key: bytes) -> bool:
    return hashlib.sha256(chain + b"\0" + key).digest() in _KEYPAIRS_OK


# -- parsed annotations -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuthTLS:
    """authtls.Config: what ``auth-tls-*`` render into the server block."""

    secret: str
    ca_file: Path | None
    crl_file: Path | None
    verify_client: str = "on"
    verify_depth: int = 1
    error_page: str = ""
    pass_certificate: bool = False
    match_cn: str = ""


@dataclass(frozen=True)
class ProxySSL:
    """proxyssl.Config: what ``proxy-ssl-*`` render into the server and location blocks."""

    secret: str
    ca_file: Path | None
    pem_file: Path | None
    ciphers: str = "DEFAULT"
    protocols: str = "TLSv1.2"
    name: str = ""
    verify: str = "off"
    verify_depth: int = 1
    server_name: str = "off"


@dataclass(frozen=True)
class LocationPlan:
    path: str
    namespace: str
    ingress: str
    service: str
    service_port: int
    backend_protocol: str  # upper-case, as buildProxyPass switches on it
    proxy_ssl: ProxySSL | None
    denied: str | None  # the first LocationDenied reason: the location answers 503
    exact: bool = False  # ``location = <path>`` (pathType Exact, or the exact half of a Prefix path)
    default_backend: bool = False  # the host's ``/`` placeholder: the controller's default backend (404)

    @property
    def upstream_name(self) -> str:  # controller/util.go upstreamName
        return f"{self.namespace}-{self.service}-{self.service_port}"


@dataclass
class ServerPlan:
    host: str
    tls_pem: Path | None = None  # None: the controller serves its default (fake) certificate
    auth: AuthTLS | None = None
    auth_error: str = ""  # non-empty: the host fails closed (return 403)
    proxy_ssl: ProxySSL | None = None
    passthrough: bool = False
    #: ssl-passthrough annotated but the controller flag is off: the root upstream is still marked SSLPassthrough,
    #: so its locations proxy with https:// (controller.go 978-992, template.go 752-760)
    passthrough_upstream_https: bool = False
    cert_covers_host: bool = True  # False: the Secret's cert does not cover the host (the fake cert is served)
    locations: list[LocationPlan] = field(default_factory=list)


class _Denied(Exception):
    """ing_errors.LocationDenied."""


def _parse_ns_name(value: str) -> tuple[str, str]:  # k8s.ParseNameNS
    parts = value.split("/")
    if len(parts) != 2:
        raise _Denied(f"invalid format (namespace/name) found in '{value}'")
    return parts[0], parts[1]


def _parse_auth_tls(ing: Ingress, store: _SecretStore, allow_cross_ns: bool) -> AuthTLS | None:
    a = _Annotations(ing)
    ref, ok = a.string("auth-tls-secret", _regex_validator(_BASIC_CHARS))
    if not ok:
        raise a.reject("auth-tls-secret", str(a.raw("auth-tls-secret")), "is not a namespace/name")
    if ref is None:
        return None
    ns, _ = _parse_ns_name(ref)
    if not allow_cross_ns and (ns or ing.namespace) != ing.namespace:
        raise _Denied("cross namespace secrets are not supported")
    try:
        files = store.get(ref)
    except _SecretError as exc:
        raise _Denied(f"error obtaining certificate: {exc}") from None

    verify, ok = a.string("auth-tls-verify-client", _regex_validator(_VERIFY_CLIENT))
    verify = verify if ok and verify and _VERIFY_CLIENT.match(verify) else "on"
    depth_raw = a.raw("auth-tls-verify-depth")
    depth = int(depth_raw) if depth_raw is not None and _INT.match(depth_raw) else 0
    if depth < 0:
        raise a.reject("auth-tls-verify-depth", str(depth_raw), "is negative (nginx refuses ssl_verify_depth < 0)")
    error_page, ok = a.string("auth-tls-error-page", _regex_validator(_REDIRECT))
    if not ok:
        raise a.reject("auth-tls-error-page", str(a.raw("auth-tls-error-page")), "is not a URL or @location")
    pass_raw = a.raw("auth-tls-pass-certificate-to-upstream")
    if pass_raw is not None and parse_go_bool(pass_raw) is None:
        raise a.reject("auth-tls-pass-certificate-to-upstream", pass_raw, "is not a boolean")
    match_cn, ok = a.string("auth-tls-match-cn", _match_cn_valid)
    if not ok:
        raise a.reject("auth-tls-match-cn", str(a.raw("auth-tls-match-cn")), "must start with CN= and be a regex")
    return AuthTLS(
        secret=ref,
        ca_file=files.ca_file,
        crl_file=files.crl_file if files.ca_file else None,
        verify_client=verify,
        verify_depth=depth or 1,
        error_page=error_page or "",
        pass_certificate=bool(parse_go_bool(pass_raw or "false")),
        match_cn=match_cn or "",
    )


def _parse_proxy_ssl(ing: Ingress, store: _SecretStore, allow_cross_ns: bool) -> ProxySSL | None:
    a = _Annotations(ing)
    ref, ok = a.string("proxy-ssl-secret", _regex_validator(_BASIC_CHARS))
    if not ok:
        raise a.reject("proxy-ssl-secret", str(a.raw("proxy-ssl-secret")), "is not a namespace/name")
    if ref is None:
        return None
    ns, _ = _parse_ns_name(ref)
    if not allow_cross_ns and ns != ing.namespace:  # no defaulting of an empty namespace here (unlike auth-tls)
        raise _Denied("cross namespace secrets are not supported")
    try:
        files = store.get(ref)
    except _SecretError as exc:
        raise _Denied(f"error obtaining certificate: {exc}") from None

    def pick(name: str, regex: re.Pattern[str] | Callable[[str], bool], default: str) -> str:
        check = regex if callable(regex) else _regex_validator(regex)
        value, ok = a.string(name, check)
        return value if ok and value else default

    protocols = pick("proxy-ssl-protocols", _PROTOCOLS, "")
    protocols = " ".join(sorted(p for p in protocols.split(" ") if p.strip())) or "TLSv1.2"  # sortProtocols
    depth_raw = a.raw("proxy-ssl-verify-depth")
    depth = int(depth_raw) if depth_raw is not None and _INT.match(depth_raw) else 0
    if depth < 0:
        raise a.reject("proxy-ssl-verify-depth", str(depth_raw), "is negative (nginx refuses it)")
    verify = pick("proxy-ssl-verify", _ON_OFF, "off")
    server_name = pick("proxy-ssl-server-name", _ON_OFF, "off")
    return ProxySSL(
        secret=ref,
        ca_file=files.ca_file,
        pem_file=files.pem_file,
        ciphers=pick("proxy-ssl-ciphers", _CIPHERS, "DEFAULT"),
        protocols=protocols,
        name=pick("proxy-ssl-name", _server_name_valid, ""),
        verify=verify if _ON_OFF.match(verify) else "off",
        verify_depth=depth or 1,
        server_name=server_name if _ON_OFF.match(server_name) else "off",
    )


def _backend_protocol(ing: Ingress) -> str:
    value = _Annotations(ing).raw("backend-protocol")
    if value is None or value.strip().lower() not in _BACKEND_PROTOCOLS:
        return "HTTP"  # a bad value is logged and HTTP is used
    return value.strip().upper()


def wants_passthrough(ing: Ingress) -> bool:
    a = _Annotations(ing)
    value = a.raw("ssl-passthrough")
    if value is None:
        return False
    on = parse_go_bool(value)
    if on is None:
        raise a.reject("ssl-passthrough", value, "is not a Go boolean (strconv.ParseBool: true, True, 1, …)")
    return on


def _covers(pem: bytes, host: str) -> bool:
    """Go's ``x509.Certificate.VerifyHostname`` as the controller applies it (controller.go 1465-1495,
    certificate.go 34-65): a DNS SAN equal to the host or a ``*.`` wildcard for exactly one label, case-insensitive;
    the CN only when the certificate has no DNS SAN."""
    cert = x509.load_pem_x509_certificates(pem)[0]
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    host = host.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in names):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _locations(ing: Ingress, template: LocationPlan) -> list[LocationPlan]:
    """controller.go + location.go 34-100 (updateServerLocations): a Prefix path other than ``/`` becomes
    ``location = /p`` plus ``location /p/``, so ``/px`` does not match it (e2e pathtype_prefix.go 35-70)."""
    if ing.path_type == "Exact":
        return [dataclasses.replace(template, exact=True)]
    if ing.path_type != "Prefix" or ing.path == "/":
        return [template]
    base = ing.path.rstrip("/")
    return [dataclasses.replace(template, path=base, exact=True), dataclasses.replace(template, path=base + "/")]


def plan_servers(
    hop: IngressHop, certs: CertSet, ssl_dir: Path, write: Writer, *, allow_cross_namespace: bool = False
) -> list[ServerPlan]:
    """One :class:`ServerPlan` per host, the Ingresses taken in the controller's order
    (:meth:`~harness.model.topology.IngressHop.in_controller_order`); Secrets' files are written via ``write``.

    Raises :class:`UsageError` with one line for an Ingress the admission webhook refuses.
    """
    for ing in hop.ingresses:
        refusal = admission_refusal(ing, hop.controller)
        if refusal is not None:
            raise UsageError(refusal + "; the admission webhook refuses the Ingress")
    store = _SecretStore(hop, certs, ssl_dir, write)
    servers: dict[str, ServerPlan] = {}
    cert_decided: set[str] = set()
    for ing in hop.in_controller_order():
        server = servers.setdefault(ing.host, ServerPlan(host=ing.host))
        denied: str | None = None
        try:
            auth = _parse_auth_tls(ing, store, allow_cross_namespace)
        except _Denied as exc:
            auth, denied = None, str(exc)
            server.auth_error = server.auth_error or denied  # annotations.go: CertificateAuth → AuthTLSError
        try:
            proxy_ssl = _parse_proxy_ssl(ing, store, allow_cross_namespace)
        except _Denied as exc:
            proxy_ssl, denied = None, denied or str(exc)
        # controller.go: each Ingress overwrites the host's auth-tls / proxy-ssl until one brings a CA file
        if server.auth is None or server.auth.ca_file is None:
            server.auth = auth
        if server.proxy_ssl is None or server.proxy_ssl.ca_file is None:
            server.proxy_ssl = proxy_ssl
        if ing.host not in cert_decided and ing.tls_secret:
            # controller.go 1448-1495: the oldest Ingress with a TLS section decides; a Secret that is unusable or
            # whose cert does not cover the host gives the fake certificate, and later Ingresses are not tried
            cert_decided.add(ing.host)
            pem = store.host_cert(f"{ing.namespace}/{ing.tls_secret}")
            server.cert_covers_host = pem is not None and _covers(pem.read_bytes(), ing.host)
            server.tls_pem = pem if server.cert_covers_host else None
        if wants_passthrough(ing):  # controller.go 1384-1392, 1434-1436: any Ingress of the host turns it on
            server.passthrough = hop.controller.enable_ssl_passthrough
            server.passthrough_upstream_https = True
        template = LocationPlan(path=ing.path, namespace=ing.namespace, ingress=ing.name, service=ing.service,
                                service_port=ing.service_port, backend_protocol=_backend_protocol(ing),
                                proxy_ssl=proxy_ssl, denied=denied)
        for loc in _locations(ing, template):
            if any(have.path == loc.path and have.exact == loc.exact for have in server.locations):
                continue  # the first Ingress to claim a path (and type) on a host keeps it: controller.go 816-852
            server.locations.append(loc)
    for server in servers.values():
        if not any(loc.path == "/" and not loc.exact for loc in server.locations):
            # createServers (controller.go 1374-1381): every host has a root location, the default backend's
            server.locations.append(LocationPlan(path="/", namespace="", ingress="", service="", service_port=0,
                                                 backend_protocol="HTTP", proxy_ssl=None, denied=None,
                                                 default_backend=True))
            server.passthrough = False  # controller.go 666-682: the passthrough backend is the `/` location's
    return list(servers.values())
