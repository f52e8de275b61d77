"""The rotation rehearsal: plans, static checks, and live rehearsals on the real local chain under load."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.errors import UsageError
from harness.model.topology import default_pki_plan
from harness.pki.certset import CertSet, generate_cert_set, load_cert_set
from harness.rotation.plan import (
    CertPair,
    default_plan,
    goal_state,
    link_problems,
    load_plan,
    parse_plan,
    plan_scope,
    simulate,
    state_differences,
    static_checks,
)
from harness.rotation.rehearsal import RehearsalOptions, rehearsal_topology

REPO = Path(__file__).resolve().parents[2]
PLANS = REPO / "fixtures" / "rotation"
#: short rehearsals: every step still gets load, a hot reload and the probes
FAST = RehearsalOptions(duration=2.0, min_dwell=0.3, lint=False)


live = pytest.mark.mtls_needs_chain


@pytest.fixture(scope="module")
def nxt(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    """A second set for the same PKI plan: new keys, new CAs, the same names."""
    return generate_cert_set(default_pki_plan("ecdsa"), tmp_path_factory.mktemp("next") / "set")


@pytest.fixture
def pair(pki_set: CertSet, nxt: CertSet, tmp_path: Path) -> CertPair:
    return CertPair(pki_set, nxt, tmp_path / "pair")


# ---------------------------------------------------------------------------------------------------------------
# plans and the model (no chain)
# ---------------------------------------------------------------------------------------------------------------
def test_default_plan_overlaps_trust_before_any_swap_and_removes_old_roots_last(pki_set: CertSet,
                                                                                pair: CertPair) -> None:
    topology = rehearsal_topology(pki_set)
    plan = default_plan(topology, pair)
    actions = [s.action for s in plan.steps]
    first_swap = min(i for i, a in enumerate(actions) if a in ("serve", "present-client-cert"))
    last_swap = max(i for i, a in enumerate(actions) if a in ("serve", "present-client-cert"))
    assert set(actions[:first_swap]) == {"trust"}
    assert set(actions[last_swap + 1:]) == {"untrust"}
    states = simulate(plan, topology)
    assert [link_problems(st, topology, pair) for st in states] == [[]] * len(states)
    assert state_differences(states[-1], goal_state(topology, plan_scope(plan, topology)), pair) == []


def test_fixture_good_plan_is_the_default_plan_for_two_independent_sets(pki_set: CertSet, pair: CertPair) -> None:
    topology = rehearsal_topology(pki_set)
    good = load_plan(PLANS / "good.yaml", topology)
    assert [s.describe() for s in good.steps] == [s.describe() for s in default_plan(topology, pair).steps]


def test_a_next_set_identical_to_the_current_one_needs_no_step(pki_set: CertSet, tmp_path: Path) -> None:
    same = tmp_path / "same"
    shutil.copytree(pki_set.directory, same, ignore=shutil.ignore_patterns("faults", "bundles"))
    pair = CertPair(pki_set, load_cert_set(same), tmp_path / "pair")
    assert default_plan(rehearsal_topology(pki_set), pair).steps == ()


def test_static_check_predicts_the_wrong_order_break_at_its_step(pki_set: CertSet, pair: CertPair) -> None:
    topology = rehearsal_topology(pki_set)
    plan = load_plan(PLANS / "wrong-order.yaml", topology)
    report = static_checks(pair, topology, plan, simulate(plan, topology), lint=False)
    assert [(i, p.caller, p.callee) for i, p in report.predicted] == [(1, "apim", "ingress")]
    assert "next:apim-client" in report.predicted[0][1].message
    assert not report.ok


def test_static_check_predicts_the_ingress_losing_the_pod_when_it_presents_the_next_cert_too_early(
        pki_set: CertSet, pair: CertPair) -> None:
    topology = rehearsal_topology(pki_set)
    plan = parse_plan("steps:\n"
                      "  - {hop: ingress, action: present-client-cert, leaf: next:ingress-client}\n"
                      "  - {hop: pod, action: trust, ca: [current:pod-ca, next:pod-ca]}\n", topology)
    report = static_checks(pair, topology, plan, simulate(plan, topology), lint=False)
    assert [(i, p.caller, p.callee) for i, p in report.predicted] == [(1, "ingress", "pod")]
    assert "the pod would reject the ingress's client cert next:ingress-client" in report.predicted[0][1].message


def test_static_check_finds_an_expired_leaf_in_the_next_set(pki_set: CertSet, nxt: CertSet, tmp_path: Path) -> None:
    bad = tmp_path / "bad-next"
    shutil.copytree(nxt.directory, bad, ignore=shutil.ignore_patterns("faults", "bundles"))
    expired = nxt.fault("expired", "apim-client")
    for name in ("cert.pem", "chain.pem", "key.pem"):
        shutil.copyfile(getattr(expired, name.removesuffix(".pem")), bad / "leaves" / "apim-client" / name)
    pair = CertPair(pki_set, load_cert_set(bad), tmp_path / "pair")
    topology = rehearsal_topology(pki_set)
    plan = default_plan(topology, pair)
    report = static_checks(pair, topology, plan, simulate(plan, topology), lint=False)
    assert any(e.startswith("next:apim-client: expired") for e in report.errors), report.errors


@pytest.mark.parametrize(("text", "fragment"), [
    ("steps: [{hop: ingress, action: trust, ca: [current:apim-client-ca}", "not valid YAML at line 1"),
    ("- {hop: ingress}", "a mapping with a 'steps' list"),
    ("steps: []", "non-empty list"),
    ("steps: [{hop: ingres, action: trust, ca: current:apim-client-ca}]", "unknown hop 'ingres'"),
    ("steps: [{hop: pod, action: present-client-cert, leaf: next:ingress-client}]",
     "the pod presents no client certificate upstream"),
    ("steps: [{hop: pod, action: trust, ca: next:apim-client-ca}]", "the pod trusts no CA like next:apim-client-ca"),
    ("steps: [{hop: ingress, action: swap, ca: current:apim-client-ca}]", "unknown action 'swap'"),
    ("steps: [{hop: apim, action: present-client-cert, leaf: next:apim-clint}]", "unknown leaf 'next:apim-clint'"),
    ("steps: [{hop: apim, action: serve, leaf: next:apim-client}]", "the apim serves apim-server"),
    ("steps: [{hop: ingress, action: trust, ca: later:apim-client-ca}]", "unknown set 'later'"),
    ("steps: [{hop: ingress, action: trust, ca: next:apim-ca}]", "trusts no CA like next:apim-ca"),
    ("steps: [{hop: ingress, action: trust, ca: next:apim-client-ca, colour: red}]", "unknown key 'colour'"),
    ("steps: [{hop: ingress, action: untrust, ca: current:apim-client-ca}]", "would trust no CA at all"),
    ("steps: [{hop: ingress, action: untrust, ca: next:apim-client-ca}]", "does not trust next:apim-client-ca"),
])
def test_plan_mistakes_are_one_line_naming_the_value_and_the_fix(pki_set: CertSet, text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_plan(text, rehearsal_topology(pki_set), source="plan.yaml")
    message = str(info.value)
    assert fragment in message
    assert message.startswith("plan.yaml")
    assert "\n" not in message
    assert " — " in message


# ---------------------------------------------------------------------------------------------------------------
# the command line (input errors need no chain)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("plan_text", "fragment"), [
    (None, "no such plan file"),
    ("steps:\n  - {hop: ingress, action: trust, ca: [current:apim-client-ca\n", "not valid YAML"),
    ("steps:\n  - {hop: ingress, action: rotate, ca: current:apim-client-ca}\n", "unknown action 'rotate'"),
    ("steps:\n  - {hop: envoy, action: serve, leaf: next:apim-server}\n", "unknown hop 'envoy'"),
    ("steps:\n  - {hop: gateway, action: serve, leaf: next:gateway}\n", "unknown leaf 'next:gateway'"),
])
def test_a_bad_plan_file_exits_2_with_one_line(pki_set: CertSet, nxt: CertSet, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str], plan_text: str | None,
                                               fragment: str) -> None:
    plan = tmp_path / "plan.yaml"
    if plan_text is not None:
        plan.write_text(plan_text)
    code = main(["rotate", "--current", str(pki_set.directory), "--next", str(nxt.directory), "--plan", str(plan)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert fragment in err
    assert str(plan) in err


def test_a_missing_cert_set_directory_exits_2_naming_it(nxt: CertSet, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rotate", "--current", str(tmp_path / "nope"), "--next", str(nxt.directory)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert str(tmp_path / "nope") in err


def test_show_plan_prints_the_default_plan_in_the_file_format(pki_set: CertSet, nxt: CertSet,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rotate", "--current", str(pki_set.directory), "--next", str(nxt.directory), "--show-plan"])
    out = capsys.readouterr().out
    assert code == 0
    topology = rehearsal_topology(pki_set)
    reread = parse_plan(out, topology)
    assert [s.describe() for s in reread.steps] == [s.describe() for s in load_plan(PLANS / "good.yaml",
                                                                                      topology).steps]


# ---------------------------------------------------------------------------------------------------------------
# live rehearsals: real Envoy ×2, real nginx, the echo pod, load through all four hops
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Files:
    chain: Path
    key: Path


