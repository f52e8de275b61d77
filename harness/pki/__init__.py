"""Certificates: a PKI plan made into cert sets, faults, x509 helpers, loaders (PEM, PFX, Kubernetes Secrets),
path validation, lint, and the cert-set check.

Owns everything that reads, makes or judges a certificate; trust bundles are built here (:meth:`CertSet.trust_bundle`).
May import: :mod:`harness.model` and :mod:`harness.errors`.
"""

from __future__ import annotations
