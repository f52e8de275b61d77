"""Cert-set generation and the fault catalogue, judged by real verifiers: OpenSSL through stdlib ssl handshakes over
127.0.0.1, ``openssl verify``, and cryptography's RFC 5280 path validator."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID

import harness.pki.certset as pki
from harness.errors import InputError
from harness.model.topology import default_pki_plan
from harness.pki.certset import FAULTS, CertSet, cert_set_for, generate_cert_set, load_cert_set

SERVER = "ingress-server"  # served by the ingress, issued by ingress-ca (a root)
CLIENT = "apim-client"  # presented by APIM to the ingress, issued by apim-client-ca (a root)
HOST = "echo.aks.contoso.example"


# ---------------------------------------------------------------------------------------------------------------
# a real handshake over loopback
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Handshake:
    client_error: str | None
    server_error: str | None


def _load_pair(ctx: ssl.SSLContext, chain: Path, key: Path) -> None:
    ctx.load_cert_chain(str(chain), str(key))


def handshake(
    *,
    server: pki.LeafFiles,
    server_trust: Path,
    client: pki.LeafFiles | None = None,
    client_trust: Path | None = None,
    hostname: str = HOST,
    crl: Path | None = None,
    lenient_presenter: bool = False,
) -> Handshake:
    """One TLS handshake between a stdlib server thread and a stdlib client, both on 127.0.0.1.

    ``client_trust`` makes the server demand a client cert (CERT_REQUIRED). ``crl`` turns on CRL checking of the
    client's leaf. ``lenient_presenter`` lowers the presenting side's security level so it can load a weak cert at
    all, leaving the judgement to the verifying side.
    """
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if lenient_presenter and client is None:
        sctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    _load_pair(sctx, server.chain, server.key)
    if client_trust is not None:
        sctx.verify_mode = ssl.CERT_REQUIRED
        sctx.load_verify_locations(str(client_trust))
        if crl is not None:
            sctx.load_verify_locations(str(crl))
            sctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    cctx = ssl.create_default_context(cafile=str(server_trust))
    if client is not None:
        if lenient_presenter:
            cctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        _load_pair(cctx, client.chain, client.key)

    result = Handshake(None, None)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with sctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as exc:
            result.server_error = str(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                cctx.wrap_socket(raw, server_hostname=hostname) as tls:
            tls.sendall(b"x")
            tls.recv(1)
    except (OSError, ssl.SSLError) as exc:
        result.client_error = str(exc)
    thread.join(timeout=15)
    listener.close()
    return result


def _certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _verify(files: pki.LeafFiles, trust: Path, *, server_name: str | None, depth: int | None = None) -> None:
    chain = _certs(files.chain)
    builder = xv.PolicyBuilder().store(xv.Store(_certs(trust)))
    if depth is not None:
        builder = builder.max_chain_depth(depth)
    if server_name is not None:
        builder.build_server_verifier(x509.DNSName(server_name)).verify(chain[0], chain[1:])
    else:
        ee = xv.ExtensionPolicy.webpki_defaults_ee().may_be_present(
            x509.SubjectAlternativeName, xv.Criticality.AGNOSTIC, None)
        builder = builder.extension_policies(ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
        builder.build_client_verifier().verify(chain[0], chain[1:])


# ---------------------------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------------------------
def test_generated_set_has_every_ca_and_leaf_with_keys_readable_only_by_owner(pki_set: CertSet) -> None:
    d = pki_set.directory
    plan = default_pki_plan()
    for ca in plan.cas:
        assert (d / "cas" / ca.name / "cert.pem").is_file()
        assert (d / "cas" / ca.name / "crl.pem").is_file()
        assert stat.S_IMODE((d / "cas" / ca.name / "key.pem").stat().st_mode) == 0o600
    for lf in plan.leaves:
        files = pki_set.leaf(lf.name)
        assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" not in files.cert.read_bytes() + files.chain.read_bytes()
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")], "temp dirs left beside the set"


def test_leaf_files_describe_their_certificate(pki_set: CertSet) -> None:
    files = pki_set.leaf("gateway-server")
    der = ssl.PEM_cert_to_DER_cert(files.cert.read_text())
    assert files.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert files.subject == "CN=api.contoso.example,O=Contoso"
    assert files.issuer == "CN=Contoso Public Issuing CA 1,O=Contoso"
    assert files.serial == x509.load_der_x509_certificate(der).serial_number


def test_leaves_carry_role_eku_sans_and_leaf_constraints(pki_set: CertSet) -> None:
    for spec in pki_set.plan.leaves:
        cert = _certs(pki_set.leaf(spec.name).cert)[0]
        ext = cert.extensions
        eku = list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value)
        want = ExtendedKeyUsageOID.SERVER_AUTH if spec.usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        assert eku == [want], spec.name
        sans = ext.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert tuple(sans) == spec.sans
        bc = ext.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical
        assert not bc.value.ca
        issuer = _certs(pki_set.ca_cert(spec.issuer))[0]
        aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        assert aki == issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
        assert 90 <= days <= 398, f"{spec.name}: {days} days"
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_cas_are_constrained_roots_and_issuing_intermediates(pki_set: CertSet) -> None:
    root = _certs(pki_set.ca_cert("public-root"))[0]
    inter = _certs(pki_set.ca_cert("public-issuing"))[0]
    assert root.issuer == root.subject
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    bc = inter.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca
    assert bc.path_length == 0
    ku = inter.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign
    assert ku.crl_sign
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days >= 5 * 365


def test_chain_file_carries_intermediates_but_not_the_root(pki_set: CertSet) -> None:
    chain = _certs(pki_set.leaf("gateway-server").chain)
    assert [c.subject.rfc4514_string() for c in chain] == [
        "CN=api.contoso.example,O=Contoso", "CN=Contoso Public Issuing CA 1,O=Contoso"]
    assert len(_certs(pki_set.leaf(CLIENT).chain)) == 1  # issued by a root: the leaf alone


def test_trust_bundle_holds_each_root_above_the_named_cas_once(pki_set: CertSet) -> None:
    bundle = _certs(pki_set.trust_bundle("public-issuing", "apim-ca", "public-root"))
    assert [c.subject.rfc4514_string() for c in bundle] == [
        "CN=Contoso Public Root CA,O=Contoso", "CN=Contoso APIM CA,O=Contoso"]


def test_rsa_plan_generates_rsa_2048_keys(tmp_path: Path) -> None:
    cs = generate_cert_set(default_pki_plan("rsa"), tmp_path / "rsa")
    for name in ("gateway-server", CLIENT):
        key = _certs(cs.leaf(name).cert)[0].public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size == 2048
    assert handshake(server=cs.leaf(SERVER), server_trust=cs.trust_bundle("ingress-ca"), client=cs.leaf(CLIENT),
                     client_trust=cs.trust_bundle("apim-client-ca")) == Handshake(None, None)


def test_good_leaves_complete_mutual_tls_with_crl_checking_on(pki_set: CertSet) -> None:
    seen = handshake(server=pki_set.leaf(SERVER), server_trust=pki_set.trust_bundle("ingress-ca"),
                     client=pki_set.leaf(CLIENT), client_trust=pki_set.trust_bundle("apim-client-ca"),
                     crl=pki_set.crl("apim-client-ca"))
    assert seen == Handshake(None, None)
    seen = handshake(server=pki_set.leaf("gateway-server"), server_trust=pki_set.trust_bundle("public-root"),
                     hostname="api.contoso.example")
    assert seen == Handshake(None, None)


def test_generate_refuses_a_non_empty_directory_and_force_replaces_it(pki_set: CertSet, tmp_path: Path) -> None:
    target = tmp_path / "set"
    first = generate_cert_set(default_pki_plan(), target)
    with pytest.raises(InputError) as err:
        generate_cert_set(default_pki_plan(), target)
    assert str(target) in str(err.value)
    assert "--force" in str(err.value)
    second = generate_cert_set(default_pki_plan(), target, force=True)
    assert second.leaf(CLIENT).fingerprint_sha256 != first.leaf(CLIENT).fingerprint_sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_failed_generation_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_leaf(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pki, "issue_leaf", failing_leaf)
    with pytest.raises(RuntimeError):
        generate_cert_set(default_pki_plan(), tmp_path / "set")
    assert calls
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# faults: each rejected by a real verifier, for its reason
# ---------------------------------------------------------------------------------------------------------------
SERVER_FAULT_REASONS = {
    "unknown-ca": "unable to get local issuer certificate",
    "expired": "certificate has expired",
    "not-yet-valid": "certificate is not yet valid",
    "wrong-san": "Hostname mismatch",
    "self-signed": "self-signed certificate",
    "wrong-eku": "unsuitable certificate purpose",  # OpenSSL 3.0's text for X509_V_ERR_INVALID_PURPOSE
    "missing-intermediate": "unable to get local issuer certificate",
    "weak-key": "EE certificate key too weak",
    "sha1": "CA signature digest algorithm too weak",
}


@pytest.mark.parametrize("fault", sorted(SERVER_FAULT_REASONS))
def test_client_refuses_server_cert_fault_for_its_reason(pki_set: CertSet, fault: str) -> None:
    seen = handshake(server=pki_set.fault(fault, SERVER), server_trust=pki_set.trust_bundle("ingress-ca"),
                     lenient_presenter=fault in ("weak-key", "sha1"))
    assert seen.client_error is not None, seen
    assert SERVER_FAULT_REASONS[fault] in seen.client_error, seen


CLIENT_FAULT_REASONS = {
    "unknown-ca": "unable to get local issuer certificate",
    "expired": "certificate has expired",
    "not-yet-valid": "certificate is not yet valid",
    "self-signed": "self-signed certificate",
    "wrong-eku": "unsuitable certificate purpose",
    "missing-intermediate": "unable to get local issuer certificate",
    "revoked": "certificate revoked",
    "weak-key": "EE certificate key too weak",
    "sha1": "CA signature digest algorithm too weak",
}


@pytest.mark.parametrize("fault", sorted(CLIENT_FAULT_REASONS))
def test_server_requiring_client_certs_refuses_client_fault_for_its_reason(pki_set: CertSet, fault: str) -> None:
    seen = handshake(server=pki_set.leaf(SERVER), server_trust=pki_set.trust_bundle("ingress-ca"),
                     client=pki_set.fault(fault, CLIENT), client_trust=pki_set.trust_bundle("apim-client-ca"),
                     crl=pki_set.crl("apim-client-ca") if fault == "revoked" else None,
                     lenient_presenter=fault in ("weak-key", "sha1"))
    assert seen.server_error is not None, seen
    assert CLIENT_FAULT_REASONS[fault] in seen.server_error, seen


def test_revoked_client_cert_passes_without_crl_checking(pki_set: CertSet) -> None:
    """The CRL is what rejects it: the same handshake without the CRL succeeds."""
    seen = handshake(server=pki_set.leaf(SERVER), server_trust=pki_set.trust_bundle("ingress-ca"),
                     client=pki_set.fault("revoked", CLIENT), client_trust=pki_set.trust_bundle("apim-client-ca"))
    assert seen == Handshake(None, None)


@pytest.mark.parametrize("like", ["gateway-server", CLIENT])
def test_revoked_variant_serial_is_listed_in_its_issuers_crl(pki_set: CertSet, like: str) -> None:
    files = pki_set.fault("revoked", like)
    issuer = pki_set.plan.leaf(like).issuer
    crl = x509.load_pem_x509_crl(pki_set.crl(issuer).read_bytes())
    assert crl.is_signature_valid(_certs(pki_set.ca_cert(issuer))[0].public_key())
    assert crl.get_revoked_certificate_by_serial_number(files.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(pki_set.leaf(like).serial) is None


def test_key_mismatch_fault_cannot_be_loaded_as_an_identity(pki_set: CertSet) -> None:
    files = pki_set.fault("key-mismatch", CLIENT)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ssl.SSLError, match="key values mismatch"):
        ctx.load_cert_chain(str(files.chain), str(files.key))


def test_ca_as_leaf_is_refused_by_the_path_validator(pki_set: CertSet) -> None:
    """OpenSSL accepts a CA:TRUE leaf in a handshake; RFC 5280's end-entity profile does not."""
    files = pki_set.fault("ca-as-leaf", SERVER)
    assert handshake(server=files, server_trust=pki_set.trust_bundle("ingress-ca")) == Handshake(None, None)
    with pytest.raises(xv.VerificationError, match=r"basicConstraints\.cA must not be asserted"):
        _verify(files, pki_set.trust_bundle("ingress-ca"), server_name=HOST)


