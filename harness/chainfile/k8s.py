"""The Kubernetes YAML a chain file names: Ingress and Secret manifests, as the user applies them.

Files may hold several documents (``---``); a folder means every ``*.yaml`` / ``*.yml`` in it, in name order. An
Ingress becomes a :class:`~harness.model.topology.Ingress` (its first rule, path and TLS entry; ingress-nginx
annotations without their prefix); a Secret keeps its raw ``tls.crt`` / ``tls.key`` / ``ca.crt`` bytes for
:mod:`harness.chainfile.certs`. Whatever the harness does not model (other kinds, extra rules, annotations of other
controllers) is returned as a warning naming it — never dropped silently.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from harness.errors import InputError
from harness.model.topology import ANNOTATION_PREFIX, Ingress

__all__ = ["Manifests", "RawSecret", "read_gateway_api", "read_manifests", "secret_manifest"]


@dataclass(frozen=True)
class RawSecret:
    """A Secret manifest's certificate keys, decoded (PEM bytes; never printed)."""

    name: str
    namespace: str
    source: str  # file:line, for messages
    tls_crt: bytes | None = None
    tls_key: bytes | None = None
    ca_crt: bytes | None = None
    ca_crl: bytes | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Manifests:
    ingresses: tuple[Ingress, ...]
    secrets: tuple[RawSecret, ...]
    warnings: tuple[str, ...]
    #: ``ns/name`` of each Ingress → ``file:line`` of its document, and of each annotation (key without the prefix)
    ingress_sources: Mapping[str, str] = field(default_factory=dict)
    annotation_sources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def source_of(self, ingress_ref: str, annotation: str | None = None) -> str | None:
        """``file:line`` of the Ingress ``ns/name`` (of its annotation when it is there), or None."""
        lines = self.annotation_sources.get(ingress_ref, {})
        return lines.get(annotation or "") or self.ingress_sources.get(ingress_ref)


def _files(path: Path, key: str) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not found:
            raise InputError(path, f"({key}) holds no *.yaml or *.yml file", "point at the folder of your manifests")
        return found
    if not path.is_file():
        raise InputError(path, f"({key}) does not exist", "fix the path (relative to the chain file)")
    return [path]


