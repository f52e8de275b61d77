"""A chain file given with public certificates (the usability test's Fabrikam case, issue 16, bugs 2, 3, 4, 7):
the shadow PKI names CAs by the chain file's trust lists, keeps one shadow per real CA certificate across chain files
(a leaf-only renewal rotates no root), runs an identity whose key is given as itself, and `certs check --chain`
judges the user's own certificates.

The chain is `mtls-harness init`'s reference chain with the keys taken out of chain.yaml (only consumer-client keeps
its key, like the user's partner test client); renewals and flawed certificates are issued here with cryptography
from the CA keys init wrote. Expectations are read from those files, never from the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness.chainfile.load import load_chain
from harness.cli.main import main
from harness.pki.x509 import fingerprint_sha256

KEYED = "consumer-client"  # the one identity whose key stays in the chain file (a test client of one's own)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLS_HARNESS_CERT_CACHE", str(tmp_path_factory.getbasetemp() / "cert-cache"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("chain") / "ref"
    assert main(["init", str(directory)]) == 0
    return directory


def _public(reference: Path, target: Path) -> Path:
    """A copy of the reference chain whose chain.yaml names no private key but KEYED's."""
    shutil.copytree(reference, target)
    doc = yaml.safe_load((target / "chain.yaml").read_text())
    for name, entry in doc["certificates"]["identities"].items():
        if name != KEYED:
            entry.pop("key", None)
    for entry in doc["certificates"]["trust"].values():
        entry.pop("key", None)
    (target / "chain.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    secrets = target / "k8s" / "secrets.yaml"  # the TLS Secret's tls.key would give that identity its key
    docs = [d for d in yaml.safe_load_all(secrets.read_text()) if d]
    for d in docs:
        d.get("data", {}).pop("tls.key", None)
        d.get("stringData", {}).pop("tls.key", None)
    secrets.write_text(yaml.safe_dump_all(docs))
    return target


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def _reissue(chain: Path, leaf: str, *, key_usage: x509.KeyUsage | None = None) -> x509.Certificate:
    """Renew ``leaf`` of the chain in ``chain``: same subject, SANs and EKU, a new key, signed by the same CA (its key
    from init's files)."""
    old = _cert(chain / "certs" / f"{leaf}.pem")
    ca_name = next(p.stem for p in (chain / "certs").glob("*.pem")
                   if _cert(p).subject == old.issuer and _cert(p).extensions.get_extension_for_class(
                       x509.BasicConstraints).value.ca)
    ca = _cert(chain / "certs" / f"{ca_name}.pem")
    ca_key = serialization.load_pem_private_key((chain / "certs" / f"{ca_name}.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
         .not_valid_after(now + dt.timedelta(days=200)))
    for ext in old.extensions:
        if isinstance(ext.value, x509.SubjectKeyIdentifier):
            b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), ext.critical)
        elif not (key_usage is not None and isinstance(ext.value, x509.KeyUsage)):
            b = b.add_extension(ext.value, ext.critical)
    if key_usage is not None:
        b = b.add_extension(key_usage, critical=True)
    cert = b.sign(ca_key, hashes.SHA256())
    (chain / "certs" / f"{leaf}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


# ---------------------------------------------------------------------------------------------------------------
# bug 2: CA names are the chain file's trust-list names
# ---------------------------------------------------------------------------------------------------------------
def test_shadow_cas_are_named_by_the_chain_files_trust_lists(reference: Path, tmp_path: Path) -> None:
    chain = _public(reference, tmp_path / "c")
    loaded = load_chain(chain / "chain.yaml")
    trust_names = set(yaml.safe_load((chain / "chain.yaml").read_text())["certificates"]["trust"])
    assert {c.name for c in loaded.certs.plan.cas} == trust_names
    for c in loaded.certs.plan.cas:  # each name stands for the certificate that trust list holds
        assert _cert(loaded.certs.ca_cert(c.name)).subject == _cert(chain / "certs" / f"{c.name}.pem").subject


# ---------------------------------------------------------------------------------------------------------------
# bug 7: a key given runs that identity as itself (per root)
# ---------------------------------------------------------------------------------------------------------------
def test_an_identity_with_its_key_runs_real_and_the_rest_shadow(reference: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    chain = _public(reference, tmp_path / "c")
    loaded = load_chain(chain / "chain.yaml")
    assert loaded.mode[KEYED] == "real"
    assert {m for n, m in loaded.mode.items() if n != KEYED} == {"shadow"}
    assert _cert(loaded.certs.leaf(KEYED).cert) == _cert(chain / "certs" / f"{KEYED}.pem")
    assert _cert(loaded.certs.leaf("apim-client").cert) != _cert(chain / "certs" / "apim-client.pem")
    assert main(["chain", "check", str(chain / "chain.yaml")]) == 0
    err = capsys.readouterr().err
    assert f"{KEYED}=real" in err
    assert "apim-client=shadow" in err


# ---------------------------------------------------------------------------------------------------------------
# bug 3: one shadow per real CA certificate, across chain files
# ---------------------------------------------------------------------------------------------------------------
def test_a_leaf_only_renewal_keeps_every_shadow_ca_and_plans_no_ca_step(reference: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    current = _public(reference, tmp_path / "current")
    renewal = _public(reference, tmp_path / "renewal")
    renewed = [_reissue(renewal, leaf) for leaf in ("gateway-server", "apim-client", "pod-server")]
    a, b = load_chain(current / "chain.yaml"), load_chain(renewal / "chain.yaml")
    assert a.certs.directory != b.certs.directory
    for c in a.certs.plan.cas:  # the same real CA -> the very same shadow CA (certificate and key)
        assert a.certs.ca_cert(c.name).read_bytes() == b.certs.ca_cert(c.name).read_bytes(), c.name
        if c.name != "consumer-ca":  # consumer-ca is the user's own (KEYED runs real): no key of it here
            assert a.certs.ca_key(c.name).read_bytes() == b.certs.ca_key(c.name).read_bytes(), c.name
    for leaf in ("apim-server", "ingress-server", "ingress-client"):  # not renewed: the same shadow serves
        assert a.certs.leaf(leaf).fingerprint_sha256 == b.certs.leaf(leaf).fingerprint_sha256, leaf
    assert _cert(b.certs.leaf("gateway-server").cert) != _cert(a.certs.leaf("gateway-server").cert)
    assert renewed[0].subject == _cert(b.certs.leaf("gateway-server").cert).subject
    code = main(["rotate", "--chain", str(current / "chain.yaml"), "--next", str(renewal / "chain.yaml"),
                 "--show-plan"])
    out = capsys.readouterr().out
    assert code == 0
    steps = yaml.safe_load(out)["steps"]
    assert [s["action"] for s in steps if s["action"] in ("trust", "untrust")] == []
    assert {s["leaf"] for s in steps} == {"next:gateway-server", "next:apim-client", "next:pod-server"}


def test_a_new_intermediate_under_the_same_root_keeps_the_root(reference: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    current = _public(reference, tmp_path / "current")
    nxt = _public(reference, tmp_path / "next")
    # a new issuing CA (new key, same subject, same root) and a gateway cert from it
    root = _cert(nxt / "certs" / "public-root.pem")
    root_key = serialization.load_pem_private_key((nxt / "certs" / "public-root.key").read_bytes(), None)
    old = _cert(nxt / "certs" / "public-issuing.pem")
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(root.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(old.not_valid_before_utc)
         .not_valid_after(old.not_valid_after_utc))
    for ext in old.extensions:
        value = (x509.SubjectKeyIdentifier.from_public_key(key.public_key())
                 if isinstance(ext.value, x509.SubjectKeyIdentifier) else ext.value)
        b = b.add_extension(value, ext.critical)
    new_ca = b.sign(root_key, hashes.SHA256())  # type: ignore[arg-type]
    (nxt / "certs" / "public-issuing.pem").write_bytes(new_ca.public_bytes(serialization.Encoding.PEM))
    (nxt / "certs" / "public-issuing.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    _reissue(nxt, "gateway-server")
    a, n = load_chain(current / "chain.yaml"), load_chain(nxt / "chain.yaml")
    assert a.certs.ca_cert("public-root").read_bytes() == n.certs.ca_cert("public-root").read_bytes()
    assert a.certs.ca_cert("public-issuing").read_bytes() != n.certs.ca_cert("public-issuing").read_bytes()
    assert main(["rotate", "--chain", str(current / "chain.yaml"), "--next", str(nxt / "chain.yaml"),
                 "--show-plan"]) == 0
    steps = yaml.safe_load(capsys.readouterr().out)["steps"]
    assert [s for s in steps if s["action"] in ("trust", "untrust")] == []
    assert {s["leaf"] for s in steps} == {"next:gateway-server"}


def test_a_ca_named_by_no_trust_list_that_changes_name_is_one_line_naming_the_chain_file(
        reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = _public(reference, tmp_path / "current")
    nxt = _public(reference, tmp_path / "next")
    doc = yaml.safe_load((nxt / "chain.yaml").read_text())
    doc["certificates"]["trust"]["issuing-2026"] = doc["certificates"]["trust"].pop("public-issuing")
    (nxt / "chain.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    code = main(["rotate", "--chain", str(current / "chain.yaml"), "--next", str(nxt / "chain.yaml"),
                 "--show-plan"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith(f"mtls-harness: error: --next {nxt / 'chain.yaml'}: has no CA 'public-issuing'")
    assert "issuing-2026" in err
    assert "cert-sets" not in err  # the user's file, not a cache folder
    assert "shadow-" not in err


# ---------------------------------------------------------------------------------------------------------------
# bug 4: certs check --chain judges the user's certificates
# ---------------------------------------------------------------------------------------------------------------
def test_certs_check_chain_judges_the_users_cert_by_identity_with_its_real_fingerprint_and_file(
        reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = _public(reference, tmp_path / "c")
    # keyEncipherment on an EC key: pkilint's warning (RFC 8813 §3); a stand-in does not copy Key Usage
    flawed = _reissue(chain, "ingress-client", key_usage=x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
        key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False))
    code = main(["certs", "check", "--chain", str(chain / "chain.yaml"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0  # a lint finding is a warning
    rows = {r["name"]: r for r in report["certs"]}
    row = rows["ingress-client"]
    assert row["fingerprint_sha256"] == fingerprint_sha256(flawed)
    assert row["source"] == str(chain / "certs" / "ingress-client.pem")
    assert "lint:pkix.key_usage_value_prohibited_for_ec" in [f["code"] for f in row["findings"]]
    assert main(["certs", "check", "--chain", str(chain / "chain.yaml"), "--strict"]) == 1
    capsys.readouterr()
    for name, r in rows.items():  # every row is the user's own certificate from the user's file
        assert r["source"].startswith(f"{chain}/"), name  # a cert file, or a Secret manifest's file:line
        if Path(r["source"]).parent == chain / "certs":
            assert r["fingerprint_sha256"] == fingerprint_sha256(_cert(Path(r["source"]))), name
    assert rows["pod-tls-client"]["source"].startswith(f"{chain / 'k8s' / 'secrets.yaml'}:")
    assert {f["message"] for f in rows[KEYED]["findings"] if f["code"] == "runs-as"} == {
        "real: runs with the key given"}
    assert re.search(r"apim-client=shadow", " ".join(report["notes"]))


def test_certs_check_chain_of_clean_certs_passes(reference: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    chain = _public(reference, tmp_path / "c")
    assert main(["certs", "check", "--chain", str(chain / "chain.yaml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == 0
    leaves = {r["name"] for r in report["certs"] if r["role"] in ("server", "client")}
    assert leaves == set(yaml.safe_load((chain / "chain.yaml").read_text())["certificates"]["identities"])


def test_a_real_identity_without_its_ca_key_still_gets_the_faults_no_ca_issues(tmp_path: Path) -> None:
    """Measured on a docs-only chain: a partner's client cert given with its key but without its CA's key. An
    unknown-CA or self-signed variant is issued by none of the chain's CAs, so it needs no CA key; an expired one must
    be issued by the CA, and says whose key is missing."""
    from harness.chainfile.load import load_chain
    from harness.cli.main import main
    from harness.errors import HarnessError

    d = tmp_path / "c"
    assert main(["init", str(d), "--example", "reference"]) == 0
    chain = d / "chain.yaml"
    chain.write_text(chain.read_text().replace("      key: certs/apim-client-ca.key\n", "", 1))
    (d / "certs" / "apim-client-ca.key").unlink()
    loaded = load_chain(chain)
    assert loaded.mode["apim-client"] == "real"
    real = x509.load_pem_x509_certificate(loaded.certs.leaf("apim-client").cert.read_bytes())
    for fault in ("unknown-ca", "self-signed"):
        made = x509.load_pem_x509_certificate(loaded.certs.leaf(f"apim-client~{fault}").cert.read_bytes())
        assert made.subject == real.subject
        assert made.issuer != real.issuer
    with pytest.raises(HarnessError, match="CA private key"):
        loaded.certs.leaf("apim-client~expired")
