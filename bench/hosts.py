"""A chain file with many ingress hosts, written from an example: what a real controller carries (one Ingress per
team or API, each with its own host, TLS Secret and annotations).

    write_hosts(DIR, ["pay.aks.contoso.example", ...], annotations={"reports.aks.contoso.example": {...}})

``DIR`` is a chain written by ``mtls-harness init DIR --example NAME``. Each added host gets a server certificate
issued by the example's ingress CA (``certs/ingress-ca.key``; ECDSA P-256, its own SAN), a ``kubernetes.io/tls``
Secret and an Ingress copied from the home host's, with its name, host, Secret and any annotation overrides. All go
into ``DIR/k8s/hosts.yaml``, which ``ingress.manifests: [k8s]`` already reads. The benchmark of chain cost
(bench/chains.py) and the multi-host tests use it; the harness itself does not.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness.pki.x509 import Signed, cert_pem, issue_leaf, key_pem, write_atomic

PREFIX = "nginx.ingress.kubernetes.io/"


def _leaf(host: str, ca_pem: bytes, ca_key_pem: bytes) -> tuple[bytes, bytes]:
    """A server certificate for ``host`` issued by the example's ingress CA (the harness's own issuer)."""
    ca = Signed(x509.load_pem_x509_certificate(ca_pem),
                serialization.load_pem_private_key(ca_key_pem, password=None))  # type: ignore[arg-type]
    leaf = issue_leaf(ca, host, (host,), ("server",), "ecdsa")
    return cert_pem(leaf.cert), key_pem(leaf.key)


def write_hosts(directory: Path, hosts: Sequence[str],
                annotations: Mapping[str, Mapping[str, str | None]] | None = None,
                apis: Mapping[str, Mapping[str, object]] | None = None) -> Path:
    """Add ``hosts`` to the chain in ``directory`` (see the module doc); returns the manifest file written.
    ``annotations[host]`` overrides annotations (keys without the prefix; None removes one). ``apis[host]`` adds an
    APIM API to that host to the chain file (``apim.apis``): ``{"path": "/reports", ...}`` with any other keys of an
    API entry (``validate_certificate_name: false``); its name is the host's first label."""
    directory = Path(directory)
    home = yaml.safe_load((directory / "k8s" / "ingress.yaml").read_text())
    ca_pem = (directory / "certs" / "ingress-ca.pem").read_bytes()
    ca_key = (directory / "certs" / "ingress-ca.key").read_bytes()
    docs: list[dict[str, object]] = []
    for n, host in enumerate(hosts, 1):
        cert, key = _leaf(host, ca_pem, ca_key)
        name = f"host-{n}"
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                     "metadata": {"name": f"{name}-tls", "namespace": "default"},
                     "stringData": {"tls.crt": cert.decode(), "tls.key": key.decode()}})
        ann = dict(home["metadata"].get("annotations") or {})
        for k, v in (annotations or {}).get(host, {}).items():
            if v is None:
                ann.pop(PREFIX + k, None)
            else:
                ann[PREFIX + k] = v
        spec = yaml.safe_load(yaml.safe_dump(home["spec"]))
        spec["tls"] = [{"hosts": [host], "secretName": f"{name}-tls"}]
        spec["rules"][0]["host"] = host
        docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                     "metadata": {"name": name, "namespace": home["metadata"].get("namespace", "default"),
                                  "annotations": ann},
                     "spec": spec})
    if apis:
        chain = directory / "chain.yaml"
        doc = yaml.safe_load(chain.read_text())
        doc["apim"]["apis"] = [{"name": host.split(".")[0], "backend_url": f"https://{host}/", **entry}
                               for host, entry in apis.items()]
        chain.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = directory / "k8s" / "hosts.yaml"
    text = io.StringIO()
    yaml.safe_dump_all(docs, text, sort_keys=False)
    write_atomic(out, text.getvalue().encode(), 0o600)  # it holds private keys
    return out
