"""The catalogue on a Gateway API ingress (issue 20): each case carries Envoy Gateway's expectation beside
ingress-nginx's, the findings of a migrated chain name what Gateway API cannot express, the evidence reader reads
Envoy's own words, and the chain file and the options choose the ingress kind. The alerts and words below are the
ones measured in tests/integration/test_gateway_api_chain.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cases.catalogue import CATALOGUE
from harness.cases.evidence import attribute
from harness.cases.model import Skip
from harness.errors import UsageError
from harness.findings.predict import predict
from harness.model.topology import default_topology
from harness.probe.outcomes import Outcome
from harness.render.gateway_api import parse_ingress_kind

REF = default_topology()
GW = REF.on_gateway_api()
BY_ID = {c.id: c for c in CATALOGUE}


def _on_gateway(case_id: str) -> tuple[str, int | None, str | None, str | None, str | None]:
    e = BY_ID[case_id].on(GW).expect
    return e.kind, e.status, e.alert, e.hop, e.cause


@pytest.mark.parametrize(("case_id", "want"), [
    ("ingress-rejects-missing-client-cert-tls1.2", ("tls_alert", None, "handshake_failure", "ingress",
                                                    "no-client-cert")),
    ("ingress-rejects-missing-client-cert-tls1.3", ("tls_alert", None, "certificate_required", "ingress",
                                                    "no-client-cert")),
    ("ingress-rejects-client-cert-expired-tls1.3", ("tls_alert", None, "certificate_expired", "ingress", "expired")),
    ("ingress-rejects-client-cert-not-yet-valid-tls1.2", ("tls_alert", None, "certificate_expired", "ingress",
                                                          "not-yet-valid")),
    ("ingress-rejects-client-cert-self-signed-tls1.3", ("tls_alert", None, "unknown_ca", "ingress",
                                                        "unknown-issuer")),
    ("ingress-refuses-pod-cert-expired", ("upstream_failure", 503, None, "ingress", "expired")),
    ("ingress-refuses-pod-cert-self-signed", ("upstream_failure", 503, None, "ingress", "unknown-issuer")),
    ("apim-refuses-ingress-cert-wrong-san", ("upstream_failure", 500, None, "apim", "name-mismatch")),
])
def test_a_case_carries_envoy_gateways_expectation_beside_ingress_nginxs(case_id: str, want: tuple) -> None:
    assert _on_gateway(case_id) == want
    assert BY_ID[case_id].on(REF) is BY_ID[case_id]  # on ingress-nginx: the case as written
    assert BY_ID[case_id].on(GW).source != BY_ID[case_id].source  # with its own source


@pytest.mark.parametrize(("case_id", "words"), [
    ("ingress-passes-client-cert-to-upstream", "Gateway API gap"),
    ("ingress-error-page-redirects-missing-client-cert", "Gateway API gap"),
    ("ingress-sends-no-server-header", "ingress-nginx only"),
    ("pod-behind-passthrough-rejects-missing-client-cert", "ssl-passthrough"),
])
def test_a_case_that_cannot_apply_says_why_as_a_declared_skip(case_id: str, words: str) -> None:
    with pytest.raises(Skip) as why:
        BY_ID[case_id].on(GW)
    assert why.value.declared
    assert words in why.value.reason


def test_the_migrated_reference_chain_has_the_depth_finding_and_nginx_does_not() -> None:
    assert [f.id for f in predict(GW) if f.hop == "ingress"] == ["ingress-verify-depth-fits-the-pki@ingress"]
    assert not [f for f in predict(REF) if f.hop == "ingress"]


def test_application_gateway_for_containers_carries_its_own_sourced_expectation() -> None:
    agc = REF.on_gateway_api("agc")
    case = BY_ID["ingress-rejects-missing-client-cert-tls1.3"].on(agc)
    assert (case.expect.kind, case.expect.alert) == ("tls_alert", "certificate_required")
    assert "how-to-frontend-mtls-gateway-api" in case.source
    with pytest.raises(Skip, match=r"on gateway-api:agc: ingress-nginx only"):
        BY_ID["ingress-sends-no-server-header"].on(agc)


def test_agc_has_no_fallback_so_optional_is_no_finding_there() -> None:
    optional = REF.with_ingress_annotations(auth_tls_verify_client="optional")
    assert not [f for f in predict(optional.on_gateway_api("agc")) if f.hop == "ingress" and "no-client-cert"
                in f.defeats]
    assert [f for f in predict(optional.on_gateway_api()) if f.hop == "ingress" and "no-client-cert" in f.defeats]


def test_optional_becomes_allow_insecure_fallback_which_lets_anything_through() -> None:
    found = [f for f in predict(GW.with_ingress_annotations(auth_tls_verify_client="optional")) if f.hop == "ingress"]
    assert len(found) == 1
    assert "AllowInsecureFallback" in found[0].setting.text
    assert {"no-client-cert", "unknown-issuer", "expired"} <= found[0].defeats


def test_match_cn_and_a_crl_are_lost_in_the_migration() -> None:
    ids = {(f.id, tuple(sorted(f.defeats))) for f in predict(GW.with_ingress_annotations(
        auth_tls_match_cn="CN=notgonnamatch")) if f.hop == "ingress"}
    assert ("ingress-requires-a-verified-client-cert@ingress", ("match-cn",)) in ids


def test_envoys_own_words_name_the_cause_of_an_alert_and_of_a_503() -> None:
    alert = Outcome("tls_alert", alert="certificate_expired")
    log = ("[debug][connection] verify cert failed: X509_verify_cert: certificate verification error at depth 0: "
           "certificate is not yet valid\n")
    found = attribute(alert, {"ingress": log}, terminator="ingress", headers={}, page=None)
    assert (found.outcome.hop, found.outcome.cause) == ("ingress", "not-yet-valid")
    failure = Outcome("upstream_failure", status=503)
    log = ("remote address:x,TLS_error:|268435581:CERTIFICATE_VERIFY_FAILED:verify cert failed: SAN matcher:"
           "TLS_error_end")
    found = attribute(failure, {"ingress": log}, terminator="ingress", headers={}, page=None)
    assert (found.outcome.hop, found.outcome.cause) == ("ingress", "name-mismatch")
    no_route = Outcome("http_reject", status=404)
    access = '[t] "GET /apix" 404 flags=NR details=route_not_found upstream_failure=-\n'
    found = attribute(no_route, {"ingress-envoy": access}, terminator="ingress", headers={}, page=None)
    assert (found.outcome.hop, found.outcome.cause) == ("ingress", "no-route")


def test_the_ingress_kind_is_parsed_with_a_clear_error() -> None:
    assert parse_ingress_kind("ingress-nginx") is None
    assert parse_ingress_kind("gateway-api") == "envoy-gateway"
    assert parse_ingress_kind("gateway-api:envoy-gateway") == "envoy-gateway"
    assert parse_ingress_kind("gateway-api:agc") == "agc"
    with pytest.raises(UsageError, match="write ingress-nginx or gateway-api"):
        parse_ingress_kind("traefik")


def _chain_file(tmp_path: Path, ingress_lines: str) -> Path:
    from harness.cli.main import main

    assert main(["init", str(tmp_path / "c")]) == 0
    chain = tmp_path / "c" / "chain.yaml"
    text = chain.read_text()
    chain.write_text(text.replace("ingress:\n", f"ingress:\n{ingress_lines}", 1))
    return chain


def test_the_chain_file_chooses_a_gateway_api_ingress(tmp_path: Path) -> None:
    from harness.chainfile.load import load_chain

    loaded = load_chain(_chain_file(tmp_path, "  controller: gateway-api\n"))
    assert loaded.topology.ingress.kind == "gateway-api:envoy-gateway"


def test_an_implementation_without_gateway_api_is_refused_naming_the_fix(tmp_path: Path) -> None:
    from harness.chainfile.load import load_chain

    with pytest.raises(UsageError, match="is for controller: gateway-api"):
        load_chain(_chain_file(tmp_path, "  implementation: envoy-gateway\n"))


def test_the_catalogue_comparison_names_kept_changed_lost_and_not_comparable() -> None:
    from harness.cli.migrate import compare_catalogues

    def doc(*rows: tuple[str, str, str, str]) -> dict:
        return {"cases": [{"id": i, "result": r, "expected": e, "message": m} for i, r, e, m in rows]}

    nginx = doc(("a", "passed", "ok(200)", ""), ("b", "passed", "http_reject(400)", ""),
                ("c", "passed", "http_reject(400)", ""), ("d", "passed", "ok(200)", ""),
                ("e", "passed", "ok(200)", ""), ("f", "skipped", "x", "azure only"),
                ("g", "passed", "http_reject(400)", ""))
    gateway = doc(("a", "passed", "ok(200)", ""), ("b", "passed", "tls_alert(unknown_ca)", ""),
                  ("c", "finding", "tls_alert(unknown_ca)", "FINDING x@ingress"),
                  ("d", "skipped", "ok(200)", "on gateway-api:envoy-gateway: Gateway API gap: no header"),
                  ("e", "skipped", "ok(200)", "on gateway-api:envoy-gateway: ingress-nginx only: server_tokens"),
                  ("f", "skipped", "x", "azure only"), ("g", "failed", "tls_alert(unknown_ca)", "FAIL — differs"))
    assert [(c, v) for c, v, _ in compare_catalogues(nginx, gateway)] == [
        ("a", "kept"), ("b", "changed"), ("c", "lost"), ("d", "lost"), ("e", "not comparable"), ("g", "failed")]


def test_on_your_own_resources_a_case_they_fail_is_lost() -> None:
    """With --resources the Gateway API run serves YOUR resources: a case ingress-nginx passes and they fail is a
    property they do not keep (lost), not a harness failure."""
    from harness.cli.migrate import compare_catalogues

    nginx = {"cases": [{"id": "a", "result": "passed", "expected": "http_reject(400)"},
                       {"id": "b", "result": "failed", "expected": "ok(200)"}]}
    gateway = {"cases": [{"id": "a", "result": "failed", "expected": "tls_alert(certificate_required)",
                          "seen": {"outcome_text": "ok(200)"}},
                         {"id": "b", "result": "failed", "expected": "ok(200)"}]}
    assert compare_catalogues(nginx, gateway) == [("a", "failed", "ingress-nginx passed, Gateway API failed"),
                                                  ("b", "failed", "ingress-nginx failed, Gateway API failed")]
    assert compare_catalogues(nginx, gateway, yours=True) == [
        ("a", "lost", "your resources: expected tls_alert(certificate_required), seen ok(200)"),
        ("b", "failed", "ingress-nginx failed, Gateway API failed")]


def _weakened(tmp_path: Path, chain: Path) -> Path:
    """The chain's migration as migrate writes it, with AllowInsecureFallback: YOUR (weakened) resources."""
    from harness.cli.main import main

    # exit 1: the migration itself loses properties (verify depth, the certificate passed to the pod)
    assert main(["migrate", "--chain", str(chain), "--to", "gateway-api", "--out", str(tmp_path / "out"),
                 "--no-run"]) == 1
    weak = tmp_path / "weak.yaml"
    text = (tmp_path / "out" / "gateway-api.yaml").read_text()
    assert "mode: AllowValidOnly" in text
    weak.write_text(text.replace("mode: AllowValidOnly", "mode: AllowInsecureFallback"))
    return weak


