"""The offline check of Gateway API resources against CRD schemas (harness.render.gateway_api_crds, issue 20: kind).

The pinned v1.5.1 CRDs are not in this repository (they are fetched on the user's machine and checked by sha256), so
the converter is tested on a CRD written here in the same wire format (apiextensions.k8s.io/v1, a structural
openAPIV3Schema with the markers the real ones use); the pin's refusal of other bytes is tested with them too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import UsageError
from harness.render import gateway_api_crds as crds

#: a CRD of our own, shaped like gateway.networking.k8s.io_gateways.yaml: a served v1, a v1alpha1 not served, the
#: x-kubernetes markers (int-or-string, nullable, preserve-unknown-fields, a CEL rule)
GATEWAY_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gateways.gateway.networking.k8s.io}
spec:
  group: gateway.networking.k8s.io
  names: {kind: Gateway, plural: gateways}
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: false
    storage: false
    schema: {openAPIV3Schema: {type: object}}
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            required: [gatewayClassName, listeners]
            properties:
              gatewayClassName: {type: string, maxLength: 253, minLength: 1}
              infrastructure:
                type: object
                x-kubernetes-preserve-unknown-fields: true
                properties:
                  labels: {type: object, additionalProperties: {type: string}}
              listeners:
                type: array
                maxItems: 64
                minItems: 1
                x-kubernetes-validations:
                - rule: self.all(l1, self.exists_one(l2, l1.name == l2.name))
                items:
                  type: object
                  required: [name, port, protocol]
                  properties:
                    name: {type: string, pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'}
                    hostname: {type: string, nullable: true}
                    port: {type: integer, maximum: 65535, minimum: 1}
                    protocol: {type: string}
                    targetPort: {x-kubernetes-int-or-string: true}
              tls:
                type: object
                properties:
                  frontend:
                    type: object
                    properties:
                      default:
                        type: object
                        properties:
                          validation:
                            type: object
                            properties:
                              mode: {type: string, enum: [AllowValidOnly, AllowInsecureFallback]}
          status: {type: object}
"""


def _gateway(**spec: Any) -> dict[str, Any]:
    body = {"gatewayClassName": "eg", "listeners": [{"name": "https-1", "port": 443, "protocol": "HTTPS"}], **spec}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "g", "namespace": "default"}, "spec": body}


@pytest.fixture
def crd_dir(tmp_path: Path) -> Path:
    """Every pinned file name: the Gateway CRD above, the others empty."""
    for name in crds.CRD_FILES:
        (tmp_path / name).write_text(GATEWAY_CRD if name.endswith("_gateways.yaml") else "---\n")
    return tmp_path


def test_a_valid_gateway_passes_and_core_kinds_are_left_to_kubernetes_schemas(crd_dir: Path) -> None:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca"}, "data": {"ca.crt": "x"}}
    assert crds.validate_gateway_api([_gateway(), configmap], crd_dir) == []


@pytest.mark.parametrize(("change", "said"), [
    ({"listeners": [{"name": "https-1", "port": 443, "protocl": "HTTPS"}]},
     "spec.listeners.0: 'protocol' is a required property"),
    ({"listeners": [{"name": "https-1", "port": 443, "protocol": "HTTPS", "tlsMode": "x"}]},
     "spec.listeners.0: unknown field(s) — 'tlsMode' was unexpected"),
    ({"listeners": [{"name": "HTTPS_1", "port": 443, "protocol": "HTTPS"}]},
     "spec.listeners.0.name: 'HTTPS_1' does not"),
    ({"listeners": [{"name": "a", "port": 70000, "protocol": "HTTPS"}]}, "spec.listeners.0.port: 70000 is greater"),
    ({"listeners": []}, "spec.listeners: [] should be non-empty"),
    ({"tls": {"frontend": {"default": {"validation": {"mode": "Sometimes"}}}}},
     "spec.tls.frontend.default.validation.mode: 'Sometimes' is not one of"),
    ({"gatewayClass": "eg"}, "spec: unknown field(s) — 'gatewayClass' was unexpected"),
])
def test_what_the_api_server_would_refuse_is_one_line_naming_the_field(crd_dir: Path, change: dict[str, Any],
                                                                        said: str) -> None:
    problems = crds.validate_gateway_api([_gateway(**change)], crd_dir)
    assert any(said in p for p in problems), problems
    assert all(p.startswith("Gateway/default/g: ") for p in problems)


