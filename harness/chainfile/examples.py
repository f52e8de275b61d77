"""The example chains of ``examples/`` as topologies (``mtls-harness init DIR --example NAME`` writes one with its
certs; the committed folders are the same files without certs and Secrets).

- ``reference``: the reference chain (docs/design.md);
- ``partner-mtls``: App Gateway mTLS Strict with a partner's CA; App Gateway presents a client cert to APIM, whose
  ``negotiateClientCertificate`` + ``validate-client-certificate`` check it over HTTP/2; the ingress verifies APIM's
  cert with ``auth-tls-verify-client: optional_no_ca`` and pins it with ``auth-tls-match-cn``;
- ``passthrough``: ``ssl-passthrough`` (controller flag ``--enable-ssl-passthrough``): APIM's TLS session ends at the
  pod, which verifies APIM's client cert itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from harness.errors import UsageError
from harness.model.topology import CASpec, LeafSpec, Topology, default_topology

__all__ = ["EXAMPLES", "example_topology"]


def _partner_mtls() -> Topology:
    t = default_topology()
    pki = dataclasses.replace(
        t.pki,
        cas=(*t.pki.cas, CASpec("partner-ca", "Fabrikam Partner CA")),
        leaves=(*t.pki.leaves,
                LeafSpec("partner-client", "partner-ca", "partner-1", "client", ("partner-1.fabrikam.example",),
                         "Fabrikam"),
                LeafSpec("gateway-client", "consumer-ca", "appgw-backend", "client", ("appgw.contoso.example",))),
    )
    t = t.replace(name="partner-mtls", pki=pki, client=dataclasses.replace(t.client, client_cert="partner-client"))
    t = t.with_hop("gateway", listener__client_auth="required", listener__client_ca="partner-ca",
                   upstream__client_cert="gateway-client")
    t = t.with_hop("apim", negotiate_client_certificate=True, validate_client_certificate=True)
    return t.with_ingress_annotations(auth_tls_verify_client="optional_no_ca", auth_tls_match_cn="CN=apim-client")


def _passthrough() -> Topology:
    t = default_topology().replace(name="passthrough")
    t = t.with_ingress_annotations(ssl_passthrough="true").with_controller(enable_ssl_passthrough=True)
    t = t.with_hop("pod", listener__client_auth="required", listener__client_ca="apim-client-ca")
    # the pod's mounted Secret carries the CA it now verifies with (render/k8s.py: the pod listener decides it)
    secrets = tuple(dataclasses.replace(s, ca=("apim-client-ca",)) if s.name == "echo-tls" else s
                    for s in t.ingress.secrets)
    t = t.replace(ingress=dataclasses.replace(t.ingress, secrets=secrets))
    return t.with_hop("apim", upstream__trusted_ca="pod-ca")


EXAMPLES: dict[str, Callable[[], Topology]] = {
    "reference": default_topology,
    "partner-mtls": _partner_mtls,
    "passthrough": _passthrough,
}


def example_topology(name: str) -> Topology:
    if name not in EXAMPLES:
        raise UsageError(f"--example {name!r}: no such example — choose one of {', '.join(EXAMPLES)}")
    return EXAMPLES[name]()
