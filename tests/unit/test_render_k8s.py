"""The Kubernetes rendering of the model (harness.render.k8s), checked offline.

Expectations come from outside the code under test: the Kubernetes OpenAPI schemas (kubernetes-validate, strict),
the cert-set files themselves, and ingress-nginx's documented behaviour (DESIGN.md's annotation table: auth-tls-secret
reads ``ca.crt`` (+ ``ca.crl``); proxy-ssl-secret reads ``tls.crt``, ``tls.key`` and ``ca.crt``; the kind provider's
deploy.yaml creates the IngressClass ``nginx``). Secret data is decoded to compare with files, never printed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from cryptography import x509

from harness.errors import HarnessError, UsageError
from harness.model.topology import ANNOTATION_PREFIX, K8sSecret, Topology, default_topology
from harness.pki.certset import CertSet
from harness.render.k8s import (
    INGRESS_NGINX_SHA256,
    INGRESS_NGINX_SHA256_ENV,
    INGRESS_NGINX_VERSION,
    K8S_VERSION,
    dump_manifests,
    ingress_nginx_manifest_url,
    render_controller_config,
    render_manifests,
    validate_manifests,
    verify_ingress_nginx_manifest,
)

# Kubernetes minors the manifests must be valid for: the pinned node image's, and kind v0.33.0's default (v1.37.0)
VERSIONS = [K8S_VERSION, "1.37"]

# ingress-nginx docs (docs/user-guide/nginx-configuration/annotations.md, client certificate authentication and
# backend certificate authentication): the keys each referenced Secret must carry
AUTH_TLS_SECRET_KEYS = {"ca.crt"}
PROXY_SSL_SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt"}


# ------------------------------------------------------------------------------------------------------------------
# helpers and variants
# ------------------------------------------------------------------------------------------------------------------
def _of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
    found = [d for d in _of(docs, kind) if d["metadata"]["name"] == name
             and d["metadata"].get("namespace", "default") == namespace]
    assert len(found) == 1, f"expected one {kind} {namespace}/{name}, found {len(found)}"
    return found[0]


def _decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v, validate=True) for k, v in secret["data"].items()}


def _fingerprints(data: dict[str, bytes]) -> dict[str, str]:
    """Compare Secret data by sha256 so a failing assertion never prints a private key."""
    return {k: hashlib.sha256(v).hexdigest() for k, v in data.items()}


def _secrets(t: Topology, change: Any) -> Topology:
    return t.replace(ingress=dataclasses.replace(t.ingress, secrets=tuple(change(s) for s in t.ingress.secrets)))


def _with_crl(t: Topology) -> Topology:
    return _secrets(t, lambda s: dataclasses.replace(s, crl="apim-client-ca") if s.name == "apim-client-ca" else s)


def _with_malformed_ca(t: Topology) -> Topology:
    return _secrets(t, lambda s: dataclasses.replace(s, malformed_ca=True) if s.name == "apim-client-ca" else s)


def _in_namespace(t: Topology, ns: str = "mtls") -> Topology:
    """Everything moved to namespace ``ns`` (annotation references follow)."""
    secrets = tuple(dataclasses.replace(s, namespace=ns) for s in t.ingress.secrets)
    ing = t.ingress.primary.with_annotations(auth_tls_secret=f"{ns}/apim-client-ca",
                                             proxy_ssl_secret=f"{ns}/pod-tls-client")
    ing = dataclasses.replace(ing, namespace=ns)
    return t.replace(ingress=dataclasses.replace(t.ingress, ingresses=(ing,), secrets=secrets),
                     pod=dataclasses.replace(t.pod, namespace=ns))


def _pod_requires_client_cert(t: Topology) -> Topology:
    listener = dataclasses.replace(t.pod.listener, client_auth="required")
    return t.replace(pod=dataclasses.replace(t.pod, listener=listener))


def _pod_serves_expired(t: Topology) -> Topology:
    listener = dataclasses.replace(t.pod.listener, server_cert="pod-server~expired")
    return t.replace(pod=dataclasses.replace(t.pod, listener=listener))


def _two_ingresses(t: Topology) -> Topology:
    second = dataclasses.replace(t.ingress.primary, name="echo-admin", path="/admin")
    return t.replace(ingress=dataclasses.replace(t.ingress, ingresses=(t.ingress.primary, second)))


VARIANTS = {
    "default": lambda t: t,
    "crl": _with_crl,
    "malformed-ca": _with_malformed_ca,
    "namespace": _in_namespace,
    "pod-required": _pod_requires_client_cert,
    "pod-expired": _pod_serves_expired,
    "two-ingresses": _two_ingresses,
}


@pytest.fixture(scope="module")
def topology() -> Topology:
    return default_topology()


@pytest.fixture(scope="module")
def cert_set(mtls_cert_set: CertSet) -> CertSet:
    """The plugin's cached cert set (the plugin names its fixtures mtls_*; this module keeps the short name)."""
    return mtls_cert_set


