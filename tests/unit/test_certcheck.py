"""Static cert checks: every problem is reported by a stable name, against the consumer the topology names."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness.model.topology import default_topology
from harness.pki.certset import CertSet, load_cert_set
from harness.pki.check import Consumer, check_cert_set, check_identity, check_leaf
from harness.pki.load import load_identity


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _swap(cs: CertSet, fault: str, like: str) -> CertSet:
    """Put the ``fault`` variant of ``like`` in place of the real leaf (what a botched deployment looks like)."""
    variant = cs.fault(fault, like)  # type: ignore[arg-type]
    target = cs.directory / "leaves" / like
    shutil.rmtree(target)
    shutil.copytree(variant.cert.parent, target)
    return load_cert_set(cs.directory)


def test_generated_set_is_clean_against_the_default_topology(pki_set: CertSet) -> None:
    report = check_cert_set(pki_set)
    bad = {r.name: [(f.code, f.message) for f in r.findings if f.severity != "info"] for r in report.rows if not r.ok}
    assert bad == {}
    assert report.ok
    names = {r.name for r in report.rows}
    assert names == {c.name for c in pki_set.plan.cas} | {lf.name for lf in pki_set.plan.leaves}


def test_each_leaf_is_checked_by_the_hop_that_verifies_it(pki_set: CertSet) -> None:
    report = check_cert_set(pki_set, lint=False)
    assert report.row("apim-client").used_by == ("ingress ← apim (client cert)",)
    assert report.row("gateway-server").used_by == ("client → gateway",)
    assert report.row("pod-server").used_by == ("ingress → pod",)
    assert report.row("ingress-client").used_by == ("pod ← ingress (client cert)",)


# fault swapped in for a leaf → the finding code a reader must see. apim-client is the client cert the ingress
# verifies at auth-tls-verify-depth 1; gateway-server is issued by an intermediate; pod-server is verified by the
# ingress with proxy-ssl-verify-depth 1.
FAULT_FINDINGS = [
    ("unknown-ca", "apim-client", "unknown-issuer"),
    ("expired", "apim-client", "expired"),
    ("not-yet-valid", "apim-client", "not-yet-valid"),
    ("wrong-san", "gateway-server", "san-mismatch"),
    ("self-signed", "apim-client", "self-signed"),
    ("wrong-eku", "apim-client", "wrong-eku"),
    ("wrong-eku", "ingress-server", "wrong-eku"),
    ("ca-as-leaf", "ingress-server", "ca-as-leaf"),
    ("missing-intermediate", "gateway-server", "missing-intermediate"),
    ("revoked", "apim-client", "revoked"),
    ("too-deep", "apim-client", "chain-too-deep"),
    ("too-deep", "pod-server", "chain-too-deep"),
    ("weak-key", "apim-client", "weak-key"),
    ("sha1", "ingress-server", "sha1-signature"),
    ("key-mismatch", "pod-server", "key-mismatch"),
]


@pytest.mark.parametrize(("fault", "leaf", "code"), FAULT_FINDINGS, ids=[f"{f}-{lf}" for f, lf, _ in FAULT_FINDINGS])
def test_fault_in_a_set_is_reported_by_name(pki_set_copy: CertSet, fault: str, leaf: str, code: str) -> None:
    report = check_cert_set(_swap(pki_set_copy, fault, leaf), lint=False)
    row = report.row(leaf)
    assert code in row.codes(), [(f.code, f.message) for f in row.findings]
    assert next(f for f in row.findings if f.code == code).severity == "error"
    assert not report.ok
    others = [r.name for r in report.rows if r.name != leaf and not r.ok]
    assert others == []


def test_unknown_issuer_is_not_mistaken_for_a_missing_intermediate(pki_set_copy: CertSet) -> None:
    row = check_cert_set(_swap(pki_set_copy, "unknown-ca", "gateway-server"), lint=False).row("gateway-server")
    assert "unknown-issuer" in row.codes()
    assert "missing-intermediate" not in row.codes()


def test_missing_intermediate_names_the_cert_the_chain_lacks(pki_set_copy: CertSet) -> None:
    row = check_cert_set(_swap(pki_set_copy, "missing-intermediate", "apim-client"), lint=False).row("apim-client")
    finding = next(f for f in row.findings if f.code == "missing-intermediate")
    assert "Issuing CA (left out)" in finding.message


def test_one_intermediate_passes_ingress_nginx_default_depth(pki_set_copy: CertSet) -> None:
    """Verify depth counts intermediates (measured with nginx 1.22 / OpenSSL 3.0): depth 1 allows one."""
    row = check_cert_set(_swap(pki_set_copy, "intermediate-issued", "apim-client"), lint=False).row("apim-client")
    assert row.ok, row.findings


def test_raising_auth_tls_verify_depth_accepts_a_deeper_client_chain(pki_set_copy: CertSet) -> None:
    cs = _swap(pki_set_copy, "too-deep", "apim-client")
    topo = default_topology().with_ingress_annotations(auth_tls_verify_depth="2")
    assert check_cert_set(cs, topo, lint=False).row("apim-client").ok
    assert "chain-too-deep" in check_cert_set(cs, lint=False).row("apim-client").codes()


def test_consumer_with_verification_off_is_a_warning(pki_set: CertSet) -> None:
    topo = default_topology().with_ingress_annotations(proxy_ssl_verify="off")
    row = check_cert_set(pki_set, topo, lint=False).row("pod-server")
    assert [(f.code, f.severity) for f in row.findings] == [("not-verified", "warning")]


def test_passthrough_puts_the_pod_cert_before_apim(pki_set_copy: CertSet) -> None:
    """With ssl-passthrough APIM sees the pod's cert: APIM must trust the pod's CA, and its SANs must cover the
    ingress host."""
    topo = default_topology().with_ingress_annotations(ssl_passthrough="true").with_controller(
        enable_ssl_passthrough=True)
    row = check_cert_set(pki_set_copy, topo, lint=False).row("pod-server")
    assert row.codes() == ["unknown-issuer"]  # APIM still trusts ingress-ca only
    assert "apim → ingress" in row.findings[0].message
    upstream = dataclasses.replace(topo.apim.upstream, trusted_ca="pod-ca")
    topo = topo.replace(apim=dataclasses.replace(topo.apim, upstream=upstream))
    assert check_cert_set(pki_set_copy, topo, lint=False).row("pod-server").ok
    row = check_cert_set(_swap(pki_set_copy, "wrong-san", "pod-server"), topo, lint=False).row("pod-server")
    messages = [f.message for f in row.findings if f.code == "san-mismatch"]
    assert any("echo.aks.contoso.example" in m for m in messages), row.findings


def test_min_days_turns_near_expiry_into_a_warning(pki_set: CertSet) -> None:
    assert check_cert_set(pki_set, min_days=30, lint=False).ok
    report = check_cert_set(pki_set, min_days=500, lint=False)
    leaf = report.row("apim-client")
    assert [(f.code, f.severity) for f in leaf.findings] == [("expires-soon", "warning")]
    assert report.row("public-root").clean  # a root has years left
    assert report.ok  # a warning: the certs still work today
    assert not report.clean  # what --strict judges


def _constrained_ca(root_cert: x509.Certificate, root_key: ec.EllipticCurvePrivateKey, permitted: str):  # type: ignore[no-untyped-def]
    """An intermediate limited to names under ``permitted`` (built here, independently of the harness)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Constrained Issuing CA")]))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.NameConstraints([x509.DNSName(permitted)], None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return cert, key


