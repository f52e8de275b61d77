"""The self-test's pieces that start no process: the mutant catalogue, each render mutant's edit on the files the
renderers really write, the run order, and the CLI's answers to bad input. Running mutants on a live chain is in
tests/integration/test_selftest.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cases.catalogue import CATALOGUE
from harness.cases.model import Case
from harness.cli.main import main
from harness.cli.selftest import verdict
from harness.model.topology import Topology, default_topology
from harness.pki.certset import CertSet, cert_set_for
from harness.probe.outcomes import ok
from harness.render.envoy import render_envoy
from harness.render.nginx import render_nginx
from harness.selftest import MUTANTS, CatalogueRun, MutantResult, mutant_named
from harness.selftest.run import order_cases, run_mutant, select_cases

LOOPBACK = "127.0.0.1"

# issue 15 "mtls-harness selftest": the misconfigurations the self-test must at least apply
REQUIRED = {
    "ingress-proxy-ssl-verify-off", "ingress-verify-client-optional", "ingress-trusts-every-ca",
    "ingress-verify-depth-raised", "ingress-crl-dropped", "apim-upstream-name-unchecked",
    "gateway-upstream-ca-unchecked", "gateway-keeps-trace-headers", "gateway-allows-tls1.0",
    "apim-accepts-any-client-cert", "pod-accepts-any-client-cert", "apim-jwt-audience-unchecked",
    "ingress-match-cn-ignored", "upstream-tls-session-resumption",
}
# the same weaknesses of the Gateway API twin's ingress (its chain is default_topology().on_gateway_api())
GATEWAY_API = {"ingress-gateway-api-client-cert-optional", "ingress-gateway-api-trusts-any-client-ca"}


@pytest.fixture(scope="module")
def topology() -> Topology:
    return default_topology()


@pytest.fixture(scope="module")
def certs(topology: Topology) -> CertSet:
    return cert_set_for(topology.pki)


def test_the_catalogue_has_every_required_mutant_of_both_kinds_with_unique_names() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED | GATEWAY_API, (REQUIRED | GATEWAY_API) - set(names)
    assert {m.kind for m in MUTANTS} == {"config", "render"}
    assert all(m.why and m.what for m in MUTANTS)


def test_a_mutant_must_say_how_it_is_applied() -> None:
    good = mutant_named("ingress-crl-dropped")
    with pytest.raises(ValueError, match="a config mutant has a topology change"):
        dataclasses.replace(good, kind="config")


def test_a_mutant_runs_on_the_chain_with_its_ingress() -> None:
    for m in MUTANTS:
        want = "gateway-api:envoy-gateway" if m.name in GATEWAY_API else "ingress-nginx"
        assert (m.ingress, m.unmutated().ingress.kind) == (want, want), m.name
    gateway_api = mutant_named("ingress-gateway-api-client-cert-optional")
    assert gateway_api.unmutated() == default_topology().on_gateway_api()
    assert gateway_api.mutated("rsa") == default_topology("rsa").on_gateway_api()  # a render mutant: model unchanged
    with pytest.raises(ValueError, match="ingress 'gateway-api:nginx' — write ingress-nginx or gateway-api:"):
        dataclasses.replace(gateway_api, ingress="gateway-api:nginx")


def test_config_mutants_change_the_model(topology: Topology) -> None:
    for m in MUTANTS:
        if m.topology is not None:
            assert m.topology(topology) != topology, m.name
    every = mutant_named("ingress-trusts-every-ca").topology
    assert every is not None
    (secret,) = [s for s in every(topology).ingress.secrets if s.name == "apim-client-ca"]
    assert set(secret.ca) == {"public-root", "apim-ca", "apim-client-ca", "ingress-ca", "pod-ca", "consumer-ca"}


def _envoy(topology: Topology, hop: Any, certs: CertSet, workdir: Path, jwks: Any = None) -> Path:
    config = render_envoy(topology, hop, certs, listen=(LOOPBACK, 18443), upstream=(LOOPBACK, 19443),
                          admin=(LOOPBACK, 19901), workdir=workdir, jwks=jwks)
    return config.config_path


def _edit(name: str, hop: str, config: Path | None, argv: list[str] | None = None) -> tuple[list[str], bool]:
    edit = mutant_named(name).edit
    assert edit is not None
    return edit(hop, config, argv or [])


def test_resumption_mutant_removes_the_session_key_limit_from_both_stand_ins(topology: Topology, certs: CertSet,
                                                                            tmp_path: Path) -> None:
    for hop in ("gateway", "apim"):
        path = _envoy(topology, hop, certs, tmp_path / hop)
        assert '"max_session_keys":0' in path.read_text()
        assert _edit("upstream-tls-session-resumption", hop, path)[1]
        assert "max_session_keys" not in path.read_text()
        yaml.safe_load(path.read_text())  # still a config Envoy can read


def test_render_edits_touch_only_their_own_hop(topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    path = _envoy(topology, "gateway", certs, tmp_path)
    before = path.read_text()
    assert not _edit("apim-accepts-any-client-cert", "gateway", path)[1]
    assert not _edit("ingress-crl-dropped", "gateway", path)[1]
    assert path.read_text() == before


def test_gateway_keeps_inbound_trace_headers_but_still_overwrites_its_own(topology: Topology, certs: CertSet,
                                                                         tmp_path: Path) -> None:
    path = _envoy(topology, "gateway", certs, tmp_path)
    assert _edit("gateway-keeps-trace-headers", "gateway", path)[1]
    routes = yaml.safe_load(path.read_text())["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]
    removed = [h.lower() for h in routes["request_headers_to_remove"]]
    assert len(removed) == 1
    assert "gateway" in removed[0]


def test_apim_accepts_any_client_cert_makes_the_policy_call_every_cert_valid(topology: Topology, certs: CertSet,
                                                                            tmp_path: Path) -> None:
    path = _envoy(topology.with_hop("apim", validate_client_certificate=True, negotiate_client_certificate=True),
                  "apim", certs, tmp_path)
    assert _edit("apim-accepts-any-client-cert", "apim", path)[1]
    assert "peerCertificateValidated" not in path.read_text()


def test_jwt_mutant_drops_the_audiences(certs: CertSet, tmp_path: Path) -> None:
    from harness.targets.base import apim_jwks

    oauth = next(c for c in CATALOGUE if c.id.startswith("apim-oauth-"))
    assert oauth.variant is not None
    topology = oauth.variant(default_topology())
    path = _envoy(topology, "apim", certs, tmp_path, jwks=apim_jwks(topology, certs))
    assert "audiences" in path.read_text()
    assert _edit("apim-jwt-audience-unchecked", "apim", path)[1]
    assert "audiences" not in path.read_text()
    assert "issuer" in path.read_text()


def _nginx(topology: Topology, certs: CertSet, workdir: Path) -> Path:
    return render_nginx(topology, certs, listen=(LOOPBACK, 18443), pod=(LOOPBACK, 19443), workdir=workdir).conf_path


def test_crl_mutant_drops_ssl_crl_and_nothing_else(topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    secrets = tuple(dataclasses.replace(s, crl="apim-client-ca") if s.name == "apim-client-ca" else s
                    for s in topology.ingress.secrets)
    path = _nginx(topology.replace(ingress=dataclasses.replace(topology.ingress, secrets=secrets)), certs, tmp_path)
    before = path.read_text()
    assert "ssl_crl " in before
    assert _edit("ingress-crl-dropped", "ingress", path)[1]
    after = path.read_text()
    assert "ssl_crl " not in after
    assert [ln for ln in before.splitlines() if "ssl_crl " not in ln] == after.splitlines()
    # nothing to drop where the chain has no CRL: the edit says so (a mutant that never applies is reported)
    assert not _edit("ingress-crl-dropped", "ingress", _nginx(topology, certs, tmp_path / "plain"))[1]


def test_match_cn_mutant_drops_the_dn_check(topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    path = _nginx(topology.with_ingress_annotations(auth_tls_match_cn="CN=apim-client"), certs, tmp_path)
    assert "$ssl_client_s_dn !~" in path.read_text()
    assert _edit("ingress-match-cn-ignored", "ingress", path)[1]
    text = path.read_text()
    assert "$ssl_client_s_dn !~" not in text
    assert "client certificate unauthorized" not in text
    assert "ssl_verify_client" in text


def test_pod_mutant_changes_only_the_client_auth_argument() -> None:
    argv = ["python", "-m", "harness.pod.echo", "--client-auth", "optional", "--client-ca", "ca.crt"]
    new, changed = _edit("pod-accepts-any-client-cert", "pod", None, argv)
    assert changed
    assert new == ["python", "-m", "harness.pod.echo", "--client-auth", "none", "--client-ca", "ca.crt"]
    assert _edit("pod-accepts-any-client-cert", "ingress", None, argv) == (argv, False)


def _gateway_api(topology: Topology, certs: CertSet, workdir: Path) -> Path:
    from harness.targets.lanes import LanePlan, gateway_api_ingress

    return gateway_api_ingress(LanePlan(), topology.on_gateway_api(), certs, listen=(LOOPBACK, 18443),
                               pod=(LOOPBACK, 19443), admin=(LOOPBACK, 19901), workdir=workdir).config_path


def _tls_contexts(path: Path, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if str(node.get("@type", "")).endswith(kind):
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(path.read_text()))  # still the JSON the renderer writes, and Envoy reads
    return found


def test_gateway_api_client_cert_mutant_makes_the_listener_stop_requiring_a_cert(topology: Topology, certs: CertSet,
                                                                                 tmp_path: Path) -> None:
    path = _gateway_api(topology, certs, tmp_path)
    upstream = _tls_contexts(path, "UpstreamTlsContext")
    (before,) = _tls_contexts(path, "DownstreamTlsContext")
    assert before["require_client_certificate"] is True
    assert _edit("ingress-gateway-api-client-cert-optional", "ingress", path)[1]
    (after,) = _tls_contexts(path, "DownstreamTlsContext")
    assert after["require_client_certificate"] is False
    assert after["common_tls_context"] == before["common_tls_context"]  # it still verifies a cert that comes
    assert _tls_contexts(path, "UpstreamTlsContext") == upstream
    # applied once: a second edit finds nothing to change (a mutant that changes nothing is reported not applied)
    assert not _edit("ingress-gateway-api-client-cert-optional", "ingress", path)[1]


def test_gateway_api_trust_mutant_accepts_untrusted_client_certs_and_still_requires_one(
        topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    path = _gateway_api(topology, certs, tmp_path)
    upstream = _tls_contexts(path, "UpstreamTlsContext")
    assert upstream  # the BackendTLSPolicy towards the pod: not the mutant's to touch
    assert "trust_chain_verification" not in path.read_text()
    assert _edit("ingress-gateway-api-trusts-any-client-ca", "ingress", path)[1]
    (after,) = _tls_contexts(path, "DownstreamTlsContext")
    validation = after["common_tls_context"]["validation_context"]
    assert validation["trust_chain_verification"] == "ACCEPT_UNTRUSTED"
    assert "trusted_ca" in validation
    assert after["require_client_certificate"] is True
    assert _tls_contexts(path, "UpstreamTlsContext") == upstream
    assert not _edit("ingress-gateway-api-trusts-any-client-ca", "ingress", path)[1]


def test_gateway_api_mutants_leave_an_ingress_that_already_falls_back_and_nginx_alone(
        topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    # auth-tls-verify-client optional migrates to AllowInsecureFallback: no requirement, ACCEPT_UNTRUSTED already
    fallback = _gateway_api(topology.with_ingress_annotations(auth_tls_verify_client="optional"), certs, tmp_path)
    nginx = _nginx(topology, certs, tmp_path / "nginx")
    for path in (fallback, nginx):
        before = path.read_text()
        for name in sorted(GATEWAY_API):
            assert not _edit(name, "ingress", path)[1], (name, path)
        assert path.read_text() == before
    apim = _envoy(topology, "apim", certs, tmp_path / "apim")
    assert not _edit("ingress-gateway-api-client-cert-optional", "apim", apim)[1]


def test_a_gateway_api_mutant_is_judged_against_a_baseline_of_its_own_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.selftest.run as run

    calls: list[tuple[str, bool]] = []
    baselines = {"gateway-api:envoy-gateway": CatalogueRun(passed=["a", "b"], findings={"f@ingress": ["c"]},
                                                           ingress="gateway-api:envoy-gateway")}

    def fake(cases: Any, base: Topology, *, tamper: Any = None, progress: Any = None) -> CatalogueRun:
        calls.append((base.ingress.kind, tamper is not None))
        if tamper is None:
            return baselines[base.ingress.kind]
        tamper.edits = 1
        # "a" fails on the mutant; "c" was a finding the twin's configuration predicts on the baseline: no catch
        return CatalogueRun(passed=["b"], failed=["a", "c"], messages={"a": "a: FAIL", "c": "c: FAIL"},
                            ingress=base.ingress.kind)

    monkeypatch.setattr(run, "run_catalogue", fake)
    reference = CatalogueRun(passed=["a", "b", "c"])  # the ingress-nginx baseline the CLI ran
    first = run_mutant(mutant_named("ingress-gateway-api-client-cert-optional"), [], reference)
    assert (first.status, first.caught_by) == ("caught", ["a"])
    assert calls == [("gateway-api:envoy-gateway", False), ("gateway-api:envoy-gateway", True)]
    assert reference.others == baselines  # kept: the next mutant of that chain does not run it again
    second = run_mutant(mutant_named("ingress-gateway-api-trusts-any-client-ca"), [], reference)
    assert second.status == "caught"
    assert calls[2:] == [("gateway-api:envoy-gateway", True)]
    nginx = run_mutant(mutant_named("ingress-crl-dropped"), [], reference)
    assert calls[3:] == [("ingress-nginx", True)]
    assert nginx.caught_by == ["a", "c"]
    # a baseline with a failed case judges nothing: its mutants are errors that say so
    broken = CatalogueRun(passed=["a"], failed=["b"], messages={"b": "b: FAIL — outcome differs\ndetail"},
                          ingress="gateway-api:envoy-gateway")
    result = run_mutant(mutant_named("ingress-gateway-api-trusts-any-client-ca"), [],
                        CatalogueRun(others={"gateway-api:envoy-gateway": broken}))
    assert result.status == "error"
    assert result.describe() == ("ERROR: 1 cases fail on the unmutated gateway-api:envoy-gateway chain, so no "
                                 "mutant of it can be judged: b — b: FAIL — outcome differs")


def test_run_order_is_base_chain_then_ingress_only_variants_then_the_rest(topology: Topology) -> None:
    def case(cid: str, variant: Any = None) -> Case:
        return Case(cid, "ingress", "client-cert", "x", ok(200), "test", variant=variant)

    cases = [case("apim-variant", lambda t: t.with_hop("apim", negotiate_client_certificate=True)),
             case("ingress-variant", lambda t: t.with_ingress_annotations(auth_tls_verify_depth="2")),
             case("base"),
             case("ingress-variant-2", lambda t: t.with_ingress_annotations(auth_tls_verify_client="optional"))]
    assert [c.id for c in order_cases(cases, topology)] == ["base", "ingress-variant", "ingress-variant-2",
                                                           "apim-variant"]


def test_case_selection_by_pattern() -> None:
    chosen = select_cases(CATALOGUE, include=["ingress-rejects-client-cert-*"], exclude=["*-tls1.2"])
    assert chosen
    assert all(c.id.startswith("ingress-rejects-client-cert-") and c.id.endswith("tls1.3")
                          for c in chosen)


def _result(name: str, status: Any, pending: str | None = None) -> MutantResult:
    mutant = mutant_named(name)
    if pending is not None:
        mutant = dataclasses.replace(mutant, pending=pending)
    return MutantResult(mutant, status, CatalogueRun(passed=["a"]), ["a"] if status == "caught" else [])


def test_a_pending_mutant_may_survive_only_with_allow_pending_and_a_caught_one_flags_its_stale_note() -> None:
    # no mutant is pending today: make one so (as a mutant whose catching case is not written yet would be)
    plain = "ingress-crl-dropped"

    def _result_pending(status: Any) -> MutantResult:
        return _result("ingress-trusts-every-ca", status, pending="needs a cross-domain case")

    assert verdict(_result_pending("survived"), allow_pending=True) is None
    assert "NOT CAUGHT" in (verdict(_result_pending("survived"), allow_pending=False) or "")
    assert "remove its pending note" in (verdict(_result_pending("caught"), allow_pending=True) or "")
    assert "NOT CAUGHT" in (verdict(_result(plain, "survived"), allow_pending=True) or "")
    assert "NOT APPLIED" in (verdict(_result(plain, "not-applied"), allow_pending=True) or "")
    assert verdict(_result(plain, "caught"), allow_pending=False) is None


@pytest.mark.parametrize(("argv", "says"), [
    (["--only", "ingress-crl-dropped,no-such-mutant"], "--only no-such-mutant: no such mutant"),
    (["--case", "no-such-case-*"], "--case 'no-such-case-*': matches none of the"),
    (["--case", "ingress-*", "--exclude-case", "*"], "leave no case to run"),
])
def test_bad_input_is_one_error_line_and_exit_2(argv: list[str], says: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("mtls-harness: error: ")
    assert says in line


def test_list_names_every_mutant_and_its_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--list"]) == 0
    text = capsys.readouterr().out
    for name in REQUIRED:
        assert name in text
    assert main(["selftest", "--list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in doc["mutants"]} >= REQUIRED
    assert {m["kind"] for m in doc["mutants"]} == {"config", "render"}
