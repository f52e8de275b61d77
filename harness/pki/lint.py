"""pkilint, as the cert checks use it: the RFC 5280 certificate linter and the signer/signee pair linter.

Only the PKIX linters: the CA/B Forum ones judge Web-PKI policy and are noise for a private CA. pkilint has no date
checks (certcheck does those) and its INFO findings (e.g. which SKI method was used) are dropped. A single-label DNS
SAN (``echo``, ``localhost``: a Kubernetes short service name) fails pkilint's domain-name syntax check; on a private
CA that is a note, not a defect, so it is reported with severity ``info``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = ["LintFinding", "lint_cert", "lint_signer_signee"]

Severity = Literal["error", "warning", "info"]

_SEVERITY: dict[str, Severity] = {"FATAL": "error", "ERROR": "error", "WARNING": "warning", "NOTICE": "info"}


@dataclass(frozen=True)
class LintFinding:
    code: str  # pkilint's validation code, e.g. "pkix.invalid_domain_name_syntax"
    severity: Severity
    message: str


@functools.cache
def _cert_validator() -> Any:
    from pkilint.pkix import certificate, extension, name

    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )


@functools.cache
def _pair_validators() -> tuple[Any, Any, Any]:
    from pkilint.bin import lint_pkix_signer_signee_cert_chain as chain

    return (
        chain.create_decoder_validation_container(),
        chain.create_issuer_validation_container(),
        chain.create_subject_validation_container(),
    )


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _single_label(message: str) -> bool:
    match = re.search(r'"([^"]*)"', message)
    return bool(match and match.group(1) and "." not in match.group(1))


def _findings(results: Any) -> list[LintFinding]:
    out: list[LintFinding] = []
    for result in results:
        for fd in result.finding_descriptions:
            severity = _SEVERITY.get(fd.finding.severity.name)
            if severity is None:  # INFO: descriptive, not a finding
                continue
            message = fd.message or fd.finding.code
            if fd.finding.code == "pkix.invalid_domain_name_syntax" and _single_label(message):
                severity = "info"
                message += " (a single-label name, fine on a private CA)"
            out.append(LintFinding(fd.finding.code, severity, message))
    return list(dict.fromkeys(out))


def lint_cert(cert: x509.Certificate) -> list[LintFinding]:
    """pkilint's RFC 5280 certificate lint (``lint_pkix_cert``)."""
    from pkilint import loader

    doc = loader.RFC5280CertificateDocumentLoader().load_pem_document(_pem(cert), "certificate")
    return _findings(_cert_validator().validate(doc.root))


def lint_signer_signee(issuer: x509.Certificate, subject: x509.Certificate) -> list[LintFinding]:
    """pkilint's issuer/subject pair lint (``lint_pkix_signer_signee_cert_chain``): names, key identifiers,
    the issuer's CA-ness and the signature."""
    from pkilint import loader

    ld = loader.RFC5280CertificateDocumentLoader()
    docs: dict[str, Any] = {}
    docs["issuer"] = ld.load_pem_document(_pem(issuer), "issuer", None, docs)
    docs["subject"] = ld.load_pem_document(_pem(subject), "subject", None, docs)
    decoding, issuer_checks, subject_checks = _pair_validators()
    results = decoding.validate(docs["issuer"].root)
    results += decoding.validate(docs["subject"].root)
    results += issuer_checks.validate(docs["issuer"].root)
    results += subject_checks.validate(docs["subject"].root)
    return _findings(results)