def _leaf_under(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, san: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, san)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def test_name_outside_a_cas_name_constraints_is_reported(pki_set: CertSet) -> None:
    root = _cert(pki_set.ca_cert("ingress-ca"))
    root_key = serialization.load_pem_private_key(pki_set.ca_key("ingress-ca").read_bytes(), None)
    mid, mid_key = _constrained_ca(root, root_key, "contoso.example")  # type: ignore[arg-type]
    inside = _leaf_under(mid, mid_key, "echo.aks.contoso.example")
    outside = _leaf_under(mid, mid_key, "echo.fabrikam.example")
    for leaf, host, codes in ((inside, "echo.aks.contoso.example", []),
                              (outside, "echo.fabrikam.example", ["name-constraints"])):
        consumer = Consumer("apim → ingress", (root,), "server", (host,))
        row = check_leaf(leaf, name="x", consumers=[consumer], chain=[mid], lint=False)
        assert [f.code for f in row.findings if f.severity != "info"] == codes


def test_crl_from_the_issuer_marks_only_the_revoked_serial(pki_set: CertSet) -> None:
    revoked = pki_set.fault("revoked", "apim-client")
    crl = x509.load_pem_x509_crl(pki_set.crl("apim-client-ca").read_bytes())
    consumer = Consumer("ingress", (_cert(pki_set.ca_cert("apim-client-ca")),), "client")
    bad = check_leaf(_cert(revoked.cert), name="r", consumers=[consumer], crls=[crl], lint=False)
    good = check_leaf(_cert(pki_set.leaf("apim-client").cert), name="g", consumers=[consumer], crls=[crl], lint=False)
    assert bad.codes() == ["revoked"]
    assert good.codes() == []


