"""The Lua and the error pages that make an Envoy answer like App Gateway or API Management.

Envoy's own answers (a TLS alert for a missing client cert, ``503 upstream connect error`` for a failed upstream
handshake) are not what the real components send, so each stand-in runs one Lua filter that:

1. classifies the client certificate from the TLS session (the listener asks for one with ``ACCEPT_UNTRUSTED``, so
   the handshake completes whatever the client sends) and stores the result as dynamic metadata
   ``mtls_harness.verify`` — ``SUCCESS``, ``NONE`` or ``FAILED:<reason>`` — which the hop-trace header reads;
2. gateway: in mTLS "Strict" mode answers 400 with App Gateway's nginx-style pages; then the WAF-like rule answers 403;
3. apim: with the ``validate-client-certificate`` policy answers 401 JSON with APIM's failure reason.

What Envoy cannot tell apart (documented for the behaviour table): ``peerCertificateValidated()`` is false for every
verify error, so an unknown CA, a wrong EKU, a broken chain and a self-signed cert are all "not trusted"; only the
validity dates can be read separately (``validFromPeerCertificate``/``expirationPeerCertificate``), so "expired" and
"not yet valid" are reported as such. Revocation is not checked.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final

from harness.model.wire import APPGW_SERVER, DETAIL_HEADER, PROXY_HOPS, TRACE_PREFIX

__all__ = [
    "APIM_500_JSON",
    "LUA_METADATA_KEY",
    "LUA_METADATA_NAMESPACE",
    "LUA_STRIPPED_KEY",
    "apim_lua",
    "appgw_page",
    "gateway_lua",
    "lua_string",
]

#: the Server line App Gateway v2 prints under its own error pages

#: where the Lua filter leaves the client-cert verdict for the trace header (``%DYNAMIC_METADATA(ns:key)%``)
LUA_METADATA_NAMESPACE: Final = "mtls_harness"
LUA_METADATA_KEY: Final = "verify"
#: where the Lua filter names the trace headers that arrived from the caller and that this hop strips
#: (``%DYNAMIC_METADATA(ns:key)%`` in the trace's ``stripped`` field): the hop's own evidence of what it removed
LUA_STRIPPED_KEY: Final = "stripped"

#: APIM's answer when the backend cannot be reached or its TLS fails (an Envoy substitution format: %STREAM_ID%)
APIM_500_JSON: Final = (
    '{"statusCode": 500, "message": "Internal server error", "reason": "BackendConnectionFailure", '
    '"activityId": "%STREAM_ID%"}'
)


def appgw_page(status: str, title: str | None = None, line: str | None = None) -> str:
    """An App Gateway error page: nginx's layout with App Gateway's server line.

    ``status`` is e.g. ``"502 Bad Gateway"``; ``title`` replaces it in <title> (nginx puts the SSL error text there)
    and ``line`` adds the centred error sentence.
    """
    body = [
        "<html>",
        f"<head><title>{title or status}</title></head>",
        "<body>",
        f"<center><h1>{status}</h1></center>",
    ]
    if line:
        body.append(f"<center>{line}</center>")
    body += [f"<hr><center>{APPGW_SERVER}</center>", "</body>", "</html>", ""]
    return "\r\n".join(body)


@functools.lru_cache(maxsize=4096)  # the same page texts, in every lane's script: 0.05 s of a start with 80 lanes
def lua_string(value: str) -> str:
    """A Lua string literal for any text: letters, digits and spaces stay, every other byte is a decimal escape
    (``\\ddd``), so no pattern or page text can break out of the literal."""
    out = []
    for byte in value.encode():
        ch = chr(byte)
        # always three digits: Lua reads up to three, so a shorter escape followed by a digit would change meaning
        out.append(ch if ch.isascii() and (ch.isalnum() or ch == " ") else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _lua_bool(value: bool) -> str:
    return "true" if value else "false"


def _lua_list(values: Iterable[str]) -> str:
    return "{" + ", ".join(lua_string(v) for v in values) + "}"


# The verdict on the client certificate, shared by both stand-ins. ``ssl`` is nil on a plaintext connection.
# os.time() is UTC seconds since the epoch, as are the two date accessors.
_VERIFY = """
local function client_cert_verdict(handle)
  local ssl = handle:streamInfo():downstreamSslConnection()
  if ssl == nil or not ssl:peerCertificatePresented() then
    return "NONE", "ClientCertificateNotFound"
  end
  if ssl:peerCertificateValidated() then
    return "SUCCESS", nil
  end
  local now = os.time()
  local not_after = tonumber(ssl:expirationPeerCertificate())
  local not_before = tonumber(ssl:validFromPeerCertificate())
  if not_after ~= nil and not_after < now then
    return "FAILED:certificate has expired", "ClientCertificateExpired"
  end
  if not_before ~= nil and not_before > now then
    return "FAILED:certificate is not yet valid", "ClientCertificateNotYetValid"
  end
  return "FAILED:certificate not trusted", "ClientCertificateNotTrusted"
