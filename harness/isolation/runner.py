"""A probe runner that lives inside a network namespace: JSON in, JSON out.

    ip netns exec NS python -m harness.isolation.runner --require-isolated < request.json      # one request
    ip netns exec NS python -m harness.isolation.runner --serve --require-isolated             # one request per line

A request is ``{"op": "probe", "host": …, "port": …, "kwargs": {…probe() keyword arguments…}}`` (paths as
strings, ``body`` as base64) or ``{"op": "http_get", "host": "127.0.0.1", "port": …, "path": "/ready"}`` (a plain
HTTP GET on the namespace's own loopback, for Envoy's admin). The answer is ``{"result": …}`` — for a probe the
whole :class:`~harness.probe.result.ProbeResult` (:func:`result_to_wire`, :func:`result_from_wire` read it back
exactly)
— or ``{"error": {"type": …, "message": …}}`` for a bad request (the probe's own UsageError/InputError).

``--require-isolated`` makes the runner refuse to start (exit code 3, one line on stderr) unless it is in a network
namespace other than the host's *and* that namespace has no default route: the harness's network rule, checked by
the very process that would open the connections. The isolated target always passes it; the containers target's
probe container (``--in-container``: its network namespace is the container's) passes it once the harness removed
the container's default route.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

from harness.errors import HarnessError, UsageError
from harness.probe.outcomes import Outcome

__all__ = ["isolation_problem", "main", "result_from_wire", "result_to_wire", "run_request"]

#: exit code when --require-isolated finds the runner outside an isolated namespace
EXIT_NOT_ISOLATED: Final = 3
_PATH_ARGS: Final = ("trust", "client_cert", "client_key")


def isolation_problem(netns: str | None = None, proc: Path = Path("/proc"),
                      netns_dir: Path = Path("/run/netns"), *, in_container: bool = False) -> str | None:
    """None when this process is in a network namespace other than the host's with no default route; else why not.

    ``netns`` names the namespace the process must be in (``ip netns`` name): its inode must be this process's.
    Without it the host's namespace is read from PID 1, which a hardened /proc may refuse. ``in_container``: the
    process runs in a container (its PID 1 is the container's, in the same namespace): only the routes are read.
    """
    try:
        own = os.stat(proc / "self" / "ns" / "net").st_ino
    except OSError as exc:
        return f"cannot read this process's network namespace ({exc})"
    if in_container:
        pass
    elif netns is not None:
        try:
            want = os.stat(netns_dir / netns).st_ino
        except OSError as exc:
            return f"namespace {netns!r} does not exist ({exc.strerror})"
        if own != want:
            return f"this process is not in namespace {netns!r}"
    else:
        try:
            init = os.stat(proc / "1" / "ns" / "net").st_ino
        except OSError as exc:
            return f"cannot tell this namespace from the host's ({exc.strerror}) — pass --netns NAME"
        if own == init:
            return "this process is in the host's network namespace"
    try:
        routes = (proc / "net" / "route").read_text().splitlines()[1:]
    except OSError as exc:
        return f"cannot read the IPv4 routing table ({exc})"
    if any(line.split()[1:2] == ["00000000"] and line.split()[7:8] == ["00000000"] for line in routes
           if len(line.split()) > 7):
        return "this namespace has an IPv4 default route"
    try:
        routes6 = (proc / "net" / "ipv6_route").read_text().splitlines()
    except OSError:
        routes6 = []  # IPv6 off in this namespace: no table, no route
    if any(line.split()[:2] == ["0" * 32, "00"] and line.split()[-1] != "lo" for line in routes6):
        return "this namespace has an IPv6 default route"
    return None


# ------------------------------------------------------------------------------------------------------------------
# wire format
# ------------------------------------------------------------------------------------------------------------------
def result_to_wire(result: Any) -> dict[str, Any]:
    """A :class:`~harness.probe.handshake.ProbeResult` as JSON-safe data, losslessly (body as base64)."""
    o = result.outcome
    return {
        "outcome": {"kind": o.kind, "status": o.status, "alert": o.alert, "reason": o.reason, "hop": o.hop,
                    "cause": o.cause},
        "tls_version": result.tls_version, "cipher": result.cipher, "alpn": result.alpn,
        "peer_chain": [{"subject": c.subject, "issuer": c.issuer, "sans": list(c.sans), "sha256": c.sha256,
                        "serial": str(c.serial), "not_before": c.not_before.isoformat(),
                        "not_after": c.not_after.isoformat()} for c in result.peer_chain],
        "status": result.status, "headers": dict(result.headers),
        "body": base64.b64encode(result.body).decode(), "elapsed": result.elapsed, "error": result.error,
        "target": result.target, "server_name": result.server_name, "client_cert": result.client_cert,
        "phase": result.phase,
    }


def result_from_wire(doc: Mapping[str, Any]) -> Any:
    """The :class:`~harness.probe.handshake.ProbeResult` that :func:`result_to_wire` wrote."""
    from harness.probe.result import CertInfo, ProbeResult

    o = doc["outcome"]
    chain = tuple(CertInfo(subject=c["subject"], issuer=c["issuer"], sans=tuple(c["sans"]), sha256=c["sha256"],
                           serial=int(c["serial"]), not_before=dt.datetime.fromisoformat(c["not_before"]),
                           not_after=dt.datetime.fromisoformat(c["not_after"])) for c in doc["peer_chain"])
    return ProbeResult(
        outcome=Outcome(o["kind"], status=o["status"], alert=o["alert"], reason=o["reason"], hop=o.get("hop"),
                        cause=o.get("cause")),
        tls_version=doc["tls_version"], cipher=doc["cipher"], alpn=doc["alpn"], peer_chain=chain,
        status=doc["status"], headers=dict(doc["headers"]), body=base64.b64decode(doc["body"]),
        elapsed=float(doc["elapsed"]), error=doc["error"], target=doc["target"], server_name=doc["server_name"],
        client_cert=doc["client_cert"], phase=doc["phase"],
    )


def kwargs_to_wire(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """probe() keyword arguments as JSON-safe data (paths as strings, tuples as lists, body as base64)."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "body":
            out[key] = base64.b64encode(bytes(value)).decode()
        elif isinstance(value, os.PathLike):
            out[key] = os.fspath(value)
        elif isinstance(value, tuple | list):
            out[key] = list(value)
        elif isinstance(value, Mapping):
            out[key] = dict(value)
        else:
            out[key] = value
    return out


def _kwargs_from_wire(doc: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for key in _PATH_ARGS:
        if out.get(key) is not None:
            out[key] = Path(out[key])
    if "body" in out:
        out["body"] = base64.b64decode(out["body"])
    if "alpn" in out:
        out["alpn"] = tuple(out["alpn"])
    return out


# ------------------------------------------------------------------------------------------------------------------
# running requests
# ------------------------------------------------------------------------------------------------------------------
def _http_get(host: str, port: int, path: str, timeout: float) -> dict[str, Any]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return {"status": resp.status, "body": resp.read(65536).decode(errors="replace")}
    except OSError as exc:
        return {"status": None, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()


def run_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Answer one request document (see the module docstring); never raises for a bad request."""
    try:
        op = request.get("op", "probe")
        host, port = request["host"], int(request["port"])
        if op == "probe":
            from harness.probe.handshake import probe

            result = probe(host, port, **_kwargs_from_wire(request.get("kwargs") or {}))
            return {"result": result_to_wire(result)}
        if op == "http_get":
            if host not in ("127.0.0.1", "::1"):
                raise UsageError(f"http_get is for the namespace's own loopback only, not {host!r}")
            return {"result": _http_get(host, port, str(request.get("path", "/")),
                                        float(request.get("timeout", 2.0)))}
        raise UsageError(f"unknown op {op!r} — use probe or http_get")
    except (KeyError, TypeError, ValueError) as exc:
        return {"error": {"type": "UsageError", "message": f"malformed request ({type(exc).__name__}: {exc})"}}
    except HarnessError as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}


def _serve(stdin: IO[str], stdout: IO[str]) -> int:
    """One JSON request per input line, one JSON answer per output line, until end of input."""
    for line in stdin:
        if not line.strip():
            continue
        request: Any = None
        try:
            request = json.loads(line)
            answer = run_request(request) if isinstance(request, dict) else \
                {"error": {"type": "UsageError", "message": "a request is a JSON object"}}
        except ValueError as exc:
            answer = {"error": {"type": "UsageError", "message": f"not JSON: {exc}"}}
        if isinstance(request, dict) and "id" in request:
            answer["id"] = request["id"]
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.isolation.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="answer one JSON request per line until end of input")
    parser.add_argument("--require-isolated", action="store_true",
                        help="refuse to run outside a network namespace that has no default route")
    parser.add_argument("--netns", metavar="NAME", help="with --require-isolated: the namespace (ip netns name) "
                        "this runner must be in")
    parser.add_argument("--in-container", action="store_true",
                        help="with --require-isolated: the runner is in a container (the containers target's probe "
                             "container); only the absence of a default route is checked")
    args = parser.parse_args(argv)
    if args.require_isolated:
        problem = isolation_problem(args.netns, in_container=args.in_container)
        if problem is not None:
            print(f"probe_cli: refusing to run: {problem} (the network rule: clients run only inside a namespace "
                  "with no default route)", file=sys.stderr)
            return EXIT_NOT_ISOLATED
    if args.serve:
        return _serve(sys.stdin, sys.stdout)
    try:
        request = json.loads(sys.stdin.read())
    except ValueError as exc:
        print(f"probe_cli: the request is not JSON ({exc})", file=sys.stderr)
        return 2
    answer = run_request(request) if isinstance(request, dict) else \
        {"error": {"type": "UsageError", "message": "a request is a JSON object"}}
    print(json.dumps(answer))
    return 0 if "result" in answer else 2


if __name__ == "__main__":
    sys.exit(main())
