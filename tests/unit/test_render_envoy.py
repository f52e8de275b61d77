"""The rendered Envoy configs: their structure, that real Envoy accepts them (``--mode validate``), the SDS files,
and the errors a bad input gets. Behaviour with traffic is in test_envoy_standins.py."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import HarnessError, UsageError
from harness.model.topology import Topology, default_topology
from harness.pki.certset import CertSet, cert_set_for
from harness.render.envoy import EnvoyConfig, EnvoyHop, render_envoy
from harness.runtime import free_port
from harness.runtime.binaries import find_envoy
from harness.runtime.envoy import envoy_ready, rotate_envoy_secret

LOOPBACK = "127.0.0.1"
TLS_CONTEXT = "envoy.transport_sockets.tls"


@pytest.fixture(scope="module")
def topology() -> Topology:
    return default_topology()


@pytest.fixture(scope="module")
def certs(topology: Topology) -> CertSet:
    return cert_set_for(topology.pki)


def render(topology: Topology, hop: EnvoyHop, certs: CertSet, workdir: Path) -> EnvoyConfig:
    return render_envoy(topology, hop, certs, listen=(LOOPBACK, 18443), upstream=(LOOPBACK, 19443),
                        admin=(LOOPBACK, 19901), workdir=workdir)


def bootstrap(config: EnvoyConfig) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(config.config_path.read_text())
    return data


def listener_of(boot: dict[str, Any]) -> Any:
    (listener,) = boot["static_resources"]["listeners"]
    return listener


def downstream_tls(boot: dict[str, Any]) -> Any:
    (chain,) = listener_of(boot)["filter_chains"]
    assert chain["transport_socket"]["name"] == TLS_CONTEXT
    return chain["transport_socket"]["typed_config"]


def upstream_tls(boot: dict[str, Any]) -> Any:
    (cluster,) = boot["static_resources"]["clusters"]
    assert cluster["transport_socket"]["name"] == TLS_CONTEXT
    return cluster["transport_socket"]["typed_config"]


def connection_manager(boot: dict[str, Any]) -> Any:
    (chain,) = listener_of(boot)["filter_chains"]
    (hcm,) = chain["filters"]
    return hcm["typed_config"]


def sds_names(refs: list[dict[str, Any]] | dict[str, Any]) -> list[str]:
    items = refs if isinstance(refs, list) else [refs]
    return [r["name"] for r in items]


def envoy_validate(config: EnvoyConfig) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(find_envoy()), "--mode", "validate", "-c", str(config.config_path),
                           "--disable-hot-restart", "-l", "error"], capture_output=True, text=True, timeout=120,
                          check=False)


# ---------------------------------------------------------------------------------------------------------------
# every variant is a config real Envoy accepts
# ---------------------------------------------------------------------------------------------------------------
VARIANTS: dict[str, tuple[EnvoyHop, dict[str, Any]]] = {
    "gateway-default": ("gateway", {}),
    "gateway-strict": ("gateway", {"listener__client_auth": "required", "listener__client_ca": "consumer-ca"}),
    "gateway-passthrough": ("gateway", {"listener__client_auth": "optional", "listener__client_ca": "consumer-ca"}),
    "gateway-no-chain-check": ("gateway", {"upstream__verify_chain": False}),
    "gateway-no-name-check": ("gateway", {"upstream__verify_name": False}),
    "gateway-tls13-only": ("gateway", {"listener__min_version": "1.3", "upstream__min_version": "1.3"}),
    "gateway-legacy-tls10": ("gateway", {"listener__min_version": "1.0", "listener__alpn": ()}),
    "gateway-hostile-waf-patterns": ("gateway", {"waf_block": ('"; os.exit(1) --', "]]", "\\", "%s", "\n", "é")}),
    "apim-default": ("apim", {}),
    "apim-validate": ("apim", {"negotiate_client_certificate": True, "validate_client_certificate": True}),
    "apim-policy-without-negotiation": ("apim", {"validate_client_certificate": True}),
    "apim-no-client-cert-upstream": ("apim", {"upstream__client_cert": None}),
    "apim-insecure-upstream": ("apim", {"upstream__verify_chain": False, "upstream__verify_name": False}),
}


# ---------------------------------------------------------------------------------------------------------------
# upstream TLS
# ---------------------------------------------------------------------------------------------------------------
def test_upstream_checks_the_next_hops_name_with_a_san_matcher(topology: Topology, certs: CertSet,
                                                               tmp_path: Path) -> None:
    tls = upstream_tls(bootstrap(render(topology, "gateway", certs, tmp_path)))
    vc = tls["common_tls_context"]["combined_validation_context"]
    assert vc["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": topology.gateway.upstream.hostname}}]
    assert tls["sni"] == topology.gateway.upstream.hostname
    assert sds_names(vc["validation_context_sds_secret_config"]) == ["upstream-ca"]


@pytest.mark.parametrize("hop", ["gateway", "apim"])
def test_upstream_never_resumes_a_tls_session(topology: Topology, certs: CertSet, tmp_path: Path, hop: str) -> None:
    # Envoy's default (max_session_keys 1) resumes: a resumed session skips the next hop's certificate, so a cert
    # changed behind a hot reload would go unverified (tests/integration/test_local_target.py shows it live)
    tls = upstream_tls(bootstrap(render(topology, hop, certs, tmp_path)))
    assert tls["max_session_keys"] == 0


def test_upstream_without_name_check_has_no_san_matcher_but_still_checks_the_chain(
        topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    t = topology.with_hop("gateway", upstream__verify_name=False)
    tls = upstream_tls(bootstrap(render(t, "gateway", certs, tmp_path)))
    vc = tls["common_tls_context"]["combined_validation_context"]
    assert "match_typed_subject_alt_names" not in vc["default_validation_context"]
    assert sds_names(vc["validation_context_sds_secret_config"]) == ["upstream-ca"]
    assert tls["sni"] == topology.gateway.upstream.hostname  # SNI is still sent


def test_upstream_without_chain_check_has_no_validation_context(topology: Topology, certs: CertSet,
                                                                tmp_path: Path) -> None:
    t = topology.with_hop("apim", upstream__verify_chain=False)
    config = render(t, "apim", certs, tmp_path)
    common = upstream_tls(bootstrap(config))["common_tls_context"]
    assert "combined_validation_context" not in common
    assert "validation_context" not in common
    assert "upstream-ca" not in config.secrets
    assert not config.sds_path("upstream-ca").exists()


def test_upstream_presents_the_client_cert_only_when_the_model_names_one(
        topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    with_cert = upstream_tls(bootstrap(render(topology, "apim", certs, tmp_path / "a")))["common_tls_context"]
    assert sds_names(with_cert["tls_certificate_sds_secret_configs"]) == ["upstream-client"]
    t = topology.with_hop("apim", upstream__client_cert=None)
    without = upstream_tls(bootstrap(render(t, "apim", certs, tmp_path / "b")))["common_tls_context"]
    assert "tls_certificate_sds_secret_configs" not in without


def test_upstream_tls_versions_follow_the_model_up_to_tls13(topology: Topology, certs: CertSet,
                                                            tmp_path: Path) -> None:
    params = upstream_tls(bootstrap(render(topology, "apim", certs, tmp_path)))["common_tls_context"]["tls_params"]
    assert params == {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}


# ---------------------------------------------------------------------------------------------------------------
# listener TLS
# ---------------------------------------------------------------------------------------------------------------
def test_listener_versions_alpn_and_server_cert_follow_the_model(topology: Topology, certs: CertSet,
                                                                 tmp_path: Path) -> None:
    t = topology.with_hop("gateway", listener__min_version="1.3", listener__alpn=("h2",))
    boot = bootstrap(render(t, "gateway", certs, tmp_path))
    common = downstream_tls(boot)["common_tls_context"]
    assert common["tls_params"] == {"tls_minimum_protocol_version": "TLSv1_3",
                                    "tls_maximum_protocol_version": "TLSv1_3"}
    assert common["alpn_protocols"] == ["h2"]
    assert sds_names(common["tls_certificate_sds_secret_configs"]) == ["server"]
    inspectors = [f["name"] for f in listener_of(boot)["listener_filters"]]
    assert inspectors == ["envoy.filters.listener.tls_inspector"]


def test_listener_without_client_auth_does_not_ask_for_a_cert(topology: Topology, certs: CertSet,
                                                             tmp_path: Path) -> None:
    config = render(topology, "gateway", certs, tmp_path)
    tls = downstream_tls(bootstrap(config))
    assert "combined_validation_context" not in tls["common_tls_context"]
    assert "client-ca" not in config.secrets


@pytest.mark.parametrize(("hop", "changes"), [
    ("gateway", {"listener__client_auth": "required", "listener__client_ca": "consumer-ca"}),
    ("apim", {"negotiate_client_certificate": True}),
])
def test_listener_asks_for_a_client_cert_without_aborting_the_handshake(
        topology: Topology, certs: CertSet, tmp_path: Path, hop: EnvoyHop, changes: dict[str, Any]) -> None:
    config = render(topology.with_hop(hop, **changes), hop, certs, tmp_path)
    tls = downstream_tls(bootstrap(config))
    vc = tls["common_tls_context"]["combined_validation_context"]
    assert vc["default_validation_context"]["trust_chain_verification"] == "ACCEPT_UNTRUSTED"
    assert sds_names(vc["validation_context_sds_secret_config"]) == ["client-ca"]
    assert tls["require_client_certificate"] is False
    # a resumed session would lose the verify result the stand-in answers from
    assert tls["disable_stateless_session_resumption"] is True
    assert tls["disable_stateful_session_resumption"] is True
    sds = json.loads(config.sds_path("client-ca").read_text())
    trusted = Path(sds["resources"][0]["validation_context"]["trusted_ca"]["filename"])
    assert trusted.read_bytes() == certs.trust_bundle("consumer-ca").read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# the hop trace and the local replies
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("hop", "removed"), [
    ("gateway", ["x-mtls-trace-gateway", "x-mtls-trace-apim", "x-mtls-trace-ingress"]),
    ("apim", ["x-mtls-trace-apim", "x-mtls-trace-ingress"]),
])
def test_hop_strips_inbound_trace_headers_then_adds_its_own(topology: Topology, certs: CertSet, tmp_path: Path,
                                                            hop: EnvoyHop, removed: list[str]) -> None:
    routes = connection_manager(bootstrap(render(topology, hop, certs, tmp_path)))["route_config"]
    assert sorted(routes["request_headers_to_remove"]) == sorted(removed)
    (added,) = routes["request_headers_to_add"]
    assert added["header"]["key"] == f"x-mtls-trace-{hop}"
    value = added["header"]["value"]
    for command in ("%DOWNSTREAM_TLS_VERSION%", "%DOWNSTREAM_TLS_CIPHER%", "%REQUESTED_SERVER_NAME%",
                    "%DOWNSTREAM_PEER_FINGERPRINT_256%", "%DOWNSTREAM_PEER_SUBJECT%", "%DOWNSTREAM_PEER_ISSUER%"):
        assert command in value
    assert added["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"


@pytest.mark.parametrize(("hop", "status"), [("gateway", 502), ("apim", 500)])
def test_upstream_connection_failures_get_the_real_components_status(
        topology: Topology, certs: CertSet, tmp_path: Path, hop: EnvoyHop, status: int) -> None:
    replies = connection_manager(bootstrap(render(topology, hop, certs, tmp_path)))["local_reply_config"]
    (mapper,) = replies["mappers"]
    assert mapper["status_code"] == status
    assert "UF" in mapper["filter"]["response_flag_filter"]["flags"]


def test_route_sends_the_next_hops_name_as_host(topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    routes = connection_manager(bootstrap(render(topology, "apim", certs, tmp_path)))["route_config"]
    (vhost,) = routes["virtual_hosts"]
    (route,) = vhost["routes"]
    assert route["route"]["host_rewrite_literal"] == topology.apim.upstream.hostname


# ---------------------------------------------------------------------------------------------------------------
# files, command line, readiness
# ---------------------------------------------------------------------------------------------------------------
def test_sds_files_name_the_pem_files_and_hold_no_key_material(topology: Topology, certs: CertSet,
                                                               tmp_path: Path) -> None:
    config = render(topology, "apim", certs, tmp_path)
    assert set(config.secrets) == {"server", "upstream-client", "upstream-ca"}
    server = json.loads(config.sds_path("server").read_text())["resources"][0]["tls_certificate"]
    assert Path(server["private_key"]["filename"]) == certs.leaf("apim-server").key.resolve()
    assert Path(server["certificate_chain"]["filename"]) == certs.leaf("apim-server").chain.resolve()
    client = json.loads(config.sds_path("upstream-client").read_text())["resources"][0]["tls_certificate"]
    assert Path(client["private_key"]["filename"]) == certs.leaf("apim-client").key.resolve()
    for path in [config.config_path, *config.sds_dir.iterdir()]:
        assert "PRIVATE KEY" not in path.read_text(), path


def test_bootstrap_has_a_node_identity_and_a_loopback_admin(topology: Topology, certs: CertSet,
                                                           tmp_path: Path) -> None:
    boot = bootstrap(render(topology, "gateway", certs, tmp_path))
    assert boot["node"]["id"]  # SDS from files needs both
    assert boot["node"]["cluster"]
    assert boot["admin"]["address"]["socket_address"] == {"address": LOOPBACK, "port_value": 19901}


def test_argv_runs_without_hot_restart(topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    config = render(topology, "gateway", certs, tmp_path)
    argv = config.argv(Path("/opt/envoy"))
    assert argv[0] == "/opt/envoy"
    assert "--disable-hot-restart" in argv
    assert argv[argv.index("-c") + 1] == str(config.config_path)


def test_envoy_ready_is_false_when_nothing_listens(topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    config = dataclasses.replace(render(topology, "gateway", certs, tmp_path), admin_port=free_port())
    assert envoy_ready(config) is False


# ---------------------------------------------------------------------------------------------------------------
# rotation files
# ---------------------------------------------------------------------------------------------------------------
def test_rotation_renames_a_new_file_into_the_watched_directory(topology: Topology, certs: CertSet,
                                                                tmp_path: Path) -> None:
    config = render(topology, "gateway", certs, tmp_path)
    watched = config.sds_path("server")
    inode = watched.stat().st_ino
    nxt = certs.fault("expired", "gateway-server")
    rotate_envoy_secret(config, "server", nxt, wait=None)
    assert watched.stat().st_ino != inode  # a new file, not an in-place rewrite (Envoy ignores those)
    secret = json.loads(watched.read_text())["resources"][0]
    assert secret["name"] == "server"
    assert Path(secret["tls_certificate"]["certificate_chain"]["filename"]) == nxt.chain.resolve()
    assert sorted(p.name for p in config.sds_dir.iterdir()) == sorted(f"{s}.json" for s in config.secrets)


def test_rotation_of_a_trust_bundle_takes_a_pem_path(topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    config = render(topology, "gateway", certs, tmp_path)
    bundle = certs.trust_bundle("apim-ca", "public-root")
    rotate_envoy_secret(config, "upstream-ca", bundle, wait=None)
    secret = json.loads(config.sds_path("upstream-ca").read_text())["resources"][0]
    assert Path(secret["validation_context"]["trusted_ca"]["filename"]) == bundle.resolve()


# ---------------------------------------------------------------------------------------------------------------
# bad input: one clear error
# ---------------------------------------------------------------------------------------------------------------
def _render_kw(**overrides: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"listen": (LOOPBACK, 18443), "upstream": (LOOPBACK, 19443), "admin": (LOOPBACK, 19901)}
    kw.update(overrides)
    return kw


@pytest.mark.parametrize(("hop", "changes", "kw", "message"), [
    ("ingress", {}, {}, "not an Envoy stand-in"),
    ("gateway", {}, {"listen": ("127.0.0.1", 0)}, "listen="),
    ("gateway", {}, {"admin": "127.0.0.1:9901"}, "admin="),
    ("gateway", {"listener__min_version": "1.3", "listener__max_version": "1.2"}, {}, "min_version 1.3"),
    ("gateway", {"upstream__max_version": "2.0"}, {}, "TLS versions"),
    ("gateway", {"listener__server_cert": "no-such-leaf"}, {}, "no-such-leaf"),
    ("gateway", {"upstream__trusted_ca": "no-such-ca"}, {}, "no-such-ca"),
    ("gateway", {"upstream__trusted_ca": None}, {}, "trusted_ca is not set"),
    ("gateway", {"listener__client_auth": "required", "listener__client_ca": None}, {}, "client_ca is not set"),
    ("apim", {"negotiate_client_certificate": True, "listener__client_ca": None}, {}, "client_ca is not set"),
])
def test_bad_input_raises_one_usage_error(topology: Topology, certs: CertSet, tmp_path: Path, hop: str,
                                          changes: dict[str, Any], kw: dict[str, Any], message: str) -> None:
    t = topology.with_hop(hop, **changes) if changes else topology
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        render_envoy(t, hop, certs, workdir=tmp_path, **_render_kw(**kw))  # type: ignore[arg-type]


def test_rotating_a_secret_the_config_does_not_have_is_a_usage_error(topology: Topology, certs: CertSet,
                                                                     tmp_path: Path) -> None:
    config = render(topology, "gateway", certs, tmp_path)
    with pytest.raises(UsageError, match="without a 'client-ca' secret"):
        rotate_envoy_secret(config, "client-ca", certs.trust_bundle("consumer-ca"), wait=None)


@pytest.mark.parametrize(("which", "source"), [("server", "bundle"), ("upstream-ca", "leaf"), ("nonsense", "leaf")])
def test_rotating_with_the_wrong_kind_of_source_is_a_usage_error(topology: Topology, certs: CertSet, tmp_path: Path,
                                                                 which: str, source: str) -> None:
    config = render(topology, "gateway", certs, tmp_path)
    before = {p.name: p.read_text() for p in config.sds_dir.iterdir()}
    src = certs.trust_bundle("apim-ca") if source == "bundle" else certs.leaf("gateway-server")
    with pytest.raises(UsageError):
        rotate_envoy_secret(config, which, src, wait=None)  # type: ignore[arg-type]
    assert {p.name: p.read_text() for p in config.sds_dir.iterdir()} == before


def test_rotation_that_waits_for_an_envoy_that_is_not_running_fails_before_writing(
        topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    config = dataclasses.replace(render(topology, "gateway", certs, tmp_path), admin_port=free_port())
    before = config.sds_path("server").read_text()
    with pytest.raises(HarnessError, match="wait=None"):
        rotate_envoy_secret(config, "server", certs.fault("expired", "gateway-server"))
    assert config.sds_path("server").read_text() == before
