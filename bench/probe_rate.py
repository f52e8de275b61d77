"""Probe rate against one listener vs ``openssl s_time``, and keep-alive requests through four hops vs one.

One chain (the local target with the gateway in App Gateway "Strict" mode, so the gateway listener demands a client
cert, as in the suite's gateway_strict cases) serves every measurement, each a bounded loop of ``seconds``:

per listener — gateway (Envoy, mTLS), apim (Envoy, TLS), ingress (nginx, mTLS):

- ``openssl s_time -connect 127.0.0.1:PORT -new -time N`` (with ``-cert/-key/-CAfile``): full handshakes in C,
  no request — the floor;
- a stdlib ``ssl`` handshake-only loop with the probe's trust, identity and SNI: the same work from Python;
- :func:`harness.probe.handshake.probe`: a full handshake, then one HTTP/1.1 request through the rest of the chain,
classified.
  Its gap to the handshake-only loop is the request and the classification.

s_time in OpenSSL 3.0 sends no SNI, so against the ingress nginx answers from its default server (the controller's
fake certificate, no client-cert check): a different handshake. That floor is reported as not comparable.

keep-alive — ``httpx.Client`` (HTTP/1.1, one connection, the chain's trust and the caller's client cert) GET / through
the gateway (four TLS hops, three proxies re-using pooled upstream connections) vs the same loop against the pod alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import Bench, Loop, Row, bounded_loop, rate_row, silent
from harness.model.topology import Topology, default_topology
from harness.targets.base import HopEndpoint, RunningChain

NAME = "probe_rate"
TITLE = "probe rate: full handshakes/s and keep-alive requests/s"
#: hard cap on iterations per loop, whatever the time bound
MAX_COUNT = 20_000
LISTENERS: tuple[tuple[str, str], ...] = (
    ("gateway", "Envoy, mTLS (Strict)"),
    ("apim", "Envoy, TLS"),
    ("ingress", "nginx, mTLS"),
)


def strict_gateway(t: Topology) -> Topology:
    """The gateway in App Gateway mTLS "Strict" mode: its listener demands a consumer client cert."""
    listener = dataclasses.replace(t.gateway.listener, client_auth="required", client_ca="consumer-ca")
    return t.replace(gateway=dataclasses.replace(t.gateway, listener=listener),
                     client=dataclasses.replace(t.client, client_cert="consumer-client"))


def _identity(chain: RunningChain, hop: str) -> tuple[Path | None, Path | None]:
    ep = chain.endpoints[hop]  # type: ignore[index]
    if hop == "gateway" and ep.client_cert is None:
        leaf = chain.certs.leaf(chain.topology.client.client_cert or "consumer-client")
        return leaf.chain, leaf.key
    return ep.client_cert, ep.client_key


def s_time(ep: HopEndpoint, cert: Path | None, key: Path | None, seconds: int) -> tuple[float | None, str]:
    """Handshakes per second from ``openssl s_time -new``; (None, reason) when it cannot run or failed."""
    exe = shutil.which("openssl")
    if exe is None:
        return None, "openssl not installed"
    argv = [exe, "s_time", "-connect", f"{ep.host}:{ep.port}", "-new", "-time", str(seconds)]
    if ep.trust is not None:
        argv += ["-CAfile", str(ep.trust)]
    if cert is not None and key is not None:
        argv += ["-cert", str(cert), "-key", str(key)]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    wall = time.perf_counter() - t0
    m = re.search(r"^(\d+) connections in [\d.]+s", done.stdout, re.MULTILINE)
    if done.returncode != 0 or m is None or int(m.group(1)) == 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"s_time failed (exit {done.returncode}): {tail[0][:120]}"
    # s_time reports real time in whole seconds; the wall clock around it is finer (its start-up is ~10 ms)
    return int(m.group(1)) / wall, f"{m.group(1)} handshakes in {wall:.2f} s"


def _client_context(trust: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if trust is not None:
        ctx.load_verify_locations(cafile=str(trust))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def handshake_step(ep: HopEndpoint, cert: Path | None, key: Path | None) -> Callable[[], bool | str]:
    """One stdlib TLS handshake (connect, handshake, close) with the probe's trust, identity and SNI."""
    ctx = _client_context(ep.trust, cert, key)

    def step() -> bool | str:
        try:
            with socket.create_connection((ep.host, ep.port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname=ep.server_name):
                return True
        except (OSError, ssl.SSLError) as exc:
            return f"{type(exc).__name__}: {exc}"

    return step


def probe_step(ep: HopEndpoint, cert: Path | None, key: Path | None) -> Callable[[], bool | str]:
    from harness.probe.handshake import probe

    def step() -> bool | str:
        res = probe(ep.host, ep.port, server_name=ep.server_name, trust=ep.trust, client_cert=cert, client_key=key)
        return True if res.outcome.kind == "ok" else str(res.outcome)

    return step


def keepalive_step(ep: HopEndpoint, cert: Path | None, key: Path | None) -> tuple[Any, Callable[[], bool | str]]:
    """An httpx.Client (HTTP/1.1, one kept-alive connection) and one GET / on it."""
    import httpx

    ctx = _client_context(ep.trust, cert, key)
    client = httpx.Client(verify=ctx, http1=True, http2=False, trust_env=False, timeout=5.0,
                          limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
    url = f"https://{ep.host}:{ep.port}/"
    headers = {"host": f"{ep.server_name}:{ep.port}"}

    def step() -> bool | str:
        try:
            resp = client.get(url, headers=headers, extensions={"sni_hostname": ep.server_name})
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return True if resp.status_code == 200 else f"HTTP {resp.status_code}"

    return client, step


#: the echo pod with Nagle's algorithm off on its connections (bench-only experiment; the pod writes the headers and
#: the body in two sends, so with Nagle on the body waits for the client's delayed ACK)
_POD_NODELAY = """
import sys
import harness.pod.echo as echo
echo._Handler.disable_nagle_algorithm = True
sys.exit(echo.main(sys.argv[1:]))
"""


def _pod_nodelay_rate(chain: RunningChain, seconds: float) -> Loop:
    """Keep-alive GETs against a second echo pod, started like the chain's but with TCP_NODELAY."""
    import sys
    import tempfile

    from bench.common import poll_ready, tcp_open
    from harness.runtime import ManagedProcess, free_ports

    listener = chain.topology.pod.listener
    leaf = chain.certs.leaf(listener.server_cert)
    (port,) = free_ports(1)
    argv = [sys.executable, "-c", _POD_NODELAY, "--listen", f"127.0.0.1:{port}", "--cert", str(leaf.chain),
            "--key", str(leaf.key), "--client-auth", listener.client_auth]
    if listener.client_ca:
        argv += ["--client-ca", str(chain.certs.trust_bundle(listener.client_ca))]
    ep = dataclasses.replace(chain.endpoints["pod"], port=port)
    cert, key = _identity(chain, "pod")
    with tempfile.TemporaryDirectory(prefix="mtls-bench-pod-") as tmp, \
            ManagedProcess("pod-nodelay", argv, log_path=Path(tmp) / "pod.log") as proc:
        poll_ready(lambda: tcp_open(port), timeout=20, alive=proc.exit_reason)
        client, step = keepalive_step(ep, cert, key)
        with client:
            step()
            return bounded_loop(step, seconds=seconds, max_count=MAX_COUNT)


def _loop_note(loop: Loop) -> str:
    note = (f"{loop.ok}/{loop.count} ok; {loop.wall_ms_each:.1f} ms each, of which {loop.cpu_ms_each:.1f} ms "
            "client CPU")
    return note + (f"; first failure: {loop.failures[0][:80]}" if loop.failures else "")


@contextlib.contextmanager
def _no_verdict_wait() -> Iterator[None]:
    """Within the block the probe does not wait for a TLS 1.3 verdict (bench-only experiment: the Envoy stand-ins
    never answer a client cert with an alert — require_client_certificate is false — and send no session ticket
    when they ask for one, so every probe of them pays the whole wait)."""
    import harness.probe.handshake as p

    original = p.TLS13_VERDICT_WAIT
    p.TLS13_VERDICT_WAIT = 0.0  # type: ignore[misc]
    try:
        yield
    finally:
        p.TLS13_VERDICT_WAIT = original  # type: ignore[misc]


def run(*, seconds: float = 2.0, experiment: bool = True, progress: Callable[[str], None] = silent) -> Bench:
    from harness.targets.local import LocalTarget

    bench = Bench(NAME, TITLE)
    t_bench = time.perf_counter()
    rows: list[Row] = []
    details: dict[str, Any] = {"seconds_per_loop": seconds}
    whole = max(1, round(seconds))
    with LocalTarget(strict_gateway(default_topology())) as chain:
        for hop, what in LISTENERS:
            ep = chain.endpoints[hop]  # type: ignore[index]
            cert, key = _identity(chain, hop)
            if hop == "ingress":
                floor, how = None, ("not comparable: s_time (OpenSSL 3.0) sends no SNI, so nginx answers from its "
                                    "default server (fake cert, no client-cert check)")
            else:
                floor, how = s_time(ep, cert, key, whole)
            hs = bounded_loop(handshake_step(ep, cert, key), seconds=seconds, max_count=MAX_COUNT)
            pr = bounded_loop(probe_step(ep, cert, key), seconds=seconds, max_count=MAX_COUNT)
            progress(f"probe rate {hop}: s_time {floor or 0:.0f}/s, python handshake {hs.rate:.0f}/s, "
                     f"harness probe {pr.rate:.0f}/s")
            floor_name = "openssl s_time" if floor else None
            rows.append(rate_row(f"{hop} ({what}): openssl s_time -new", floor, note=how))
            rows.append(rate_row(f"{hop}: stdlib ssl handshake only", hs.rate, floor=floor, floor_name=floor_name,
                                 note=_loop_note(hs)))
            vs_hs = f"; {hs.rate / pr.rate:.1f}× the stdlib handshake-only loop" if pr.rate else ""
            rows.append(rate_row(f"{hop}: harness probe (handshake + GET)", pr.rate, floor=floor,
                                 floor_name=floor_name, note=_loop_note(pr) + vs_hs))
            details[hop] = {"s_time_per_s": floor, "s_time": how, "handshake": dataclasses.asdict(hs),
                            "probe": dataclasses.asdict(pr)}
            if hop == "gateway" and experiment:
                with _no_verdict_wait():
                    nw = bounded_loop(probe_step(ep, cert, key), seconds=seconds, max_count=MAX_COUNT)
                progress(f"probe rate {hop}, TLS 1.3 verdict wait 0 (experiment): {nw.rate:.0f}/s")
                rows.append(rate_row(f"{hop}: harness probe, verdict wait 0 (experiment)", nw.rate, floor=floor,
                                     floor_name=floor_name, note=_loop_note(nw) + "; TLS13_VERDICT_WAIT 0.25 → 0"))
                details[f"{hop}_probe_no_verdict_wait"] = dataclasses.asdict(nw)

        keep: dict[str, float] = {}
        for hop in ("pod", "gateway"):
            ep = chain.endpoints[hop]  # type: ignore[index]
            cert, key = _identity(chain, hop)
            client, step = keepalive_step(ep, cert, key)
            with client:
                step()  # the connection's handshake is not part of the keep-alive rate
                loop = bounded_loop(step, seconds=seconds, max_count=MAX_COUNT)
            keep[hop] = loop.rate
            details[f"keepalive_{hop}"] = dataclasses.asdict(loop) | {"cpu_ms_each": round(loop.cpu_ms_each, 3)}
            progress(f"keep-alive {hop}: {loop.rate:.0f} requests/s ({loop.ok}/{loop.count} ok)")
        rows.append(rate_row("keep-alive GET, pod alone (1 hop)", keep["pod"], note="httpx, HTTP/1.1, one connection"))
        if experiment:
            nodelay = _pod_nodelay_rate(chain, seconds)
            details["keepalive_pod_nodelay"] = dataclasses.asdict(nodelay)
            progress(f"keep-alive pod with TCP_NODELAY (experiment): {nodelay.rate:.0f} requests/s")
            rows.append(rate_row("keep-alive GET, pod with TCP_NODELAY (experiment)", nodelay.rate,
                                 note="echo pod's handler with disable_nagle_algorithm = True"))
        rows.append(rate_row("keep-alive GET through gateway (4 hops)", keep["gateway"], floor=keep["pod"],
                             floor_name="pod alone", note="gateway→apim→ingress→pod"))
    bench.rows = rows
    bench.details = details
    bench.seconds = time.perf_counter() - t_bench
    return bench

