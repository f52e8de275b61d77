"""The user's chain file, resolved: certificate files, the Kubernetes YAML they apply and the APIM policy XML read
into a :class:`~harness.model.topology.Topology` and a cert set (docs/chain-file.md).

Owns :mod:`~harness.chainfile.k8s` (Ingress and Secret manifests), :mod:`~harness.chainfile.policy` (APIM policy
XML), :mod:`~harness.chainfile.certs` (certificate entries → a cert set), :mod:`~harness.chainfile.load`
(:func:`load_chain`) and :mod:`~harness.chainfile.init` (the reference chain as a chain file, ``mtls-harness init``).
May import: :mod:`harness.render`, :mod:`harness.pki`, :mod:`harness.model`, :mod:`harness.errors`.
"""

from __future__ import annotations