def test_the_chain_file_serves_your_gateway_api_resources_and_a_variant_its_own_migration(tmp_path: Path) -> None:
    from harness.chainfile.load import load_chain
    from harness.render.envoy_gateway import twin_of

    chain = _chain_file(tmp_path, "")
    weak = _weakened(tmp_path, chain)
    chain.write_text(chain.read_text().replace(
        "ingress:\n", f"ingress:\n  controller: gateway-api\n  gateway_api_manifests: [{weak}]\n", 1))
    loaded = load_chain(chain)
    t = loaded.topology
    mine = t.ingress.gateway_api_manifests
    assert mine is not None
    assert mine.source == str(weak)
    gateway = next(d for d in twin_of(t, loaded.certs).documents if d["kind"] == "Gateway")
    assert gateway["spec"]["tls"]["frontend"]["default"]["validation"]["mode"] == "AllowInsecureFallback"  # yours
    variant = t.with_ingress_annotations(auth_tls_verify_depth="2")
    assert not mine.serves(variant)
    gateway = next(d for d in twin_of(variant, loaded.certs).documents if d["kind"] == "Gateway")
    assert gateway["spec"]["tls"]["frontend"]["default"]["validation"]["mode"] == "AllowValidOnly"  # migrated


@pytest.mark.parametrize(("lines", "said"), [
    ("  gateway_api_manifests: [gw.yaml]\n", "is for controller: gateway-api"),
    ("  controller: gateway-api\n  gateway_api_manifests: [missing.yaml]\n", "does not exist"),
    ("  controller: gateway-api\n  gateway_api_manifests: [route.yaml]\n", "holds no Gateway"),
])
def test_bad_gateway_api_manifests_are_one_clear_error(tmp_path: Path, lines: str, said: str) -> None:
    from harness.chainfile.load import load_chain

    chain = _chain_file(tmp_path, lines)
    (chain.parent / "gw.yaml").write_text("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n")
    (chain.parent / "route.yaml").write_text("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n")
    with pytest.raises(UsageError, match=said):
        load_chain(chain)


