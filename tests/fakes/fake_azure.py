"""A faithful local fake of the Azure Resource Manager, Key Vault and Kubernetes REST endpoints the azure target
reads — HTTPS servers on 127.0.0.1 speaking the real wire format, for the REAL SDK clients pointed at them.

- ARM (one server): App Gateway, APIM (service, paged backends with an absolute ``nextLink``, certificates, APIs,
  ``rawxml`` policies, 404 ``ResourceNotFound`` for an API without a policy), AKS; ``api-version`` is required
  (400 ``MissingApiVersionParameter`` otherwise), a Bearer token is required (401 ``AuthenticationFailed``), an
  unknown resource answers 404 ``ResourceNotFound`` with ARM's message. Two LROs: App Gateway ``backendhealth``
  and AKS ``runCommand`` (202 + ``Location`` + ``Retry-After: 0``, then GET the operation).
- Key Vault (another server): the 401 challenge with ``WWW-Authenticate: Bearer authorization=…, resource=…`` on a
  request without a token, then certificates, versions (paged, one per page) and policies.
- Kubernetes (a third server): IngressList, Secrets, 404 ``Status``.
- The served ingress cert: a TLS server answering handshakes with the cert the "cluster" really serves.

Every request is recorded (method, path, whether it carried a token), so a test can assert what reached the fake.
Resource bodies come from tests/fakes/azure_fixtures/ (JSON shaped like real responses) with ``${NAME}``
placeholders for names, certificates and dates, which :func:`bad_environment` / :func:`good_environment` fill.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import re
import socket
import ssl
import string
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from harness.pki.x509 import Signed, cert_pem, issue_ca, issue_leaf, key_pem

FIXTURES = Path(__file__).with_name("azure_fixtures")
SUB = "2f7c5a1e-8d4b-4c1a-9e3f-6b0d2a7c9e11"
TENANT = "72f988bf-0000-4000-8000-00000000c0de"
RG = "rg-chain"
NAMES = {"AGW": "agw-chain", "APIM": "apim-chain", "AKS": "aks-chain", "KV": "kv-chain"}
TOKEN = "fake-arm-token-" + uuid.uuid4().hex  # what StaticCredential hands out; asserted never to be logged
KUBE_TOKEN = "fake-kube-token-" + uuid.uuid4().hex

#: the api-versions the SDK versions of pyproject's lower bounds send (the fake accepts any well-formed one, so a newer
#: SDK still runs here; the tests assert these for the pinned ones)
ARM_API = {"Microsoft.Network": "2026-03-01", "Microsoft.ApiManagement": "2024-05-01",
           "Microsoft.ContainerService": "2026-08-01"}


class StaticCredential:
    """A TokenCredential returning a fixed token (the real SDK policies call get_token on it)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(dt.datetime.now(dt.UTC).timestamp()) + 3600)


# ------------------------------------------------------------------------------------------------------------------
# the environment: certificates and resource bodies
# ------------------------------------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _thumb(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class KvCert:
    """One Key Vault certificate: its versions (oldest first) and its policy's lifetime action."""

    name: str
    versions: list[tuple[str, Signed]]  # (version id, cert + key)
    lifetime_percentage: int = 80
    action: str = "AutoRenew"
    issuer: str = "Self"  # the policy's issuer name: Self, a CA provider, or Unknown (Key Vault cannot renew it)


@dataclass
class Environment:
    variant: str
    now: dt.datetime
    arm: dict[str, Any]  # lower-cased resource path → resource body
    arm_lists: dict[str, list[Any]]  # lower-cased collection path → items
    apim_policies: dict[str, str]  # lower-cased policy path → rawxml
    kv: dict[str, KvCert]
    ingresses: dict[str, Any]
    secrets: dict[tuple[str, str], dict[str, Any]]
    served: Signed  # what the ingress serves on the wire
    certs: dict[str, Signed] = field(default_factory=dict)

    def days(self, n: float) -> dt.datetime:
        return self.now + dt.timedelta(days=n)


def _fill(name: str, values: dict[str, str]) -> Any:
    text = (FIXTURES / name).read_text()
    return json.loads(string.Template(text).substitute(values))


def _arm_base() -> str:
    return f"/subscriptions/{SUB}/resourcegroups/{RG}/providers".lower()


