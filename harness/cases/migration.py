"""The migration measured (issue 20): the same probes against the chain's ingress-nginx and against its Gateway API
twin, side by side, each security property judged by what the two answered.

    observations = measure(topology, certs, documents)   # documents: what `migrate` wrote, or yours

Both ingresses run here for real, on one local chain: its nginx (the Ingresses as the controller renders them) and
real Envoy configured as Envoy Gateway would from the Gateway API resources (:mod:`harness.render.envoy_gateway`), in
front of the same echo pod. Each probe goes to both as the ingress's real caller (APIM: its client certificate, the
ingress host as SNI), unless it changes the identity:

- the caller's own certificate; none (TLS 1.2 and 1.3); one of an unknown CA; an expired one; one deeper than the
  verify depth; one for another name (what ``auth-tls-match-cn`` refuses, when the Ingress sets it); a revoked one
  (when the CA Secret has a CRL) — :mod:`harness.pki.faults`;
- with more than one host: a TLS session made for another host, then a request for the host that checks client
  certificates (the connection-coalescing bypass GEP-91 closed; ingress-nginx answers 421);
- the pod learns the client certificate (``auth-tls-pass-certificate-to-upstream``): its ``ssl-client-cert`` header;
- the pod's own certificate, from an unknown CA and for another name: the chain's pod restarts with that certificate
  and both ingresses are asked again.

A property is **kept** when both refuse (or both let through) the same way, **changed** when both refuse but
differently (ingress-nginx's 400 page against a TLS alert) or the Gateway refuses what nginx let through (stricter),
and **lost** when the Gateway lets through what ingress-nginx refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.model.topology import Topology
from harness.pki.certset import CertSet
from harness.probe.handshake import probe
from harness.probe.result import ProbeResult

__all__ = ["Observation", "measure"]

HOST = "127.0.0.1"
Verdict = Literal["kept", "changed", "lost"]


@dataclass(frozen=True)
class Observation:
    """One probe against both ingresses: what each answered and the verdict."""

    property: str
    probe: str
    nginx: str
    gateway: str
    verdict: Verdict

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def _said(seen: ProbeResult) -> str:
    o = seen.outcome
    if o.kind == "ok":
        return f"ok({seen.status})"
    if o.kind == "tls_alert":
        return f"TLS alert {o.alert or ''}".strip()
    return f"{o.kind}({seen.status})" if seen.status else o.kind


def _judge(nginx: ProbeResult, gateway: ProbeResult, *, client_side: bool) -> Verdict:
    """``client_side``: a probe of the client-certificate check — an answer that failed further on (the pod, plain
    HTTP to it) still means the ingress let the client through."""
    through = ("ok", "upstream_failure") if client_side else ("ok",)
    n_ok, g_ok = nginx.outcome.kind in through, gateway.outcome.kind in through
    if n_ok and g_ok:
        return "kept"
    if not n_ok and g_ok:
        return "lost"
    if n_ok and not g_ok:
        return "changed"
    return "kept" if (nginx.outcome.kind, nginx.status) == (gateway.outcome.kind, gateway.status) else "changed"


def _verify_failed(log: Path, mark: int) -> bool:
    """Whether the Gateway's access log, since ``mark``, names an upstream certificate check failure (the log is
    flushed every 500 ms: read for up to 1.5 s)."""
    for _ in range(15):
        if log.exists():
            with log.open("rb") as fh:
                fh.seek(mark)
                text = fh.read().decode(errors="replace")
            if "upstream_failure=" in text and text.endswith("\n"):  # the request's line is written
                return "CERTIFICATE_VERIFY_FAILED" in text
        time.sleep(0.1)
    return False


def _checks_client_certs(topology: Topology, host: str | None) -> bool:
    """Whether the Ingress of ``host`` (None: the home host) asks ingress-nginx to check client certificates."""
    ingress = topology.focus_on(host).ingress.auth_tls_ingress()
    return bool(ingress.annotation("auth-tls-secret")) and ingress.verify_client() != "off"


def measure(topology: Topology, certs: CertSet, documents: Iterable[Mapping[str, Any]], *,
            progress: Callable[[str], None] = lambda _: None) -> list[Observation]:
    """Run the probes against ``topology``'s ingress-nginx and against ``documents`` as Envoy Gateway's data plane
    (module doc). Starts and stops everything it needs; raises what a chain start raises."""
    from harness.render.envoy_gateway import render_envoy_gateway, twin_of
    from harness.runtime import ManagedProcess, free_ports, port_open, wait_until
    from harness.runtime.binaries import find_envoy
    from harness.targets.local import LocalTarget

    twin = twin_of(topology, certs, documents)
    caller = topology.apim.upstream.client_cert or "apim-client"
    tmp = Path(tempfile.mkdtemp(prefix="mtls-harness-migrate-"))
    target = LocalTarget(topology, certs=certs)
    observations: list[Observation] = []
    gateway_proc: list[ManagedProcess] = []
    try:
        progress("migrate: starting the chain (ingress-nginx) and its Gateway API twin (Envoy as Envoy Gateway)")
        chain = target.__enter__()
        listen, admin = free_ports(2, HOST)

        def start_gateway() -> None:
            for proc in gateway_proc:
                proc.stop()
            gateway_proc.clear()
            config = render_envoy_gateway(twin.documents, secrets=twin.secrets, listen=(HOST, listen),
                                          admin=(HOST, admin), upstreams=twin.upstreams((HOST, target.ports["pod"])),
                                          workdir=tmp / "gateway-api", secret_cas=twin.secret_cas)
            proc = ManagedProcess("gateway-api", config.argv(find_envoy()), log_path=tmp / "gateway-api.log")
            gateway_proc.append(proc)
            proc.start()
            wait_until(lambda: port_open(HOST, listen), "the Gateway API twin", timeout=20, alive=proc.exit_reason,
                       log_tail=proc.log_tail)

        start_gateway()
        ep = chain.endpoint("ingress")
        access_log = tmp / "gateway-api" / "ingress-access.log"

        def both(name: str, what: str, identity: str | None = caller, *, client_side: bool = True,
                 **kwargs: Any) -> tuple[ProbeResult, ProbeResult]:
            leaf = certs.leaf(identity) if identity else None
            ident: dict[str, Any] = {"client_cert": leaf.chain if leaf else None,
                                     "client_key": leaf.key if leaf else None}
            nginx = chain.probe("ingress", **ident, **kwargs)
            gateway = probe(HOST, listen, **({"server_name": ep.server_name, "trust": ep.trust} | ident | kwargs))
            observations.append(Observation(name, what, _said(nginx), _said(gateway),
                                            _judge(nginx, gateway, client_side=client_side)))
            return nginx, gateway

        progress("migrate: probing both ingresses")
        nginx, gateway = both("the caller reaches the pod", f"{caller}'s certificate", client_side=False)
        if _checks_client_certs(topology, None):
            for version in ("1.2", "1.3"):
                both("client certificate required", f"no client certificate, TLS {version}", None,
                     max_version=version)
            both("only the trusted CA's client certificates", "a client certificate of an unknown CA",
                 f"{caller}~unknown-ca")
            both("expired client certificates refused", "an expired client certificate", f"{caller}~expired")
            both("client certificate chain depth", "a client certificate two intermediates deep",
                 f"{caller}~too-deep")
            if topology.ingress.auth_tls_ingress().annotation("auth-tls-match-cn"):
                both("client certificate CN match", "a client certificate for another name", f"{caller}~wrong-san")
            if any(s.crl for s in topology.ingress.secrets):
                both("revoked client certificates refused (CRL)", "a revoked client certificate",
                     f"{caller}~revoked")
        hosts = topology.ingress.hosts
        checked = [h for h in hosts if _checks_client_certs(topology, h)]
        others = [h for h in hosts if h not in checked[:1]]
        if checked and others:
            # the connection-coalescing bypass (gateway-api #72, GEP-91): a TLS session made for another host, then
            # a request for the host that checks client certificates; ingress-nginx answers 421. The server's
            # certificate is not checked here (verify=False): it may be the other host's, or the controller's fake
            both("a client-certificate host on another host's TLS session",
                 f"SNI {others[0]}, Host {checked[0]}, no client certificate", None, server_name=others[0],
                 http_host=checked[0], verify=False)
        passes = [bool(((r.json() or {}).get("headers") or {}).get("ssl-client-cert")) if r.outcome.kind == "ok"
                  else False for r in (nginx, gateway)]
        if passes[0] or passes[1]:
            observations.append(Observation(
                "client certificate passed to the pod", f"{caller}'s certificate: the pod's ssl-client-cert header",
                "present" if passes[0] else "absent", "present" if passes[1] else "absent",
                "kept" if passes[0] == passes[1] else ("lost" if passes[0] else "changed")))
        pod = topology.pod.listener
        for fault, name in (("unknown-ca", "the pod's certificate is verified"),
                            ("wrong-san", "the pod's certificate names the host the ingress asks for")):
            progress(f"migrate: the pod serves a certificate with the {fault} fault")
            bad = dataclasses.replace(topology, pod=dataclasses.replace(
                topology.pod, listener=dataclasses.replace(pod, server_cert=f"{pod.server_cert}~{fault}")))
            chain = target.reconfigure(bad)
            start_gateway()
            mark = access_log.stat().st_size if access_log.exists() else 0
            _, seen = both(name, f"the pod serves {pod.server_cert}~{fault}", client_side=False)
            if seen.outcome.kind == "upstream_failure" and not _verify_failed(access_log, mark):
                # refused, but not by a certificate check: no TLS to the pod at all (no BackendTLSPolicy)
                last = observations.pop()
                observations.append(dataclasses.replace(
                    last, gateway=f"{last.gateway}, no certificate check (plain HTTP: no BackendTLSPolicy)",
                    verdict="lost"))
    finally:
        for proc in gateway_proc:
            with contextlib.suppress(Exception):
                proc.stop()
        target.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)
    return observations
