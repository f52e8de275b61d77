"""The local target: the chain from real Envoy, nginx and the echo pod, started, probed and stopped for real."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.model.topology import default_topology
from harness.targets.local import LocalTarget

REPO = Path(__file__).resolve().parents[2]



pytestmark = pytest.mark.mtls_needs_chain


def _pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        # a zombie still answers kill(0); it is gone for our purpose once its state is Z
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _children_of(pid: int) -> list[int]:
    """Every descendant PID of ``pid`` (from /proc), so a test can check that nothing outlives the harness."""
    out: list[int] = []
    frontier = [pid]
    for _ in range(5):  # bounded: the chain is at most nginx master → worker deep
        nxt = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                ppid = int((proc / "stat").read_text().split(")")[-1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in frontier:
                nxt.append(int(proc.name))
        out += nxt
        frontier = nxt
        if not frontier:
            break
    return out


def test_gateway_answers_with_the_pods_json_and_a_trace_of_four_tls_sessions() -> None:
    topo = default_topology()
    with LocalTarget(topo) as chain:
        result = chain.probe("gateway")
        assert result.outcome.kind == "ok", result.describe()
        doc = result.json()
        trace = doc["trace"]
        assert set(trace) >= {"gateway", "apim", "ingress", "pod"}, trace
        for hop in ("gateway", "apim", "ingress", "pod"):
            assert trace[hop]["tls"].startswith("TLSv1."), (hop, trace[hop])
            assert trace[hop]["cipher"], (hop, trace[hop])
        # the identity the ingress verified is APIM's client cert
        apim_client = chain.certs.leaf(topo.apim.upstream.client_cert)
        assert trace["ingress"]["peer_sha256"] == apim_client.fingerprint_sha256
        assert trace["ingress"]["verify"] == "SUCCESS"
        # the pod saw the ingress's proxy-ssl client cert
        ingress_client = chain.certs.leaf("ingress-client")
        assert doc["peer"]["sha256"] == ingress_client.fingerprint_sha256


def test_up_json_prints_endpoints_and_curl_reaches_the_pod_through_all_hops(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    proc = subprocess.Popen([sys.executable, "-m", "harness", "up", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, proc.stderr.read() if proc.stderr else ""
        doc = json.loads(line)
        gw = doc["hops"]["gateway"]
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "5", "--cacert", gw["ca_bundle"],
             "--resolve", f"{gw['server_name']}:{gw['port']}:{gw['host']}", gw["url"]],
            capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        body = json.loads(out.stdout)
        assert body["hop"] == "pod"
        assert [h for h in ("gateway", "apim", "ingress", "pod") if body["trace"].get(h, {}).get("tls")] == \
               ["gateway", "apim", "ingress", "pod"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)


def _ingress_curl(ep: dict, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--cacert", ep["ca_bundle"],
         "--resolve", f"{ep['server_name']}:{ep['port']}:{ep['host']}", *extra, ep["url"]],
        capture_output=True, text=True, check=False)


def test_ingress_answers_curl_400_without_cert_400_for_unknown_ca_and_200_for_apims_cert() -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    with LocalTarget(default_topology()) as chain:
        ep = chain.endpoint("ingress").as_dict()
        none = _ingress_curl(ep)
        assert "400" in none.stdout, none
        assert "No required SSL certificate was sent" in none.stdout, none
        rogue = chain.certs.fault("unknown-ca", like="apim-client")
        bad = _ingress_curl(ep, "--cert", str(rogue.chain), "--key", str(rogue.key))
        assert "400" in bad.stdout, bad
        assert "The SSL certificate error" in bad.stdout, bad
        good = _ingress_curl(ep, "--cert", ep["client_cert"], "--key", ep["client_key"])
        assert json.loads(good.stdout)["hop"] == "pod", good


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_up_leaves_no_process_behind_after(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "harness", "up", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    line = proc.stdout.readline() if proc.stdout else ""
    assert line, proc.stderr.read() if proc.stderr else ""
    children = _children_of(proc.pid)
    assert len(children) >= 4, children  # pod, nginx master (+ worker), two Envoys
    proc.send_signal(sig)
    assert proc.wait(timeout=15) in (0, 130)
    deadline = time.monotonic() + 5
    while _pids_alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_alive(children) == []


def test_a_failed_start_stops_what_did_start_and_shows_the_log(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.errors import StartError
    from harness.runtime import running_processes

    # an "envoy" that prints a complaint and exits: the pod and nginx do start, the two Envoy hops never do
    fake = tmp_path / "envoy"
    fake.write_text("#!/bin/sh\necho 'bad config: no such cluster' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MTLS_HARNESS_ENVOY", str(fake))
    before = {p.pid for p in running_processes()}
    with pytest.raises(StartError) as info, LocalTarget(default_topology()):
        pass
    message = str(info.value)
    assert "exited with code 1" in message
    assert "bad config: no such cluster" in message
    assert {p.pid for p in running_processes()} - before == set()


def test_reconfigure_swaps_only_the_changed_hop() -> None:
    topo = default_topology()
    target = LocalTarget(topo)
    with target:
        pids = {name: p.pid for name, p in target._procs.items()}
        variant = topo.with_ingress_annotations(auth_tls_verify_client="optional")
        chain = target.reconfigure(variant)
        assert {name: p.pid for name, p in target._procs.items()} == pids  # nginx reloaded in place, nothing restarted
        no_cert = chain.probe("ingress", client_cert=None, client_key=None)
        assert no_cert.outcome.kind == "ok", no_cert.describe()
        assert no_cert.json()["headers"].get("ssl-client-verify") == "NONE"



def test_two_xdist_workers_each_run_their_own_chain_without_port_clashes(pytester: pytest.Pytester,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLS_TEST_PORTS_DIR", str(tmp_path))
    pytester.makepyfile(test_two_chains="""
        import json, os, pathlib, time
        from harness.targets.local import LocalTarget

        def _run():
            with LocalTarget() as chain:
                ports = sorted(ep.port for ep in chain.endpoints.values())
                out = pathlib.Path(os.environ["MTLS_TEST_PORTS_DIR"]) / os.environ["PYTEST_XDIST_WORKER"]
                out.write_text(json.dumps(ports))
                time.sleep(1.0)  # both chains are up at the same time
                assert chain.probe("gateway").outcome.kind == "ok"

        def test_chain_one():
            _run()

        def test_chain_two():
            _run()
    """)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    port_sets = [set(json.loads(f.read_text())) for f in sorted(tmp_path.iterdir())]
    assert len(port_sets) == 2
    assert port_sets[0].isdisjoint(port_sets[1]), port_sets


def test_after_an_ingress_hot_reload_apim_verifies_the_new_ingress_cert_instead_of_resuming() -> None:
    # nginx keeps its TLS session cache across a reload; an apim that resumed its session to the ingress would never
    # see the unknown-CA cert the ingress now serves and answer 200 (found by running the e2e suite in random order)
    topo = default_topology()
    target = LocalTarget(topo)
    with target as chain:
        first = chain.probe("gateway")
        assert first.outcome.kind == "ok", first.describe()  # apim holds a TLS session with the ingress now
        name = f"{topo.ingress.server_cert}~unknown-ca"
        secrets = tuple(dataclasses.replace(s, tls=name) if s.name == topo.ingress.primary.tls_secret else s
                        for s in topo.ingress.secrets)
        pids = {hop: p.pid for hop, p in target._procs.items()}
        bad = target.reconfigure(topo.replace(ingress=dataclasses.replace(topo.ingress, server_cert=name,
                                                                          secrets=secrets)))
        assert {hop: p.pid for hop, p in target._procs.items()} == pids  # an nginx hot reload, apim kept running
        seen = bad.probe("gateway")
        assert seen.outcome.kind == "upstream_failure", seen.describe()
        assert seen.outcome.status == 500, seen.describe()
        assert "hop=apim" in seen.headers.get("x-harness-detail", ""), seen.headers  # apim refused, not the gateway
        assert "TLS_error" in seen.headers.get("x-harness-detail", ""), seen.headers  # a TLS failure, not a refusal
