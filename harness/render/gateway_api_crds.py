"""The Gateway API CRDs, pinned, and the offline check of Gateway API resources against their schemas (issue 20: the
kind path, where the resources are applied to a real API server).

    directory = fetch_crds()                        # the pinned v1.5.1 standard CRDs: the cache, else downloaded
    problems = validate_gateway_api(documents, directory)   # one line per invalid document; [] when all pass

The pin is the Gateway API **v1.5.1 standard channel** (tag ``v1.5.1``, commit e7677b70ae75): each CRD file of
``config/crd/standard/`` by the bytes raw.githubusercontent.com serves for that tag, checked against its sha256
(:data:`CRD_FILES`, computed from the git blobs at the tag — as the ingress-nginx pin in :mod:`harness.render.k8s`).
A file whose bytes differ is refused; nothing unverified is used. ``$MTLS_HARNESS_GATEWAY_API_CRDS`` names a folder
with those files for a machine without internet access (each file is checked the same way).

The check is what the API server does with a structural schema before anything else: each document's ``apiVersion``
and ``kind`` must be a served version of a pinned CRD, and its ``spec`` must match that version's
``openAPIV3Schema`` — types, required fields, enums, patterns, lengths and item counts — with **unknown fields
refused** (``kubectl apply``'s default ``--validate=strict``). The CEL rules (``x-kubernetes-validations``) are NOT
evaluated here: the API server checks those on apply. ConfigMaps are core objects
(:func:`harness.render.k8s.validate_manifests` checks them); Application Gateway for Containers' and Envoy Gateway's
own kinds have no pinned CRD here and are reported as not checked, never as valid.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from harness.errors import InputError, UsageError, need_extra
from harness.pki.x509 import write_atomic

__all__ = ["CRDS_ENV", "CRD_FILES", "GATEWAY_API_VERSION", "crd_url", "fetch_crds", "load_schemas",
           "validate_gateway_api"]

GATEWAY_API_VERSION: Final = "1.5.1"
#: each standard-channel CRD file of :data:`GATEWAY_API_VERSION` → (sha256, size in bytes), from the git blobs at
#: tag v1.5.1 (commit e7677b70ae75, kubernetes-sigs/gateway-api ``config/crd/standard/``); not yet checked against a
#: live download (kind-config/README.md says how to verify or update the pin)
CRD_FILES: Final[Mapping[str, tuple[str, int]]] = MappingProxyType({
    "gateway.networking.k8s.io_backendtlspolicies.yaml": (
        "9b8818172153d72f9c84032db0be0a4a657277d13f5bbc22226ad9481ff57971", 78639),
    "gateway.networking.k8s.io_gatewayclasses.yaml": (
        "234ad4b2757ee1b3596a4187bb98df071c5bbdd9e1806f692f2dbf8387e6bef4", 23136),
    "gateway.networking.k8s.io_gateways.yaml": (
        "7416e8300eb4d8c0a71a23445609075bbacbe8bc80104584b019cfe1ebe77c31", 187741),
    "gateway.networking.k8s.io_grpcroutes.yaml": (
        "979f4125d44d3df24659ba00d1d04ff8e76c45423193e8aae82dd5810d7827df", 122273),
    "gateway.networking.k8s.io_httproutes.yaml": (
        "682203b109baecb18d38073a578f7bc2c17d22fe9b0c27bf030850abe014c370", 431207),
    "gateway.networking.k8s.io_listenersets.yaml": (
        "9221468d19fdfbb0026113b1ef64abac64f27607975aff2410361b8b38f0e0bb", 42709),
    "gateway.networking.k8s.io_referencegrants.yaml": (
        "a8902c486eed0b7339f5bb8a476ccaba0918eb038048402bdc01cbb69b0fbb51", 14877),
    "gateway.networking.k8s.io_tlsroutes.yaml": (
        "818e4827c469a40e2527a2851591e656782c50fea8dd44812c900d219da09345", 119912),
})
#: a folder holding the pinned CRD files (a machine without internet access)
CRDS_ENV: Final = "MTLS_HARNESS_GATEWAY_API_CRDS"
_DOWNLOAD_TIMEOUT: Final = 60.0
#: groups whose kinds this module has no pinned CRD for: reported as not checked
_UNPINNED: Final = {"alb.networking.azure.io": "Application Gateway for Containers' CRDs (installed by its ALB "
                                              "controller's Helm chart) are not pinned here",
                    "gateway.envoyproxy.io": "Envoy Gateway's own CRDs are not pinned here"}


def crd_url(name: str, version: str = GATEWAY_API_VERSION) -> str:
    """Where the pinned CRD file ``name`` is served for the tag ``v<version>``."""
    return f"https://raw.githubusercontent.com/kubernetes-sigs/gateway-api/v{version}/config/crd/standard/{name}"


def _cache_dir() -> Path:
    import platformdirs

    return (Path(platformdirs.user_cache_dir("mtls-harness", appauthor=False)) / "gateway-api-crds"
            / f"v{GATEWAY_API_VERSION}")


def _check(name: str, data: bytes, where: str) -> None:
    pin, _ = CRD_FILES[name]
    seen = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(seen, pin):
        raise UsageError(f"Gateway API v{GATEWAY_API_VERSION} CRD {name} from {where} has sha256 {seen}, the pin is "
                         f"{pin} — the file is not the pinned release's; fetch it again, or see kind-config/README.md "
                         "('Updating the Gateway API pin')")


def fetch_crds(directory: Path | None = None, *, progress: Callable[[str], None] = lambda line: None,
               opener: Callable[[str], bytes] | None = None) -> Path:
    """The folder with every pinned CRD file, each checked against its sha256: ``directory``, else
    ``$MTLS_HARNESS_GATEWAY_API_CRDS``, else the user's cache — where a missing file is downloaded first (``opener``:
    the download, for tests). A missing or changed file is one :class:`UsageError`."""
    given = directory or (Path(os.environ[CRDS_ENV]) if os.environ.get(CRDS_ENV) else None)
    if given is not None:
        for name in CRD_FILES:
            path = given / name
            if not path.is_file():
                raise InputError(path, "does not exist (a pinned Gateway API CRD)",
                                 f"put the v{GATEWAY_API_VERSION} standard CRD files in {given} ({crd_url(name)})")
            _check(name, path.read_bytes(), str(path))
        return given
    cache = _cache_dir()
    fetch = opener or _download
    for name in CRD_FILES:
        path = cache / name
        if path.is_file():
            try:
                _check(name, path.read_bytes(), str(path))
                continue
            except UsageError:
                path.unlink()  # a damaged cache entry: fetch it again
        url = crd_url(name)
        progress(f"fetching {url}")
        data = fetch(url)
        _check(name, data, url)
        write_atomic(path, data)
    return cache


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as resp:  # noqa: S310 - a fixed https URL
            return bytes(resp.read())
    except OSError as exc:
        raise UsageError(f"could not download {url}: {exc} — on a machine without internet access, put the "
                         f"pinned files in a folder and set ${CRDS_ENV}") from None


# ------------------------------------------------------------------------------------------------------------------
# the schemas
# ------------------------------------------------------------------------------------------------------------------
def _json_schema(node: Any) -> Any:
    """An OpenAPI v3 structural schema as JSON Schema, unknown fields refused where the CRD does not keep them."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: _json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_json_schema(v) for v in value]
        elif key in ("type", "enum", "required", "pattern", "maxLength", "minLength", "maxItems", "minItems",
                     "maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum", "maxProperties", "minProperties",
                     "uniqueItems", "multipleOf"):
            out[key] = value
        # description, default, format and the x-kubernetes-* markers are not constraints of the document's shape
        # (x-kubernetes-validations: CEL, evaluated by the API server, not here)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def load_schemas(directory: Path) -> dict[tuple[str, str], Any]:
    """``(apiVersion, kind)`` → the JSON Schema of that served version's ``spec`` (and the other top-level fields),
    from every pinned CRD file in ``directory``."""
    import yaml

    out: dict[tuple[str, str], Any] = {}
    for name in CRD_FILES:
        for crd in yaml.safe_load_all((directory / name).read_text(encoding="utf-8")):
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd.get("spec") or {}
            kind = (spec.get("names") or {}).get("kind")
            for version in spec.get("versions") or []:
                if not version.get("served"):
                    continue
                schema = ((version.get("schema") or {}).get("openAPIV3Schema")) or {}
                converted = _json_schema(schema)
                # apiVersion, kind and metadata are the API server's own (ObjectMeta), status is not applied
                props = converted.setdefault("properties", {})
                for own in ("apiVersion", "kind", "metadata", "status"):
                    props[own] = {}
                out[(f"{spec.get('group')}/{version.get('name')}", str(kind))] = converted
    return out