def test_wrong_san_client_cert_still_verifies_as_a_client(pki_set: CertSet) -> None:
    """wrong-san is a server-cert fault: a client verifier has no host name to compare."""
    _verify(pki_set.fault("wrong-san", CLIENT), pki_set.trust_bundle("apim-client-ca"), server_name=None)


def _openssl_verify(pki_set: CertSet, files: pki.LeafFiles, depth: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-verify_depth", str(depth), "-purpose", "sslclient",
         "-CAfile", str(pki_set.trust_bundle("apim-client-ca")), "-untrusted", str(files.chain), str(files.cert)],
        capture_output=True, text=True, timeout=30, check=False)


def test_every_fault_keeps_the_leafs_identity_except_where_that_is_the_fault(pki_set: CertSet) -> None:
    good = pki_set.leaf(CLIENT)
    for fault in FAULTS:
        files = pki_set.fault(fault, CLIENT)
        assert files.name == f"{CLIENT}~{fault}"
        assert files.fingerprint_sha256 != good.fingerprint_sha256
        if fault != "wrong-san":
            assert files.subject == good.subject, fault
        assert stat.S_IMODE(files.key.stat().st_mode) == 0o600


# ---------------------------------------------------------------------------------------------------------------
# caching and concurrency
# ---------------------------------------------------------------------------------------------------------------
def test_fault_is_cached_on_disk_and_found_by_a_new_loader(pki_set: CertSet) -> None:
    first = pki_set.fault("expired", "pod-server")
    again = load_cert_set(pki_set.directory).fault("expired", "pod-server")
    assert again == first
    assert pki_set.leaf("pod-server~expired") == first


