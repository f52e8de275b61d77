"""The names on the wire: the hop trace (below), the stand-ins' detail header and App Gateway's Server name.

The hop trace: what each hop saw of its inbound TLS session, carried to the pod in request headers.

Each proxy hop sets one header, ``x-mtls-trace-<hop>``, with ``key=value`` fields separated by ``; `` (a subject DN
may hold commas, never ``; ``). The gateway removes every trace header a client sends (spoofing is a test case),
then each hop adds its own. The pod echoes the headers back with its own socket's facts as the last entry.

Fields (empty when the hop has no value): ``tls`` (protocol, e.g. ``TLSv1.3``), ``cipher``, ``sni``,
``peer_sha256`` (client cert SHA-256, lower-case hex without colons), ``peer_subject``, ``peer_issuer``,
``verify`` (``SUCCESS``, ``NONE`` or ``FAILED:<reason>``); optionally ``stripped`` (the trace-header hops,
comma-separated, whose headers arrived from this hop's caller and which this hop removed or replaced: its own
evidence, so a forged header is attributed to the hop that stopped it); optionally ``resumed`` (the ingress: nginx's
``$ssl_session_reused``, ``r`` when its caller's TLS session was resumed, ``.`` for a full handshake).

The pod's own entry (in the JSON it answers with, not a header) adds :data:`POD_FIELDS` about the TCP/TLS connection
the request came in on: ``connection`` (the pod's number for it, counted from 1 since the pod started),
``connection_requests`` (this request's place on it, from 1: a pooled connection shows 2, 3, …) and
``session_reused`` (``true`` when that connection's handshake resumed an earlier TLS session, else ``false``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["APPGW_SERVER", "DETAIL_HEADER", "FIELDS", "POD_FIELDS", "PROXY_HOPS", "RESUMED_FIELD",
           "STRIPPED_FIELD", "TRACE_PREFIX",
           "header_name", "parse_entry", "parse_headers"]

TRACE_PREFIX: Final = "x-mtls-trace-"
#: response header on every answer a stand-in makes itself: ``hop=…; flags=…; details=…`` (or ``rejected=…``), so a
#: probe can tell "upstream certificate rejected" from "connection refused" behind the same status
DETAIL_HEADER: Final = "x-harness-detail"
#: the ``Server`` header of App Gateway's own answers (its error pages); a backend's Server header passes through
APPGW_SERVER: Final = "Microsoft-Azure-Application-Gateway/v2"
PROXY_HOPS: Final = ("gateway", "apim", "ingress")
FIELDS: Final = ("tls", "cipher", "sni", "peer_sha256", "peer_subject", "peer_issuer", "verify")
#: the pod's own entry only: its inbound connection (see the module docstring)
POD_FIELDS: Final = ("connection", "connection_requests", "session_reused")
#: an optional field the local stand-ins add (not every deployment's trace snippets have it; see the module docstring)
STRIPPED_FIELD: Final = "stripped"
#: an optional field of the ingress's entry: ``r`` when the caller resumed a TLS session, ``.`` for a full handshake
RESUMED_FIELD: Final = "resumed"


def header_name(hop: str) -> str:
    return TRACE_PREFIX + hop


def _norm_fp(value: str) -> str:
    return value.replace(":", "").lower()


def parse_entry(value: str) -> dict[str, str]:
    """``"tls=TLSv1.3; cipher=…"`` → dict; ``-`` (Envoy's empty value) becomes ``""``."""
    out: dict[str, str] = {}
    for part in value.split("; "):
        key, sep, val = part.partition("=")
        if not sep:
            continue
        val = val.strip()
        if val == "-":
            val = ""
        if key.strip() == "peer_sha256":
            val = _norm_fp(val)
        out[key.strip()] = val
    return out


def parse_headers(headers: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The trace entries found in ``headers`` (case-insensitive names), keyed by hop, in chain order."""
    lower = {k.lower(): v for k, v in headers.items()}
    return {hop: parse_entry(lower[header_name(hop)]) for hop in PROXY_HOPS if header_name(hop) in lower}
