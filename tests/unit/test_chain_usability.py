"""What the usability test of the chain file found (issue 16, load/CLI/docs side), one test per finding.

Expectations are written out here: the reference chain's names (docs/design.md), App Gateway / APIM behaviour from
the product docs (APIM: negotiateClientCertificate + validate-client-certificate answers 401 for a missing cert or
one from another CA — learn.microsoft.com/azure/api-management/api-management-howto-mutual-certificates-for-clients),
ingress-nginx's validator (a negative auth-tls-verify-depth is refused, docs/ingress-nginx-fidelity.md).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from harness.cases.catalogue import CATALOGUE
from harness.cases.model import needs_reference
from harness.chainfile.load import load_chain
from harness.cli.main import main
from harness.model.topology import default_pki_plan, default_topology
from harness.pki.certset import cert_set_for
from harness.pki.check import check_cert_set

#: the reference chain's identity and CA names (docs/design.md), renamed in the chain file below
REFERENCE_NAMES = ("gateway-server", "apim-server", "apim-client", "ingress-server", "pod-server", "ingress-client",
                   "consumer-client", "public-root", "public-issuing", "apim-ca", "apim-client-ca", "ingress-ca",
                   "pod-ca", "consumer-ca")
ISSUE_17 = "this case is not generated from your chain yet (docs/chain-file.md#run---chain-today)"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("usability") / "ref"
    assert main(["init", str(directory)]) == 0
    return directory


@pytest.fixture(scope="module")
def partner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("usability") / "partner"
    assert main(["init", str(directory), "--example", "partner-mtls"]) == 0
    return directory


def _copy(src: Path, tmp_path: Path) -> Path:
    target = tmp_path / "c"
    shutil.copytree(src, target)
    return target


def _renamed(reference: Path, tmp_path: Path) -> Path:
    """The reference chain file with every identity and trust list renamed ``fab-<name>`` (paths keep theirs)."""
    chain = _copy(reference, tmp_path) / "chain.yaml"
    text = chain.read_text()
    for name in REFERENCE_NAMES:
        text = re.sub(rf"(?<![\w/.-]){re.escape(name)}(?![\w.-])", f"fab-{name}", text)
    chain.write_text(text)
    return chain


# -- bug 1: the reference catalogue on a chain with other names ---------------------------------------------------
def test_reference_catalogue_on_other_names_skips_what_needs_reference_names(reference: Path,
                                                                             tmp_path: Path) -> None:
    renamed = load_chain(_renamed(reference, tmp_path)).topology
    assert {lf.name for lf in renamed.pki.leaves} >= {"fab-apim-client", "fab-consumer-client"}
    reasons = {c.id: needs_reference(c, renamed) for c in CATALOGUE}
    # a case presenting the reference's consumer-client, one presenting apim-client with a fault
    assert reasons["ingress-refuses-client-cert-from-consumer-ca"] == \
        f"needs the reference chain's consumer-client; {ISSUE_17}"
    assert reasons["ingress-rejects-client-cert-expired-tls1.2"] == \
        f"needs the reference chain's apim-client; {ISSUE_17}"
    # a case on the chain as it is (the caller's own identity) runs
    assert reasons["ingress-accepts-apims-client-cert-tls1.2"] is None
    skipped = [r for r in reasons.values() if r]
    assert skipped
    assert len(skipped) < len(CATALOGUE)
    assert all(r.endswith(ISSUE_17) and any(f"chain's {n};" in r for n in REFERENCE_NAMES) for r in skipped)


def test_the_reference_chain_itself_skips_nothing() -> None:
    reference = default_topology()
    assert [c.id for c in CATALOGUE if needs_reference(c, reference)] == []


# -- bug 5: APIM with negotiation + validate-client-certificate verifies the gateway's client cert ----------------
def test_apim_validating_the_client_cert_is_no_not_verified_warning(partner: Path) -> None:
    loaded = load_chain(partner / "chain.yaml")
    assert loaded.topology.apim.negotiate_client_certificate
    assert loaded.topology.apim.validate_client_certificate
    row = check_cert_set(loaded.certs, loaded.topology, lint=False).row("gateway-client")
    assert "not-verified" not in row.codes(), [f.message for f in row.findings]
    assert any("apim ← gateway" in used for used in row.used_by)


def test_apim_negotiating_without_the_policy_still_does_not_verify(partner: Path) -> None:
    loaded = load_chain(partner / "chain.yaml")
    t = loaded.topology.with_hop("apim", validate_client_certificate=False)
    row = check_cert_set(loaded.certs, t, lint=False).row("gateway-client")
    assert "not-verified" in row.codes()


def test_chain_check_shows_apims_client_auth_by_the_policy(partner: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chain", "check", str(partner / "chain.yaml"), "--json"]) == 0
    apim = json.loads(capsys.readouterr().out)["hops"]["apim"]
    assert apim["client_auth"] == "required"
    assert "validate-client-certificate" in apim["client_auth_by"]
    assert main(["chain", "check", str(partner / "chain.yaml")]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("apim"))
    assert "client auth required by the policy validate-client-certificate (HTTP 401)" in line


# -- bug 6: chain check refuses what up refuses, at the manifest's line --------------------------------------------
def test_chain_check_refuses_a_negative_verify_depth_at_its_manifest_line(reference: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    c = _copy(reference, tmp_path)
    ingress = c / "k8s" / "ingress.yaml"
    lines = ingress.read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if "auth-tls-verify-depth:" in ln)
    lines[at] = '    nginx.ingress.kubernetes.io/auth-tls-verify-depth: "-1"'
    ingress.write_text("\n".join(lines) + "\n")
    assert main(["chain", "check", str(c / "chain.yaml")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1, err
    assert f"{ingress}:{at + 1}: " in err[0]
    assert "auth-tls-verify-depth='-1'" in err[0]
    assert "negative" in err[0]


# -- bug 8: authentication-certificate by thumbprint; certificate-id errors name the policy ------------------------
def _without_backend_client_cert(c: Path) -> None:
    chain = c / "chain.yaml"
    chain.write_text(chain.read_text().replace("    client_certificate: apim-client\n", ""))


def test_authentication_certificate_by_thumbprint_names_the_identity(reference: Path, tmp_path: Path) -> None:
    c = _copy(reference, tmp_path)
    _without_backend_client_cert(c)
    cert = x509.load_pem_x509_certificate((c / "certs" / "apim-client.pem").read_bytes())
    thumb = ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA1()))
    policy = c / "apim-policy.xml"
    policy.write_text(policy.read_text().replace(
        "<backend>", f'<backend>\n        <authentication-certificate thumbprint="{thumb}" />', 1))
    assert load_chain(c / "chain.yaml").topology.apim.upstream.client_cert == "apim-client"


def test_unknown_certificate_id_is_reported_at_the_policy_file(reference: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    c = _copy(reference, tmp_path)
    _without_backend_client_cert(c)
    policy = c / "apim-policy.xml"
    policy.write_text(policy.read_text().replace(
        "<backend>", '<backend>\n        <authentication-certificate certificate-id="apim-client-2025" />', 1))
    assert main(["chain", "check", str(c / "chain.yaml")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1, err
    assert err[0].startswith(f"mtls-harness: error: {policy}: ")
    assert "'apim-client-2025'" in err[0]
    assert "certificate-id must equal" in err[0]
    assert "apim.backend.client_certificate" not in err[0]


def test_a_cached_set_missing_a_file_regenerates_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLS_HARNESS_CERT_CACHE", str(tmp_path / "cache"))
    crl = cert_set_for(default_pki_plan()).directory / "cas" / "apim-client-ca" / "crl.pem"
    crl.unlink()  # a set cached by a version that wrote no CRL
    again = cert_set_for(default_pki_plan())
    assert again.crl("apim-client-ca").is_file()
    x509.load_pem_x509_crl(again.crl("apim-client-ca").read_bytes())
