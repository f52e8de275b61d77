"""A chain whose controller serves three hosts, each with its own annotations, run through the CLI on the local
target: each host's cases probe THAT host on the one running nginx, and a weakness of one host is a finding of that
host — with its manifest line — while the same case on the home host is refused as before.

Expected behaviour, from the products' documentation, not from the code under test:
- ingress-nginx applies auth-tls-* and proxy-ssl-* per host (annotations docs; one nginx ``server`` per host);
- ``auth-tls-verify-client: optional`` lets a request without a client certificate through (nginx
  ``ssl_verify_client optional``); ``on`` answers 400 "No required SSL certificate was sent";
- ``proxy-ssl-verify`` defaults to off (annotations docs): the ingress then accepts any pod certificate.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.hosts import write_hosts
from harness.cases.catalogue import catalogue_for
from harness.cases.model import run_case
from harness.chainfile.load import LoadedChain, load_chain
from harness.cli.main import main
from harness.targets.local import LocalTarget

REPO = Path(__file__).resolve().parents[2]
REPORTS = "reports.aks.contoso.example"
LEGACY = "legacy.aks.contoso.example"
# -k words match the catalogue's tests and the hosts' generated ones alike (ids with _)
CASES = ("ingress_rejects_missing_client_cert_tls1_3 or ingress_refuses_pod_cert_unknown_ca or "
         "ingress_rejects_client_cert_expired_tls1_3")

pytestmark = pytest.mark.mtls_needs_chain


def test_each_host_is_judged_by_its_own_annotations_on_one_running_ingress(tmp_path: Path) -> None:
    chain_dir = tmp_path / "c"
    out = subprocess.run([sys.executable, "-m", "harness", "init", str(chain_dir), "--example", "reference"],
                         capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    manifest = write_hosts(chain_dir, [REPORTS, LEGACY], {
        REPORTS: {"auth-tls-verify-client": "optional"},
        LEGACY: {"proxy-ssl-verify": None, "proxy-ssl-secret": None, "proxy-ssl-verify-depth": None,
                 "proxy-ssl-name": None}})
    assert manifest.stat().st_mode & 0o777 == 0o600  # it holds the hosts' private keys

    # in catalogue order (no random order): the reports host's pod-cert case runs before the legacy host's, so no
    # connection the legacy host opened without verifying is in nginx's keepalive pool yet (see the next test)
    run = subprocess.run([sys.executable, "-m", "harness", "run", "--chain", str(chain_dir / "chain.yaml"),
                          "-k", CASES, "--report", str(tmp_path / "r"), "--", "-p", "no:randomly"],
                         capture_output=True, text=True, cwd=REPO, check=False, timeout=600,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]  # findings, none accepted
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    cases = {c["id"]: c for c in doc["cases"]}
    verdict = {i: c["result"] for i, c in cases.items()}

    # the home host refuses a request without a certificate (auth-tls-verify-client on), by the ingress, for that
    assert verdict["ingress-rejects-missing-client-cert-tls1.3"] == "passed"
    home = cases["ingress-rejects-missing-client-cert-tls1.3"]["seen"]
    assert home["server_name"] == "echo.aks.contoso.example"
    assert home["outcome_text"].endswith("by ingress for no-client-cert")
    # the reports host lets it through: a finding of THAT host, at its annotation's line
    assert verdict[f"ingress-rejects-missing-client-cert-tls1.3@{REPORTS}"] == "finding"
    # ...and still refuses an expired certificate (optional verifies a certificate that is sent)
    assert verdict[f"ingress-rejects-client-cert-expired-tls1.3@{REPORTS}"] == "passed"
    # the legacy host does not verify the pod's certificate; the other hosts do, probed at the same ingress
    assert verdict[f"ingress-refuses-pod-cert-unknown-ca@{LEGACY}"] == "finding"
    assert verdict[f"ingress-refuses-pod-cert-unknown-ca@{REPORTS}"] == "passed"
    probed = cases[f"ingress-refuses-pod-cert-unknown-ca@{REPORTS}"]
    assert (probed["host"], probed["seen"]["server_name"]) == (REPORTS, REPORTS)
    assert probed["seen"]["outcome_text"].endswith("by ingress for unknown-issuer")

    findings = {f["id"]: f for f in doc["findings"]}
    assert set(findings) == {f"ingress-requires-a-verified-client-cert@ingress:{REPORTS}",
                             f"every-hop-verifies-its-upstream-cert@ingress:{LEGACY}",
                             # the legacy host's unverified connections can serve the verifying hosts' requests
                             "every-hop-verifies-its-upstream-cert@ingress",
                             f"every-hop-verifies-its-upstream-cert@ingress:{REPORTS}"}
    reports = findings[f"ingress-requires-a-verified-client-cert@ingress:{REPORTS}"]
    text = manifest.read_text().splitlines()
    line = int(reports["where"].rpartition(":")[2])
    assert "auth-tls-verify-client: optional" in text[line - 1]
    assert f"FINDING every-hop-verifies-its-upstream-cert@ingress:{LEGACY}" in run.stdout


def _two_hosts(tmp_path: Path, keepalive: str | None) -> LoadedChain:
    chain_dir = tmp_path / f"k{keepalive}"
    assert main(["init", str(chain_dir), "--example", "reference"]) == 0
    write_hosts(chain_dir, [LEGACY], {LEGACY: {"proxy-ssl-verify": None, "proxy-ssl-secret": None,
                                               "proxy-ssl-verify-depth": None, "proxy-ssl-name": None}})
    if keepalive is not None:
        chain = chain_dir / "chain.yaml"
        doc = yaml.safe_load(chain.read_text())
        doc["ingress"]["config_map"] = {"upstream-keepalive-connections": keepalive}
        chain.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_chain(chain_dir / "chain.yaml")


@pytest.mark.parametrize("keepalive", [None, "0"], ids=["keepalive-default", "keepalive-off"])
def test_a_host_that_does_not_verify_the_pod_lends_its_connection_to_one_that_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], keepalive: str | None) -> None:
    """The pod serves a cert of an unknown CA. The legacy host (no proxy-ssl-verify) reaches it: 200, its own
    finding. Right after, the home host — which verifies — gets the same 200 over the connection nginx kept: the
    keepalive pool is keyed by the pod's address only (Kong/kong#4001). With upstream-keepalive-connections 0 every
    request opens its own connection and the home host refuses the cert (502, unknown-issuer)."""
    loaded = _two_hosts(tmp_path, keepalive)
    capsys.readouterr()
    generated = {c.id: c for c in catalogue_for(loaded.topology)}
    lax, strict = generated[f"ingress-refuses-pod-cert-unknown-ca@{LEGACY}"], generated[
        "ingress-refuses-pod-cert-unknown-ca"]
    strict = dataclasses.replace(strict, via="direct", endpoint="ingress")  # probe the ingress as APIM does
    target = LocalTarget(loaded.topology, certs=loaded.certs)
    with target:
        base = target.chain
        assert base is not None
        first = run_case(lax, base, target.reconfigure)
        second = run_case(strict, base, target.reconfigure)
    assert first.verdict == "finding", first.message
    assert first.finding is not None
    assert first.finding.id == f"every-hop-verifies-its-upstream-cert@ingress:{LEGACY}"
    if keepalive is None:
        assert second.verdict == "finding", second.message
        assert second.seen.outcome.kind == "ok"
        assert second.finding is not None
        assert (second.finding.id, second.finding.intermittent) == ("every-hop-verifies-its-upstream-cert@ingress",
                                                                   True)
    else:
        assert second.verdict == "passed", second.message
        assert (second.seen.outcome.status, second.seen.outcome.hop, second.seen.outcome.cause) == (
            502, "ingress", "unknown-issuer")


def test_an_api_reaches_its_host_through_the_chain_and_its_backend_checks_are_its_own(tmp_path: Path) -> None:
    """APIM with a second API (`/reports` → the reports host) whose backend entity does not validate the certificate
    chain: through the gateway, under /reports, the reports host's bad certificate gets through APIM (a finding of
    that API, at its chain-file line), while the home API still refuses it (APIM backend
    tls.validateCertificateChain, docs/chain-file.md); the request under /reports really ended at the reports host
    (the ingress's trace names its SNI)."""
    chain_dir = tmp_path / "c"
    assert main(["init", str(chain_dir), "--example", "reference"]) == 0
    write_hosts(chain_dir, [REPORTS], apis={REPORTS: {"path": "/reports", "validate_certificate_chain": False}})
    run = subprocess.run([sys.executable, "-m", "harness", "run", "--chain", str(chain_dir / "chain.yaml"), "-k",
                          "apim_refuses_ingress_cert_unknown_ca or every_hop_is_tls_end_to_end",
                          "--report", str(tmp_path / "r")], capture_output=True, text=True, cwd=REPO, check=False,
                         timeout=600, stdin=subprocess.DEVNULL)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    cases = {c["id"]: c for c in doc["cases"]}
    assert cases["apim-refuses-ingress-cert-unknown-ca"]["result"] == "passed"
    assert cases["apim-refuses-ingress-cert-unknown-ca"]["seen"]["outcome_text"].endswith(
        "by apim for unknown-issuer")
    through = cases[f"apim-refuses-ingress-cert-unknown-ca@{REPORTS}"]
    assert (through["result"], through["via"], through["seen"]["outcome"]["kind"]) == ("finding", "chain", "ok")
    assert cases[f"every-hop-is-tls-end-to-end@{REPORTS}"]["result"] == "passed"  # its check: the ingress's SNI
    finding = {f["id"]: f for f in doc["findings"]}[f"every-hop-verifies-its-upstream-cert@apim:{REPORTS}"]
    line = int(finding["where"].rpartition(":")[2])
    assert "validate_certificate_chain: false" in (chain_dir / "chain.yaml").read_text().splitlines()[line - 1]
