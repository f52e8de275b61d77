"""Causes from each hop's own words (the strings measured on the local target, docs/behaviour.md) and the attribution
of a refusal to the hop that decided it. The live half is tests/integration/test_causes.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.cases.catalogue import CATALOGUE
from harness.cases.cross_domain import stripped_by
from harness.cases.evidence import attribute
from harness.probe.causes import CAUSES, cause_of
from harness.probe.http import classify_response
from harness.probe.outcomes import http_reject, tls_alert, upstream_failure

REPO = Path(__file__).resolve().parents[2]

# measured here (Envoy 1.40, nginx 1.22.1 / OpenSSL 3.0, Python 3.11 ssl); docs/behaviour.md quotes the same lines
MEASURED = [
    ("TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify_cert_failed:_X509_verify_"
     "cert:_certificate_verification_error_at_depth_0:_unable_to_get_local_issuer_certificate:TLS_error_end",
     "unknown-issuer"),
    ("…CERTIFICATE_VERIFY_FAILED:verify_cert_failed:_SAN_matcher,_certificate_SANs_are_[unrelated-host.contoso.example]"
     ":TLS_error_end", "name-mismatch"),
    ("…_certificate_verification_error_at_depth_0:_certificate_has_expired:TLS_error_end", "expired"),
    ("…_certificate_verification_error_at_depth_0:_certificate_is_not_yet_valid:TLS_error_end", "not-yet-valid"),
    ("…_certificate_verification_error_at_depth_0:_unsupported_certificate_purpose:TLS_error_end", "wrong-eku"),
    ("upstream SSL certificate verify error: (21:unable to verify the first certificate)", "unknown-issuer"),
    ('upstream SSL certificate does not match "echo.default.svc.cluster.local"', "name-mismatch"),
    ("upstream SSL certificate verify error: (18:self-signed certificate)", "self-signed"),
    ("client SSL certificate verify error: (26:unsuitable certificate purpose)", "wrong-eku"),
    ("client SSL certificate verify error: (23:certificate revoked)", "revoked"),
    ("client SSL certificate verify error: (9:certificate is not yet valid)", "not-yet-valid"),
    ("client sent no required SSL certificate", "no-client-cert"),
    ("connect() failed (111: Connection refused) while connecting to upstream", "connection-refused"),
    ("handshake failed: SSLCertVerificationError: certificate has expired", "expired"),
    ("handshake failed: SSLError: PEER_DID_NOT_RETURN_A_CERTIFICATE", "no-client-cert"),
    ("hop=gateway; rejected=client-cert-invalid; verify=FAILED:certificate not trusted", "not-trusted"),
    ("hop=apim; rejected=ClientCertificateNotFound", "no-client-cert"),
    ("hop=apim; rejected=jwt; details=jwt_authn_access_denied{Jwt_is_expired}", "token:Jwt_is_expired"),
    ("hop=apim; rejected=jwt-claim-missing; claim=scp", "token:claim=scp"),
]


@pytest.mark.parametrize(("text", "cause"), MEASURED)
def test_each_measured_phrase_names_its_cause(text: str, cause: str) -> None:
    assert cause_of(text) == cause
    assert cause.partition(":")[0] in CAUSES


def test_no_cause_is_read_from_a_status_or_a_page_alone() -> None:
    assert cause_of("502 Bad Gateway") is None
    assert cause_of("Internal server error") is None
    assert cause_of(None) is None


def test_a_stand_in_answer_names_its_hop_and_cause_from_its_detail_header() -> None:
    headers = {"x-harness-detail": "hop=apim; flags=URX,UF; details=upstream_reset_before_response_started{remote_"
                                   "connection_failure|TLS_error:…_certificate_has_expired:TLS_error_end}"}
    seen = classify_response(500, headers, b'{"reason": "BackendConnectionFailure"}')
    assert (seen.kind, seen.hop, seen.cause) == ("upstream_failure", "apim", "expired")


def test_an_nginx_502_is_attributed_to_the_ingress_from_its_error_log_not_to_the_status() -> None:
    seen = upstream_failure(502, "Bad Gateway")
    log = ("2026/12/04 01:52:40 [info] 1#1: *2 SSL_do_handshake() failed (SSL: error:0A000418:SSL routines::tlsv1 "
           "alert unknown ca:SSL alert number 48) while SSL handshaking\n"  # an alert nginx RECEIVED: not its decision
           "2026/12/04 01:52:40 [error] 1#1: *16 upstream SSL certificate verify error: (10:certificate has expired) "
           "while SSL handshaking to upstream\n")
    found = attribute(seen, {"ingress-error": log}, terminator="gateway", headers={}, page="Bad Gateway")
    assert (found.outcome.hop, found.outcome.cause) == ("ingress", "expired")
    bare = attribute(seen, {}, terminator="gateway", headers={}, page="Bad Gateway")
    assert (bare.outcome.hop, bare.outcome.cause) == (None, None)


def test_a_pod_hanging_up_on_the_ingress_is_the_pods_decision_when_its_log_names_one() -> None:
    # measured on the passthrough example without its controller flag: the pod refuses nginx's client certificate
    # under TLS 1.3 and nginx only sees the connection go
    seen = upstream_failure(502, "Bad Gateway")
    nginx = ("2026/12/04 09:50:02 [error] 1#1: *7 connect() failed (32: Broken pipe) while connecting to upstream, "
             "client: 127.0.0.1\n")
    pod = "pod: 127.0.0.1:2 handshake failed: SSLCertVerificationError: self-signed certificate in certificate chain\n"
    found = attribute(seen, {"ingress-error": nginx, "pod": pod}, terminator="ingress", headers={}, page=None)
    assert (found.outcome.hop, found.outcome.cause) == ("pod", "self-signed-in-chain")
    alone = attribute(seen, {"ingress-error": nginx}, terminator="ingress", headers={}, page=None)
    assert alone.outcome.hop == "ingress"  # without the pod's line nobody else claims it
    refused = attribute(seen, {"ingress-error": nginx.replace("32: Broken pipe", "111: Connection refused"),
                               "pod": pod}, terminator="ingress", headers={}, page=None)
    assert refused.outcome.hop == "ingress"  # nothing listening is not the pod's decision


def test_an_alert_is_the_terminators_and_its_log_names_the_cause() -> None:
    log = "pod: 127.0.0.1:1 handshake failed: SSLCertVerificationError: certificate is not yet valid\n"
    found = attribute(tls_alert("bad_certificate"), {"pod": log}, terminator="pod", headers={}, page=None)
    assert (found.outcome.hop, found.outcome.cause) == ("pod", "not-yet-valid")
    received = "pod: 127.0.0.1:1 handshake failed: SSLError: TLSV1_ALERT_UNKNOWN_CA\n"  # the pod was refused
    assert attribute(tls_alert("unknown_ca"), {"pod": received}, terminator="pod", headers={},
                     page=None).evidence.startswith("the alert")


def test_an_ingress_403_without_an_upstream_is_the_ingress_own_answer() -> None:
    line = ('127.0.0.1 - - [04/Dec/2026:01:53:25 +0000] "GET / HTTP/1.1" 403 146 "-" "probe" 80 0.000 [-] [] - - - - '
            'abc\n')
    found = attribute(http_reject(403, "Forbidden"), {"ingress-access": line}, terminator="ingress", headers={},
                      page="Forbidden")
    assert (found.outcome.hop, found.outcome.cause) == ("ingress", "forbidden")


def test_every_rejection_case_names_its_cause_and_deciding_hop() -> None:
    assert [c.id for c in CATALOGUE if c.expect.is_rejection and not (c.expect.hop and c.expect.cause)] == []


def _trace(**stripped: str) -> object:
    class R:
        def json(self) -> dict[str, object]:
            return {"trace": {h: {"tls": "TLSv1.3", "stripped": v} for h, v in stripped.items()}}

    return R()


def test_stripping_is_attributed_to_the_hop_that_stripped() -> None:
    check = stripped_by("gateway", ("gateway", "apim", "ingress"))
    assert check(_trace(gateway="gateway,apim,ingress", apim="", ingress=""), None) is None  # type: ignore[arg-type]
    # a gateway that stopped stripping: apim had to remove what it forwarded
    problem = check(_trace(gateway="gateway,apim,ingress", apim="apim,ingress", ingress=""), None)  # type: ignore[arg-type]
    assert problem is not None
    assert "gateway forwarded forged trace headers" in problem


def test_the_oauth_cases_take_no_expectation_from_the_renderer() -> None:
    tree = ast.parse((REPO / "harness" / "cases" / "oauth.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.startswith("harness.render") for m in imported), imported