@pytest.fixture(scope="module")
def docs(topology: Topology, cert_set: Any) -> list[dict[str, Any]]:
    return render_manifests(topology, cert_set)


# ------------------------------------------------------------------------------------------------------------------
# schema validation (kubernetes-validate, strict)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_rendered_manifest_passes_the_kubernetes_schemas(
    topology: Topology, cert_set: CertSet, variant: str, version: str
) -> None:
    docs = render_manifests(VARIANTS[variant](topology), cert_set, k8s_version=version)
    assert validate_manifests(docs, version) == []


def test_validator_rejects_a_service_port_given_as_a_string(docs: list[dict[str, Any]]) -> None:
    service = _one(docs, "Service", "echo")
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["ports"][0]["port"] = "8443"
    errors = validate_manifests([broken])
    assert len(errors) == 1
    assert errors[0].startswith("Service/default/echo: spec.ports[0].port")
    assert "integer" in errors[0]


def test_validator_rejects_an_unknown_field(docs: list[dict[str, Any]]) -> None:
    ingress = yaml.safe_load(yaml.safe_dump(_one(docs, "Ingress", "echo")))
    ingress["spec"]["ingressClass"] = "nginx"  # a plausible typo for ingressClassName
    errors = validate_manifests([ingress])
    assert len(errors) == 1
    assert errors[0].startswith("Ingress/default/echo:")
    assert "ingressClass" in errors[0]


