"""`mtls-harness certs generate|check`: exit codes 0 (clean) / 1 (findings) / 2 (unusable input), one-line errors,
JSON without key material."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from harness.cli.certs import main
from harness.pki.certset import CertSet

MTLS_HARNESS = Path(sys.executable).with_name("mtls-harness")


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("mtls-harness: error: ")
    return lines[0]


def _swap(directory: Path, cs: CertSet, fault: str, like: str) -> None:
    variant = cs.fault(fault, like)  # type: ignore[arg-type]
    shutil.rmtree(directory / "leaves" / like)
    shutil.copytree(variant.cert.parent, directory / "leaves" / like)


# --- generate ---------------------------------------------------------------------------------------------------
def test_generate_writes_a_set_and_refuses_to_overwrite_without_force(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    target = tmp_path / "set"
    code, out, _ = run(capsys, "generate", target)
    assert code == 0
    assert (target / "leaves" / "apim-client" / "cert.pem").is_file()
    assert "apim-client" in out
    code, _, err = run(capsys, "generate", target)
    assert code == 2
    assert "--force" in _one_error_line(err)
    assert run(capsys, "generate", target, "--force", "--key-type", "rsa")[0] == 0
    cert = x509.load_pem_x509_certificate((target / "leaves" / "apim-client" / "cert.pem").read_bytes())
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]


# --- check a set ------------------------------------------------------------------------------------------------
def test_check_clean_set_exits_0_and_lists_every_cert(capsys: pytest.CaptureFixture[str], pki_set: CertSet) -> None:
    code, out, err = run(capsys, "check", pki_set.directory)
    assert (code, err) == (0, "")
    for name in [c.name for c in pki_set.plan.cas] + [lf.name for lf in pki_set.plan.leaves]:
        assert name in out
    assert "clean" in out


def test_check_set_with_an_expired_leaf_exits_1_and_names_it(capsys: pytest.CaptureFixture[str],
                                                             pki_set_copy: CertSet) -> None:
    _swap(pki_set_copy.directory, pki_set_copy, "expired", "apim-client")
    code, out, _ = run(capsys, "check", pki_set_copy.directory)
    assert code == 1
    assert "expired" in out


def test_check_json_lists_findings_by_code_without_key_material(capsys: pytest.CaptureFixture[str],
                                                                pki_set_copy: CertSet) -> None:
    _swap(pki_set_copy.directory, pki_set_copy, "wrong-eku", "ingress-server")
    code, out, _ = run(capsys, "check", pki_set_copy.directory, "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    rows = {r["name"]: r for r in doc["certs"]}
    assert [f["code"] for f in rows["ingress-server"]["findings"]] == ["wrong-eku"]
    assert rows["apim-client"]["ok"] is True
    assert rows["apim-client"]["used_by"] == ["ingress ← apim (client cert)"]
    assert "PRIVATE KEY" not in out
    assert "key.pem" not in out


def test_min_days_beyond_the_leaf_lifetime_warns_and_fails_only_with_strict(capsys: pytest.CaptureFixture[str],
                                                                           pki_set: CertSet) -> None:
    code, out, _ = run(capsys, "check", pki_set.directory, "--min-days", "1000", "--json")
    assert code == 0
    report = json.loads(out)
    found = {(f["code"], f["severity"]) for r in report["certs"] for f in r["findings"]}
    assert ("expires-soon", "warning") in found
    assert report["errors"] == 0
    assert report["warnings"] >= 7  # every leaf has < 1000 days left
    strict, _, _ = run(capsys, "check", pki_set.directory, "--min-days", "1000", "--json", "--strict")
    assert strict == 1


# --- check one certificate --------------------------------------------------------------------------------------
def test_single_cert_with_its_root_and_key_is_clean(capsys: pytest.CaptureFixture[str], pki_set: CertSet) -> None:
    leaf = pki_set.leaf("gateway-server")
    code, out, _ = run(capsys, "check", leaf.chain, "--ca", pki_set.trust_bundle("public-root"), "--key", leaf.key,
                       "--hostname", "api.contoso.example", "--json")
    assert code == 0, out
    assert json.loads(out)["certs"][0]["role"] == "server"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--hostname", "other.contoso.example"], "san-mismatch"),
        (["--role", "server"], "wrong-eku"),
        (["--key", "OTHER_KEY"], "key-mismatch"),
    ],
)
def test_single_cert_problems_exit_1_with_their_code(capsys: pytest.CaptureFixture[str], pki_set: CertSet,
                                                     extra: list[str], code: str) -> None:
    leaf = pki_set.leaf("apim-client")
    args = [str(pki_set.leaf("pod-server").key) if a == "OTHER_KEY" else a for a in extra]
    rc, out, _ = run(capsys, "check", leaf.cert, "--ca", pki_set.trust_bundle("apim-client-ca"), *args, "--json")
    assert rc == 1
    assert code in [f["code"] for f in json.loads(out)["certs"][0]["findings"]]


def test_single_cert_on_the_crl_is_revoked(capsys: pytest.CaptureFixture[str], pki_set: CertSet) -> None:
    revoked = pki_set.fault("revoked", "apim-client")
    ca, crl = pki_set.trust_bundle("apim-client-ca"), pki_set.crl("apim-client-ca")
    rc, out, _ = run(capsys, "check", revoked.cert, "--ca", ca, "--crl", crl, "--json")
    assert rc == 1
    assert [f["code"] for f in json.loads(out)["certs"][0]["findings"]] == ["revoked"]
    assert run(capsys, "check", revoked.cert, "--ca", ca)[0] == 0  # without the CRL nothing can tell


def _write_pfx(pki_set: CertSet, path: Path, password: bytes) -> Path:
    files = pki_set.leaf("apim-client")
    key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"apim", key, cert, None, serialization.BestAvailableEncryption(password)))  # type: ignore[arg-type]
    return path


def test_pfx_with_password_is_checked_and_a_wrong_password_exits_2(capsys: pytest.CaptureFixture[str],
                                                                   pki_set: CertSet, tmp_path: Path) -> None:
    pfx = _write_pfx(pki_set, tmp_path / "apim.pfx", b"kv-secret")
    ca = pki_set.trust_bundle("apim-client-ca")
    assert run(capsys, "check", pfx, "--ca", ca, "--password", "kv-secret")[0] == 0
    rc, out, err = run(capsys, "check", pfx, "--ca", ca, "--password", "nope")
    assert (rc, out) == (2, "")
    line = _one_error_line(err)
    assert str(pfx) in line
    assert "--password" in line


def test_kubernetes_secret_dir_is_checked_and_a_malformed_ca_crt_is_a_finding(
        capsys: pytest.CaptureFixture[str], pki_set: CertSet, tmp_path: Path) -> None:
    secret = tmp_path / "pod-tls-client"
    secret.mkdir()
    shutil.copy(pki_set.leaf("ingress-client").chain, secret / "tls.crt")
    shutil.copy(pki_set.leaf("ingress-client").key, secret / "tls.key")
    shutil.copy(pki_set.trust_bundle("pod-ca"), secret / "ca.crt")
    ca = pki_set.trust_bundle("pod-ca")
    assert run(capsys, "check", secret, "--ca", ca)[0] == 0
    (secret / "ca.crt").write_text("not a certificate\n")
    rc, out, _ = run(capsys, "check", secret, "--ca", ca, "--json")
    assert rc == 1
    assert [f["code"] for f in json.loads(out)["findings"]] == ["secret-ca-malformed"]


def test_ca_only_secret_is_checked_without_ca_option(capsys: pytest.CaptureFixture[str], pki_set: CertSet,
                                                     tmp_path: Path) -> None:
    secret = tmp_path / "apim-client-ca"
    secret.mkdir()
    shutil.copy(pki_set.trust_bundle("apim-client-ca"), secret / "ca.crt")
    rc, out, _ = run(capsys, "check", secret, "--json")
    assert rc == 0
    assert [r["role"] for r in json.loads(out)["certs"]] == ["root"]


# --- unusable input: exit 2, one line naming the file, the problem and the fix ----------------------------------
def test_unusable_inputs_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], pki_set: CertSet,
                                             tmp_path: Path) -> None:
    ca = pki_set.trust_bundle("apim-client-ca")
    not_pem = tmp_path / "leaf.der"
    not_pem.write_bytes(b"\x30\x82\x01\x00 binary")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "does not exist": ["check", tmp_path / "absent.pem", "--ca", ca],
        "not PEM": ["check", not_pem, "--ca", ca],
        "private key but no certificate": ["check", pki_set.leaf("apim-client").key, "--ca", ca],
        "empty directory": ["check", empty],
        "--ca BUNDLE": ["check", pki_set.leaf("apim-client").cert],
        "apply to a single certificate": ["check", pki_set.directory, "--ca", ca],
    }
    for expected, argv in cases.items():
        rc, out, err = run(capsys, *argv)
        assert rc == 2, (expected, out, err)
        assert expected in _one_error_line(err), err


def test_key_without_cert_in_a_set_dir_exits_2(capsys: pytest.CaptureFixture[str], pki_set_copy: CertSet) -> None:
    (pki_set_copy.directory / "set.json").unlink()
    (pki_set_copy.directory / "leaves" / "apim-client" / "cert.pem").unlink()
    rc, _, err = run(capsys, "check", pki_set_copy.directory)
    assert rc == 2
    assert "no certificate beside it" in _one_error_line(err)