def build_environment(variant: str = "bad") -> Environment:
    """The "bad" environment of the tests, or its "good" twin (every posture check passes)."""
    good = variant == "good"
    now = dt.datetime.now(dt.UTC)

    def leaf(issuer: Signed, cn: str, usage: str, days: float, age: float = 30) -> Signed:
        return issue_leaf(issuer, cn, (cn,), (usage,), "ecdsa",  # type: ignore[arg-type]
                          not_before=now - dt.timedelta(days=age), not_after=now + dt.timedelta(days=days))

    public_root = issue_ca("Contoso Public Root CA", "ecdsa")
    apim_ca = issue_ca("Contoso APIM CA", "ecdsa")
    ingress_ca = issue_ca("Contoso AKS Ingress CA", "ecdsa")
    apim_client_ca = issue_ca("Contoso APIM Client CA", "ecdsa")
    consumer_ca = issue_ca("Contoso Consumer CA", "ecdsa")
    gw_days = 200 if good else 10  # the bad gateway cert expires in 10 days
    gw_old = leaf(public_root, "api.contoso.example", "server", gw_days - 300, age=400)  # the previous version
    gw_cert = leaf(public_root, "api.contoso.example", "server", gw_days)
    apim_cert = leaf(apim_ca, "apim.internal.contoso.example", "server", 300)
    apim_client = leaf(apim_client_ca, "apim-client", "client", 250)
    ingress_cert = leaf(ingress_ca, "echo.aks.contoso.example", "server", 180)
    pod_ca = issue_ca("Contoso Pod CA", "ecdsa")  # the ingress's proxy-ssl-secret: its client cert, the pods' CA
    ingress_to_pod = leaf(pod_ca, "ingress-nginx", "client", 200)
    stale_ingress = leaf(ingress_ca, "echo.aks.contoso.example", "server", 90)
    kv = {
        "gw-cert": KvCert("gw-cert", [("1f0e9c2d3b4a45869788a9b0c1d2e3f4", gw_old),
                                      ("8a7b6c5d4e3f40718293a4b5c6d7e8f9", gw_cert)]),
        "apim-cert": KvCert("apim-cert", [("0c1b2a3948574665a4b3c2d1e0f9a8b7", apim_cert)]),
        "apim-client": KvCert("apim-client", [("5e6f7a8b9c0d41e2f3a4b5c6d7e8f901", apim_client)],
                              lifetime_percentage=90, action="EmailContacts",
                              issuer="Self" if good else "Unknown"),  # bad: an external CA Key Vault cannot renew
    }
    gw_version = kv["gw-cert"].versions[-1][0]
    kv_host = f"https://{NAMES['KV']}.vault.azure.net"
    values = {
        **NAMES, "SUB": SUB, "RG": RG, "TENANT": TENANT, "NOW": _iso(now),
        "GW_SECRET_ID": f"{kv_host}/secrets/gw-cert" if good else f"{kv_host}/secrets/gw-cert/{gw_version}",
        "GW_CERT_P7": _b64(pkcs7.serialize_certificates([gw_cert.cert, public_root.cert],
                                                        serialization.Encoding.DER)),
        "APIM_ROOT_CER": _b64(_der(apim_ca.cert)),
        "CONSUMER_CA_CER": _b64(_der(consumer_ca.cert)),
        "APIM_CERT_EXPIRY": _iso(apim_cert.cert.not_valid_after_utc), "APIM_CERT_THUMB": _thumb(apim_cert.cert),
        "INGRESS_CA_EXPIRY": _iso(ingress_ca.cert.not_valid_after_utc), "INGRESS_CA_THUMB": _thumb(ingress_ca.cert),
        "APIM_CLIENT_EXPIRY": _iso(apim_client.cert.not_valid_after_utc),
        "APIM_CLIENT_THUMB": _thumb(apim_client.cert),
    }
    base = _arm_base()
    agw = _fill("appgw.json", values)
    apim = _fill("apim-service.json", values)
    aks = _fill("aks.json", values)
    backends = _fill("apim-backends.json", values)
    apis = _fill("apim-apis.json", values)
    certificates = _fill("apim-certificates.json", values)
    if not good:  # APIM's last fetch of apim-client from Key Vault failed: the old version stays in service
        certificates[0]["properties"]["keyVault"]["lastStatus"] = {
            "code": "Failed", "message": "Could not fetch the secret: the identity has no get permission",
            "timeStampUtc": values["NOW"]}
    if not good:
        # clients may use TLS 1.0 and 3DES while backends may not: the two sides must not collapse onto one key
        props = apim["properties"]["customProperties"]
        props["Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls10"] = "True"
        props["Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Ciphers.TripleDes168"] = "True"
        apis[1]["properties"]["serviceUrl"] = "http://status.aks.contoso.example/"  # a plaintext hop
        gw_id = agw["id"]
        agw["properties"]["frontendPorts"].append({"id": f"{gw_id}/frontendPorts/port-80", "name": "port-80",
                                                   "properties": {"port": 80}})
        agw["properties"]["httpListeners"].append({
            "id": f"{gw_id}/httpListeners/public-http", "name": "public-http",
            "properties": {"frontendIPConfiguration": {"id": f"{gw_id}/frontendIPConfigurations/public"},
                           "frontendPort": {"id": f"{gw_id}/frontendPorts/port-80"}, "protocol": "Http",
                           "hostNames": ["api.contoso.example"]}})
    if good:
        agw["properties"]["sslPolicy"] = {"policyType": "Predefined", "policyName": "AppGwSslPolicy20220101"}
        agw["properties"]["backendHttpSettingsCollection"] = [
            s for s in agw["properties"]["backendHttpSettingsCollection"] if s["properties"]["protocol"] == "Https"]
        apim["properties"]["virtualNetworkType"] = "Internal"
        for h in apim["properties"]["hostnameConfigurations"]:
            h["negotiateClientCertificate"] = True
        backends[0]["properties"]["tls"]["validateCertificateChain"] = True
        aks["properties"]["apiServerAccessProfile"] = {
            "enablePrivateCluster": True, "privateDNSZone": "system", "enablePrivateClusterPublicFQDN": False,
            "disableRunCommand": False}
        aks["properties"]["privateFQDN"] = f"{NAMES['AKS']}-dns-4f3a2b1c.privatelink.westeurope.azmk8s.io"
    apim_path = f"{base}/microsoft.apimanagement/service/{NAMES['APIM']}"
    arm = {
        f"{base}/microsoft.network/applicationgateways/{NAMES['AGW']}": agw,
        apim_path: apim,
        f"{base}/microsoft.containerservice/managedclusters/{NAMES['AKS']}": aks,
    }
    arm_lists = {
        f"{apim_path}/backends": backends,
        f"{apim_path}/certificates": certificates,
        f"{apim_path}/apis": apis,
    }
    policies = {
        f"{apim_path}/policies/policy": (FIXTURES / "apim-policy-global.xml").read_text(),
        f"{apim_path}/apis/echo/policies/policy": (FIXTURES / "apim-policy-echo.xml").read_text(),
    }
    secrets = {
        ("default", "ingress-tls"): {"type": "kubernetes.io/tls", "data": {
            "tls.crt": _b64(cert_pem(ingress_cert.cert, ingress_ca.cert)), "tls.key": _b64(key_pem(ingress_cert.key))}},
        ("default", "apim-client-ca"): {"type": "Opaque", "data": {"ca.crt": _b64(cert_pem(apim_client_ca.cert))}},
        ("default", "pod-tls-client"): {"type": "kubernetes.io/tls", "data": {
            "tls.crt": _b64(cert_pem(ingress_to_pod.cert)), "tls.key": _b64(key_pem(ingress_to_pod.key)),
            "ca.crt": _b64(cert_pem(pod_ca.cert))}},
    }
    ingresses = json.loads((FIXTURES / "ingresses.json").read_text())
    if not good:  # an app-routing NGINX with a public load balancer: the cluster is reachable around the chain
        ingresses["items"][-1]["status"]["loadBalancer"]["ingress"].append({"ip": "20.61.0.99"})
    return Environment(
        variant=variant, now=now, arm=arm, arm_lists=arm_lists, apim_policies=policies, kv=kv,
        ingresses=ingresses, secrets=secrets,
        served=ingress_cert if good else stale_ingress,
        certs={"ingress-ca": ingress_ca, "apim-ca": apim_ca, "apim-client": apim_client,
               "apim-client-ca": apim_client_ca, "ingress": ingress_cert, "gateway": gw_cert, "pod-ca": pod_ca,
               "ingress-to-pod": ingress_to_pod, "apim": apim_cert, "public-root": public_root,
               "consumer-ca": consumer_ca})