def _where(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "(the document)"


def validate_gateway_api(documents: Iterable[Mapping[str, Any]], directory: Path) -> list[str]:
    """Check each Gateway API document against the pinned CRDs in ``directory`` (module doc): one line per problem
    (``Kind/namespace/name: field: problem``), one per document of a kind no pinned CRD covers (not checked). Core
    kinds (ConfigMap, Secret) are left to :func:`harness.render.k8s.validate_manifests`. ``[]``: every Gateway API
    document passes."""
    need_extra("kind", "checking Gateway API resources against their CRD schemas")
    import jsonschema

    schemas = load_schemas(directory)
    problems: list[str] = []
    for doc in documents:
        api, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
        meta = doc.get("metadata") or {}
        what = f"{kind}/{meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        group = api.partition("/")[0] if "/" in api else ""
        if group == "":
            continue  # core: validate_manifests
        schema = schemas.get((api, kind))
        if schema is None:
            why = _UNPINNED.get(group) or (f"no served version {api} of kind {kind} among the pinned Gateway API "
                                           f"v{GATEWAY_API_VERSION} CRDs")
            problems.append(f"{what}: not checked — {why}")
            continue
        if not meta.get("name"):
            problems.append(f"{what}: metadata.name is missing")
        validator = jsonschema.Draft7Validator(schema)
        for err in sorted(validator.iter_errors(dict(doc)), key=lambda e: list(e.absolute_path)):
            problems.append(f"{what}: {_where(err.absolute_path)}: {_message(err)}")
    return problems


def _message(err: Any) -> str:
    if err.validator == "additionalProperties":
        return f"unknown field(s) — {err.message.partition('(')[2].rstrip(')') or err.message}"
    return str(err.message)
