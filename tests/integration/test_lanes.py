"""Lanes (issue 21): the variants a session needs, served beside the chain by the chain's own Envoy, nginx and pod
processes — each on its own ports, with its own TLS contexts — so a case on a variant probes its lane and nothing
reloads or restarts. Run for real: one local chain with five lanes."""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import LaneRefused
from harness.model.topology import Topology, default_topology
from harness.pki.certset import CertSet, cert_set_for
from harness.pytest_plugin import VariantChains
from harness.render.envoy import EnvoyLane, render_envoy
from harness.render.nginx import NginxLane, render_nginx
from harness.runtime.binaries import find_envoy, find_nginx
from harness.targets.base import RunningChain, lane_key
from harness.targets.local import LocalTarget

pytestmark = pytest.mark.mtls_needs_chain

HOME = default_topology()
OPTIONAL = HOME.with_ingress_annotations(auth_tls_verify_client="optional")
TLS13_ONLY = HOME.with_controller(ssl_protocols="TLSv1.3")
UNKNOWN_CA_NAME = f"{HOME.ingress.server_cert}~unknown-ca"
BAD_INGRESS_CERT = HOME.replace(ingress=dataclasses.replace(
    HOME.ingress, server_cert=UNKNOWN_CA_NAME,
    secrets=tuple(dataclasses.replace(s, tls=UNKNOWN_CA_NAME) if s.name == HOME.ingress.primary.tls_secret else s
                  for s in HOME.ingress.secrets)))
GATEWAY_TLS13 = HOME.with_hop("gateway", listener__min_version="1.3")
NO_SUCH_POD_CERT = HOME.with_hop("pod", listener__server_cert="no-such-leaf")


@pytest.fixture(scope="module")
def lanes() -> Iterator[tuple[LocalTarget, RunningChain]]:
    target = LocalTarget(HOME, lanes=[OPTIONAL, TLS13_ONLY, BAD_INGRESS_CERT, OPTIONAL, HOME, GATEWAY_TLS13,
                                      NO_SUCH_POD_CERT])
    with target as chain:
        yield target, chain


def _lane(chain: RunningChain, topology: Topology) -> RunningChain:
    return chain.lanes[lane_key(topology)]


def _pids(target: LocalTarget) -> dict[str, int]:
    return {name: p.pid for name, p in target._procs.items()}


def test_every_lane_runs_on_the_chains_own_processes(lanes: tuple[LocalTarget, RunningChain]) -> None:
    target, chain = lanes
    # the duplicate and the home topology itself are no lanes; the broken one is dropped (below)
    assert set(chain.lanes) == {lane_key(t) for t in (OPTIONAL, TLS13_ONLY, BAD_INGRESS_CERT, GATEWAY_TLS13)}
    # one pod, one Envoy per stand-in, one nginx — and one more nginx for the lane whose ConfigMap differs
    assert set(_pids(target)) == {"pod", "ingress", "ingress.g1", "apim", "gateway"}
    assert "ssl-protocols=TLSv1.3" in target.lane_plan.ingress_processes["ingress.g1"]
    # a lane has its own listener where its variant differs and in front of that; behind, the chain's own
    ports = {ep.port for c in (chain, *chain.lanes.values()) for ep in c.endpoints.values()}
    assert len(ports) == 4 + 3 * 3 + 1  # the chain; 3 ingress variants (ingress, apim, gateway); a gateway one
    gateway_lane = _lane(chain, GATEWAY_TLS13)
    assert gateway_lane.endpoint("gateway").port != chain.endpoint("gateway").port
    assert {h: gateway_lane.endpoint(h).port for h in ("apim", "ingress", "pod")} == {
        h: chain.endpoint(h).port for h in ("apim", "ingress", "pod")}
    assert _lane(chain, OPTIONAL).endpoint("pod").port == chain.endpoint("pod").port


def test_an_ingress_lane_is_its_variant_and_the_chain_is_unchanged(lanes: tuple[LocalTarget, RunningChain]) -> None:
    _, chain = lanes
    refused = chain.probe("ingress", client_cert=None, client_key=None)
    assert refused.outcome.kind == "http_reject", refused.describe()
    assert refused.status == 400, refused.describe()
    assert b"No required SSL certificate was sent" in refused.body, refused.describe()
    admitted = _lane(chain, OPTIONAL).probe("ingress", client_cert=None, client_key=None)
    assert admitted.outcome.kind == "ok", admitted.describe()
    assert admitted.json()["headers"].get("ssl-client-verify") == "NONE"


