"""The shadow PKI (harness/pki/shadow.py) from certificates made here with cryptography, shaped like an enterprise
PKI rather than like the harness's own profile: RSA-3072 root, P-384 issuing CA with pathLen 0, multi-attribute
subjects, DNS + IP + URI SANs, two EKUs, keyEncipherment on an EC key, fixed validity windows. Every expectation
is read from those input certificates; the trust relations are judged by cryptography's RFC 5280 path validator."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.errors import InputError
from harness.pki.shadow import IdentityInput, TrustInput, build_cert_set

T0 = dt.datetime(2026, 1, 5, 8, 30, tzinfo=dt.UTC)
AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)  # inside every window below


@dataclass
class Made:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _name(*parts: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(o, v) for o, v in parts])


def _make(subject: x509.Name, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, issuer: Made | None, *,
          ca: bool, path_length: int | None = None, sans: list[x509.GeneralName] | None = None,
          ekus: list[x509.ObjectIdentifier] | None = None, days: int = 365, start: dt.datetime = T0) -> Made:
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer.cert.subject if issuer else subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(start)
         .not_valid_after(start + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                            critical=False)
    b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=not ca,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ekus:
        b = b.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    return Made(b.sign(issuer.key if issuer else key, hashes.SHA384()), key)


@dataclass
class Enterprise:
    root: Made
    issuing: Made
    server: Made
    client: Made
    partner_root: Made
    partner: Made


@pytest.fixture(scope="module")
def ent() -> Enterprise:
    root = _make(_name((NameOID.COUNTRY_NAME, "NL"), (NameOID.ORGANIZATION_NAME, "Fabrikam Bank"),
                       (NameOID.COMMON_NAME, "Fabrikam Root CA G2")),
                 rsa.generate_private_key(public_exponent=65537, key_size=3072), None, ca=True, days=3650,
                 start=T0 - dt.timedelta(days=900))
    issuing = _make(_name((NameOID.ORGANIZATION_NAME, "Fabrikam Bank"), (NameOID.COMMON_NAME, "Fabrikam TLS CA 01")),
                    ec.generate_private_key(ec.SECP384R1()), root, ca=True, path_length=0, days=1800,
                    start=T0 - dt.timedelta(days=400))
    server = _make(_name((NameOID.COUNTRY_NAME, "NL"), (NameOID.ORGANIZATION_NAME, "Fabrikam Bank"),
                         (NameOID.ORGANIZATIONAL_UNIT_NAME, "Platform"), (NameOID.COMMON_NAME, "api.fabrikam.example")),
                   ec.generate_private_key(ec.SECP256R1()), issuing,
                   ca=False, sans=[x509.DNSName("api.fabrikam.example"), x509.DNSName("*.api.fabrikam.example"),
                                   x509.IPAddress(ipaddress.ip_address("10.1.2.3"))],
                   ekus=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days=200)
    client = _make(_name((NameOID.ORGANIZATION_NAME, "Fabrikam Bank"), (NameOID.COMMON_NAME, "apim-gateway")),
                   rsa.generate_private_key(public_exponent=65537, key_size=2048), issuing, ca=False,
                   sans=[x509.UniformResourceIdentifier("spiffe://fabrikam/apim")],
                   ekus=[ExtendedKeyUsageOID.CLIENT_AUTH], days=190)
    partner_root = _make(_name((NameOID.COMMON_NAME, "Partner Root")), ec.generate_private_key(ec.SECP256R1()), None,
                         ca=True, days=3650, start=T0 - dt.timedelta(days=10))
    partner = _make(_name((NameOID.COMMON_NAME, "partner-client")), ec.generate_private_key(ec.SECP256R1()),
                    partner_root, ca=False, sans=[x509.DNSName("partner.example")],
                    ekus=[ExtendedKeyUsageOID.CLIENT_AUTH], days=300)
    return Enterprise(root, issuing, server, client, partner_root, partner)


def _inputs(ent: Enterprise, *, client_key: Path | None = None) -> tuple[list[IdentityInput], list[TrustInput]]:
    return (
        [IdentityInput("ingress-server", (ent.server.cert, ent.issuing.cert)),
         IdentityInput("apim-client", (ent.client.cert, ent.issuing.cert), key=client_key),
         IdentityInput("partner", (ent.partner.cert,))],
        [TrustInput("ingress-ca-secret", (ent.root.cert,)),
         TrustInput("appgw-partner-roots", (ent.partner_root.cert,))],
    )


def _pem_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _store(path: Path) -> xv.Store:
    return xv.Store(_pem_chain(path))


def _key_profile(cert: x509.Certificate) -> tuple[str, int]:
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        return "rsa", pub.key_size
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    return pub.curve.name, pub.curve.key_size


def _ext(cert: x509.Certificate, cls: type) -> object:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def test_shadow_leaves_copy_subject_sans_eku_key_validity_and_depth(ent: Enterprise, tmp_path: Path) -> None:
    identities, trusts = _inputs(ent)
    result = build_cert_set(identities, trusts, tmp_path / "set")
    for ident in identities:
        real = ident.chain[0]
        files = result.certs.leaf(ident.name)
        chain = _pem_chain(files.chain)
        shadow = chain[0]
        assert shadow.fingerprint(hashes.SHA256()) != real.fingerprint(hashes.SHA256()), ident.name
        assert shadow.public_key() != real.public_key()
        assert shadow.subject == real.subject, ident.name
        assert shadow.issuer == real.issuer, ident.name
        assert _ext(shadow, x509.SubjectAlternativeName) == _ext(real, x509.SubjectAlternativeName), ident.name
        assert _ext(shadow, x509.ExtendedKeyUsage) == _ext(real, x509.ExtendedKeyUsage), ident.name
        assert _key_profile(shadow) == _key_profile(real), ident.name
        assert (shadow.not_valid_before_utc, shadow.not_valid_after_utc) == (
            real.not_valid_before_utc, real.not_valid_after_utc), ident.name
        assert [c.subject for c in chain] == [c.subject for c in ident.chain], ident.name  # same depth, same CAs
        assert result.mode[ident.name] == "shadow"
        assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    issuing = _pem_chain(result.certs.leaf("ingress-server").chain)[1]
    assert _key_profile(issuing) == ("secp384r1", 384)
    bc = _ext(issuing, x509.BasicConstraints)
    assert isinstance(bc, x509.BasicConstraints)
    assert bc.path_length == 0
    assert (issuing.not_valid_before_utc, issuing.not_valid_after_utc) == (
        ent.issuing.cert.not_valid_before_utc, ent.issuing.cert.not_valid_after_utc)
    root = _pem_chain(result.certs.trust_bundle(result.trust["ingress-ca-secret"]))
    assert [r.subject for r in root] == [ent.root.cert.subject]
    assert _key_profile(root[0]) == ("rsa", 3072)


def _verify_server(bundle: Path, chain: Path, host: str) -> None:
    certs = _pem_chain(chain)
    verifier = xv.PolicyBuilder().store(_store(bundle)).time(AT).build_server_verifier(xv.DNSName(host))
    verifier.verify(certs[0], certs[1:])


def _verify_client(bundle: Path, chain: Path) -> None:
    certs = _pem_chain(chain)
    ee = xv.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, xv.Criticality.AGNOSTIC, None)
    verifier = (xv.PolicyBuilder().store(_store(bundle)).time(AT)
                .extension_policies(ee_policy=ee, ca_policy=xv.ExtensionPolicy.webpki_defaults_ca())
                .build_client_verifier())
    verifier.verify(certs[0], certs[1:])


def test_trust_relations_hold_and_cross_no_other_root(ent: Enterprise, tmp_path: Path) -> None:
    identities, trusts = _inputs(ent)
    result = build_cert_set(identities, trusts, tmp_path / "set")
    cs = result.certs
    ours = cs.trust_bundle(result.trust["ingress-ca-secret"])
    partners = cs.trust_bundle(result.trust["appgw-partner-roots"])
    _verify_server(ours, cs.leaf("ingress-server").chain, "api.fabrikam.example")
    _verify_client(ours, cs.leaf("apim-client").chain)
    _verify_client(partners, cs.leaf("partner").chain)
    for bundle, leaf in ((partners, "apim-client"), (ours, "partner")):
        with pytest.raises(xv.VerificationError, match="candidates exhausted"):
            _verify_client(bundle, cs.leaf(leaf).chain)
    real_root = tmp_path / "real-root.pem"
    real_root.write_bytes(ent.root.cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(xv.VerificationError, match="candidates exhausted"):  # a shadow never passes the real root
        _verify_client(real_root, cs.leaf("apim-client").chain)


def _key_file(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def test_real_certs_are_used_where_every_key_of_a_root_is_given(ent: Enterprise, tmp_path: Path) -> None:
    identities = [IdentityInput("partner", (ent.partner.cert,), key=_key_file(tmp_path / "p.key", ent.partner.key)),
                  IdentityInput("ingress-server", (ent.server.cert, ent.issuing.cert))]
    trusts = [TrustInput("appgw-partner-roots", (ent.partner_root.cert,))]
    result = build_cert_set(identities, trusts, tmp_path / "set")
    assert dict(result.mode) == {"partner": "real", "ingress-server": "shadow"}
    files = result.certs.leaf("partner")
    assert _pem_chain(files.cert) == [ent.partner.cert]
    key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    assert key.public_key() == ent.partner.cert.public_key()
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert _pem_chain(result.certs.trust_bundle(result.trust["appgw-partner-roots"])) == [ent.partner_root.cert]
    _verify_client(result.certs.trust_bundle(result.trust["appgw-partner-roots"]), files.chain)


def test_a_root_with_one_keyless_identity_is_shadowed_whole(ent: Enterprise, tmp_path: Path) -> None:
    identities, trusts = _inputs(ent, client_key=_key_file(tmp_path / "c.key", ent.client.key))
    result = build_cert_set(identities, trusts, tmp_path / "set")
    # ingress-server (no key) shares apim-client's root: a shadow leaf cannot be signed by the real issuing CA
    assert result.mode["apim-client"] == "shadow"
    assert _pem_chain(result.certs.leaf("apim-client").cert)[0] != ent.client.cert


def test_a_chain_without_its_root_gets_a_shadow_root_named_like_its_issuer(ent: Enterprise, tmp_path: Path) -> None:
    result = build_cert_set([IdentityInput("ingress-server", (ent.server.cert, ent.issuing.cert))], [],
                            tmp_path / "set")
    chain = _pem_chain(result.certs.leaf("ingress-server").chain)
    root_name = result.plan.root_of(result.plan.leaf("ingress-server").issuer)
    root = _pem_chain(result.certs.ca_cert(root_name))[0]
    assert [c.subject for c in chain] == [ent.server.cert.subject, ent.issuing.cert.subject]
    assert root.subject == ent.root.cert.subject
    _verify_server(result.certs.ca_cert(root_name), result.certs.leaf("ingress-server").chain,
                   "api.fabrikam.example")


def test_a_second_build_reuses_the_set_and_a_foreign_directory_is_refused(ent: Enterprise, tmp_path: Path) -> None:
    identities, trusts = _inputs(ent)
    first = build_cert_set(identities, trusts, tmp_path / "set").certs.leaf("partner").fingerprint_sha256
    again = build_cert_set(identities, trusts, tmp_path / "set").certs.leaf("partner").fingerprint_sha256
    assert first == again
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds files that are not a cert set"):
        build_cert_set(identities, trusts, other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_a_key_that_is_not_the_certs_is_refused_with_its_path(ent: Enterprise, tmp_path: Path) -> None:
    wrong = _key_file(tmp_path / "wrong.key", ent.client.key)
    with pytest.raises(InputError, match=r"wrong\.key: does not belong to identity 'partner'") as err:
        build_cert_set([IdentityInput("partner", (ent.partner.cert,), key=wrong)], [], tmp_path / "set")
    assert "\n" not in str(err.value)
    assert "PRIVATE" not in str(err.value)
    assert not (tmp_path / "set").exists()  # nothing half-written


def test_a_trust_list_with_two_roots_is_refused(ent: Enterprise, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds 2 roots"):
        build_cert_set([], [TrustInput("both", (ent.root.cert, ent.partner_root.cert))], tmp_path / "set")