def test_validator_reports_one_error_per_invalid_resource_and_names_each(docs: list[dict[str, Any]]) -> None:
    bad_service = yaml.safe_load(yaml.safe_dump(_one(docs, "Service", "echo")))
    bad_service["spec"]["ports"][0]["port"] = "8443"
    bad_deploy = yaml.safe_load(yaml.safe_dump(_one(docs, "Deployment", "echo")))
    bad_deploy["spec"]["replicas"] = "one"
    bad_deploy["spec"]["paused"] = "no"
    unknown = {"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}}
    errors = validate_manifests([bad_service, _one(docs, "Ingress", "echo"), bad_deploy, unknown, ["not", "a", "doc"]])
    assert [e.split(":")[0] for e in errors] == ["Service/default/echo", "Deployment/default/echo", "Gizmo/g",
                                                 "document 4"]


def test_validation_error_about_a_secret_never_quotes_its_data(docs: list[dict[str, Any]]) -> None:
    secret = yaml.safe_load(yaml.safe_dump(_one(docs, "Secret", "pod-tls-client")))
    key_b64 = secret["data"]["tls.key"]
    secret["data"]["tls.key"] = [key_b64]  # wrong type: the schema wants a string
    errors = validate_manifests([secret])
    assert len(errors) == 1
    assert errors[0].startswith("Secret/default/pod-tls-client: data.tls.key")
    assert key_b64[:40] not in errors[0]
    assert "PRIVATE" not in errors[0]


@pytest.mark.parametrize("version", ["v1.35", "1.35.8"])
def test_validation_accepts_a_version_with_a_v_or_a_patch_number(docs: list[dict[str, Any]], version: str) -> None:
    assert validate_manifests(docs, version) == []


@pytest.mark.parametrize("version", ["1.9", "1.24", "2.0", "1.35.x", "latest", ""])
def test_validation_refuses_a_kubernetes_version_without_schemas(docs: list[dict[str, Any]], version: str) -> None:
    with pytest.raises(UsageError, match=r"1\.25 to 1\.37"):
        validate_manifests(docs, version)


# ------------------------------------------------------------------------------------------------------------------
# Secrets: contents equal the cert-set files
# ------------------------------------------------------------------------------------------------------------------
def test_secrets_hold_the_cert_set_files(topology: Topology, cert_set: CertSet, docs: list[dict[str, Any]]) -> None:
    for spec in topology.ingress.secrets:
        if spec.name == "echo-tls":
            continue  # follows the pod's listener: tested below
        secret = _one(docs, "Secret", spec.name, spec.namespace)
        data = _decoded(secret)
        expected: dict[str, bytes] = {}
        if spec.tls:
            leaf = cert_set.leaf(spec.tls)
            expected |= {"tls.crt": leaf.chain.read_bytes(), "tls.key": leaf.key.read_bytes()}
        if spec.ca:
            expected["ca.crt"] = cert_set.trust_bundle(*spec.ca).read_bytes()
        assert _fingerprints(data) == _fingerprints(expected), f"Secret {spec.ref}"
        assert secret["type"] == ("kubernetes.io/tls" if spec.tls else "Opaque")


def test_ca_crt_holds_only_self_signed_roots(docs: list[dict[str, Any]]) -> None:
    for secret in _of(docs, "Secret"):
        data = _decoded(secret)
        if "ca.crt" in data:
            certs = x509.load_pem_x509_certificates(data["ca.crt"])
            assert certs, secret["metadata"]["name"]
            assert all(c.subject == c.issuer for c in certs), secret["metadata"]["name"]


def test_tls_crt_starts_with_the_leaf_and_tls_key_is_its_key(docs: list[dict[str, Any]]) -> None:
    for secret in _of(docs, "Secret"):
        data = _decoded(secret)
        if "tls.crt" in data:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            leaf = x509.load_pem_x509_certificates(data["tls.crt"])[0]
            key = load_pem_private_key(data["tls.key"], password=None)
            assert leaf.public_key() == key.public_key(), secret["metadata"]["name"]


def test_a_secret_with_a_crl_carries_the_cas_crl_as_ca_crl(topology: Topology, cert_set: CertSet) -> None:
    docs = render_manifests(_with_crl(topology), cert_set)
    data = _decoded(_one(docs, "Secret", "apim-client-ca"))
    assert data["ca.crl"] == cert_set.crl("apim-client-ca").read_bytes()
    x509.load_pem_x509_crl(data["ca.crl"])


def test_a_malformed_ca_secret_has_a_ca_crt_that_is_not_a_certificate(topology: Topology, cert_set: CertSet) -> None:
    docs = render_manifests(_with_malformed_ca(topology), cert_set)
    data = _decoded(_one(docs, "Secret", "apim-client-ca"))
    assert data["ca.crt"].startswith(b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError):
        x509.load_pem_x509_certificates(data["ca.crt"])


# ------------------------------------------------------------------------------------------------------------------
# Ingress: ingress-nginx's view
# ------------------------------------------------------------------------------------------------------------------
def test_ingress_annotations_are_the_models_full_annotations(topology: Topology, docs: list[dict[str, Any]]) -> None:
    ingress = _one(docs, "Ingress", "echo")
    annotations = ingress["metadata"]["annotations"]
    assert annotations == topology.ingress.primary.full_annotations()
    for key in ("auth-tls-secret", "auth-tls-verify-client", "auth-tls-verify-depth",
                "auth-tls-pass-certificate-to-upstream", "backend-protocol", "proxy-ssl-secret", "proxy-ssl-verify",
                "proxy-ssl-verify-depth", "proxy-ssl-name", "proxy-ssl-server-name", "proxy-ssl-protocols"):
        assert ANNOTATION_PREFIX + key in annotations, key
    assert annotations[ANNOTATION_PREFIX + "backend-protocol"] == "HTTPS"
    assert all(isinstance(v, str) for v in annotations.values())


@pytest.mark.parametrize("variant", ["default", "namespace"])
def test_secrets_the_annotations_name_exist_with_the_keys_ingress_nginx_reads(
    topology: Topology, cert_set: CertSet, variant: str
) -> None:
    docs = render_manifests(VARIANTS[variant](topology), cert_set)
    annotations = _one(docs, "Ingress", "echo", _one_ns(docs))["metadata"]["annotations"]
    for name, keys in (("auth-tls-secret", AUTH_TLS_SECRET_KEYS), ("proxy-ssl-secret", PROXY_SSL_SECRET_KEYS)):
        ns, _, secret_name = annotations[ANNOTATION_PREFIX + name].partition("/")
        data = _decoded(_one(docs, "Secret", secret_name, ns))
        assert keys <= set(data), f"{name} {ns}/{secret_name} lacks {keys - set(data)}"


def _one_ns(docs: list[dict[str, Any]]) -> str:
    return str(_of(docs, "Ingress")[0]["metadata"]["namespace"])


def test_ingress_uses_class_nginx_the_host_and_its_tls_secret(topology: Topology, docs: list[dict[str, Any]]) -> None:
    ing = topology.ingress.primary
    spec = _one(docs, "Ingress", "echo")["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": [ing.host], "secretName": ing.tls_secret}]
    assert [r["host"] for r in spec["rules"]] == [ing.host]
    tls_secret = _one(docs, "Secret", ing.tls_secret)
    assert tls_secret["type"] == "kubernetes.io/tls"
    served = x509.load_pem_x509_certificates(_decoded(tls_secret)["tls.crt"])[0]
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ing.host in sans.get_values_for_type(x509.DNSName)