def test_the_markers_of_a_structural_schema_are_honoured(crd_dir: Path) -> None:
    ok = _gateway(listeners=[{"name": "a", "port": 443, "protocol": "HTTPS", "hostname": None, "targetPort": "https"},
                             {"name": "b", "port": 443, "protocol": "HTTPS", "targetPort": 8443}],
                  infrastructure={"labels": {"team": "x"}, "anything": {"kept": True}})
    assert crds.validate_gateway_api([ok], crd_dir) == []
    bad = _gateway(listeners=[{"name": "a", "port": 443, "protocol": "HTTPS", "targetPort": 1.5}])
    assert crds.validate_gateway_api([bad], crd_dir) != []
    bad_label = _gateway(infrastructure={"labels": {"team": 1}})
    assert "spec.infrastructure.labels.team: 1 is not of type 'string'" in crds.validate_gateway_api(
        [bad_label], crd_dir)[0]


def test_an_unserved_version_another_kind_and_a_missing_name_are_said(crd_dir: Path) -> None:
    old = {**_gateway(), "apiVersion": "gateway.networking.k8s.io/v1alpha1"}
    nameless = {**_gateway(), "metadata": {}}
    alb = {"apiVersion": "alb.networking.azure.io/v1", "kind": "FrontendTLSPolicy", "metadata": {"name": "p"}}
    problems = crds.validate_gateway_api([old, nameless, alb], crd_dir)
    assert "no served version gateway.networking.k8s.io/v1alpha1 of kind Gateway" in problems[0]
    assert problems[1] == "Gateway/default/?: metadata.name is missing"
    assert problems[2].startswith("FrontendTLSPolicy/default/p: not checked — Application Gateway for Containers")


def test_a_crd_folder_whose_bytes_are_not_the_pinned_release_is_refused(crd_dir: Path) -> None:
    with pytest.raises(UsageError, match=r"has sha256 .* the pin is"):
        crds.fetch_crds(crd_dir)


def test_the_env_folder_must_hold_every_pinned_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(crds.CRDS_ENV, str(tmp_path))
    with pytest.raises(UsageError, match="does not exist \\(a pinned Gateway API CRD\\)"):
        crds.fetch_crds()


def test_a_download_is_cached_only_when_it_is_the_pinned_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(crds.CRDS_ENV, raising=False)
    monkeypatch.setattr(crds, "_cache_dir", lambda: tmp_path / "cache")
    body = {name: f"# {name}\n".encode() for name in crds.CRD_FILES}
    fetched: list[str] = []

    def opener(url: str) -> bytes:
        fetched.append(url)
        return body[url.rsplit("/", 1)[1]]

    with pytest.raises(UsageError, match="is not the pinned release's"):
        crds.fetch_crds(opener=opener)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    # the same bytes with pins of their own: fetched once, then read from the cache
    pins = {name: (hashlib.sha256(data).hexdigest(), len(data)) for name, data in body.items()}
    monkeypatch.setattr(crds, "CRD_FILES", pins)
    lines: list[str] = []
    assert crds.fetch_crds(opener=opener, progress=lines.append) == tmp_path / "cache"
    assert len(lines) == len(pins)
    assert all(line.startswith("fetching https://raw.githubusercontent.com/kubernetes-sigs/gateway-api/v1.5.1/")
               for line in lines)
    fetched.clear()
    crds.fetch_crds(opener=opener)
    assert fetched == []


def test_migrate_check_schemas_passes_the_migration_and_refuses_a_typo(
        crd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    pins = {name: (hashlib.sha256((crd_dir / name).read_bytes()).hexdigest(), 0) for name in crds.CRD_FILES}
    monkeypatch.setattr(crds, "CRD_FILES", pins)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_gateway()))
    assert main(["migrate", "--to", "gateway-api", "--resources", str(good), "--no-run", "--crds",
                 str(crd_dir)]) in (0, 1)  # 1: the ledger loses properties of the chain; the schemas pass
    assert "1 of 1 resources pass their schemas (Gateway API v1.5.1 CRDs" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(_gateway(listeners=[{"name": "a", "port": 443, "protocl": "HTTPS"}])))
    assert main(["migrate", "--to", "gateway-api", "--resources", str(typo), "--no-run", "--check-schemas",
                 "--crds", str(crd_dir)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s) against the Gateway API v1.5.1 CRD schemas" in err
    assert "unknown field(s) — 'protocl' was unexpected" in err
