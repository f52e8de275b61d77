"""Cert-set generation and the fault catalogue, judged by real verifiers: OpenSSL through stdlib ssl handshakes over

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in tests/unit/test_pki.py."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from cryptography.x509 import verification as xv

import harness.pki.certset as pki
from harness.model.topology import default_pki_plan
from harness.pki.certset import CertSet, generate_cert_set
from tests.unit.test_pki import CLIENT, _cached_set, _certs, _fault_fingerprint, _openssl_verify, _verify


def test_intermediate_issued_needs_depth_one_and_too_deep_needs_depth_two(pki_set: CertSet) -> None:
    """Depth counts intermediates (OpenSSL >= 1.1 verify depth, nginx ssl_verify_depth, cryptography
    max_chain_depth): one intermediate passes at depth 1, two need depth 2."""
    one, two = pki_set.fault("intermediate-issued", CLIENT), pki_set.fault("too-deep", CLIENT)
    assert [len(_certs(one.chain)), len(_certs(two.chain))] == [2, 3]
    trust = pki_set.trust_bundle("apim-client-ca")
    with pytest.raises(xv.VerificationError, match="exceeds max depth"):
        _verify(one, trust, server_name=None, depth=0)
    _verify(one, trust, server_name=None, depth=1)
    with pytest.raises(xv.VerificationError, match="exceeds max depth"):
        _verify(two, trust, server_name=None, depth=1)
    _verify(two, trust, server_name=None, depth=2)
    refused = _openssl_verify(pki_set, one, 0)
    assert refused.returncode != 0
    assert "certificate chain too long" in refused.stdout + refused.stderr
    assert _openssl_verify(pki_set, one, 1).returncode == 0
    refused = _openssl_verify(pki_set, two, 1)
    assert refused.returncode != 0
    assert "certificate chain too long" in refused.stdout + refused.stderr
    assert _openssl_verify(pki_set, two, 2).returncode == 0


def test_processes_asking_for_one_fault_at_once_get_the_same_files(tmp_path: Path) -> None:
    cs = generate_cert_set(default_pki_plan(), tmp_path / "set")
    with ProcessPoolExecutor(max_workers=4) as pool:
        prints = list(pool.map(_fault_fingerprint, [str(cs.directory)] * 8, ["too-deep"] * 8, [CLIENT] * 8))
    assert len(set(prints)) == 1
    assert prints[0] == cs.fault("too-deep", CLIENT).fingerprint_sha256
    assert [p.name for p in (cs.directory / "faults").iterdir()] == [f"{CLIENT}~too-deep"]


def test_cert_set_for_generates_once_per_plan_even_when_processes_race(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with ProcessPoolExecutor(max_workers=4) as pool:
        prints = list(pool.map(_cached_set, [str(cache)] * 6, ["ecdsa"] * 6))
    assert len(set(prints)) == 1
    assert [p.name for p in cache.iterdir()] == [pki.plan_digest(default_pki_plan())]
