"""The shadow PKI from certificates made by the `openssl` command line (as a platform team's CA would hand them
out): the copies keep each leaf's subject, SANs, EKU, key type and size, validity and depth, `openssl verify`
accepts each shadow leaf against the shadow of its own root and refuses it against the other trust list, and
`mtls-harness certs shadow` refuses a key that is not the certificate's in one line with exit 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

MTLS_HARNESS = [sys.executable, "-m", "harness"]


def _ssl(*args: str, cwd: Path) -> str:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"
    return done.stdout


@dataclass
class Made:
    d: Path

    def p(self, name: str) -> Path:
        return self.d / name


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    d = tmp_path_factory.mktemp("openssl")
    (d / "ca.ext").write_text("basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
                              "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    (d / "server.ext").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,"
                                  "keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:api.corp.example,"
                                  "DNS:api-internal.corp.example,IP:10.0.0.7\nsubjectKeyIdentifier=hash\n"
                                  "authorityKeyIdentifier=keyid\n")
    (d / "client.ext").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                  "extendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _ssl("req", "-x509", "-newkey", "rsa:3072", "-nodes", "-keyout", "root.key", "-out", "root.pem", "-days", "3650",
         "-subj", "/C=DE/O=Corp AG/CN=Corp Root CA", cwd=d)
    _ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes", "-keyout", "int.key", "-out",
         "int.csr", "-subj", "/O=Corp AG/OU=PKI/CN=Corp Issuing CA 1", cwd=d)
    _ssl("x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial", "-out",
         "int.pem", "-days", "1500", "-extfile", "ca.ext", cwd=d)
    _ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key", "-out",
         "server.csr", "-subj", "/C=DE/O=Corp AG/CN=api.corp.example", cwd=d)
    _ssl("x509", "-req", "-in", "server.csr", "-CA", "int.pem", "-CAkey", "int.key", "-CAcreateserial", "-out",
         "server.pem", "-days", "180", "-extfile", "server.ext", cwd=d)
    _ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "partner.key",
         "-out", "partner-root.pem", "-days", "3650", "-subj", "/O=Partner/CN=Partner Root", cwd=d)
    _ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj",
         "/O=Partner/CN=partner-app", cwd=d)
    _ssl("x509", "-req", "-in", "client.csr", "-CA", "partner-root.pem", "-CAkey", "partner.key", "-CAcreateserial",
         "-out", "client.pem", "-days", "90", "-extfile", "client.ext", cwd=d)
    (d / "server-chain.pem").write_text((d / "server.pem").read_text() + (d / "int.pem").read_text())
    return Made(d)


def _shadow(made: Made, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MTLS_HARNESS, "certs", "shadow", str(out), "--json",
                           "--identity", f"api={made.p('server-chain.pem')}",
                           "--identity", f"partner-app={made.p('client.pem')}",
                           "--trust", f"appgw-trusted-root={made.p('root.pem')}",
                           "--trust", f"apim-partner-ca={made.p('partner-root.pem')}", *extra],
                          capture_output=True, text=True, timeout=120, check=False)


def _openssl_text(path: Path, cwd: Path) -> str:
    return _ssl("x509", "-in", str(path), "-noout", "-subject", "-enddate", "-startdate", "-ext",
                "subjectAltName,extendedKeyUsage,basicConstraints", cwd=cwd)


def _key_line(path: Path, cwd: Path) -> str:
    text = _ssl("x509", "-in", str(path), "-noout", "-text", cwd=cwd)
    return " ".join(re.findall(r"Public-Key: \(\d+ bit\)|NIST CURVE: P-\d+|rsaEncryption|id-ecPublicKey", text))


def test_openssl_made_certs_get_faithful_shadows_that_keep_their_trust(made: Made, tmp_path: Path) -> None:
    done = _shadow(made, tmp_path / "set")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["mode"] == {"api": "shadow", "partner-app": "shadow"}
    d = Path(result["directory"])
    for name, real in (("api", made.p("server.pem")), ("partner-app", made.p("client.pem"))):
        shadow = d / "leaves" / name / "cert.pem"
        assert _openssl_text(shadow, tmp_path) == _openssl_text(real, tmp_path), name
        assert _key_line(shadow, tmp_path) == _key_line(real, tmp_path), name
        assert x509.load_pem_x509_certificate(shadow.read_bytes()) != x509.load_pem_x509_certificate(real.read_bytes())
    chain = x509.load_pem_x509_certificates((d / "leaves" / "api" / "chain.pem").read_bytes())
    assert [c.subject.rfc4514_string() for c in chain] == [
        "CN=api.corp.example,O=Corp AG,C=DE", "CN=Corp Issuing CA 1,OU=PKI,O=Corp AG"]
    assert _openssl_text(d / "cas" / "corp-issuing-ca-1" / "cert.pem", tmp_path) == _openssl_text(
        made.p("int.pem"), tmp_path)
    assert set(result["trust"]) == {"appgw-trusted-root", "apim-partner-ca"}
    bundles = {n: Path(p) for n, p in result["bundles"].items()}
    api = d / "leaves" / "api"
    own = subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(bundles["appgw-trusted-root"]),
                          "-untrusted", str(api / "chain.pem"), str(api / "cert.pem")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert own.returncode == 0, own.stdout + own.stderr
    client = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(bundles["apim-partner-ca"]),
                             str(d / "leaves" / "partner-app" / "cert.pem")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert client.returncode == 0, client.stdout + client.stderr
    for bundle, leaf in ((bundles["apim-partner-ca"], "api"), (bundles["appgw-trusted-root"], "partner-app"),
                         (made.p("root.pem"), "api")):  # the other list, and the REAL root: no shadow passes them
        refused = subprocess.run(["openssl", "verify", "-CAfile", str(bundle), "-untrusted",
                                  str(d / "leaves" / leaf / "chain.pem"), str(d / "leaves" / leaf / "cert.pem")],
                                 capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode != 0, leaf
        assert "unable to get local issuer certificate" in refused.stdout + refused.stderr


def test_the_real_cert_is_used_where_its_key_is_given(made: Made, tmp_path: Path) -> None:
    done = _shadow(made, tmp_path / "set", "--key", f"partner-app={made.p('client.key')}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["mode"] == {"api": "shadow", "partner-app": "real"}
    leaf = Path(result["directory"]) / "leaves" / "partner-app"
    assert (leaf / "cert.pem").read_bytes() == made.p("client.pem").read_bytes()
    assert oct(leaf.joinpath("key.pem").stat().st_mode & 0o777) == "0o600"
    assert "PRIVATE KEY" not in done.stdout


def test_a_key_that_is_not_the_certs_is_one_line_and_exit_2(made: Made, tmp_path: Path) -> None:
    done = _shadow(made, tmp_path / "set", "--key", f"partner-app={made.p('server.key')}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mtls-harness: error: ")
    assert "server.key: does not belong to identity 'partner-app'" in lines[0]
    assert "PRIVATE" not in done.stderr
    assert not (tmp_path / "set").exists()


def test_certs_check_chain_flags_the_users_sha1_cert_by_identity_name_and_real_fingerprint(tmp_path: Path) -> None:
    """Issue 16 bug 4: with public certs only, `certs check --chain` judges the user's certificates, not the
    stand-ins (a stand-in is signed SHA-256 whatever the real one is)."""
    import os

    import yaml

    env = {**os.environ, "MTLS_HARNESS_CERT_CACHE": str(tmp_path / "cache")}
    chain = tmp_path / "chain"
    done = subprocess.run([*MTLS_HARNESS, "init", str(chain)], capture_output=True, text=True, timeout=120,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr
    doc = yaml.safe_load((chain / "chain.yaml").read_text())
    for entry in [*doc["certificates"]["identities"].values(), *doc["certificates"]["trust"].values()]:
        entry.pop("key", None)  # public certificates only
    (chain / "chain.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    certs = chain / "certs"
    issuer = _ssl("x509", "-in", "ingress-client.pem", "-noout", "-issuer", "-nameopt", "RFC2253", cwd=certs)
    ca = next(p.stem for p in certs.glob("*.pem") if p.stem != "ingress-client" and _ssl(
        "x509", "-in", p.name, "-noout", "-subject", "-nameopt", "RFC2253", cwd=certs).split("=", 1)[1]
        == issuer.split("=", 1)[1])
    (certs / "client.ext").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                      "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:ingress.client.example\n")
    _ssl("req", "-new", "-key", "ingress-client.key", "-out", "ic.csr", "-subj", "/O=Contoso/CN=ingress-client",
         cwd=certs)
    _ssl("x509", "-req", "-sha1", "-in", "ic.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
         "-out", "ingress-client.pem", "-days", "200", "-extfile", "client.ext", cwd=certs)
    text = _ssl("x509", "-in", "ingress-client.pem", "-noout", "-text", cwd=certs)
    assert re.search(r"Signature Algorithm: (ecdsa-with-SHA1|sha1WithRSAEncryption)", text)
    real_fp = _ssl("x509", "-in", "ingress-client.pem", "-noout", "-fingerprint", "-sha256", cwd=certs)
    real_fp = real_fp.strip().split("=", 1)[1].replace(":", "").lower()
    done = subprocess.run([*MTLS_HARNESS, "certs", "check", "--chain", str(chain / "chain.yaml"), "--json"],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 1, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["certs"]}
    row = rows["ingress-client"]
    assert row["fingerprint_sha256"] == real_fp
    assert row["source"] == str(certs / "ingress-client.pem")
    assert [f["code"] for f in row["findings"] if f["severity"] == "error"] == ["sha1-signature"]
    assert "ingress-client=shadow" in done.stderr  # it runs as a stand-in, but the check is of the user's cert
