"""Network namespaces for --isolate: real `ip netns`, veth links, processes inside them — and nothing left behind

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in tests/unit/test_netns.py."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import textwrap

import pytest

from harness.errors import StartError
from harness.isolation.netns import (
    ROLES,
    ChainNetwork,
    namespace_inode,
    own_namespaces,
    processes_in,
    sweep,
)
from harness.runtime import wait_until
from tests.unit.test_netns import PLAN, REPO, _alive, _connect_from, _ip, _listener, _nothing_left, needs_root, network


# ------------------------------------------------------------------------------------------------------------------
# the namespaces and links
# ------------------------------------------------------------------------------------------------------------------
@needs_root
def test_every_namespace_has_loopback_up_and_no_default_route(network):
    for role in ROLES:
        assert network.default_routes(role) == [], f"{role} has a default route"
        lo = _ip("-n", network.namespaces[role], "-o", "-4", "addr", "show", "dev", "lo")
        assert "127.0.0.1/8" in lo, f"{role}: loopback not up: {lo!r}"


@needs_root
def test_forwarding_is_off_in_every_namespace(network):
    for role in ROLES:
        assert network.run(role, ["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == "0", role


@needs_root
def test_each_namespace_holds_only_its_links_addresses_from_a_documentation_range(network):
    doc = ipaddress.ip_network("192.0.2.0/24")
    for role in ROLES:
        out = _ip("-n", network.namespaces[role], "-o", "-4", "addr", "show")
        addrs = {line.split()[3] for line in out.splitlines() if " lo " not in line}
        assert addrs == PLAN[role], f"{role}: {addrs}"
        assert all(ipaddress.ip_interface(a).ip in doc for a in addrs)


@needs_root
def test_no_veth_of_the_chain_appears_in_the_host_namespace(network):
    host_links = _ip("-o", "link", "show")
    for link in network.links:
        assert link.client_if not in host_links
        assert link.server_if not in host_links


@needs_root
def test_a_process_started_with_exec_argv_runs_inside_its_namespace(network):
    out = network.run("apim", ["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).strip()
    assert int(out) == network.inodes["apim"] == namespace_inode(network.namespaces["apim"])
    assert int(out) != os.stat("/proc/self/ns/net").st_ino


@needs_root
def test_the_internet_reaches_the_gateway_and_nothing_behind_it(network):
    procs = []
    try:
        ports = {}
        for role in ("gateway", "apim", "ingress", "pod"):
            proc, ports[role] = _listener(network, role, network.address(role))
            procs.append(proc)
        assert _connect_from(network, "internet", network.address("gateway"), ports["gateway"]) == "connected"
        for role in ("apim", "ingress", "pod"):
            assert _connect_from(network, "internet", network.address(role), ports[role]) == "ENETUNREACH", role
        # each hop reaches the next one: the chain's own path
        assert _connect_from(network, "gateway", network.address("apim"), ports["apim"]) == "connected"
        assert _connect_from(network, "apim", network.address("ingress"), ports["ingress"]) == "connected"
        assert _connect_from(network, "ingress", network.address("pod"), ports["pod"]) == "connected"
        # never two links at once: even with routes both ways through the gateway (so that forwarding would
        # complete the connection), the gateway does not forward — the SYN is dropped there (no ICMP either)
        inet, apim = network.namespaces["internet"], network.namespaces["apim"]
        _ip("-n", inet, "route", "add", "192.0.2.4/30", "via", network.address("gateway"))
        _ip("-n", apim, "route", "add", "192.0.2.0/30", "via", network.link("gateway", "apim").client_addr)
        try:
            seen = _connect_from(network, "internet", network.address("apim"), ports["apim"])
        finally:
            _ip("-n", inet, "route", "del", "192.0.2.4/30")
            _ip("-n", apim, "route", "del", "192.0.2.0/30")
        assert seen == "timeout", seen
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------------------------
# teardown, failed setup, safety net
# ------------------------------------------------------------------------------------------------------------------
@needs_root
def test_destroy_removes_the_namespaces_and_with_them_the_veths():
    net = ChainNetwork.create()
    names, inodes = list(net.namespaces.values()), set(net.inodes.values())
    try:
        sleeper = subprocess.Popen(net.exec_argv("pod", ["sleep", "30"]))
        try:  # `ip netns exec` enters the namespace just after the fork: wait (bounded) until it has
            wait_until(lambda: sleeper.pid in processes_in(inodes), "sleep inside the pod namespace", timeout=10)
        finally:
            sleeper.kill()
            sleeper.wait(timeout=10)
    finally:
        net.destroy()
    listed = _ip("netns", "list")
    assert not [n for n in names if n in listed]
    assert processes_in(inodes) == {}  # nothing holds them: the namespaces (and their veths) are gone
    assert net.destroy() == []  # idempotent


@needs_root
def test_a_failed_setup_removes_every_namespace_it_made(monkeypatch):
    import harness.isolation.netns as netns

    real = netns._run

    def failing(argv, what, **kw):
        if what == "creating the veth links":
            raise StartError("injected: the veth step failed")
        return real(argv, what, **kw)

    monkeypatch.setattr(netns, "_run", failing)
    prefix = f"mtlsh-t{secrets.token_hex(3)}"
    net = ChainNetwork(prefix=prefix)
    with pytest.raises(StartError, match="injected"):
        net.setup()
    monkeypatch.setattr(netns, "_run", real)
    assert own_namespaces(prefix) == []


@needs_root
def test_sweep_removes_only_namespaces_with_the_given_prefix():
    mine, other = f"mtlsh-t{secrets.token_hex(3)}", f"zz-not-ours-{secrets.token_hex(3)}"
    _ip("netns", "add", f"{mine}-1-x")
    _ip("netns", "add", other)
    try:
        assert sweep(mine) == [f"{mine}-1-x"]
        assert other in _ip("netns", "list")
    finally:
        _ip("netns", "delete", other)


@needs_root
def test_runner_refuses_to_run_from_the_host_namespace(network):
    done = subprocess.run([sys.executable, "-m", "harness.isolation.runner", "--require-isolated", "--netns",
                           network.namespaces["internet"]], input="{}", capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 3
    assert "is not in namespace" in done.stderr
    assert done.stdout == ""


@needs_root
def test_runner_inside_a_namespace_probes_the_echo_pod_there(network, mtls_cert_set, mtls_topology):
    """One JSON request in, one ProbeResult out: the probe ran inside the internet namespace."""
    from harness.isolation.runner import result_from_wire

    listener = mtls_topology.pod.listener
    leaf = mtls_cert_set.leaf(listener.server_cert)
    pod = subprocess.Popen(network.exec_argv("gateway", [
        sys.executable, "-m", "harness.pod.echo", "--listen", f"{network.address('gateway')}:8443",
        "--cert", str(leaf.chain), "--key", str(leaf.key)]), stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([pod.stderr], [], [], 30)
        assert ready
        assert "listening on" in pod.stderr.readline()
        request = {"op": "probe", "host": network.address("gateway"), "port": 8443, "kwargs": {
            "server_name": listener.hostname,
            "trust": str(mtls_cert_set.trust_bundle(mtls_topology.server_ca_of("pod")))}}
        done = subprocess.run(network.exec_argv("internet", [
            sys.executable, "-m", "harness.isolation.runner", "--require-isolated", "--netns",
            network.namespaces["internet"]]), input=json.dumps(request), capture_output=True, text=True,
            timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        result = result_from_wire(json.loads(done.stdout)["result"])
        assert result.outcome.kind == "ok", result.describe()
        assert result.status == 200
        assert result.json()["tls"]["version"].startswith("TLSv1."), result.body
    finally:
        pod.terminate()
        _, log = pod.communicate(timeout=10)
    # the pod logs each request with the client's address: the internet namespace's, 192.0.2.1
    assert "192.0.2.1:" in log, log
    assert '"GET / HTTP/1.1" 200' in log, log


@needs_root
def test_a_failed_start_leaves_no_namespace_veth_or_process(monkeypatch):
    from harness.targets.isolated import IsolatedTarget

    seen: dict[str, object] = {}

    class ApimWillNotStart(IsolatedTarget):
        def _argv(self, hop, argv):
            return super()._argv(hop, ["false"] if hop == "apim" else argv)

        def stop(self):
            if self.network is not None:
                seen.update(names=list(self.network.namespaces.values()), inodes=set(self.network.inodes.values()),
                            pids=list(self.pids.values()))
            super().stop()

    target = ApimWillNotStart(capture=True)
    with pytest.raises(StartError, match="apim"), target:
        pass
    assert len(seen["pids"]) >= 8  # hops, four runners, four captures were up when it failed
    _nothing_left(seen["names"], seen["inodes"], seen["pids"])


@needs_root
def test_sigint_to_up_isolate_leaves_no_namespace_veth_or_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "harness", "up", "--isolate", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "up --isolate printed nothing"
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        doc = json.loads(line)["isolated"]
        names = list(doc["namespaces"].values())
        inodes = {namespace_inode(n) for n in names} - {None}
        pids = list(doc["pids"].values())
        assert len(inodes) == 5
        assert all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) in (0, 130)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _nothing_left(names, inodes, pids)


@needs_root
def test_a_pytest_session_with_isolate_leaves_no_namespace_or_process(tmp_path):
    run_id = f"t{secrets.token_hex(4)}"
    out = tmp_path / "chain.json"
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(f"""
        import json, pathlib
        from harness.isolation.netns import namespace_inode

        def test_chain_is_up(mtls_chain):
            chain = mtls_chain
            doc = chain.as_dict()["isolated"]
            doc["inodes"] = [namespace_inode(n) for n in doc["namespaces"].values()]
            pathlib.Path({str(out)!r}).write_text(json.dumps(doc))
            assert chain.probe().outcome.kind == "ok"
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    env.update(MTLS_HARNESS_RUN_ID=run_id)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--mtls-isolate",
                           "test_inner.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert all(n.startswith(f"mtlsh-{run_id}-") for n in doc["namespaces"].values())
    assert own_namespaces(f"mtlsh-{run_id}") == []
    _nothing_left(list(doc["namespaces"].values()), set(doc["inodes"]), list(doc["pids"].values()))


@needs_root
def test_reconfigure_hot_reloads_the_isolated_ingress_inside_its_namespace():
    """An ingress-only variant is an nginx hot reload; its `nginx -t` must run where the ingress's addresses exist."""
    from harness.model.topology import default_topology
    from harness.targets.isolated import IsolatedTarget

    topology = default_topology()
    target = IsolatedTarget(topology)
    with target as chain:
        master = target.pid("ingress")
        refused = chain.probe("ingress", client_cert=None, client_key=None)
        assert refused.status == 400, refused.describe()
        assert b"No required SSL certificate was sent" in refused.body, refused.describe()
        changed = target.reconfigure(topology.with_ingress_annotations(auth_tls_verify_client="optional"))
        assert target.pid("ingress") == master  # reloaded, not restarted
        let_in = changed.probe("ingress", client_cert=None, client_key=None)
        assert let_in.status == 200, let_in.describe()