def _documents(path: Path) -> list[tuple[int, Any, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InputError(where, f"is not valid YAML ({getattr(exc, 'problem', None) or exc})",
                         "fix the YAML syntax at that line") from None
    return [(n.start_mark.line + 1 if n is not None else 1, d, n) for n, d in zip(nodes, docs, strict=True)
            if d is not None]


def _annotation_lines(node: Any, file: Path) -> dict[str, str]:
    """Annotation key (without the ingress-nginx prefix) → ``file:line`` of it, from the composed YAML node."""
    def child(n: Any, key: str) -> Any:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    return v
        return None

    annotations = child(child(node, "metadata"), "annotations")
    if not isinstance(annotations, yaml.MappingNode):
        return {}
    return {str(k.value).removeprefix(ANNOTATION_PREFIX): f"{file}:{k.start_mark.line + 1}"
            for k, _ in annotations.value if isinstance(k, yaml.ScalarNode)}


def _decode(value: Any, where: str, key: str, *, base64_data: bool) -> bytes:
    if not isinstance(value, str):
        raise InputError(where, f"Secret key {key} is not a string", "give the PEM text (stringData) or base64 (data)")
    if not base64_data:
        return value.encode()
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(where, f"Secret data.{key} is not base64", "base64-encode the PEM file, or use "
                         "stringData") from None


def _secret(doc: dict[str, Any], where: str, warnings: list[str]) -> RawSecret:
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(where, "Secret has no metadata.name", "name the Secret")
    values: dict[str, bytes] = {}
    for section, is_b64 in (("data", True), ("stringData", False)):
        for key, value in (doc.get(section) or {}).items():
            if key in ("tls.crt", "tls.key", "ca.crt", "ca.crl"):
                values[key] = _decode(value, where, key, base64_data=is_b64)
            else:
                warnings.append(f"{where}: Secret {name} key {key!r} is not modelled (ignored)")
    return RawSecret(name, str(meta.get("namespace") or "default"), where, values.get("tls.crt"),
                     values.get("tls.key"), values.get("ca.crt"), values.get("ca.crl"))


def _ingress(doc: dict[str, Any], where: str, warnings: list[str]) -> Ingress:
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    spec = doc.get("spec") or {}
    rules = spec.get("rules") or []
    tls = spec.get("tls") or []
    if not isinstance(name, str) or not rules or not tls:
        raise InputError(where, f"Ingress {name or '(no name)'} needs metadata.name, spec.rules and spec.tls",
                         "give the host's rule and its tls secretName (the harness models HTTPS Ingresses)")
    rule = rules[0]
    paths = ((rule.get("http") or {}).get("paths")) or []
    if not rule.get("host") or not paths:
        raise InputError(where, f"Ingress {name}: spec.rules[0] needs a host and http.paths",
                         "give the host and at least one path")
    backend = (paths[0].get("backend") or {}).get("service") or {}
    port = (backend.get("port") or {}).get("number")
    if not backend.get("name") or not isinstance(port, int):
        raise InputError(where, f"Ingress {name}: spec.rules[0].http.paths[0].backend.service needs a name and "
                         "port.number", "give the Service name and its port number (a port name is not modelled)")
    if not tls[0].get("secretName"):
        raise InputError(where, f"Ingress {name}: spec.tls[0] has no secretName", "name the host's TLS Secret")
    for what, extra in (("rules", rules[1:]), ("tls entries", tls[1:]), ("paths", paths[1:])):
        if extra:
            warnings.append(f"{where}: Ingress {name}: {len(extra)} more {what} beyond the first are not modelled")
    annotations: dict[str, str] = {}
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith(ANNOTATION_PREFIX):
            annotations[key.removeprefix(ANNOTATION_PREFIX)] = str(value)
        else:
            warnings.append(f"{where}: Ingress {name}: annotation {key} is not ingress-nginx's (ignored)")
    path_type = str(paths[0].get("pathType") or "Prefix")
    if path_type not in ("Prefix", "Exact", "ImplementationSpecific"):
        raise InputError(where, f"Ingress {name}: pathType {path_type!r} is not a Kubernetes path type",
                         "use Prefix, Exact or ImplementationSpecific")
    created = meta.get("creationTimestamp")
    return Ingress(name=name, host=str(rule["host"]), tls_secret=str(tls[0]["secretName"]),
                   service=str(backend["name"]), service_port=port, namespace=str(meta.get("namespace") or "default"),
                   path=str(paths[0].get("path") or "/"), annotations=MappingProxyType(annotations),
                   path_type=path_type,
                   creation_timestamp=_timestamp(created))


def _timestamp(value: Any) -> str | None:
    """metadata.creationTimestamp as RFC 3339 (YAML may have parsed it into a datetime already)."""
    if not value:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def read_manifests(paths: list[tuple[Path, str]]) -> Manifests:
    """Every Ingress and Secret in ``paths`` (each a file or folder with the chain-file key that named it)."""
    ingresses: list[Ingress] = []
    secrets: list[RawSecret] = []
    warnings: list[str] = []
    sources: dict[str, str] = {}
    annotation_sources: dict[str, dict[str, str]] = {}
    for path, key in paths:
        for file in _files(path, key):
            for line, doc, node in _documents(file):
                where = f"{file}:{line}"
                kind = doc.get("kind") if isinstance(doc, dict) else None
                if kind == "Ingress":
                    ing = _ingress(doc, where, warnings)
                    ingresses.append(ing)
                    sources[f"{ing.namespace}/{ing.name}"] = where
                    annotation_sources[f"{ing.namespace}/{ing.name}"] = _annotation_lines(node, file)
                elif kind == "Secret":
                    secrets.append(_secret(doc, where, warnings))
                else:
                    warnings.append(f"{where}: {kind or 'a document without kind'} is not modelled (ignored)")
    return Manifests(tuple(ingresses), tuple(secrets), tuple(warnings), sources, annotation_sources)


def read_gateway_api(paths: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    """The Gateway API resources in ``paths`` (files or folders, each with the option or chain-file key that named
    it), as you apply them: every document with a kind (a ``List`` expanded), in file order. One InputError for a
    missing file, bad YAML (naming the line) or resources without a Gateway."""
    out: list[dict[str, Any]] = []
    for path, key in paths:
        for file in _files(path, key):
            for _, doc, _ in _documents(file):
                if isinstance(doc, dict) and doc.get("kind") == "List":
                    out += [item for item in doc.get("items") or [] if isinstance(item, dict)]
                elif isinstance(doc, dict) and doc.get("kind"):
                    out.append(doc)
    if not any(d.get("kind") == "Gateway" for d in out):
        path, key = paths[0]
        raise InputError(path, f"({key}) holds no Gateway", "give the file(s) with the Gateway, its HTTPRoutes and "
                                                           "BackendTLSPolicies")
    return out


def secret_manifest(path: Path, key: str) -> RawSecret:
    """The one Secret in a manifest file (a chain-file ``secret:`` entry)."""
    found = read_manifests([(path, key)]).secrets
    if len(found) != 1:
        raise InputError(path, f"({key}) holds {len(found)} Secrets", "point at a file with exactly one Secret, "
                         "or a folder with tls.crt / tls.key / ca.crt")
    return found[0]