def test_a_lane_goes_through_its_own_path_on_every_hop(lanes: tuple[LocalTarget, RunningChain]) -> None:
    _, chain = lanes
    assert chain.probe("gateway").outcome.kind == "ok"
    # the lane's apim listener sends to the lane's ingress, which serves a cert of an unknown CA: apim refuses it
    seen = _lane(chain, BAD_INGRESS_CERT).probe("gateway")
    assert seen.outcome.kind == "upstream_failure", seen.describe()  # APIM's answer, passed on
    assert seen.status == 500, seen.describe()  # APIM's answer, passed on
    detail = seen.headers.get("x-harness-detail", "")
    assert "hop=apim" in detail, seen.headers
    assert "CERTIFICATE_VERIFY_FAILED" in detail, seen.headers
    direct = _lane(chain, BAD_INGRESS_CERT).probe("apim")
    assert direct.outcome.kind == "upstream_failure", direct.describe()
    assert direct.status == 500, direct.describe()
    assert "hop=apim" in direct.headers.get("x-harness-detail", "")
    assert "TLS_error" in direct.headers.get(
        "x-harness-detail", ""), direct.headers


def test_a_lane_with_other_controller_settings_has_them(lanes: tuple[LocalTarget, RunningChain]) -> None:
    _, chain = lanes
    home = chain.probe("ingress", max_version="1.2")
    assert home.outcome.kind == "ok", home.describe()
    lane = _lane(chain, TLS13_ONLY).probe("ingress", max_version="1.2")
    assert lane.outcome.kind == "tls_alert", lane.describe()
    assert "protocol_version" in (lane.outcome.alert or ""), lane.describe()


def test_an_envoy_lane_has_its_own_listener_settings(lanes: tuple[LocalTarget, RunningChain]) -> None:
    _, chain = lanes
    assert chain.probe("gateway", max_version="1.2").outcome.kind == "ok"
    lane = _lane(chain, GATEWAY_TLS13).probe("gateway", max_version="1.2")
    assert lane.outcome.kind == "tls_alert", lane.describe()
    assert "protocol_version" in (lane.outcome.alert or ""), lane.describe()


def test_a_variant_that_cannot_be_a_lane_is_dropped_with_the_reason(lanes: tuple[LocalTarget, RunningChain]) -> None:
    target, chain = lanes
    assert lane_key(NO_SUCH_POD_CERT) not in chain.lanes
    assert "no-such-leaf" in target.lane_plan.dropped[lane_key(NO_SUCH_POD_CERT)]


def test_asking_for_a_variant_reloads_nothing(lanes: tuple[LocalTarget, RunningChain],
                                              request: pytest.FixtureRequest) -> None:
    target, chain = lanes
    pids = _pids(target)
    error_log = target.nginx_config().error_log
    before = error_log.stat().st_size
    assert target.reconfigure(OPTIONAL) is _lane(chain, OPTIONAL)
    variants = VariantChains(request.config, "local", base=chain)
    try:
        assert variants(TLS13_ONLY) is _lane(chain, TLS13_ONLY)  # what mtls_chain_for hands a case
    finally:
        variants.close()
    assert _lane(chain, OPTIONAL).probe("ingress", client_cert=None, client_key=None).outcome.kind == "ok"
    assert _pids(target) == pids
    with error_log.open() as fh:
        fh.seek(before)
        grown = fh.read()
    assert "signal 1 (SIGHUP)" not in grown, grown
    assert "reconfiguring" not in grown, grown


def _client(ep: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ep.trust))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # a session id the server keeps in its session cache
    ctx.load_cert_chain(str(ep.client_cert), str(ep.client_key))
    return ctx