def bad_environment() -> Environment:
    return build_environment("bad")


def good_environment() -> Environment:
    return build_environment("good")


# ------------------------------------------------------------------------------------------------------------------
# the servers
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    service: str  # "arm", "vault", "kube"
    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        auth = self.headers.get("Authorization", "")
        token = fake.kube_token if self.server.service == "kube" else fake.token
        authorized = auth == f"Bearer {token}"
        with fake.lock:
            fake.seen.append(Seen(self.server.service, self.command, parts.path, query, authorized))
        try:
            getattr(fake, f"_{self.server.service}")(self, self.command, parts.path, query, authorized, body)
        except Exception as exc:  # a bug in the fake: answer 500 and let the test see it
            fake.errors.append(f"{self.command} {self.path}: {exc!r}")
            self._reply(500, {"error": {"code": "FakeError", "message": repr(exc)}})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeAzure, service: str, ctx: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self.service = service
        self.socket = ctx.wrap_socket(self.socket, server_side=True)


def _arm_error(handler: _Handler, status: int, code: str, message: str) -> None:
    handler._reply(status, {"error": {"code": code, "message": message}})


class FakeAzure:
    """``with FakeAzure(env) as fake:`` — ARM at ``fake.arm_url``, the vault at ``fake.vault_url``, the Kubernetes
    API at ``fake.kube_url``, the ingress's TLS at ``fake.ingress_port``; ``fake.ca_bundle`` verifies them all."""

    def __init__(self, env: Environment, tmp: Path) -> None:
        self.env = env
        self.tmp = tmp
        self.token = TOKEN
        self.kube_token = KUBE_TOKEN
        self.seen: list[Seen] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self._ops: dict[str, Any] = {}
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._ingress_sock: socket.socket | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def __enter__(self) -> FakeAzure:
        ca = trustme.CA()
        self.ca_bundle = self.tmp / "fake-azure-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        for service in ("arm", "vault", "kube"):
            server = _Server(self, service, ctx)
            self._servers.append(server)
            t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self._threads.append(t)
        self.arm_url, self.vault_url, self.kube_url = (f"https://127.0.0.1:{s.server_address[1]}"
                                                       for s in self._servers)
        self._start_ingress()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()
        if self._ingress_sock is not None:
            self._ingress_sock.close()
        for t in self._threads:
            t.join(timeout=5)

    def _start_ingress(self) -> None:
        served = self.env.served
        d = self.tmp / "served"
        d.mkdir(exist_ok=True)
        (d / "chain.pem").write_bytes(cert_pem(served.cert))
        (d / "key.pem").write_bytes(key_pem(served.key))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(d / "chain.pem", d / "key.pem")
        sock = socket.create_server(("127.0.0.1", 0))
        sock.settimeout(0.2)
        self._ingress_sock = sock
        self.ingress_port = sock.getsockname()[1]

        def serve() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                try:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.settimeout(2)
                        tls.recv(1)
                except OSError:
                    conn.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        self._threads.append(t)

    # -- what was seen -------------------------------------------------------------------------------------------
    def methods(self) -> set[str]:
        return {s.method for s in self.seen}

    def requests(self, service: str | None = None) -> list[Seen]:
        return [s for s in self.seen if service is None or s.service == service]

    # -- ARM ------------------------------------------------------------------------------------------------------
    def _arm(self, h: _Handler, method: str, path: str, query: dict[str, list[str]], authorized: bool,
             body: bytes) -> None:
        if not authorized:
            h._reply(401, {"error": {"code": "AuthenticationFailed",
                                     "message": "Authentication failed. The 'Authorization' header is missing."}},
                     {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                                         'error="invalid_token", error_description="The authentication failed"'})
            return
        if "api-version" not in query:
            _arm_error(h, 400, "MissingApiVersionParameter",
                       "The api-version query parameter (?api-version=) is required for all requests.")
            return
        key = path.lower().rstrip("/")
        m = re.match(r"/subscriptions/[^/]+/resourcegroups/[^/]+/providers/([^/]+)/", key)
        provider = next((p for p in ARM_API if m and m.group(1) == p.lower()), None)
        if key.startswith("/operations/"):
            op = self._ops.get(key)
            if op is None:
                _arm_error(h, 404, "NotFound", "operation not found")
            else:
                h._reply(200, op)
            return
        version = query["api-version"][0]
        if provider is None or not re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", version):
            _arm_error(h, 400, "InvalidApiVersionParameter", f"The api-version '{version}' is invalid. The "
                       "supported versions are 'YYYY-MM-DD'.")
            return
        if method == "POST":
            self._arm_post(h, key, body)
            return
        if method != "GET":
            _arm_error(h, 405, "MethodNotAllowed", f"{method} is not served by the fake")
            return
        if key in self.env.arm:
            h._reply(200, self.env.arm[key])
        elif key in self.env.arm_lists:
            self._page(h, key, query, self.env.arm_lists[key])
        elif key in self.env.apim_policies:
            if query.get("format", ["xml"])[0] != "rawxml":
                _arm_error(h, 400, "ValidationError", "this fake serves policies as rawxml only")
                return
            h._reply(200, {"id": path, "type": "Microsoft.ApiManagement/service/policies", "name": "policy",
                           "properties": {"format": "rawxml", "value": self.env.apim_policies[key]}})
        elif key.endswith("/policies/policy") and "/microsoft.apimanagement/" in key:
            _arm_error(h, 404, "ResourceNotFound", "Policy configuration does not exist.")
        else:
            rtype, name = "/".join(key.split("/providers/", 1)[-1].split("/")[:2]), key.rsplit("/", 1)[-1]
            _arm_error(h, 404, "ResourceNotFound",
                       f"The Resource '{rtype}/{name}' under resource group '{RG}' was not found. For more details "
                       "please go to https://aka.ms/ARMResourceNotFoundFix")

    def _page(self, h: _Handler, key: str, query: dict[str, list[str]], items: list[Any]) -> None:
        """One item per page, with an absolute nextLink (ARM's $skiptoken style)."""
        skip = int(query.get("$skiptoken", ["0"])[0])
        page = items[skip:skip + 1]
        out: dict[str, Any] = {"value": page, "count": len(items)}
        if skip + 1 < len(items):
            out["nextLink"] = (f"{self.arm_url}{h.path.split('?')[0]}?api-version={query['api-version'][0]}"
                               f"&$skiptoken={skip + 1}")
        h._reply(200, out)

    def _arm_post(self, h: _Handler, key: str, body: bytes) -> None:
        op_id = uuid.uuid4().hex
        op_path = f"/operations/{op_id}"
        if key.endswith("/backendhealth") and "/microsoft.network/applicationgateways/" in key:
            self._ops[op_path] = {"backendAddressPools": [{"backendAddressPool": {"id": key}, "backendHttpSettings"
                                  "Collection": [{"servers": [{"address": "10.20.1.5", "health": "Healthy"}]}]}]}
        elif key.endswith("/runcommand") and "/microsoft.containerservice/managedclusters/" in key:
            command = json.loads(body or b"{}").get("command", "")
            self._ops[op_path] = {"id": op_id, "properties": {"provisioningState": "Succeeded", "exitCode": 0,
                                                              "logs": self._kubectl(command)}}
        else:
            _arm_error(h, 404, "ResourceNotFound", "no such action in the fake")
            return
        h._reply(202, None, {"Location": f"{self.arm_url}{op_path}?api-version=2024-01-01", "Retry-After": "0"})

    def _kubectl(self, command: str) -> str:
        """The few kubectl commands run command is used for, answered from the fake cluster."""
        if re.fullmatch(r"kubectl get ingress (-A|-n \S+) -o json", command):
            return json.dumps(self.env.ingresses)
        m = re.fullmatch(r"kubectl get secret (\S+) -n (\S+) --ignore-not-found "
                         r"-o jsonpath='\{\.data\.(\w+)\\\.(\w+)\}'", command)
        if m:
            secret = self.env.secrets.get((m.group(2), m.group(1)))
            return "" if secret is None else str(secret["data"].get(f"{m.group(3)}.{m.group(4)}", ""))
        return f"error: the fake does not run {command!r}"

    # -- Key Vault ------------------------------------------------------------------------------------------------
    def _vault(self, h: _Handler, method: str, path: str, query: dict[str, list[str]], authorized: bool,
               body: bytes) -> None:
        if not authorized:
            h._reply(401, {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or "
                                                                        "PoP token."}},
                     {"WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                                         'resource="https://vault.azure.net"'})
            return
        if "api-version" not in query:
            h._reply(400, {"error": {"code": "BadParameter", "message": "The 'api-version' parameter is missing."}})
            return
        if method != "GET":
            h._reply(405, {"error": {"code": "MethodNotAllowed", "message": f"{method} not served by the fake"}})
            return
        kv_url = f"https://{NAMES['KV']}.vault.azure.net"
        parts = [p for p in path.split("/") if p]
        if parts == ["certificates"]:
            items = [self._kv_item(f"{kv_url}/certificates/{c.name}", c.versions[-1][1]) for c in self.env.kv.values()]
            h._reply(200, {"value": items, "nextLink": None})
            return
        if len(parts) < 2 or parts[0] != "certificates" or parts[1] not in self.env.kv:
            name = parts[1] if len(parts) > 1 else ""
            h._reply(404, {"error": {"code": "CertificateNotFound",
                                     "message": f"A certificate with (name/id) {name} was not found in this key "
                                                "vault."}})
            return
        c = self.env.kv[parts[1]]
        rest = parts[2:]
        if rest == ["versions"]:
            skip = int(query.get("$skiptoken", ["0"])[0])
            version, signed = c.versions[skip]
            out: dict[str, Any] = {"value": [self._kv_item(f"{kv_url}/certificates/{c.name}/{version}", signed)]}
            out["nextLink"] = (f"{self.vault_url}/certificates/{c.name}/versions?api-version="
                               f"{query['api-version'][0]}&$skiptoken={skip + 1}") if skip + 1 < len(c.versions) \
                else None
            h._reply(200, out)
        elif rest == ["policy"]:
            h._reply(200, self._kv_policy(kv_url, c))
        elif rest in ([], [""]) or (len(rest) == 1 and rest[0] in dict(c.versions)):
            version, signed = (rest[0], dict(c.versions)[rest[0]]) if rest else c.versions[-1]
            h._reply(200, self._kv_bundle(kv_url, c, version, signed))
        else:
            h._reply(404, {"error": {"code": "NotFound", "message": "not found"}})

    def _kv_attributes(self, signed: Signed) -> dict[str, Any]:
        cert = signed.cert
        return {"enabled": True, "nbf": int(cert.not_valid_before_utc.timestamp()),
                "exp": int(cert.not_valid_after_utc.timestamp()),
                "created": int(cert.not_valid_before_utc.timestamp()),
                "updated": int(cert.not_valid_before_utc.timestamp()), "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90}

    def _kv_item(self, cid: str, signed: Signed) -> dict[str, Any]:
        x5t = base64.urlsafe_b64encode(signed.cert.fingerprint(hashes.SHA1())).decode().rstrip("=")
        return {"id": cid, "x5t": x5t, "attributes": self._kv_attributes(signed), "tags": {}}

    def _kv_bundle(self, kv_url: str, c: KvCert, version: str, signed: Signed) -> dict[str, Any]:
        item = self._kv_item(f"{kv_url}/certificates/{c.name}/{version}", signed)
        return item | {"kid": f"{kv_url}/keys/{c.name}/{version}", "sid": f"{kv_url}/secrets/{c.name}/{version}",
                       "cer": _b64(_der(signed.cert)), "policy": self._kv_policy(kv_url, c)}

    def _kv_policy(self, kv_url: str, c: KvCert) -> dict[str, Any]:
        subject = c.versions[-1][1].cert.subject.rfc4514_string()
        return {
            "id": f"{kv_url}/certificates/{c.name}/policy",
            "key_props": {"exportable": True, "kty": "EC", "crv": "P-256", "reuse_key": False},
            "secret_props": {"contentType": "application/x-pkcs12"},
            "x509_props": {"subject": subject, "ekus": ["1.3.6.1.5.5.7.3.1"], "key_usage": ["digitalSignature"],
                           "validity_months": 12},
            "lifetime_actions": [{"trigger": {"lifetime_percentage": c.lifetime_percentage},
                                  "action": {"action_type": c.action}}],
            "issuer": {"name": c.issuer},
            "attributes": {"enabled": True, "created": 1767225600, "updated": 1767225600},
        }

    # -- Kubernetes -----------------------------------------------------------------------------------------------
    def _kube(self, h: _Handler, method: str, path: str, query: dict[str, list[str]], authorized: bool,
              body: bytes) -> None:
        if not authorized:
            h._reply(401, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
            return
        if method != "GET":
            h._reply(405, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": f"{method} not served by the fake", "reason": "MethodNotAllowed", "code": 405})
            return
        if path == "/apis/networking.k8s.io/v1/ingresses":
            h._reply(200, self.env.ingresses)
            return
        m = re.fullmatch(r"/apis/networking\.k8s\.io/v1/namespaces/([^/]+)/ingresses", path)
        if m:
            doc = copy.deepcopy(self.env.ingresses)
            doc["items"] = [i for i in doc["items"] if i["metadata"]["namespace"] == m.group(1)]
            h._reply(200, doc)
            return
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", path)
        secret = self.env.secrets.get((m.group(1), m.group(2))) if m else None
        if m and secret is not None:
            h._reply(200, {"kind": "Secret", "apiVersion": "v1",
                           "metadata": {"name": m.group(2), "namespace": m.group(1), "resourceVersion": "1"},
                           **secret})
            return
        name = m.group(2) if m else path
        h._reply(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": f'secrets "{name}" not found', "reason": "NotFound",
                       "details": {"name": name, "kind": "secrets"}, "code": 404})


def config_doc(fake: FakeAzure, **overrides: Any) -> dict[str, Any]:
    """An azure config document (TOML-shaped dict) pointing every endpoint at ``fake``."""
    doc: dict[str, Any] = {
        "subscription_id": SUB, "resource_group": RG, "app_gateway": NAMES["AGW"], "apim": NAMES["APIM"],
        "aks": NAMES["AKS"], "key_vaults": [NAMES["KV"]], "expiry_days": 30,
        "kubernetes": {"host": fake.kube_url, "ca_bundle": str(fake.ca_bundle), "token_env": "FAKE_KUBE_TOKEN"},
        "runner": {"ingress_address": "127.0.0.1", "ingress_port": fake.ingress_port},
        "endpoints": {"resource_manager": fake.arm_url, "key_vault": {NAMES["KV"]: fake.vault_url},
                      "ca_bundle": str(fake.ca_bundle)},
    }
    for key, value in overrides.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def iter_json_strings(doc: Any) -> Iterator[str]:
    if isinstance(doc, dict):
        for v in doc.values():
            yield from iter_json_strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from iter_json_strings(v)
    elif isinstance(doc, str):
        yield doc


def config_toml(doc: dict[str, Any]) -> str:
    """``doc`` (config_doc's shape: top-level values and one level of tables) as TOML text."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for table, body in ((k, v) for k, v in doc.items() if isinstance(v, dict)):
        plain = {k: v for k, v in body.items() if not (isinstance(v, dict) and all(isinstance(x, dict)
                                                                                   for x in v.values()) and v)}
        lines.append(f"[{table}]")
        for k, v in plain.items():
            if isinstance(v, dict):
                lines.append(f"{k} = {{ {', '.join(f'{json.dumps(a)} = {json.dumps(b)}' for a, b in v.items())} }}")
            else:
                lines.append(f"{k} = {json.dumps(v)}")
        for k, v in body.items():
            if k not in plain:
                for sub, entries in v.items():
                    lines.append(f"[{table}.{k}.{sub}]")
                    lines += [f"{a} = {json.dumps(b)}" for a, b in entries.items()]
    return "\n".join(lines) + "\n"


def write_cli_setup(fake: FakeAzure, directory: Path, **overrides: Any) -> tuple[Path, dict[str, str]]:
    """What a user's shell has for ``mtls-harness … --target azure`` against ``fake``: ``DIR/azure.toml`` pointing
    at it, and an environment whose ``az`` is a stand-in for the Azure CLI (DefaultAzureCredential's
    AzureCliCredential runs ``az account get-access-token --output json`` and reads accessToken / expires_on from
    its output). Returns the config path and the environment for the child process."""
    import os
    import sys

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "azure.toml"
    config.write_text(config_toml(config_doc(fake, **overrides)))
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    expires = int(dt.datetime.now(dt.UTC).timestamp()) + 3600
    token = json.dumps({"accessToken": fake.token, "expires_on": expires, "subscription": SUB, "tenant": TENANT,
                        "tokenType": "Bearer"})
    az = bin_dir / "az"
    az.write_text(f"#!{sys.executable}\nprint({token!r})\n")
    az.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               AZURE_TOKEN_CREDENTIALS="AzureCliCredential", FAKE_KUBE_TOKEN=fake.kube_token)
    for var in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
        env.pop(var, None)
    return config, env