def test_crl_signed_by_another_ca_is_flagged_not_trusted(pki_set: CertSet) -> None:
    # a CRL naming apim-client-ca as issuer but signed with ingress-ca's key
    ca_key = serialization.load_pem_private_key(pki_set.ca_key("ingress-ca").read_bytes(), None)
    issuer = _cert(pki_set.ca_cert("apim-client-ca"))
    revoked = pki_set.fault("revoked", "apim-client")
    now = dt.datetime.now(dt.UTC)
    forged = (
        x509.CertificateRevocationListBuilder().issuer_name(issuer.subject).last_update(now)
        .next_update(now + dt.timedelta(days=7))
        .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(revoked.serial)
                                 .revocation_date(now).build())
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    row = check_leaf(_cert(revoked.cert), name="r", consumers=[Consumer("ingress", (issuer,), "client")],
                     crls=[forged], lint=False)
    assert row.codes() == ["crl-invalid"]


def test_pkilint_findings_are_reported_with_their_code(pki_set: CertSet) -> None:
    root = _cert(pki_set.ca_cert("ingress-ca"))
    root_key = serialization.load_pem_private_key(pki_set.ca_key("ingress-ca").read_bytes(), None)
    no_ski = _leaf_under(root, root_key, "echo.aks.contoso.example")  # type: ignore[arg-type]  # built without SKI
    row = check_leaf(no_ski, name="u", consumers=[Consumer("c", (root,), "server")])
    assert [(f.code, f.severity) for f in row.findings] == [("lint:pkix.certificate_skid_end_entity_missing",
                                                             "warning")]


def test_name_the_validator_cannot_parse_is_a_finding_not_a_crash(pki_set: CertSet) -> None:
    root = _cert(pki_set.ca_cert("ingress-ca"))
    root_key = serialization.load_pem_private_key(pki_set.ca_key("ingress-ca").read_bytes(), None)
    underscore = _leaf_under(root, root_key, "bad_name.contoso.example")  # type: ignore[arg-type]
    row = check_leaf(underscore, name="u", consumers=[Consumer("c", (root,), "server")], lint=False)
    assert row.codes() == ["path-invalid"]


def test_single_label_san_is_only_a_note(pki_set: CertSet) -> None:
    row = check_cert_set(pki_set).row("pod-server")  # SANs include the short service name "echo"
    assert [(f.code, f.severity) for f in row.findings] == [("lint:pkix.invalid_domain_name_syntax", "info")]
    assert row.ok


def test_identity_checked_against_the_wrong_root_is_an_unknown_issuer(pki_set: CertSet) -> None:
    ident = load_identity(pki_set.leaf("apim-client").cert, key_path=pki_set.leaf("apim-client").key)
    wrong = check_identity(ident, trust=[_cert(pki_set.ca_cert("ingress-ca"))], lint=False)
    right = check_identity(ident, trust=[_cert(pki_set.ca_cert("apim-client-ca"))], lint=False)
    assert wrong.rows[0].codes() == ["unknown-issuer"]
    assert right.ok
    assert right.rows[0].role == "client"  # from its EKU


def test_server_role_and_hostname_apply_to_a_single_cert(pki_set: CertSet) -> None:
    ident = load_identity(pki_set.leaf("apim-client").cert)
    trust = [_cert(pki_set.ca_cert("apim-client-ca"))]
    report = check_identity(ident, trust=trust, role="server", hostnames=["apim-client.contoso.example"], lint=False)
    assert report.rows[0].codes() == ["wrong-eku"]
    assert report.notes  # no key given: says key-match was not checked


def test_report_json_has_no_key_material(pki_set: CertSet) -> None:
    import json

    text = json.dumps(check_cert_set(pki_set, lint=False).to_json())
    assert "PRIVATE KEY" not in text
    assert "key.pem" not in text
    for lf in pki_set.plan.leaves:
        assert pki_set.leaf(lf.name).key.read_text().splitlines()[1] not in text
