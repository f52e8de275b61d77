"""Several ingress hosts on one controller: the model's views per host, the cases generated per host, the findings
per host (harness/model/topology.py focus_on, harness/cases/catalogue.py host_cases, harness/findings/predict.py).

Expected behaviour, from the products' documentation (not from the code under test): ingress-nginx applies
auth-tls-* and proxy-ssl-* per host (annotations docs: "the annotations are applied to the host"); nginx's upstream
keepalive cache is keyed by the peer address only (Kong/kong#4001), so with ingress-nginx's one upstream_balancer
(keepalive 320 by default, ConfigMap upstream-keepalive-connections) a connection a host opened without verifying the
pod can serve a host that verifies.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from harness.cases.catalogue import catalogue_for
from harness.chainfile.load import load_chain
from harness.cli.main import main
from harness.errors import UsageError
from harness.findings.predict import CaseFacts, predict, prediction_for
from harness.model.topology import Api, K8sSecret, Topology, default_topology
from harness.probe.outcomes import http_reject, ok, upstream_failure

REF = default_topology()
HOME = "echo.aks.contoso.example"
OTHER = "reports.aks.contoso.example"
NO_CERT = http_reject(400, "No required SSL certificate was sent", hop="ingress", cause="no-client-cert")


def _two_hosts(**annotations: str | None) -> Topology:
    other = dataclasses.replace(REF.ingress.primary, name="reports", host=OTHER,
                                tls_secret="reports-tls").with_annotations(**annotations)
    hop = dataclasses.replace(REF.ingress, ingresses=(REF.ingress.primary, other),
                              secrets=(*REF.ingress.secrets, K8sSecret("reports-tls", tls="apim-server")))
    return REF.replace(ingress=hop)


def test_the_views_follow_the_focused_host_and_nothing_else_changes() -> None:
    t = _two_hosts(auth_tls_verify_client="optional")
    assert t.ingress.hosts == (HOME, OTHER)
    assert t.focus_on(None) is t
    assert t.focus_on(HOME) is t  # the home host is no focus at all
    view = t.focus_on(OTHER)
    assert (view.ingress.host, view.ingress.primary.name) == (OTHER, "reports")
    assert view.listener_of("ingress").hostname == OTHER
    assert view.listener_of("ingress").server_cert == "apim-server"  # its own TLS Secret's leaf
    assert view.listener_of("ingress").client_auth == "optional"
    assert t.listener_of("ingress").client_auth == "required"
    assert view.ingress.ingresses == t.ingress.ingresses  # one controller serves both, whatever the view
    assert view.focus_on(None) == t
    with pytest.raises(KeyError, match=r"no Ingress on host 'nope\.example'"):
        t.focus_on("nope.example")


def test_a_variant_of_a_host_changes_that_hosts_ingress_only() -> None:
    view = _two_hosts().focus_on(OTHER)
    changed = view.with_ingress_annotations(auth_tls_verify_client="off")
    assert changed.ingress.primary.annotation("auth-tls-verify-client") == "off"
    assert changed.focus_on(None).ingress.primary.annotation("auth-tls-verify-client") == "on"
    served = view.replace(ingress=view.ingress.serving("apim-server~expired"))
    assert served.listener_of("ingress").server_cert == "apim-server~expired"
    assert served.focus_on(None).listener_of("ingress").server_cert == "ingress-server"  # home keeps its cert


def test_the_catalogue_repeats_what_a_host_decides_on_every_other_host() -> None:
    t = _two_hosts()
    reference = {c.id for c in catalogue_for(REF)}
    generated = {c.id: c for c in catalogue_for(t)}
    extra = {i: c for i, c in generated.items() if i not in reference}
    assert extra
    assert all(i.endswith(f"@{OTHER}") and c.host == OTHER for i, c in extra.items())
    # its client-cert and TLS-version cases, and the pod-cert cases its proxy-ssl-* decide, probed at the ingress
    assert {"ingress-rejects-missing-client-cert-tls1.3", "ingress-refuses-tls1.1",
            "ingress-refuses-pod-cert-unknown-ca"} <= {i.partition("@")[0] for i in extra}
    pod_cert = extra[f"ingress-refuses-pod-cert-unknown-ca@{OTHER}"]
    assert (pod_cert.via, pod_cert.endpoint) == ("direct", "ingress")
    # not the controller's host-independent rules, nor what APIM judges (it calls the home host only)
    assert not any(i.startswith(("ingress-oldest-ingress", "apim-refuses-ingress-cert")) for i in extra)


def test_findings_name_their_host_and_only_that_hosts_cases_see_them() -> None:
    t = _two_hosts(auth_tls_verify_client="optional")
    ids = [f.id for f in predict(t)]
    assert ids == [f"ingress-requires-a-verified-client-cert@ingress:{OTHER}"]
    facts = CaseFacts(NO_CERT, None, "1.3", "ingress")
    assert prediction_for(t, facts) is None  # the home host still refuses
    p = prediction_for(t.focus_on(OTHER), facts)
    assert p is not None
    assert p.finding is not None
    assert (p.finding.id, p.through) == (ids[0], ok(200))


def test_a_lax_host_makes_the_verifying_hosts_upstream_check_intermittent() -> None:
    t = _two_hosts(proxy_ssl_verify=None, proxy_ssl_secret=None, proxy_ssl_name=None, proxy_ssl_verify_depth=None)
    found = {f.id: f for f in predict(t)}
    assert set(found) == {f"every-hop-verifies-its-upstream-cert@ingress:{OTHER}",
                          "every-hop-verifies-its-upstream-cert@ingress"}
    pooled = found["every-hop-verifies-its-upstream-cert@ingress"]
    assert pooled.intermittent
    assert "Kong/kong#4001" in pooled.source  # the rule names its own source beside its property's
    assert OTHER in pooled.lets_through
    assert pooled.setting.annotation == ("default/reports", "proxy-ssl-verify")
    refused = upstream_failure(502, hop="ingress", cause="unknown-issuer")
    p = prediction_for(t, CaseFacts(refused, "apim-client", None, "ingress"))
    assert p is not None
    assert (p.through, p.refused) == (ok(200), refused)  # either, depending on the pool: never a failure
    # without keepalive each request opens its own connection: the home host's check always runs
    off = t.with_controller(upstream_keepalive_connections="0")
    assert [f.id for f in predict(off)] == [f"every-hop-verifies-its-upstream-cert@ingress:{OTHER}"]
    # the reference chain (one host) has no such finding
    assert predict(REF) == ()


def test_a_chain_file_keeps_every_host_with_apims_backend_host_as_home(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "c"
    assert main(["init", str(d), "--example", "reference"]) == 0
    ingress = d / "k8s" / "ingress.yaml"
    doc = yaml.safe_load(ingress.read_text())
    other = yaml.safe_load(yaml.safe_dump(doc))
    other["metadata"]["name"] = "reports"
    other["spec"]["rules"][0]["host"] = OTHER
    other["spec"]["tls"] = [{"hosts": [OTHER], "secretName": "ingress-tls"}]
    ingress.write_text(yaml.safe_dump_all([other, doc], sort_keys=False))  # the other host listed first
    loaded = load_chain(d / "chain.yaml")
    assert loaded.topology.ingress.hosts == (HOME, OTHER)
    assert not any("not modelled" in w and OTHER in w for w in loaded.warnings)

    other["spec"]["tls"] = [{"hosts": [OTHER], "secretName": "missing-tls"}]
    ingress.write_text(yaml.safe_dump_all([doc, other], sort_keys=False))
    capsys.readouterr()
    assert main(["chain", "check", str(d / "chain.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "default/missing-tls" in err[0]
    assert OTHER in err[0]


def test_explain_and_chain_check_speak_of_each_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.hosts import write_hosts

    d = tmp_path / "c"
    assert main(["init", str(d), "--example", "reference"]) == 0
    write_hosts(d, [OTHER], {OTHER: {"auth-tls-verify-client": "optional"}})
    capsys.readouterr()
    assert main(["chain", "check", str(d / "chain.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"+host  {OTHER}  serves host-1-tls  client auth optional" in out
    case = f"ingress-rejects-missing-client-cert-tls1.3@{OTHER}"
    assert main(["explain", case, "--chain", str(d / "chain.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"ingress at {OTHER}" in out
    assert f"FINDING ingress-requires-a-verified-client-cert@ingress:{OTHER}" in out
    assert f"{d / 'k8s' / 'hosts.yaml'}:" in out
    assert main(["explain", "ingress-rejects-missing-client-cert-tls1.3@nope.example", "--chain",
                 str(d / "chain.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the chain's notes line, then the one error
    assert err[-1].startswith("mtls-harness: error: explain: ")
    assert "did you mean" in err[-1]


# ------------------------------------------------------------------------------------------------------------------
# APIM's other APIs (chain file apim.apis): each to another ingress host, under its own URL suffix
# ------------------------------------------------------------------------------------------------------------------
def _with_api(**checks: bool) -> Topology:
    t = _two_hosts()
    return t.replace(apim=dataclasses.replace(t.apim, apis=(Api("reports", "/reports", OTHER, **checks),)))


def test_a_view_of_an_apis_host_is_a_view_of_that_api() -> None:
    t = _with_api(verify_name=False)
    view = t.focus_on(OTHER)
    assert (view.apim.focus, view.apim.path) == ("reports", "/reports")
    assert view.caller_of("ingress").hostname == OTHER
    assert not view.caller_of("ingress").verify_name
    # the service's client certificate and CA stay the home API's
    assert (view.apim.upstream.client_cert, view.apim.upstream.trusted_ca) == ("apim-client", "ingress-ca")
    assert view.focus_on(None) == t
    assert t.apim.path == "/"
    # a variant on the view: its checks stay with the API, the service's CA change applies to every API
    changed = view.with_hop("apim", upstream__verify_chain=False, upstream__trusted_ca="pod-ca").focus_on(None)
    assert changed.apim.upstream.verify_chain
    assert changed.apim.upstream.trusted_ca == "pod-ca"
    assert not changed.apim.apis[0].verify_chain


def test_the_apim_stand_in_routes_each_apis_path_to_its_hosts_cluster(tmp_path: Path) -> None:
    from harness.pki.certset import cert_set_for
    from harness.render.envoy import render_envoy

    t = _with_api(verify_name=False)
    certs = cert_set_for(t.pki)
    config = render_envoy(t, "apim", certs, listen=("127.0.0.1", 1), upstream=("127.0.0.1", 2),
                          admin=("127.0.0.1", 3), workdir=tmp_path)
    boot = yaml.safe_load(config.config_path.read_text())
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"] == {"path_separated_prefix": "/reports"}
    assert (routes[0]["route"]["cluster"], routes[0]["route"]["host_rewrite_literal"],
            routes[0]["route"]["prefix_rewrite"]) == ("upstream-reports", OTHER, "/")
    assert routes[-1]["match"] == {"prefix": "/"}
    assert routes[-1]["route"]["host_rewrite_literal"] == HOME
    clusters = {c["name"]: c["transport_socket"]["typed_config"] for c in boot["static_resources"]["clusters"]}
    assert clusters["upstream-reports"]["sni"] == OTHER
    # name check off: no SAN matcher (the chain is still checked against the service's CA)
    vc = clusters["upstream-reports"]["common_tls_context"]["combined_validation_context"]
    assert vc["default_validation_context"] == {}
    assert clusters["upstream"]["common_tls_context"]["combined_validation_context"]["default_validation_context"] \
        == {"match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": HOME}}]}
    with pytest.raises(UsageError, match="a view of one API"):
        render_envoy(t.focus_on(OTHER), "apim", certs, listen=("127.0.0.1", 1), upstream=("127.0.0.1", 2),
                     admin=("127.0.0.1", 3), workdir=tmp_path)


def test_an_apis_backend_checks_are_its_findings_and_it_reaches_its_host_through_the_chain() -> None:
    t = _with_api(verify_chain=False)
    found = [f for f in predict(t) if f.hop == "apim"]
    assert [f.id for f in found] == [f"every-hop-verifies-its-upstream-cert@apim:{OTHER}"]
    assert found[0].setting.chain_key == ("apim", "apis", 0, "validate_certificate_chain")
    refused = upstream_failure(500, hop="apim", cause="unknown-issuer")
    assert prediction_for(t, CaseFacts(refused, None, None, "gateway")) is None  # the home API checks
    p = prediction_for(t.focus_on(OTHER), CaseFacts(refused, None, None, "gateway"))
    assert p is not None
    assert p.finding is not None
    assert p.finding.id == found[0].id
    generated = {c.id: c for c in catalogue_for(t)}
    through = generated[f"apim-refuses-ingress-cert-unknown-ca@{OTHER}"]
    assert (through.via, through.host) == ("chain", OTHER)
    assert generated[f"ingress-refuses-pod-cert-unknown-ca@{OTHER}"].via == "chain"  # its API carries it
    assert f"apim-refuses-ingress-cert-unknown-ca@{OTHER}" not in {c.id for c in catalogue_for(_two_hosts())}


@pytest.mark.parametrize(("entry", "words"), [
    ({"name": "x", "path": "/x", "backend_url": "https://nope.example/"}, "nope.example has no Ingress"),
    ({"name": "x", "path": "/x", "backend_url": f"https://{HOME}/"}, "is the home host"),
    ({"name": "x", "path": "x", "backend_url": f"https://{OTHER}/"}, "path"),
])
def test_a_bad_api_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          entry: dict[str, str], words: str) -> None:
    from bench.hosts import write_hosts

    d = tmp_path / "c"
    assert main(["init", str(d), "--example", "reference"]) == 0
    write_hosts(d, [OTHER])
    chain = d / "chain.yaml"
    doc = yaml.safe_load(chain.read_text())
    doc["apim"]["apis"] = [entry]
    chain.write_text(yaml.safe_dump(doc, sort_keys=False))
    capsys.readouterr()
    assert main(["chain", "check", str(chain)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert words in err[0]


def test_the_kind_manifests_of_several_hosts_validate_offline_and_hold_every_hosts_ingress() -> None:
    """The kind path (written here, run by users): one controller, every host's Ingress and TLS Secret applied."""
    from harness.render.k8s import validate_manifests
    from harness.targets.kind import KindTarget

    docs = KindTarget(_with_api())._manifests("mtls-harness/pod:0.1.0-local")
    assert validate_manifests(docs) == []
    hosts = sorted(rule["host"] for d in docs if d["kind"] == "Ingress" for rule in d["spec"]["rules"])
    assert hosts == sorted([HOME, OTHER])
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    assert {"ingress-tls", "reports-tls"} <= secrets


def test_the_report_lists_every_host_with_its_api_and_its_cases() -> None:
    from harness.report.html import render_html
    from harness.report.results import case_facts, chain_facts, document

    t = _with_api()
    facts = chain_facts(t)
    assert facts["ingress"]["hosts"] == [
        {"host": HOME, "client_auth": "required", "api_path": "/"},
        {"host": OTHER, "client_auth": "required", "api_path": "/reports"}]
    assert "hosts" not in chain_facts(REF)["ingress"]  # one host: nothing more to say
    generated = {c.id: c for c in catalogue_for(t)}

    def record(case_id: str, result: str) -> dict[str, object]:
        return {**case_facts(generated[case_id]), "result": result, "passed": result == "passed", "message": None,
                "by_design": None, "duration_s": 0.0, "seen": None}

    records = [record("ingress-refuses-tls1.1", "passed"), record(f"ingress-refuses-tls1.1@{OTHER}", "passed"),
               record(f"ingress-refuses-tls1.0@{OTHER}", "failed")]
    html = render_html(document(records, target="local", chain=facts))
    assert "<h3>Ingress hosts</h3>" in html
    assert f"<code>{OTHER}</code></td><td>required</td><td><code>/reports</code></td><td>1 passed, 1 failed</td>" \
        in html
