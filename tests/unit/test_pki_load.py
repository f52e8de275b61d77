"""Loading user-supplied material: a set directory, PKCS#12/PFX, Kubernetes secret files, single PEM files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from harness.errors import InputError
from harness.pki.certset import CertSet, load_cert_set
from harness.pki.load import load_identity, load_k8s_secret, load_pkcs12, read_pem_certs, read_private_key


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _key(path: Path):  # type: ignore[no-untyped-def]
    return serialization.load_pem_private_key(path.read_bytes(), None)


def _pfx(pki_set: CertSet, leaf: str, password: bytes | None, target: Path) -> Path:
    """A PFX as Key Vault exports one: leaf, key, and the chain up to the root."""
    files = pki_set.leaf(leaf)
    chain = x509.load_pem_x509_certificates(files.chain.read_bytes())[1:]
    root = _cert(pki_set.ca_cert(pki_set.plan.root_of(pki_set.plan.leaf(leaf).issuer)))
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    target.write_bytes(pkcs12.serialize_key_and_certificates(b"leaf", _key(files.key), _cert(files.cert),
                                                             [*chain, root], enc))
    return target


# --- set directories --------------------------------------------------------------------------------------------
def test_set_directory_loads_with_the_plan_it_was_generated_from(pki_set: CertSet) -> None:
    loaded = load_cert_set(pki_set.directory)
    assert loaded.plan == pki_set.plan
    assert loaded.leaf("apim-client") == pki_set.leaf("apim-client")


def test_set_without_set_json_gets_its_plan_from_the_certificates(pki_set_copy: CertSet) -> None:
    (pki_set_copy.directory / "set.json").unlink()
    inferred = load_cert_set(pki_set_copy.directory).plan
    want = pki_set_copy.plan
    assert {c.name: c.parent for c in inferred.cas} == {c.name: c.parent for c in want.cas}
    assert {lf.name: (lf.issuer, lf.usage, lf.sans, lf.common_name) for lf in inferred.leaves} == {
        lf.name: (lf.issuer, lf.usage, lf.sans, lf.common_name) for lf in want.leaves}
    assert inferred.key_type == "ecdsa"


def test_set_with_a_missing_leaf_cert_names_the_file(pki_set_copy: CertSet) -> None:
    missing = pki_set_copy.directory / "leaves" / "pod-server" / "cert.pem"
    missing.unlink()
    with pytest.raises(InputError) as err:
        load_cert_set(pki_set_copy.directory)
    assert err.value.path == str(missing)


def test_key_without_its_cert_in_a_set_directory_is_refused(pki_set_copy: CertSet) -> None:
    (pki_set_copy.directory / "set.json").unlink()
    (pki_set_copy.directory / "leaves" / "apim-client" / "cert.pem").unlink()
    with pytest.raises(InputError, match="no certificate beside it"):
        load_cert_set(pki_set_copy.directory)


def test_directory_without_a_set_says_how_to_make_one(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="certs generate"):
        load_cert_set(tmp_path)


# --- PKCS#12 / PFX ----------------------------------------------------------------------------------------------
def test_pfx_with_the_right_password_gives_leaf_chain_key_and_root(pki_set: CertSet, tmp_path: Path) -> None:
    pfx = _pfx(pki_set, "gateway-server", b"s3cret", tmp_path / "gw.pfx")
    ident = load_pkcs12(pfx, "s3cret")
    assert ident.cert == _cert(pki_set.leaf("gateway-server").cert)
    assert [c.subject.rfc4514_string() for c in ident.chain] == ["CN=Contoso Public Issuing CA 1,O=Contoso"]
    assert [c.subject.rfc4514_string() for c in ident.ca_certs] == ["CN=Contoso Public Root CA,O=Contoso"]
    assert ident.key is not None
    assert ident.key.private_numbers() == _key(pki_set.leaf("gateway-server").key).private_numbers()


def test_pfx_with_a_wrong_password_names_the_file_and_the_option(pki_set: CertSet, tmp_path: Path) -> None:
    pfx = _pfx(pki_set, "apim-client", b"s3cret", tmp_path / "apim.pfx")
    with pytest.raises(InputError) as err:
        load_identity(pfx, password="wrong")
    assert err.value.path == str(pfx)
    assert "wrong password" in err.value.problem
    assert "--password" in err.value.fix
    with pytest.raises(InputError, match="password-protected"):
        load_identity(pfx)


def test_pfx_without_a_password_opens_without_one(pki_set: CertSet, tmp_path: Path) -> None:
    pfx = _pfx(pki_set, "apim-client", None, tmp_path / "open.p12")
    assert load_identity(pfx).cert == _cert(pki_set.leaf("apim-client").cert)


def test_file_named_pfx_that_is_not_pkcs12_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pfx"
    bogus.write_bytes(b"\x30\x03\x02\x01\x03 not pkcs12")
    with pytest.raises(InputError, match="not a PKCS#12"):
        load_identity(bogus, password="x")


# --- Kubernetes secret files ------------------------------------------------------------------------------------
def _secret_dir(pki_set: CertSet, leaf: str, ca: str, target: Path) -> Path:
    target.mkdir()
    files = pki_set.leaf(leaf)
    shutil.copy(files.chain, target / "tls.crt")
    shutil.copy(files.key, target / "tls.key")
    shutil.copy(pki_set.trust_bundle(ca), target / "ca.crt")
    return target


def test_k8s_tls_secret_files_load_as_an_identity_with_its_ca(pki_set: CertSet, tmp_path: Path) -> None:
    d = _secret_dir(pki_set, "gateway-server", "pod-ca", tmp_path / "secret")
    ident = load_identity(d)
    assert ident.cert == _cert(pki_set.leaf("gateway-server").cert)
    assert len(ident.chain) == 1
    assert [c.subject.rfc4514_string() for c in ident.ca_certs] == ["CN=Contoso AKS Workload CA,O=Contoso"]


def test_k8s_secret_with_a_malformed_ca_crt_records_why(pki_set: CertSet, tmp_path: Path) -> None:
    d = _secret_dir(pki_set, "apim-client", "apim-client-ca", tmp_path / "secret")
    (d / "ca.crt").write_text("this is not a certificate\n")
    secret = load_k8s_secret(d)
    assert secret.ca_crt == ()
    assert secret.ca_crt_error is not None
    assert "not PEM" in secret.ca_crt_error


def test_k8s_secret_with_a_key_but_no_cert_is_refused(tmp_path: Path, pki_set: CertSet) -> None:
    d = tmp_path / "secret"
    d.mkdir()
    shutil.copy(pki_set.leaf("apim-client").key, d / "tls.key")
    with pytest.raises(InputError) as err:
        load_identity(d)
    assert err.value.path == str(d / "tls.key")
    assert "tls.crt" in str(err.value)


# --- single PEM files -------------------------------------------------------------------------------------------
def test_pem_file_with_leaf_chain_and_key_together_loads_all_three(pki_set: CertSet, tmp_path: Path) -> None:
    files = pki_set.leaf("gateway-server")
    combined = tmp_path / "combined.pem"
    combined.write_bytes(files.chain.read_bytes() + files.key.read_bytes())
    ident = load_identity(combined)
    assert ident.cert == _cert(files.cert)
    assert len(ident.chain) == 1
    assert ident.key is not None


def test_der_file_is_refused_with_a_conversion_hint(pki_set: CertSet, tmp_path: Path) -> None:
    der = tmp_path / "leaf.der"
    der.write_bytes(_cert(pki_set.leaf("apim-client").cert).public_bytes(serialization.Encoding.DER))
    with pytest.raises(InputError) as err:
        read_pem_certs(der)
    assert "not PEM" in err.value.problem
    assert "openssl x509 -inform DER" in err.value.fix


def test_empty_and_missing_files_are_refused_by_name(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(InputError, match="is empty"):
        read_pem_certs(empty)
    with pytest.raises(InputError, match="does not exist"):
        read_pem_certs(tmp_path / "absent.pem")


def test_encrypted_key_asks_for_the_password_and_opens_with_it(pki_set: CertSet, tmp_path: Path) -> None:
    key = _key(pki_set.leaf("apim-client").key)
    enc = tmp_path / "enc.key"
    enc.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(InputError, match="--password"):
        read_private_key(enc)
    with pytest.raises(InputError, match="--password"):
        read_private_key(enc, "nope")
    assert read_private_key(enc, "pw").private_numbers() == key.private_numbers()  # type: ignore[union-attr]