def test_ingress_backend_reaches_the_echo_pods_https_port(docs: list[dict[str, Any]]) -> None:
    deployment = _one(docs, "Deployment", "echo")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for path in _one(docs, "Ingress", "echo")["spec"]["rules"][0]["http"]["paths"]:
        backend = path["backend"]["service"]
        service = _one(docs, "Service", backend["name"])
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        port = next(p for p in service["spec"]["ports"] if p["port"] == backend["port"]["number"])
        assert named_ports[port["targetPort"]] == 8443
        listen = container["args"][container["args"].index("--listen") + 1]
        assert listen.endswith(":8443")


def test_two_ingresses_on_one_host_share_one_service(topology: Topology, cert_set: CertSet) -> None:
    docs = render_manifests(_two_ingresses(topology), cert_set)
    assert [d["metadata"]["name"] for d in _of(docs, "Ingress")] == ["echo", "echo-admin"]
    assert len(_of(docs, "Service")) == 1


# ------------------------------------------------------------------------------------------------------------------
# the echo pod
# ------------------------------------------------------------------------------------------------------------------
def _arg(container: dict[str, Any], flag: str) -> str | None:
    args = container["args"]
    return args[args.index(flag) + 1] if flag in args else None


def test_echo_pod_runs_the_harness_echo_server_with_the_listeners_settings(
    topology: Topology, docs: list[dict[str, Any]]
) -> None:
    spec = _one(docs, "Deployment", "echo")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["command"] == ["python", "-m", "harness.pod.echo"]
    assert _arg(container, "--client-auth") == topology.pod.listener.client_auth
    assert _arg(container, "--cert") == "/tls/tls.crt"
    assert _arg(container, "--key") == "/tls/tls.key"
    assert _arg(container, "--client-ca") == "/tls/ca.crt"
    assert spec["volumes"][0]["secret"]["secretName"] == "echo-tls"
    assert container["volumeMounts"][0]["mountPath"] == "/tls"


