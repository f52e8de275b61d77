"""kind-config/*.yaml: documented kind v1alpha4 fields only, loopback-only exposure, a node image that matches the
pinned ingress-nginx.

No kind binary runs here, so the configs are checked against a JSON schema of kind's v1alpha4 Cluster type written
from its source, kubernetes-sigs/kind pkg/apis/config/v1alpha4/types.go (main at commit fed268827e21, v0.33.0-alpha;
documented at https://kind.sigs.k8s.io/docs/user/configuration/). kind decodes configs strictly (an unknown field is
an error), hence ``additionalProperties: false`` everywhere.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from harness.render.k8s import INGRESS_NGINX_VERSION, K8S_VERSION, KIND_INGRESS_HOST_PORT

CONFIG_DIR = Path(__file__).resolve().parents[2] / "kind-config"
CONFIGS = ["kind-cluster.yaml", "kind-cluster-calico.yaml"]

_STR_LIST = {"type": "array", "items": {"type": "string"}}
_PATCH_JSON6902 = {  # PatchJSON6902: all four fields are required (no omitempty)
    "type": "object",
    "additionalProperties": False,
    "required": ["group", "version", "kind", "patch"],
    "properties": {k: {"type": "string"} for k in ("group", "version", "kind", "patch")},
}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}

KIND_V1ALPHA4_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "apiVersion"],
    "properties": {
        "kind": {"const": "Cluster"},
        "apiVersion": {"const": "kind.x-k8s.io/v1alpha4"},
        "name": {"type": "string"},
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "role": {"enum": ["control-plane", "worker"]},
                    "image": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "extraMounts": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "containerPath": {"type": "string"},
                                "hostPath": {"type": "string"},
                                "readOnly": {"type": "boolean"},
                                "selinuxRelabel": {"type": "boolean"},
                                "propagation": {"enum": ["None", "HostToContainer", "Bidirectional"]},
                            },
                        },
                    },
                    "extraPortMappings": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "containerPort": _INT32,
                                "hostPort": _INT32,
                                "listenAddress": {"type": "string"},
                                "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                            },
                        },
                    },
                    "kubeadmConfigPatches": _STR_LIST,
                    "kubeadmConfigPatchesJSON6902": {"type": "array", "items": _PATCH_JSON6902},
                },
            },
        },
        "networking": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ipFamily": {"enum": ["ipv4", "ipv6", "dual"]},
                "apiServerPort": _INT32,
                "apiServerAddress": {"type": "string"},
                "podSubnet": {"type": "string"},
                "serviceSubnet": {"type": "string"},
                "disableDefaultCNI": {"type": "boolean"},
                # types.go names three modes; pkg/internal/apis/config/validate.go also accepts "none"
                "kubeProxyMode": {"enum": ["iptables", "ipvs", "nftables", "none"]},
                "dnsSearch": _STR_LIST,
            },
        },
        "featureGates": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "runtimeConfig": {"type": "object", "additionalProperties": {"type": "string"}},
        "kubeadmConfigPatches": _STR_LIST,
        "kubeadmConfigPatchesJSON6902": {"type": "array", "items": _PATCH_JSON6902},
        "containerdConfigPatches": _STR_LIST,
        "containerdConfigPatchesJSON6902": _STR_LIST,
    },
}

# ingress-nginx README at tag controller-v1.15.1, "Supported Versions table": v1.15.1 → k8s 1.35, 1.34, 1.33, 1.32,
# 1.31 (the final release; the project was retired in March 2026)
INGRESS_NGINX_K8S_SUPPORT = {"1.15.1": {"1.31", "1.32", "1.33", "1.34", "1.35"}}

# Calico's default IPv4 pool (CALICO_IPV4POOL_CIDR in calico.yaml; the operator's custom-resources.yaml ipPools)
CALICO_DEFAULT_POOL = "192.168.0.0/16"

# kind's configuration docs: node images are tagged kindest/node:v<k8s version> and should be pinned by digest
_NODE_IMAGE = re.compile(r"^kindest/node:v(\d+)\.(\d+)\.(\d+)@sha256:[0-9a-f]{64}$")


def _load(name: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((CONFIG_DIR / name).read_text()))
    assert len(docs) == 1, f"{name}: expected one YAML document, found {len(docs)}"
    config: dict[str, Any] = docs[0]
    return config


@pytest.fixture(params=CONFIGS)
def config(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _load(request.param)


def test_kind_configs_use_only_documented_v1alpha4_fields(config: dict[str, Any]) -> None:
    jsonschema.validate(config, KIND_V1ALPHA4_SCHEMA)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("networking", "apiServerAdress"), "127.0.0.1"),  # typo
        (("nodes", 0, "extraPortMapping"), []),  # typo
        (("nodes", 0, "labels", "ingress-ready"), True),  # a bool where kind wants a string
        (("nodes", 0, "role"), "master"),  # not a kind role
        (("nodes", 0, "extraPortMappings", 0, "hostPort"), "18443"),  # a string where kind wants a number
    ],
)
def test_the_kind_schema_rejects_an_undocumented_or_mistyped_field(path: tuple[str | int, ...], value: object) -> None:
    config = copy.deepcopy(_load("kind-cluster.yaml"))
    target: Any = config
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, KIND_V1ALPHA4_SCHEMA)


def test_the_api_server_listens_on_loopback_only(config: dict[str, Any]) -> None:
    assert config["networking"]["apiServerAddress"] == "127.0.0.1"


def test_one_control_plane_node_labelled_ingress_ready(config: dict[str, Any]) -> None:
    # one node: the controller (hostPort 443) can only land on the node that has the port mapping
    assert [n.get("role", "control-plane") for n in config["nodes"]] == ["control-plane"]
    assert config["nodes"][0]["labels"] == {"ingress-ready": "true"}


def test_only_https_443_is_published_and_only_on_127_0_0_1(config: dict[str, Any]) -> None:
    mappings = [m for n in config["nodes"] for m in n.get("extraPortMappings", [])]
    assert len(mappings) == 1
    (m,) = mappings
    # kind's docker provider (pkg/cluster/internal/providers/docker/provision.go) binds an empty listenAddress on
    # 0.0.0.0 — every address of the laptop — so it must be explicit
    assert m["listenAddress"] == "127.0.0.1"
    assert m["containerPort"] == 443  # ingress-nginx's kind provider: controller hostPort 443
    assert m["hostPort"] == KIND_INGRESS_HOST_PORT
    assert m.get("protocol", "TCP") == "TCP"


def test_node_image_is_pinned_by_digest_to_a_kubernetes_the_pinned_ingress_nginx_supports(
    config: dict[str, Any]
) -> None:
    images = {n.get("image") for n in config["nodes"]}
    assert len(images) == 1
    match = _NODE_IMAGE.match(images.pop() or "")
    assert match, "node image must be kindest/node:v<x.y.z>@sha256:<digest>"
    minor = f"{match.group(1)}.{match.group(2)}"
    assert minor == K8S_VERSION  # the manifests are validated for the version the cluster runs
    assert minor in INGRESS_NGINX_K8S_SUPPORT[INGRESS_NGINX_VERSION]


def test_calico_config_disables_kindnet_and_uses_calicos_pool_and_nothing_else_differs() -> None:
    base, calico = _load("kind-cluster.yaml"), _load("kind-cluster-calico.yaml")
    assert "disableDefaultCNI" not in base["networking"]
    assert "podSubnet" not in base["networking"]
    assert calico["networking"]["disableDefaultCNI"] is True
    assert calico["networking"]["podSubnet"] == CALICO_DEFAULT_POOL
    stripped = copy.deepcopy(calico)
    del stripped["networking"]["disableDefaultCNI"], stripped["networking"]["podSubnet"]
    assert stripped == base


def test_readme_names_both_configs_and_the_pinned_versions() -> None:
    readme = (CONFIG_DIR / "README.md").read_text()
    for needle in (*CONFIGS, f"controller-v{INGRESS_NGINX_VERSION}", "sha256sum", str(KIND_INGRESS_HOST_PORT)):
        assert needle in readme, needle