def _fault_fingerprint(directory: str, fault: str, like: str) -> str:
    return load_cert_set(Path(directory)).fault(fault, like).fingerprint_sha256  # type: ignore[arg-type]


def _cached_set(cache: str, key_type: str) -> str:
    os.environ["MTLS_HARNESS_CERT_CACHE"] = cache
    return str(cert_set_for(default_pki_plan(key_type)).leaf(CLIENT).fingerprint_sha256)  # type: ignore[arg-type]


def test_cert_set_for_reuses_the_cache_and_separates_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLS_HARNESS_CERT_CACHE", str(tmp_path))
    first = cert_set_for(default_pki_plan())
    assert cert_set_for(default_pki_plan()).leaf(CLIENT) == first.leaf(CLIENT)
    assert first.directory == tmp_path / pki.plan_digest(default_pki_plan())
    other = cert_set_for(default_pki_plan("rsa"))
    assert other.directory != first.directory


def test_cert_set_for_regenerates_a_set_close_to_expiry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLS_HARNESS_CERT_CACHE", str(tmp_path))
    first = cert_set_for(default_pki_plan())
    meta_path = first.directory / "set.json"
    meta = json.loads(meta_path.read_text())
    meta["expires"] = (dt.datetime.now(dt.UTC) + dt.timedelta(days=5)).isoformat()
    meta_path.write_text(json.dumps(meta))
    again = cert_set_for(default_pki_plan())
    assert again.directory == first.directory
    assert again.leaf(CLIENT).fingerprint_sha256 != first.leaf(CLIENT).fingerprint_sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.directory.name]


def test_unknown_names_are_refused_with_the_known_ones(pki_set: CertSet) -> None:
    with pytest.raises(KeyError, match="apim-client"):
        pki_set.leaf("no-such-leaf")
    with pytest.raises(KeyError, match="known"):
        pki_set.fault("bogus", CLIENT)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="public-root"):
        pki_set.trust_bundle("no-such-ca")


def test_revoked_fault_needs_a_set_that_reserved_crl_serials(pki_set_copy: CertSet) -> None:
    (pki_set_copy.directory / "set.json").unlink()
    shutil.rmtree(pki_set_copy.directory / "faults", ignore_errors=True)
    inferred = load_cert_set(pki_set_copy.directory)
    with pytest.raises(InputError, match="certs generate"):
        inferred.fault("revoked", CLIENT)
    assert inferred.fault("expired", CLIENT).name == f"{CLIENT}~expired"