def test_echo_tls_secret_follows_the_pods_listener(topology: Topology, cert_set: CertSet) -> None:
    for variant in ("default", "pod-expired"):
        t = VARIANTS[variant](topology)
        data = _decoded(_one(render_manifests(t, cert_set), "Secret", "echo-tls"))
        leaf = cert_set.leaf(t.pod.listener.server_cert)
        expected = {"tls.crt": leaf.chain.read_bytes(), "tls.key": leaf.key.read_bytes(),
                    "ca.crt": cert_set.trust_bundle(t.pod.listener.client_ca).read_bytes()}
        assert _fingerprints(data) == _fingerprints(expected), variant


def test_a_pod_without_a_client_ca_gets_no_client_ca_argument(topology: Topology, cert_set: CertSet) -> None:
    listener = dataclasses.replace(topology.pod.listener, client_auth="none", client_ca=None)
    docs = render_manifests(topology.replace(pod=dataclasses.replace(topology.pod, listener=listener)), cert_set)
    container = _one(docs, "Deployment", "echo")["spec"]["template"]["spec"]["containers"][0]
    assert "--client-ca" not in container["args"]
    assert "ca.crt" not in _decoded(_one(docs, "Secret", "echo-tls"))


def test_readiness_probe_is_https_unless_the_pod_requires_a_client_cert(topology: Topology, cert_set: CertSet) -> None:
    def probe(t: Topology) -> dict[str, Any]:
        deployment = _one(render_manifests(t, cert_set), "Deployment", "echo", t.pod.namespace)
        probe: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        return probe

    assert probe(topology)["httpGet"]["scheme"] == "HTTPS"  # default: optional client auth
    assert "tcpSocket" in probe(_pod_requires_client_cert(topology))  # the kubelet has no client cert


def test_echo_pod_runs_as_non_root_without_privilege_escalation(docs: list[dict[str, Any]]) -> None:
    spec = _one(docs, "Deployment", "echo")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


# ------------------------------------------------------------------------------------------------------------------
# order, namespaces, YAML
# ------------------------------------------------------------------------------------------------------------------
def test_objects_come_in_apply_order_with_namespaces_only_for_non_default_ones(
    topology: Topology, cert_set: CertSet, docs: list[dict[str, Any]]
) -> None:
    rank = {"Namespace": 0, "Secret": 1, "Deployment": 2, "Service": 3, "Ingress": 4}
    moved = render_manifests(_in_namespace(topology), cert_set)
    for rendered in (docs, moved):
        kinds = [rank[d["kind"]] for d in rendered]
        assert kinds == sorted(kinds)
    assert _of(docs, "Namespace") == []
    assert [d["metadata"]["name"] for d in _of(moved, "Namespace")] == ["mtls"]
    assert {d["metadata"].get("namespace") for d in moved if d["kind"] != "Namespace"} == {"mtls"}


def test_rendering_is_deterministic(topology: Topology, cert_set: CertSet, docs: list[dict[str, Any]]) -> None:
    again = hashlib.sha256(dump_manifests(render_manifests(topology, cert_set)).encode()).hexdigest()
    assert again == hashlib.sha256(dump_manifests(docs).encode()).hexdigest()  # hashes: the YAML holds keys


