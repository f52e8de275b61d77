"""`certs check` severities: a lint-level finding (pkilint's keyEncipherment-on-EC, which enterprise CAs set) is a
warning — exit 0, shown as "warning" in text and JSON, exit 1 with --strict — while a finding that breaks the
trust (wrong root) is an error. That the lint finding breaks nothing is measured here: an OpenSSL handshake
(stdlib ssl over 127.0.0.1) and cryptography's RFC 5280 verifier both accept the certificate."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.cli.certs import main
from harness.pki.certset import leaf_files_in
from tests.unit.test_pki import handshake

HOST = "api.fabrikam.example"


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
          *, ca: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer[0].subject if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(start)
         .not_valid_after(start + dt.timedelta(days=200))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=not ca,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True))
    if issuer:
        b = (b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
             .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False))
    return b.sign(issuer[1] if issuer else key, hashes.SHA256())


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ke")
    root_key, other_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("Fabrikam Root", root_key, None, ca=True)
    other = _cert("Someone Else Root", other_key, None, ca=True)
    leaf = _cert(HOST, leaf_key, (root, root_key), ca=False)
    pem = serialization.Encoding.PEM
    (d / "root.pem").write_bytes(root.public_bytes(pem))
    (d / "other.pem").write_bytes(other.public_bytes(pem))
    (d / "leaf").mkdir()
    for name in ("cert.pem", "chain.pem"):
        (d / "leaf" / name).write_bytes(leaf.public_bytes(pem))
    (d / "leaf" / "key.pem").write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                                 serialization.NoEncryption()))
    (d / "leaf" / "key.pem").chmod(0o600)
    return {"root": d / "root.pem", "other": d / "other.pem", "leaf": d / "leaf" / "cert.pem",
            "key": d / "leaf" / "key.pem", "dir": d / "leaf"}


def test_key_encipherment_on_an_ec_leaf_breaks_no_handshake(files: dict[str, Path]) -> None:
    leaf = x509.load_pem_x509_certificate(files["leaf"].read_bytes())
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    seen = handshake(server=leaf_files_in("leaf", files["dir"]), server_trust=files["root"], hostname=HOST)
    assert (seen.client_error, seen.server_error) == (None, None)
    store = xv.Store(x509.load_pem_x509_certificates(files["root"].read_bytes()))
    xv.PolicyBuilder().store(store).build_server_verifier(xv.DNSName(HOST)).verify(leaf, [])


def _check(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    code = main(["check", *(str(a) for a in argv)])
    return code, capsys.readouterr().out


def test_a_lint_finding_is_a_warning_that_only_strict_fails(capsys: pytest.CaptureFixture[str],
                                                            files: dict[str, Path]) -> None:
    code, out = _check(capsys, files["leaf"], "--ca", files["root"], "--hostname", HOST, "--json")
    report = json.loads(out)
    lint = [f for f in report["certs"][0]["findings"] if f["code"].startswith("lint:")]
    assert code == 0, out
    assert lint, out
    assert {f["severity"] for f in lint} == {"warning"}
    assert any("key" in f["message"].lower() and "usage" in f["message"].lower() for f in lint), lint
    assert (report["ok"], report["clean"], report["errors"]) == (True, False, 0)
    code, out = _check(capsys, files["leaf"], "--ca", files["root"], "--hostname", HOST)
    assert code == 0
    assert "warning lint:" in out
    assert "warnings do not fail without --strict" in out
    code, out = _check(capsys, files["leaf"], "--ca", files["root"], "--hostname", HOST, "--strict")
    assert code == 1
    assert "FAIL" in out


def test_a_broken_trust_is_an_error_that_fails_without_strict(capsys: pytest.CaptureFixture[str],
                                                              files: dict[str, Path]) -> None:
    code, out = _check(capsys, files["leaf"], "--ca", files["other"], "--hostname", HOST, "--json")
    found = {(f["code"], f["severity"]) for f in json.loads(out)["certs"][0]["findings"]}
    assert code == 1
    assert ("unknown-issuer", "error") in found