def test_without_any_log_an_alert_of_the_right_hop_is_the_evidence() -> None:
    """On attach or azure no hop's log is in reach: a refusal by the expected hop with the expected alert passes,
    though the alert alone names only one of its causes (certificate_expired: expired or not yet valid); with logs,
    the cause must be the one expected."""
    from harness.cases.model import _problem
    from harness.probe.outcomes import tls_alert
    from harness.targets.base import RunningChain

    expect = tls_alert("certificate_expired", hop="ingress", cause="not-yet-valid")
    seen = tls_alert("certificate_expired", hop="ingress", cause="expired")
    blind = RunningChain(target="attach", topology=default_topology(), certs=None, endpoints={})  # type: ignore[arg-type]
    assert _problem(expect, seen, blind) is None
    assert _problem(expect, tls_alert("certificate_expired", hop="pod", cause="expired"), blind) is not None
    assert _problem(expect, tls_alert("unknown_ca", hop="ingress"), blind) == "outcome differs"
    seeing = RunningChain(target="local", topology=default_topology(), certs=None, endpoints={},  # type: ignore[arg-type]
                          logs={"ingress": Path("/nonexistent")})
    assert _problem(expect, seen, seeing) is not None


def test_run_on_kind_with_a_gateway_api_ingress_is_one_line_naming_where_it_runs(
        capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    assert main(["run", "--target", "kind", "--ingress", "gateway-api"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--target kind runs ingress-nginx only" in err
    assert "--target attach" in err


def test_a_line_logged_before_the_mark_is_not_the_probes_evidence(tmp_path: Path) -> None:
    """A hop may log a refusal just after its caller saw it — after the next probe's mark. Stamped lines (the pod's
    ``at=…``, a Gateway API ingress's ``[epoch]``) from before the mark are left out; the pod's stamp is not shown."""
    import time

    from harness.targets.base import RunningChain

    pod, envoy = tmp_path / "pod.log", tmp_path / "ingress.log"
    pod.write_text("")
    envoy.write_text("")
    chain = RunningChain(target="local", topology=default_topology(), certs=None, endpoints={},  # type: ignore[arg-type]
                         logs={"pod": pod, "ingress": envoy})
    before = time.time() - 1.0
    mark = chain.evidence_mark()
    with pod.open("a") as fh:
        fh.write(f"pod: 127.0.0.1:1 conn=1 handshake failed: SSLError: UNSUPPORTED_PROTOCOL at={before:.3f}\n")
        fh.write(f"pod: 127.0.0.1:2 conn=2 handshake failed: SSLError: PEER_DID_NOT_RETURN_A_CERTIFICATE "
                 f"at={time.time():.3f}\n")
    with envoy.open("a") as fh:
        fh.write(f"[{before:.3f}][debug][connection] verify cert failed: X509_verify_cert: certificate has expired\n")
        fh.write(f"[{time.time():.3f}][debug][connection] remote address:x,TLS_error:|"
                 "PEER_DID_NOT_RETURN_A_CERTIFICATE\n")
    seen = chain.evidence_since(mark)
    assert seen["pod"].splitlines() == ["pod: 127.0.0.1:2 conn=2 handshake failed: SSLError: "
                                        "PEER_DID_NOT_RETURN_A_CERTIFICATE"]
    assert "expired" not in seen["ingress"]
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in seen["ingress"]


def test_an_alert_is_not_attributed_to_a_line_it_cannot_stand_for() -> None:
    """A protocol_version alert with an unrelated 'certificate has expired' line in the ingress's log: the line is
    another handshake's, the alert's own meaning is the cause."""
    alert = Outcome("tls_alert", alert="protocol_version")
    log = "[debug][connection] verify cert failed: X509_verify_cert: certificate has expired\n"
    found = attribute(alert, {"ingress": log}, terminator="ingress", headers={}, page=None)
    assert (found.outcome.hop, found.outcome.cause) == ("ingress", "protocol-version")
    expired = Outcome("tls_alert", alert="certificate_expired")
    log = "[debug][connection] verify cert failed: X509_verify_cert: certificate is not yet valid\n"
    found = attribute(expired, {"ingress": log}, terminator="ingress", headers={}, page=None)
    assert found.outcome.cause == "not-yet-valid"  # the line names which of the alert's causes it was


def test_the_partner_example_migrated_expects_what_its_optional_no_ca_check_becomes(tmp_path: Path) -> None:
    """partner-mtls checks optional_no_ca with match-cn. Migrated to Envoy Gateway (AllowInsecureFallback): a
    request without a certificate on the open host's session is the listener's 404, and the match-cn cases are the
    lost match-cn (a finding), not failures; on AGC (no fallback) the handshake still asks: the alert."""
    from harness.cases.catalogue import catalogue_for
    from harness.cases.model import CaseFacts
    from harness.chainfile.load import load_chain
    from harness.cli.main import main
    from harness.findings.predict import prediction_for

    assert main(["init", str(tmp_path / "p"), "--example", "partner-mtls"]) == 0
    t = load_chain(tmp_path / "p" / "chain.yaml").topology
    for impl, kind in (("envoy-gateway", "http_reject"), ("agc", "tls_alert")):
        on = t.on_gateway_api(impl)
        case = next(c for c in catalogue_for(on)
                    if c.id == "ingress-refuses-a-request-for-its-mtls-host-on-another-hosts-tls-session")
        assert case.on(on).expect.kind == kind, (impl, case.on(on).expect)
    on = t.on_gateway_api("envoy-gateway")
    match_cn = next(c for c in catalogue_for(on) if c.id == "ingress-rejects-non-matching-cn")
    assert match_cn.variant is not None
    predicted = prediction_for(match_cn.variant(on), CaseFacts(match_cn.on(on).expect, "apim-client", None, "ingress"))
    assert predicted is not None
    assert predicted.finding is not None
    assert "match-cn" in predicted.finding.setting.text