def test_yaml_round_trips_and_keeps_on_and_true_as_strings(docs: list[dict[str, Any]]) -> None:
    text = dump_manifests(docs)
    same = list(yaml.safe_load_all(text)) == docs
    assert same, "the YAML does not load back to the rendered documents"  # no diff: it would show key material
    ingress = next(d for d in yaml.safe_load_all(text) if d["kind"] == "Ingress")
    assert ingress["metadata"]["annotations"][ANNOTATION_PREFIX + "auth-tls-verify-client"] == "on"
    assert ingress["metadata"]["annotations"][ANNOTATION_PREFIX + "auth-tls-pass-certificate-to-upstream"] == "true"
    assert text.count("\n---\n") + text.startswith("---\n") == len(docs)


# ------------------------------------------------------------------------------------------------------------------
# bad input: one clear HarnessError
# ------------------------------------------------------------------------------------------------------------------
def _bad_secret_name(t: Topology) -> Topology:
    return _secrets(t, lambda s: dataclasses.replace(s, name="Apim_Client_CA") if s.name == "apim-client-ca" else s)


def _ingress_in_other_namespace(t: Topology) -> Topology:
    ing = dataclasses.replace(t.ingress.primary, namespace="elsewhere")
    return t.replace(ingress=dataclasses.replace(t.ingress, ingresses=(ing,)))


def _unknown_leaf(t: Topology) -> Topology:
    return _secrets(t, lambda s: dataclasses.replace(s, tls="no-such-leaf") if s.name == "ingress-tls" else s)


def _empty_secret(t: Topology) -> Topology:
    return _secrets(t, lambda s: K8sSecret(s.name, s.namespace) if s.name == "apim-client-ca" else s)


def _duplicate_secret(t: Topology) -> Topology:
    return _secrets(t, lambda s: dataclasses.replace(s, name="ingress-tls") if s.name == "apim-client-ca" else s)


def _ip_host(t: Topology) -> Topology:
    ing = dataclasses.replace(t.ingress.primary, host="10.0.0.1")
    return t.replace(ingress=dataclasses.replace(t.ingress, ingresses=(ing,)))


def _port_out_of_range(t: Topology) -> Topology:
    ing = dataclasses.replace(t.ingress.primary, service_port=70000)
    return t.replace(ingress=dataclasses.replace(t.ingress, ingresses=(ing,)))


@pytest.mark.parametrize(
    ("variant", "says"),
    [
        (_bad_secret_name, "'Apim_Client_CA' is not a valid RFC 1123 subdomain"),
        (_ingress_in_other_namespace, "put both in one namespace"),
        (_unknown_leaf, "no leaf 'no-such-leaf'"),
        (_empty_secret, "default/apim-client-ca has no content"),
        (_duplicate_secret, "two Secret objects named default/ingress-tls"),
        (_ip_host, "is not a DNS name"),
        (_port_out_of_range, "outside 1-65535"),
    ],
)
def test_a_model_kubernetes_would_refuse_is_one_usage_error(
    topology: Topology, cert_set: CertSet, variant: Callable[[Topology], Topology], says: str
) -> None:
    with pytest.raises(UsageError) as info:
        render_manifests(variant(topology), cert_set)
    assert says in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("kwargs", "says"), [({"k8s_version": "1.20"}, r"1\.25 to 1\.37"),
                                              ({"echo_image": ""}, "not an image reference")])
