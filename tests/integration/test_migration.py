"""The migration measured (harness.cases.migration, issue 20): the same probes against the reference chain's real
ingress-nginx and against its Gateway API twin (real Envoy configured as Envoy Gateway would), in front of the same
echo pod. What the Gateway lets through that nginx refused is lost; a refusal in another form is changed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.cases.migration import measure
from harness.model.topology import default_topology
from harness.pki.certset import CertSet, cert_set_for
from harness.render.gateway_api import translate

pytestmark = pytest.mark.mtls_needs_chain

REF = default_topology()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def certs() -> CertSet:
    return cert_set_for(REF.pki)


def _by_probe(observations: list[Any]) -> dict[str, Any]:
    return {o.probe: o for o in observations}


def test_the_reference_chain_migrated_as_written(certs: CertSet) -> None:
    seen = _by_probe(measure(REF, certs, translate(REF, certs).documents))
    assert seen["apim-client's certificate"].verdict == "kept"
    for version in ("1.2", "1.3"):
        row = seen[f"no client certificate, TLS {version}"]
        assert row.verdict == "changed", row
        assert row.nginx == "http_reject(400)", row  # ingress-nginx's page …
        assert row.gateway.startswith("TLS alert"), row  # … a TLS alert on the Gateway
    assert "unknown_ca" in seen["a client certificate of an unknown CA"].gateway
    deep = seen["a client certificate two intermediates deep"]
    assert (deep.nginx, deep.gateway, deep.verdict) == ("http_reject(400)", "ok(200)", "lost")  # no verify depth
    passed = seen["apim-client's certificate: the pod's ssl-client-cert header"]
    assert (passed.nginx, passed.gateway, passed.verdict) == ("present", "absent", "lost")
    pod = seen["the pod serves pod-server~unknown-ca"]
    assert (pod.nginx, pod.gateway, pod.verdict) == ("upstream_failure(502)", "upstream_failure(503)", "changed")


def test_a_weakened_gateway_loses_the_client_check_and_the_pod_check(certs: CertSet) -> None:
    docs = json.loads(json.dumps(translate(REF, certs).documents))
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    gateway["spec"]["tls"]["frontend"]["default"]["validation"]["mode"] = "AllowInsecureFallback"
    docs = [d for d in docs if d["kind"] != "BackendTLSPolicy"]
    seen = _by_probe(measure(REF, certs, docs))
    assert seen["no client certificate, TLS 1.3"].verdict == "lost"  # let through, failing only at the pod
    pod = seen["the pod serves pod-server~unknown-ca"]
    assert pod.verdict == "lost", pod
    assert "plain HTTP" in pod.gateway


def test_migrate_runs_both_and_exits_1_for_what_is_lost(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "harness", "migrate", "--to", "gateway-api", "--out",
                           str(tmp_path / "gw"), "--json"], cwd=REPO, capture_output=True, text=True, timeout=180,
                          check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr[-2000:]
    doc = json.loads(done.stdout)
    assert doc["measured_counts"]["lost"] == 2
    assert {o["property"] for o in doc["measured"] if o["verdict"] == "lost"} == {
        "client certificate chain depth", "client certificate passed to the pod"}
    assert "migrate: probing both ingresses" in done.stderr  # progress on stderr
    assert (tmp_path / "gw" / "gateway-api.yaml").is_file()


def _two_hosts() -> Any:
    """The reference chain with a second host whose Ingress checks no client certificate (same TLS Secret)."""
    import dataclasses

    home = REF.ingress.ingresses[0]
    plain = {k: v for k, v in home.annotations.items() if not k.startswith("auth-tls")}
    other = dataclasses.replace(home, name="reports", host="reports.aks.contoso.example", annotations=plain)
    return REF.replace(ingress=dataclasses.replace(REF.ingress, ingresses=(home, other)))


def test_the_coalescing_bypass_is_refused_by_both_as_written(certs: CertSet) -> None:
    t = _two_hosts()
    row = _by_probe(measure(t, certs, translate(t, certs).documents))[
        "SNI reports.aks.contoso.example, Host echo.aks.contoso.example, no client certificate"]
    assert row.nginx == "http_reject(421)", row  # ingress-nginx: Misdirected Request
    assert row.gateway.startswith("TLS alert"), row  # validation is per port: the other host's session needs a cert
    assert row.verdict == "changed", row


def test_a_listener_for_every_host_without_validation_lets_the_bypass_through(certs: CertSet) -> None:
    # the hole GEP-91 closed: validation on the mTLS host's listener only (the experimental per-listener field), a
    # second listener without a hostname and without validation, the route attached to both
    t = _two_hosts()
    docs = json.loads(json.dumps(translate(t, certs).documents))
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    validation = gateway["spec"]["tls"].pop("frontend")["default"]["validation"]
    echo, reports = gateway["spec"]["listeners"]
    echo["tls"]["frontendValidation"] = {"caCertificateRefs": validation["caCertificateRefs"]}
    del reports["hostname"]
    for route in (d for d in docs if d["kind"] == "HTTPRoute"):
        route["spec"]["parentRefs"] = [{"name": gateway["metadata"]["name"]}]
    row = _by_probe(measure(t, certs, docs))[
        "SNI reports.aks.contoso.example, Host echo.aks.contoso.example, no client certificate"]
    assert row.nginx == "http_reject(421)", row
    assert row.gateway == "ok(200)", row  # the request reached the mTLS host's pod with no certificate
    assert row.verdict == "lost", row


def test_a_passthrough_chain_is_not_measured_and_says_why(tmp_path: Path) -> None:
    chain = tmp_path / "chain"
    subprocess.run([sys.executable, "-m", "harness", "init", str(chain), "--example", "passthrough"], cwd=REPO,
                   capture_output=True, timeout=120, check=True, stdin=subprocess.DEVNULL)
    done = subprocess.run([sys.executable, "-m", "harness", "migrate", "--chain", str(chain / "chain.yaml"), "--to",
                           "gateway-api", "--out", str(tmp_path / "gw")], cwd=REPO, capture_output=True, text=True,
                          timeout=180, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr[-2000:]  # the passthrough host is lost: not written
    assert "not measured — the chain passes TLS through to the pod" in done.stderr
    assert "TLS passed through to the pod" in done.stdout
