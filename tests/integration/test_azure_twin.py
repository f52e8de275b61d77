"""The production twin, run as a user runs it: ``mtls-harness`` child processes against the local fake of Azure
(tests/fakes/fake_azure.py; the real SDKs, DefaultAzureCredential reaching a stand-in ``az`` on PATH).

"Production" here is a local chain started from the discovered chain file with two planted drifts — production
differing from its own configuration as Azure reports it: the Ingress's auth-tls-verify-client turned to optional,
and the gateway's TLS floor lowered to 1.1. The live run (``--target azure``) reaches it through ``[runner.hops]``;
the twin runs the configuration as read. The differential must name exactly the cases those drifts change."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.chainfile.load import load_chain
from tests.fakes.fake_azure import FakeAzure, build_environment, write_cli_setup

#: seconds for one CLI child (a discovery, a run of the discovered chain's catalogue twice)
CLI_TIMEOUT = 600


def _cli(*argv: str, env: dict[str, str], timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fake-azure")
    with FakeAzure(build_environment("good"), tmp) as fake:
        yield fake, tmp
        assert fake.errors == []


@pytest.fixture(scope="module")
def discovered(good, tmp_path_factory) -> Path:
    fake, tmp = good
    config, env = write_cli_setup(fake, tmp / "user")
    out = tmp_path_factory.mktemp("init") / "prod-chain"
    done = _cli("init", "--from-azure", str(config), str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out / 'chain.yaml'}" in done.stdout
    assert "review these 6 stand-ins" in done.stdout
    assert fake.methods() == {"GET"}  # read-only
    return out / "chain.yaml"


def test_init_from_azure_writes_a_chain_file_the_twin_comes_up_from(discovered, good) -> None:
    fake, tmp = good
    loaded = load_chain(discovered)
    assert loaded.topology.gateway.listener.hostname == "api.contoso.example"
    assert loaded.topology.apim.upstream.hostname == "echo.aks.contoso.example"
    for path in discovered.parent.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    _, env = write_cli_setup(fake, tmp / "up")
    up = _cli("up", "--chain", str(discovered), "--json", "--duration", "0", env=env, timeout=120)
    assert up.returncode == 0, up.stderr
    hops = json.loads(up.stdout.splitlines()[0])["hops"]
    assert {h: hops[h]["server_name"] for h in hops} == {
        "gateway": "api.contoso.example", "apim": "apim.internal.contoso.example",
        "ingress": "echo.aks.contoso.example", "pod": "echo.default.svc.cluster.local"}


def _plant_drifts(chain: Path, prod: Path) -> Path:
    shutil.copytree(chain.parent, prod)
    ingress = prod / "k8s" / "ingress.yaml"
    docs = list(yaml.safe_load_all(ingress.read_text()))
    docs[0]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-tls-verify-client"] = "optional"
    ingress.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    doc = yaml.safe_load((prod / "chain.yaml").read_text())
    doc["gateway"]["ssl_policy"] = {"min_protocol_version": "TLSv1_1"}
    (prod / "chain.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return prod / "chain.yaml"


def test_run_azure_twin_judges_the_discovered_chain_and_names_each_planted_drift(discovered, good, tmp_path) -> None:
    fake, _ = good
    production = _plant_drifts(discovered, tmp_path / "production")
    _, env = write_cli_setup(fake, tmp_path / "prod-env")
    up = subprocess.Popen([sys.executable, "-m", "harness", "up", "--chain", str(production), "--json", "--duration",
                           str(CLI_TIMEOUT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          stdin=subprocess.DEVNULL)
    try:
        assert up.stdout is not None
        endpoints = json.loads(up.stdout.readline())["hops"]
        # what discovery cannot know: where the runner reaches each hop and the test identities it presents
        hops = {hop: {k: v for k, v in ep.items() if v and k in ("host", "port", "server_name", "ca_bundle",
                                                                   "client_cert", "client_key")}
                for hop, ep in endpoints.items()}
        config, env = write_cli_setup(fake, tmp_path / "user", runner={
            "ingress_address": "127.0.0.1", "ingress_port": fake.ingress_port, "hops": hops})
        report = tmp_path / "report"
        done = _cli("run", "--target", "azure", "--config", str(config), "--twin", "--report", str(report),
                    "-n", "2", env=env)
    finally:
        up.terminate()
        up.wait(timeout=60)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "judging the discovered chain 'rg-chain'" in done.stderr
    diff = json.loads((report / "differential.json").read_text())
    verdicts = {r["id"]: r for r in diff["cases"]}
    drift = {cid for cid, r in verdicts.items() if r["verdict"] == "DRIFT"}
    assert drift == {"gateway-refuses-tls1.1",  # the lowered floor: the handshake goes on (to the client cert check)
                     "ingress-rejects-missing-client-cert-tls1.2",  # verify optional: no 400 without a cert
                     "ingress-rejects-missing-client-cert-tls1.3",
                     "ingress-sends-no-server-header"}, done.stdout[-3000:]
    assert verdicts["ingress-rejects-missing-client-cert-tls1.2"]["live_seen"] == "ok(200)"
    assert diff["summary"]["EMULATION GAP"] == 0
    assert diff["summary"]["agree"] >= 40
    assert "DRIFT         ingress-rejects-missing-client-cert-tls1.2" in done.stdout
    # the live run judged the discovered chain's expectations (its hosts), not the reference chain's
    live = json.loads((report / "results.json").read_text())
    assert live["target"] == "azure"
    assert live["chain"]["ingress"]["server_name"] == "echo.aks.contoso.example"
    twin = json.loads((report / "twin" / "results.json").read_text())
    assert twin["target"] == "local"
    assert twin["summary"]["failed"] == 0
    assert (report / "azure-chain" / "chain.yaml").is_file()


def test_run_azure_without_a_credential_is_one_line_before_any_test(good, tmp_path) -> None:
    fake, _ = good
    config, env = write_cli_setup(fake, tmp_path)
    env["PATH"] = str(tmp_path / "no-az")  # the Azure CLI is not there: DefaultAzureCredential has nothing
    env["HOME"] = str(tmp_path)
    done = _cli("run", "--target", "azure", "--config", str(config), "--report", str(tmp_path / "r"), env=env,
                timeout=120)
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("mtls-harness: error:")]
    assert len(lines) == 1
    assert lines[0].startswith("mtls-harness: error: no Azure credential")
    assert "Traceback" not in done.stderr
    assert "passed" not in done.stdout  # pytest never started
    assert "error" not in done.stdout


def test_run_azure_with_a_wrong_resource_name_is_one_line_naming_it(good, tmp_path) -> None:
    fake, _ = good
    config, env = write_cli_setup(fake, tmp_path, apim="apim-chian")
    done = _cli("run", "--target", "azure", "--config", str(config), "--report", str(tmp_path / "r"), env=env,
                timeout=120)
    assert done.returncode == 2
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("mtls-harness: error:")]
    assert len(errors) == 1
    assert "API Management service 'apim-chian' in resource group 'rg-chain' was not found" in errors[0]
    assert "az apim list" in errors[0]
    assert "Traceback" not in done.stderr


def test_run_azure_with_a_reviewed_chain_file_names_the_config_drift(discovered, good, tmp_path) -> None:
    """The nightly recipe: the chain file reviewed into the repo, Azure changed since — each changed setting is one
    line, and REPORT/config-drift.txt keeps them."""
    fake, _ = good
    reviewed = tmp_path / "reviewed"
    shutil.copytree(discovered.parent, reviewed)
    doc = yaml.safe_load((reviewed / "chain.yaml").read_text())
    doc["apim"]["negotiate_client_certificate"] = False  # what the repo says; Azure negotiates today
    (reviewed / "chain.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    config, env = write_cli_setup(fake, tmp_path / "user")
    report = tmp_path / "report"
    done = _cli("run", "--target", "azure", "--config", str(config), "--chain", str(reviewed / "chain.yaml"),
                "--report", str(report), "-k", "no_case_has_this_name", env=env, timeout=120)
    assert done.returncode == 1  # nothing selected; the drift was reported before pytest started
    assert ("mtls-harness: config drift: apim.negotiate_client_certificate: the chain file says False, Azure and the "
            "cluster now True") in done.stderr
    assert (report / "config-drift.txt").read_text().splitlines() == [
        "apim.negotiate_client_certificate: the chain file says False, Azure and the cluster now True"]


def test_run_azure_without_the_cluster_still_runs_the_posture_checks(good, tmp_path) -> None:
    """No [kubernetes]: discovery cannot write a chain file (no Ingress) — a warning, not the end of the run."""
    fake, _ = good
    config, env = write_cli_setup(fake, tmp_path, kubernetes=None)
    report = tmp_path / "report"
    done = _cli("run", "--target", "azure", "--config", str(config), "--report", str(report), "-k", "test_posture",
                env=env, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "mtls-harness: warning: no chain file from discovery" in done.stderr
    assert "discovery found no Ingress in the cluster — a chain file needs App Gateway, APIM" in done.stderr
    assert "15 passed, 2 skipped" in done.stdout  # the posture checks; the two about the Ingress skip
    assert not (report / "azure-chain").exists()