def test_bad_render_options_are_a_usage_error(
    topology: Topology, cert_set: CertSet, kwargs: dict[str, str], says: str
) -> None:
    with pytest.raises(UsageError, match=says):
        render_manifests(topology, cert_set, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# the controller's ConfigMap
# ------------------------------------------------------------------------------------------------------------------
# ingress-nginx v1.15.1 kind deploy.yaml: the controller reads --configmap=$(POD_NAMESPACE)/ingress-nginx-controller in
# namespace ingress-nginx; docs/user-guide/nginx-configuration/configmap.md: allow-cross-namespace-resources, bool,
# default "false" (ConfigMap values are strings)
@pytest.mark.parametrize(("allow", "value"), [(False, "false"), (True, "true")])
def test_controller_configmap_carries_allow_cross_namespace_resources(
    topology: Topology, allow: bool, value: str
) -> None:
    t = topology.replace(ingress=dataclasses.replace(topology.ingress, allow_cross_namespace_resources=allow))
    cm = render_controller_config(t)
    assert (cm["kind"], cm["metadata"]["namespace"], cm["metadata"]["name"]) == (
        "ConfigMap", "ingress-nginx", "ingress-nginx-controller")
    assert cm["data"]["allow-cross-namespace-resources"] == value
    assert cm["data"]["annotations-risk-level"] == "High"  # every modelled key is written (config.go 769)
    assert validate_manifests([cm]) == []


# ------------------------------------------------------------------------------------------------------------------
# the pinned ingress-nginx
# ------------------------------------------------------------------------------------------------------------------
# ingress-nginx docs/deploy/index.md installs from
# https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v<version>/deploy/static/provider/<provider>/
# deploy.yaml; the kind provider's file sits at deploy/static/provider/kind/deploy.yaml in the release tag
@pytest.mark.parametrize("spelling", ["1.15.1", "v1.15.1", "controller-v1.15.1"])
def test_manifest_url_is_the_kind_provider_file_of_the_release_tag(spelling: str) -> None:
    assert ingress_nginx_manifest_url(spelling) == (
        "https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.15.1/"
        "deploy/static/provider/kind/deploy.yaml"
    )


@pytest.mark.parametrize("version", ["latest", "1.15", "main", ""])
def test_manifest_url_refuses_what_is_not_a_release(version: str) -> None:
    with pytest.raises(UsageError, match="not a release number"):
        ingress_nginx_manifest_url(version)


def test_the_pin_is_a_sha256_for_the_last_release() -> None:
    assert INGRESS_NGINX_VERSION == "1.15.1"  # ingress-nginx's final release (2026-03-19), README supported table
    assert len(INGRESS_NGINX_SHA256) == 64
    assert int(INGRESS_NGINX_SHA256, 16) >= 0


def test_a_manifest_matching_the_pin_is_accepted_and_any_change_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INGRESS_NGINX_SHA256_ENV, raising=False)
    manifest = b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ingress-nginx\n"
    pin = hashlib.sha256(manifest).hexdigest()
    verify_ingress_nginx_manifest(manifest, pin)
    verify_ingress_nginx_manifest(manifest, pin.upper())
    with pytest.raises(UsageError) as info:
        verify_ingress_nginx_manifest(manifest + b"# tampered\n", pin)
    assert pin in str(info.value)
    assert "controller-v1.15.1" in str(info.value)


def test_the_built_in_pin_refuses_other_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INGRESS_NGINX_SHA256_ENV, raising=False)
    with pytest.raises(UsageError, match=f"the pin is {INGRESS_NGINX_SHA256}"):
        verify_ingress_nginx_manifest(b"not the ingress-nginx manifest")


def test_the_environment_variable_overrides_the_built_in_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = b"kind: Namespace\n"
    monkeypatch.setenv(INGRESS_NGINX_SHA256_ENV, hashlib.sha256(manifest).hexdigest())
    verify_ingress_nginx_manifest(manifest)


@pytest.mark.parametrize(
    ("pin", "env", "version"), [("abc123", None, ""), (None, "not-hex", ""), (None, None, "1.14.5")]
)
def test_a_missing_or_malformed_pin_is_an_error_not_a_skip(
    monkeypatch: pytest.MonkeyPatch, pin: str | None, env: str | None, version: str
) -> None:
    monkeypatch.delenv(INGRESS_NGINX_SHA256_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(INGRESS_NGINX_SHA256_ENV, env)
    with pytest.raises(HarnessError, match="pin"):
        verify_ingress_nginx_manifest(b"anything", pin, version=version)
    assert os.environ.get(INGRESS_NGINX_SHA256_ENV) == env