end

local function record_verdict(handle, verdict)
  handle:streamInfo():dynamicMetadata():set(META_NS, META_KEY, verdict)
end

-- the trace headers this hop strips that its caller sent (the route removes them after this filter ran)
local function record_stripped(handle)
  local seen = {}
  for _, name in ipairs(STRIPS) do
    if handle:headers():get(TRACE_PREFIX .. name) ~= nil then
      seen[#seen + 1] = name
    end
  end
  if #seen > 0 then
    handle:streamInfo():dynamicMetadata():set(META_NS, STRIPPED_KEY, table.concat(seen, ","))
  end
end
"""

_GATEWAY = """
local function decoded(s)
  s = string.gsub(s, "%+", " ")
  return (string.gsub(s, "%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function waf_match(path)
  local raw = string.lower(path)
  local dec = string.lower(decoded(decoded(path)))
  for _, pattern in ipairs(WAF_BLOCK) do
    if string.find(raw, pattern, 1, true) or string.find(dec, pattern, 1, true) then
      return pattern
    end
  end
  return nil
end

local function page(handle, status, body, detail)
  handle:respond({[":status"] = status, ["content-type"] = "text/html", ["server"] = SERVER,
                  [DETAIL] = "hop=gateway; " .. detail}, body)
end

function envoy_on_request(handle)
  record_stripped(handle)
  local verdict, reason = client_cert_verdict(handle)
  record_verdict(handle, verdict)
  if STRICT and verdict ~= "SUCCESS" then
    if verdict == "NONE" then
      page(handle, "400", PAGE_NO_CERT, "rejected=client-cert-missing")
    else
      page(handle, "400", PAGE_BAD_CERT, "rejected=client-cert-invalid; verify=" .. verdict)
    end
    return
  end
  local hit = waf_match(handle:headers():get(":path") or "")
  if hit ~= nil then
    page(handle, "403", PAGE_WAF, "rejected=waf")
  end
end
"""

_APIM = """
function envoy_on_request(handle)
  record_stripped(handle)
  local verdict, reason = client_cert_verdict(handle)
  record_verdict(handle, verdict)
  if VALIDATE and verdict ~= "SUCCESS" then
    local body = '{"statusCode": 401, "message": "Invalid client certificate", "reason": "' .. reason .. '"}'
    handle:respond({[":status"] = "401", ["content-type"] = "application/json",
                    [DETAIL] = "hop=apim; rejected=" .. reason}, body)
  end
end
"""


def _preamble(hop: str, constants: dict[str, str]) -> str:
    strips = PROXY_HOPS[PROXY_HOPS.index(hop):]  # the gateway strips every trace header, apim its own and later ones
    lines = [f"-- generated by mtls-harness (harness/render/envoy_lua.py): the {hop} stand-in's policy",
             f"local META_NS = {lua_string(LUA_METADATA_NAMESPACE)}",
             f"local META_KEY = {lua_string(LUA_METADATA_KEY)}",
             f"local STRIPPED_KEY = {lua_string(LUA_STRIPPED_KEY)}",
             f"local TRACE_PREFIX = {lua_string(TRACE_PREFIX)}",
             f"local STRIPS = {_lua_list(strips)}",
             f"local DETAIL = {lua_string(DETAIL_HEADER)}"]
    lines += [f"local {name} = {value}" for name, value in constants.items()]
    return "\n".join(lines) + "\n"


def gateway_lua(*, strict: bool, waf_block: Iterable[str]) -> str:
    """The App Gateway stand-in's filter: mTLS Strict (400 pages) when ``strict``, then the WAF rule (403)."""
    constants = {
        "STRICT": _lua_bool(strict),
        "WAF_BLOCK": _lua_list(p.lower() for p in waf_block if p),
        "SERVER": lua_string(APPGW_SERVER),
        "PAGE_NO_CERT": lua_string(appgw_page("400 Bad Request", "400 No required SSL certificate was sent",
                                              "No required SSL certificate was sent")),
        "PAGE_BAD_CERT": lua_string(appgw_page("400 Bad Request", "400 The SSL certificate error",
                                               "The SSL certificate error")),
        "PAGE_WAF": lua_string(appgw_page("403 Forbidden")),
    }
    return _preamble("gateway", constants) + _VERIFY + _GATEWAY


def apim_lua(*, validate: bool) -> str:
    """The APIM stand-in's filter: the ``validate-client-certificate`` policy (401 JSON) when ``validate``."""
    return _preamble("apim", {"VALIDATE": _lua_bool(validate)}) + _VERIFY + _APIM