def _tls12_session(ep: Any, ctx: ssl.SSLContext,
                   session: ssl.SSLSession | None = None) -> tuple[ssl.SSLSession | None, bool]:
    with socket.create_connection((ep.host, ep.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=ep.server_name, session=session) as tls:
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {ep.server_name}\r\nConnection: close\r\n\r\n".encode())
        tls.recv(1024)
        return tls.session, tls.session_reused


def test_tls_sessions_do_not_pass_between_lanes(lanes: tuple[LocalTarget, RunningChain]) -> None:
    _, chain = lanes
    home = chain.endpoint("ingress")
    ctx = _client(home)
    session, _ = _tls12_session(home, ctx)
    assert session is not None
    _, reused = _tls12_session(home, ctx, session)
    assert reused  # the chain's own ingress resumes its session (the controller's ssl-session-cache is on)
    lane = _lane(chain, OPTIONAL).endpoint("ingress")
    assert (lane.trust, lane.server_name) == (home.trust, home.server_name)  # the same cert, the same name
    _, reused = _tls12_session(lane, ctx, session)
    assert not reused  # …yet the lane's TLS context does not take the chain's session


# ---- what the renderers write for a lane, checked by the real nginx (nginx -t) and Envoy (--mode validate) ----
@pytest.fixture(scope="module")
def certs() -> CertSet:
    return cert_set_for(HOME.pki)


def test_an_nginx_lane_has_its_own_balancer_and_session_cache_and_the_controllers_backend_name(
        certs: CertSet, tmp_path: Path) -> None:
    config = render_nginx(HOME, certs, listen=("127.0.0.1", 8443), pod=("127.0.0.1", 9443), workdir=tmp_path,
                          lanes=[NginxLane(OPTIONAL, certs, listen=("127.0.0.1", 8444), pod=("127.0.0.1", 9444))])
    text = config.conf_path.read_text()
    home, lane = text.split("# ---- lane 1 ")
    assert "upstream upstream_balancer {" in home
    assert "server 127.0.0.1:9443 max_fails=0;" in home
    assert "upstream upstream_balancer_l1 {" in lane
    assert "server 127.0.0.1:9444 max_fails=0;" in lane
    assert "listen 127.0.0.1:8444 default_server ssl" in lane
    assert "127.0.0.1:8443" not in lane
    assert "proxy_pass https://upstream_balancer_l1;" in lane
    # the name nginx checks the pod's cert against stays the controller's (ingress-nginx #4928)
    assert "proxy_ssl_name                          upstream_balancer;" not in lane  # its Ingress names one
    unnamed = render_nginx(HOME, certs, listen=("127.0.0.1", 8443), pod=("127.0.0.1", 9443), workdir=tmp_path / "b",
                           lanes=[NginxLane(OPTIONAL.with_ingress_annotations(proxy_ssl_name=None), certs,
                                            listen=("127.0.0.1", 8444), pod=("127.0.0.1", 9444))])
    assert "proxy_ssl_name                          upstream_balancer;" in unnamed.conf_path.read_text()
    assert "ssl_session_cache shared:SSL_l1:" in lane
    assert "SSL_l1" not in home
    assert "ssl_verify_client                       optional;" in lane
    assert "ssl_verify_client                       on;" in home
    check = subprocess.run([str(find_nginx()), *config.test_argv(find_nginx())[1:]], capture_output=True, text=True,
                           timeout=60, check=False)
    assert check.returncode == 0, check.stderr


def test_an_nginx_lane_of_other_settings_is_refused_naming_the_lane(certs: CertSet, tmp_path: Path) -> None:
    with pytest.raises(LaneRefused, match="lane 2 has other controller settings") as info:
        render_nginx(HOME, certs, listen=("127.0.0.1", 8443), pod=("127.0.0.1", 9443), workdir=tmp_path,
                     lanes=[NginxLane(OPTIONAL, certs, listen=("127.0.0.1", 8444), pod=("127.0.0.1", 9444)),
                            NginxLane(TLS13_ONLY, certs, listen=("127.0.0.1", 8445), pod=("127.0.0.1", 9445))])
    assert info.value.lane == 2


def test_an_envoy_lane_has_its_own_listener_and_clusters_with_its_certs_as_files(certs: CertSet,
                                                                                  tmp_path: Path) -> None:
    strict = HOME.with_hop("gateway", listener__client_auth="required", listener__client_ca="consumer-ca")
    config = render_envoy(HOME, "gateway", certs, listen=("127.0.0.1", 8443), upstream=("127.0.0.1", 9443),
                          admin=("127.0.0.1", 9901), workdir=tmp_path,
                          lanes=[EnvoyLane(strict, certs, listen=("127.0.0.1", 8444), upstream=("127.0.0.1", 9444))])
    boot = yaml.safe_load(config.config_path.read_text())
    home, lane = boot["static_resources"]["listeners"]
    assert (home["name"], lane["name"]) == ("gateway-https", "gateway-https-l1")
    assert lane["address"]["socket_address"]["port_value"] == 8444
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    assert set(clusters) == {"upstream", "upstream-l1"}
    endpoint = clusters["upstream-l1"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["port_value"] == 9444
    hcm = lane["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["route_config"]["virtual_hosts"][0]["routes"][-1]["route"]["cluster"] == "upstream-l1"
    home_tls = home["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    lane_tls = lane["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert "tls_certificate_sds_secret_configs" in home_tls  # the chain's own: SDS, so a rotation swaps it
    assert lane_tls["tls_certificates"][0]["certificate_chain"]["filename"].endswith(".pem")  # no file watch
    assert lane_tls["validation_context"]["trusted_ca"]["filename"]  # the strict lane asks for client certs
    assert "combined_validation_context" not in home_tls  # the chain's gateway does not
    check = subprocess.run([str(find_envoy()), "--mode", "validate", "-c", str(config.config_path),
                            "--disable-hot-restart", "-l", "error"], capture_output=True, text=True, timeout=120,
                           check=False)
    assert check.returncode == 0, check.stderr + check.stdout


def test_the_pods_lanes_file_when_unusable_is_one_line_and_exit_2(certs: CertSet, tmp_path: Path) -> None:
    leaf = certs.leaf(HOME.pod.listener.server_cert)
    bad = tmp_path / "lanes.json"
    bad.write_text('{"listen": "127.0.0.1:1"}')
    done = subprocess.run([sys.executable, "-m", "harness.pod.echo", "--listen", "127.0.0.1:0", "--cert",
                           str(leaf.chain), "--key", str(leaf.key), "--lanes", str(bad)], capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    out = (done.stdout + done.stderr).strip()
    assert out.count("\n") == 0, out
    assert "must be a JSON list of objects" in out, out
    assert str(bad) in out, out
    assert "Traceback" not in out


def test_the_full_handshake_case_catches_a_resuming_apim_behind_passthrough_too() -> None:
    # behind ssl-passthrough apim's TLS session ends at the pod: the pod closes each connection and its own entry
    # says whether apim's next one resumed (the selftest's mutant, on a passthrough chain)
    from harness.cases.catalogue import catalogue_for
    from harness.cases.cross_domain import passthrough_to_the_pod
    from harness.cases.model import lanes_for, run_case
    from harness.selftest.mutants import mutant_named
    from harness.selftest.run import _Tamper

    base = passthrough_to_the_pod(HOME)
    (case,) = [c for c in catalogue_for(base) if c.id == "apim-makes-a-full-handshake-on-every-new-connection-to-the-"
               "ingress"]
    verdicts = []
    for tamper in (None, _Tamper(mutant_named("upstream-tls-session-resumption"))):
        variants, hosts = lanes_for([case], base)
        with LocalTarget(base, lanes=variants, lane_hosts=hosts, tamper=tamper) as chain:
            result = run_case(case, chain, lambda t, chain=chain: chain.lanes[lane_key(t)])
            verdicts.append((result.passed, result.message.splitlines()[0]))
    assert verdicts[0][0], verdicts[0][1]
    assert not verdicts[1][0]
    assert "resumed its TLS session to the pod behind ssl-passthrough" in verdicts[1][1]


def test_passthrough_lanes_share_the_nginx_of_their_settings_each_with_its_own_sni_router(certs: CertSet,
                                                                                        tmp_path: Path) -> None:
    from harness.cases.cross_domain import passthrough_to_the_pod
    from harness.runtime.nginx import render_ingress

    first = passthrough_to_the_pod(HOME)
    second = first.with_hop("gateway", listener__min_version="1.3").with_ingress_annotations(
        auth_tls_verify_client="optional")
    config = render_ingress(first, certs, listen=("127.0.0.1", 8443), pod=("127.0.0.1", 9443), workdir=tmp_path,
                            lanes=[NginxLane(second, certs, listen=("127.0.0.1", 8444), pod=("127.0.0.1", 9444),
                                             internal_port=8544)])
    text = config.conf_path.read_text()
    stream = text[text.index("stream {"):]
    assert "map $ssl_preread_server_name $mtls_passthrough_backend {" in stream
    assert "map $ssl_preread_server_name $mtls_passthrough_backend_l1 {" in stream
    assert "listen 127.0.0.1:8444;" in stream  # the lane's router on the lane's port …
    assert "default 127.0.0.1:8544;" in stream  # … and its TLS servers behind it on the lane's internal port
    assert '"~^echo\\.aks\\.contoso\\.example$" 127.0.0.1:9444;' in stream  # its passthrough host to its pod
    check = subprocess.run(config.test_argv(find_nginx()), capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr


def test_a_selected_run_serves_only_its_own_cases_variants(tmp_path: Path) -> None:
    # the lanes come from the cases the session runs after -k, not from everything collected
    report = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--report", str(report), "-k",
                           "ingress_error_page_redirects_missing_client_cert or ingress_accepts_tls1_3"],
                          capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads((report / "results.json").read_text())
    assert doc["summary"]["total"] == 2
    assert doc["layout"]["lanes"] == 1  # one case on a variant, one on the chain itself
