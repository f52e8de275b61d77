"""``index.html``: one self-contained page (inline CSS and SVG, no script, no external asset) from the results document.

From top to bottom: the verdict; a diagram of the chain (client → gateway → apim → ingress → pod) whose edges are
coloured by the cases of the TLS session into each hop — green when all passed, red when any failed, grey when none
ran — with the counts, the protection of that session (TLS / mTLS, from the chain the run used) and, when the run
captured the links (``links`` in the document), each link's capture summary; the failures; the hop × case matrix
(:mod:`harness.report.matrix`); every case with its handshake facts in an expandable block (failures open).
Every value is HTML-escaped; the page shows only what the results document holds, which holds no key material.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from harness.model.topology import HOPS
from harness.report.matrix import SYMBOLS, Grid, by_hop, cell_status, grids
from harness.report.results import headline, layout_lines

__all__ = ["EDGE_COLOURS", "HOP_TITLES", "link_for", "render_html"]

#: edge and badge colours per result
EDGE_COLOURS: Final = {"passed": "#1a7f37", "failed": "#cf222e", "error": "#cf222e", "skipped": "#8c959f"}
#: what each hop stands for in the real deployment
HOP_TITLES: Final = {"client": "client", "gateway": "App Gateway", "apim": "API Management",
                     "ingress": "AKS ingress-nginx", "pod": "pod"}
_HOP_ROLES: Final = {"client": "the probe (stdlib ssl)", "gateway": "TLS offload · WAF · re-encrypt",
                     "apim": "policies · client cert upstream", "ingress": "verifies APIM's client cert",
                     "pod": "HTTPS echo backend"}

_NODE_W, _NODE_H, _GAP, _TOP = 172, 88, 115, 16
_CARD_W, _CARD_TOP, _LINE = 262, 150, 18

_CSS: Final = """
:root{--pass:#1a7f37;--pass-bg:#dafbe1;--fail:#cf222e;--fail-bg:#ffebe9;--skip:#6e7781;--skip-bg:#f6f8fa;
--find:#9a6700;--find-bg:#fff8c5;--line:#d0d7de;--text:#1f2328;--muted:#59636e}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--text);margin:0;background:#fff}
main{max-width:1400px;margin:0 auto;padding:20px 28px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid var(--line);
padding-bottom:4px}h3{font-size:14px;margin:18px 0 6px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.muted{color:var(--muted)}
.verdict{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600;margin-right:8px}
.verdict.passed{background:var(--pass)}.verdict.failed,.verdict.error{background:var(--fail)}
.verdict.skipped{background:var(--skip)}.verdict.finding{background:var(--find)}
.chips .finding,td.finding{background:var(--find-bg)}.l-finding{color:var(--find);font-weight:600}
details.case.finding{border-left-color:var(--find)}
.findings li{margin:8px 0;padding:6px 10px;background:var(--find-bg);border-radius:4px;list-style:none}
.findings li.accepted{background:#f6f8fa}.findings{padding-left:0}
.chips span{display:inline-block;margin:6px 6px 0 0;padding:2px 9px;border-radius:10px;border:1px solid var(--line)}
.chips .passed{background:var(--pass-bg)}.chips .failed,.chips .error{background:var(--fail-bg)}
.chips .skipped{background:var(--skip-bg)}
svg.chain{width:100%;height:auto;max-width:1320px;display:block;margin:6px 0}
table{border-collapse:collapse;margin:4px 0 10px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
table.matrix td{min-width:80px;max-width:180px;font-size:12.5px}
table.matrix thead th{font-size:12.5px;min-width:80px}
table.matrix th.hop{white-space:nowrap}
td.passed{background:var(--pass-bg)}td.failed,td.error{background:var(--fail-bg)}td.skipped{background:var(--skip-bg)}
td a{color:inherit;text-decoration:none;display:block}td a:hover{text-decoration:underline}
.l-passed{color:var(--pass)}.l-failed,.l-error{color:var(--fail);font-weight:600}.l-skipped{color:var(--skip)}
.scroll{overflow-x:auto}
details.case{border:1px solid var(--line);border-left:5px solid var(--skip);border-radius:4px;margin:5px 0;
padding:0 10px}
details.case.passed{border-left-color:var(--pass)}details.case.failed,details.case.error{border-left-color:var(--fail)}
details.case summary{cursor:pointer;padding:6px 0}
details.case summary .id{font-weight:600}
details.case[open]{padding-bottom:10px}
dl.facts{display:grid;grid-template-columns:190px 1fr;gap:3px 14px;margin:6px 0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;word-break:break-word}
table.certs td,table.trace td{font-size:12.5px}
td.fp{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11.5px;word-break:break-all;max-width:300px}
.message{background:var(--fail-bg);border-radius:4px;padding:6px 10px;margin:6px 0;white-space:pre-wrap}
#only-failed:checked~.cases details.case.passed,#only-failed:checked~.cases details.case.skipped{display:none}
label.toggle{user-select:none;cursor:pointer}
footer{margin-top:30px;color:var(--muted);font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _status_of(counts: Mapping[str, int]) -> str:
    return cell_status(s for s in ("failed", "error", "passed", "skipped") if counts.get(s)) if counts["total"] \
        else "skipped"


def link_for(links: Mapping[str, Any] | None, src: str, dst: str) -> Mapping[str, Any] | None:
    """The capture summary of the link ``src`` → ``dst``: a key naming both, in order (``gateway->apim``,
    ``gateway-apim``, ``gateway→apim``), whatever separates them."""
    for key, value in (links or {}).items():
        if [w for w in re.split(r"[^a-z0-9]+", str(key).lower()) if w] == [src, dst] and isinstance(value, Mapping):
            return value
    return None


def _bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return str(n)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


def _link_lines(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(text, css colour) lines for one link's capture summary; unknown fields are shown as ``key: value``."""
    words = []
    if "streams" in summary:
        words.append(f"{summary['streams']} streams")
    versions = summary.get("tls_versions")
    if "bytes" in summary:
        words.append(_bytes(summary["bytes"]))
    lines = [("capture: " + " · ".join(words), "#1f2328")] if words else []
    if versions:
        lines.append(("TLS seen: " + (", ".join(map(str, versions)) if isinstance(versions, list | tuple)
                                      else str(versions)), "#1f2328"))
    if "plaintext" in summary:
        found = summary["plaintext"]
        lines.append(("plaintext HTTP: FOUND" + (f" ({found})" if not isinstance(found, bool) else ""), "#cf222e")
                     if found else ("plaintext HTTP: none", "#1a7f37"))
    known = {"streams", "tls_versions", "bytes", "plaintext"}
    lines += [(f"{k}: {v}"[:40], "#59636e") for k, v in summary.items() if k not in known]
    return lines


def _protection(chain: Mapping[str, Any], hop: str) -> str:
    facts = chain.get(hop)
    if not isinstance(facts, Mapping):
        return "TLS"
    auth, presents = facts.get("client_auth"), facts.get("caller_presents_cert")
    if auth == "required" and presents:
        return "mTLS"
    if presents and auth == "optional":
        return "mTLS (optional)"
    return "TLS" if auth in ("none", None) else f"TLS · client cert {auth}"


def _svg_text(x: float, y: float, text: str, *, size: int = 12, weight: str = "normal", fill: str = "#1f2328",
              anchor: str = "middle", mono: bool = False) -> str:
    family = ' font-family="ui-monospace,Menlo,Consolas,monospace"' if mono else ""
    return (f'<text x="{x:.0f}" y="{y:.0f}" font-size="{size}" font-weight="{weight}" fill="{fill}" '
            f'text-anchor="{anchor}"{family}>{_e(text)}</text>')


def _diagram(doc: Mapping[str, Any]) -> str:
    stats = by_hop(doc["cases"])
    chain = doc.get("chain") or {}
    links = doc.get("links")
    nodes = ["client", *HOPS]
    step = _NODE_W + _GAP
    cards = []
    for i, hop in enumerate(HOPS):
        summary = link_for(links, nodes[i], hop)
        cards.append((hop, _link_lines(summary) if summary else []))
    # title, protection, the tally (a second line when something failed), the link's capture lines
    rows = max(3 + bool(stats[hop]["failed"] + stats[hop]["error"]) + len(lines) for hop, lines in cards)
    card_h = 12 + _LINE * rows
    height = _CARD_TOP + card_h + 8
    width = step * len(nodes) - _GAP
    out = [f'<svg class="chain" viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg" '
           f'aria-label="the chain: client, gateway, apim, ingress, pod, edges coloured by result">',
           "<defs>"]
    for name, colour in EDGE_COLOURS.items():
        out.append(f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                   f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/>'
                   "</marker>")
    out.append("</defs>")
    for i, node in enumerate(nodes):
        x = i * step
        out.append(f'<rect x="{x}" y="{_TOP}" width="{_NODE_W}" height="{_NODE_H}" rx="10" fill="#f6f8fa" '
                   'stroke="#57606a" stroke-width="1.5"/>')
        cx = x + _NODE_W / 2
        out.append(_svg_text(cx, _TOP + 24, HOP_TITLES[node], size=15, weight="600"))
        if node != "client":
            out.append(_svg_text(cx, _TOP + 43, node, size=11, fill="#59636e", mono=True))
        facts = chain.get(node) if isinstance(chain.get(node), Mapping) else None
        if facts:
            name = str(facts.get("server_name"))
            out.append(_svg_text(cx, _TOP + 62, name if len(name) <= 30 else name[:29] + "…", size=11))
        out.append(_svg_text(cx, _TOP + (78 if facts else 52), _HOP_ROLES[node], size=10, fill="#59636e"))
    mid_y = _TOP + _NODE_H / 2
    for i, (hop, lines) in enumerate(cards):
        counts = stats[hop]
        status = _status_of(counts)
        colour = EDGE_COLOURS[status]
        x1, x2 = i * step + _NODE_W + 3, (i + 1) * step - 4
        gx = (x1 + x2) / 2
        dash = ' stroke-dasharray="6 5"' if status == "skipped" else ""
        out.append(f'<a href="#hop-{hop}"><line x1="{x1}" y1="{mid_y}" x2="{x2}" y2="{mid_y}" stroke="{colour}" '
                   f'stroke-width="5"{dash} marker-end="url(#arrow-{status})"><title>{_e(_edge_title(hop, counts))}'
                   "</title></line></a>")
        out.append(_svg_text(gx, mid_y - 12, _protection(chain, hop), size=12, weight="600", fill="#57606a"))
        ran = counts["passed"] + counts["failed"] + counts["error"]
        bad = counts["failed"] + counts["error"]
        word = f"{SYMBOLS['failed']} {bad}/{ran}" if bad else (f"{SYMBOLS['passed']} {ran}" if ran else "not run")
        out.append(_svg_text(gx, mid_y + 24, word, size=13, weight="700", fill=colour))
        # the card under the edge: which session, its cases, and the link's capture summary
        cx = gx
        left = cx - _CARD_W / 2
        out.append(f'<line x1="{gx}" y1="{mid_y + 30}" x2="{gx}" y2="{_CARD_TOP}" stroke="{colour}" '
                   'stroke-width="1.2" stroke-dasharray="3 3"/>')
        out.append(f'<rect x="{left:.0f}" y="{_CARD_TOP}" width="{_CARD_W}" height="{card_h}" rx="6" fill="#fff" '
                   f'stroke="{colour}" stroke-width="1.5"/>')
        y = _CARD_TOP + 20
        src = nodes[i]
        out.append(_svg_text(left + 10, y, f"{src} → {hop}", size=13, weight="600", anchor="start"))
        facts = chain.get(hop) if isinstance(chain.get(hop), Mapping) else {}
        versions = (f"TLS {facts.get('min_version')}–{facts.get('max_version')}" if facts else "")
        out.append(_svg_text(left + 10, y + _LINE, " · ".join(x for x in (_protection(chain, hop), versions) if x),
                             size=12, anchor="start", fill="#59636e"))
        good = " · ".join(f"{counts[k]} {k}" for k in ("passed", "skipped") if counts[k])
        bad_words = " · ".join(f"{counts[k]} {k}" for k in ("failed", "error") if counts[k])
        tallies = [(good or "no cases", EDGE_COLOURS["passed" if counts["passed"] else "skipped"])]
        tallies += [(bad_words, EDGE_COLOURS["failed"])] if bad_words else []
        for n, (text, fill) in enumerate([*tallies, *lines]):
            out.append(_svg_text(left + 10, y + (2 + n) * _LINE, text[:42], size=12, anchor="start", fill=fill,
                                 weight="600" if n < len(tallies) else "normal"))
    out.append("</svg>")
    return "\n".join(out)


def _edge_title(hop: str, counts: Mapping[str, int]) -> str:
    return f"the TLS session into {hop}: " + ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error",
                                                                                      "skipped"))


def _grid_table(grid: Grid) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in grid.columns)
    rows = []
    for hop, cells in grid.rows:
        tds = []
        for cell in cells:
            if cell is None:
                tds.append("<td></td>")
                continue
            lines = "".join(
                f'<a class="l-{line.status}" href="#case-{_e(line.case_ids[0])}" '
                f'title="{_e(", ".join(line.case_ids))}">{_e(line.render())}</a>' for line in cell.lines)
            tds.append(f'<td class="{cell.status}">{lines}</td>')
        rows.append(f'<tr><th class="hop">{_e(hop)}</th>{"".join(tds)}</tr>')
    return (f'<h3>{_e(grid.group)}</h3><div class="scroll"><table class="matrix"><thead><tr><th>hop</th>{head}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _facts_list(pairs: Sequence[tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in pairs if v not in (None, "", []))
    return f'<dl class="facts">{items}</dl>'


def _certs_table(chain: Sequence[Mapping[str, Any]]) -> str:
    if not chain:
        return '<p class="muted">the server sent no certificate</p>'
    rows = "".join(
        f"<tr><td>{i}</td><td>{_e(c.get('subject'))}</td><td>{_e(c.get('issuer'))}</td>"
        f"<td>{_e(', '.join(c.get('sans') or []) or '—')}</td><td>{_e(str(c.get('not_after', ''))[:10])}</td>"
        f'<td class="fp">{_e(c.get("sha256"))}</td></tr>' for i, c in enumerate(chain))
    return ('<table class="certs"><thead><tr><th>#</th><th>subject</th><th>issuer</th><th>SANs</th><th>not after</th>'
            f"<th>SHA-256</th></tr></thead><tbody>{rows}</tbody></table>")


def _trace_table(trace: Mapping[str, Mapping[str, str]]) -> str:
    cols = ("tls", "cipher", "sni", "verify", "peer_subject", "peer_issuer", "peer_sha256")
    rows = "".join(
        f"<tr><th>{_e(hop)}</th>" + "".join(
            f'<td class="fp" title="{_e(entry.get(c))}">{_e((entry.get(c) or "—")[:16] + "…")}</td>'
            if c == "peer_sha256" and entry.get(c) else f"<td>{_e(entry.get(c) or '—')}</td>" for c in cols)
        + "</tr>" for hop, entry in trace.items())
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
    return f'<table class="trace"><thead><tr><th>hop</th>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _case_block(r: Mapping[str, Any]) -> str:
    status = str(r["result"])
    seen = r.get("seen") or {}
    seen_words = seen.get("label") or ("skipped" if status == "skipped" else "no answer")
    summary = (f'<summary><span class="l-{status}">{_e(SYMBOLS[status])}</span> <span class="id">{_e(r["id"])}'
               f'</span> <span class="muted">· {_e(r["hop"])} · {_e(r["column"])} · expected '
               f'{_e(r.get("expected_label") or r.get("expected"))} · seen {_e(seen_words)}</span></summary>')
    probe = r.get("probe") or {}
    how = "through the gateway" if r.get("via") == "chain" else "directly"
    pairs: list[tuple[str, Any]] = [
        ("expected", f"<code>{_e(r.get('expected'))}</code>"),
        ("source of the expectation", _e(r.get("source"))),
        ("seen", f"<code>{_e(seen.get('outcome_text'))}</code>" if seen else None),
        ("hop", _e(f"{r['hop']} (probed: {r.get('endpoint')}, {how})")),
        ("chain variant", _e(r.get("variant"))),
        ("client cert presented", _e(r.get("identity"))),
        ("probe options", _e(", ".join(f"{k}={v}" for k, v in probe.items())) if probe else None),
        ("TLS", _e(" · ".join(str(x) for x in (seen.get("tls_version"), seen.get("cipher")) if x)) or None),
        ("ALPN", _e(seen.get("alpn"))),
        ("HTTP status", _e(seen.get("http_status"))),
        ("server name (SNI)", _e(seen.get("server_name"))),
        ("ended in / after", _e(f"{seen.get('phase')} after {seen.get('elapsed_ms')} ms") if seen else None),
        ("probe error", _e(seen.get("error"))),
        ("pytest node", f"<code>{_e(r.get('nodeid'))}</code>"),
    ]
    body = [_facts_list(pairs)]
    if r.get("message"):
        body.insert(0, f'<div class="message">{_e(r["message"])}</div>')
    if seen:
        body.append("<h3>peer chain (as the server sent it)</h3>" + _certs_table(seen.get("peer_chain") or []))
        if seen.get("hop_trace"):
            body.append("<h3>hop trace (what each hop saw of its inbound TLS session)</h3>"
                        + _trace_table(seen["hop_trace"]))
    opened = " open" if status in ("failed", "error") else ""
    return (f'<details class="case {status}" id="case-{_e(r["id"])}"{opened}>{summary}{"".join(body)}'
            "</details>")


def _failures(cases: Sequence[Mapping[str, Any]]) -> str:
    bad = [r for r in cases if r["result"] in ("failed", "error")]
    if not bad:
        return ""
    rows = "".join(
        f'<tr><td><a href="#case-{_e(r["id"])}">{_e(r["id"])}</a></td><td>{_e(r["hop"])}</td>'
        f"<td><code>{_e(r.get('expected'))}</code></td><td><code>{_e((r.get('seen') or {}).get('outcome_text', '—'))}"
        f"</code></td><td>{_e(r.get('message'))}</td></tr>" for r in bad)
    return (f"<h2>Failures ({len(bad)})</h2><div class=\"scroll\"><table><thead><tr><th>case</th><th>hop</th>"
            f"<th>expected</th><th>seen</th><th>why</th></tr></thead><tbody>{rows}</tbody></table></div>")


def _links_section(links: Mapping[str, Any] | None) -> str:
    if not links:
        return ""
    rows = "".join(f"<tr><td><code>{_e(k)}</code></td><td>{_e(' · '.join(t for t, _ in _link_lines(v)))}</td></tr>"
                   for k, v in links.items() if isinstance(v, Mapping))
    return (f"<h2>Link captures</h2><table><thead><tr><th>link</th><th>summary</th></tr></thead><tbody>{rows}"
            "</tbody></table>")


def _accounting(doc: Mapping[str, Any]) -> str:
    """The headline ("N of M ran on T, K skipped by design" / "interrupted: …") and the by-design reasons, grouped."""
    if "ran" not in doc["summary"]:
        return ""
    reasons = doc["summary"].get("by_design_reasons") or {}
    items = "".join(f"<li>{n} × {_e(why)}</li>" for why, n in reasons.items())
    listed = (f'<details><summary>skipped by design (the target declares it cannot run them)</summary><ul>{items}'
              "</ul></details>") if items else ""
    return f'<p class="headline"><b>{_e(headline(doc))}</b></p>{listed}'


def _hosts(doc: Mapping[str, Any]) -> str:
    """The ingress hosts of a chain with several: each one's client auth, the API path that reaches it, its cases."""
    hosts = ((doc.get("chain") or {}).get("ingress") or {}).get("hosts")
    if not hosts:
        return ""
    rows = []
    for i, h in enumerate(hosts):
        mine = [c for c in doc["cases"] if (c.get("host") or None) == (None if i == 0 else h["host"])]
        counts = ", ".join(f"{n} {k}" for k in ("passed", "finding", "failed", "error", "skipped")
                           if (n := sum(1 for c in mine if c["result"] == k)))
        api = h.get("api_path")
        rows.append(f"<tr><td><code>{_e(h['host'])}</code>{' (home)' if i == 0 else ''}</td>"
                    f"<td>{_e(h['client_auth'])}</td><td>{'<code>' + _e(api) + '</code>' if api else '—'}</td>"
                    f"<td>{_e(counts) or '—'}</td></tr>")
    return ("<h3>Ingress hosts</h3><p class=\"muted\">One controller serves them all; each host's cases end "
            "<code>@host</code> and are judged by its own annotations (the home host's have no suffix). API path: "
            "the APIM API whose backend is the host (— : probed at the ingress directly).</p><table><thead><tr>"
            "<th>host</th><th>client auth</th><th>API path</th><th>cases</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def render_html(doc: Mapping[str, Any]) -> str:
    """The report page for ``doc`` (a results document, :mod:`harness.report.results`)."""
    cases: Sequence[Mapping[str, Any]] = doc["cases"]
    s = doc["summary"]
    verdict = "failed" if s["failed"] or s["error"] else (
        "finding" if s.get("findings_open") else ("passed" if s["passed"] or s.get("finding") else "skipped"))
    words = {"passed": "all passed", "failed": "FAILED", "skipped": "nothing ran", "finding": "FINDINGS"}[verdict]
    if doc.get("interrupted"):
        verdict, words = "failed", "INTERRUPTED"
    chips = "".join(f'<span class="{k}">{s[k]} {k}</span>' for k in ("passed", "failed", "error", "finding", "skipped")
                    if s.get(k))
    meta = " · ".join(x for x in (
        f"target <b>{_e(doc.get('target'))}</b>", f"{s['total']} cases", f"generated {_e(doc.get('generated'))}",
        f"run took {doc['duration_s']} s" if doc.get("duration_s") is not None else "",
        f"pytest exit {doc['pytest_exit']}" if doc.get("pytest_exit") is not None else "",
        f"mtls-harness {_e(doc.get('harness_version'))}") if x)
    by_hop_sections = []
    for hop in HOPS:
        hop_cases = [r for r in cases if r["hop"] == hop]
        if hop_cases:
            by_hop_sections.append(f'<h3 id="hop-{hop}">{_e(HOP_TITLES[hop])} <span class="muted">({hop}, '
                                   f"{len(hop_cases)} cases)</span></h3>" + "".join(_case_block(r)
                                                                                  for r in hop_cases))
    matrix = "".join(_grid_table(g) for g in grids(cases)) or '<p class="muted">no cases ran</p>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="generator" content="mtls-harness {_e(doc.get('harness_version'))} ({_e(doc.get('schema'))})">
<title>mTLS chain report — {_e(doc.get('target'))} — {words}</title><style>{_CSS}</style></head>
<body><main>
<h1><span class="verdict {verdict}">{words}</span>mTLS chain report</h1>
<div class="muted">{meta}</div><div class="chips">{chips}</div>
{_accounting(doc)}
{_findings(doc.get("findings"))}
<h2>The chain</h2>
{_diagram(doc)}
{_hosts(doc)}
{_identities(doc.get("identities"))}
{_layout(doc.get("layout"))}
<p class="muted">Each edge is the TLS session into the hop it points at; its colour and counts are the cases about that
session (green: all passed, red: any failed, grey dashed: none ran). Click an edge for its cases.</p>
{_failures(cases)}
{_links_section(doc.get("links"))}
<h2>Hop × case matrix</h2>
{matrix}
<h2>Cases</h2>
<input type="checkbox" id="only-failed"> <label class="toggle" for="only-failed">show only failed cases</label>
<div class="cases">{"".join(by_hop_sections)}</div>
<footer>Generated by mtls-harness from results.json ({_e(doc.get('schema'))}). The report holds certificate
subjects, issuers, SANs, serials and SHA-256 fingerprints — never key material or key paths.</footer>
</main></body></html>
"""


def _findings(findings: Any) -> str:
    """The chain's findings first: what its own configuration lets through, the setting and its file:line."""
    if not findings:
        return ""
    items = []
    for f in sorted(findings, key=lambda f: (f["accepted"], f["hop"], f["id"])):
        seen = (f"observed by {len(f['observed_by'])} case(s): " + ", ".join(
            f'<a href="#case-{_e(c)}">{_e(c)}</a>' for c in f["observed_by"])) if f["observed_by"] else \
            "predicted from the configuration; no case of this run observed it"
        word = f"ACCEPTED — {_e(f['reason'])}" if f["accepted"] else "FINDING"
        items.append(f'<li class="{"accepted" if f["accepted"] else "open"}"><b>{word}</b> <code>{_e(f["id"])}</code>'
                     f"<br>{_e(f['statement'])} — broken at <b>{_e(f['hop'])}</b>; lets through: "
                     f"{_e(f['lets_through'])}"
                     f"<br>set by <code>{_e(f['setting'])}</code> at <code>{_e(f['where'])}</code>"
                     f'<br><span class="muted">{seen}. Source: {_e(f["source"])}</span></li>')
    return (f"<h2>Findings ({len(findings)})</h2><p class=\"muted\">A finding is a weakness the chain's own "
            "configuration predicts and a case observed; it is not a failure of the harness or of the emulation. "
            "Accept one with its reason under <code>accept:</code> in the chain file.</p>"
            f'<ul class="findings">{"".join(items)}</ul>')


def _layout(layout: Any) -> str:
    """How the variants ran: lanes of the chain's own processes, the processes of their own and why (issue 21)."""
    lines = layout_lines(layout or {})
    if not lines:
        return ""
    return f'<p class="muted">{"<br>".join(_e(line.strip()) for line in lines)}</p>'


def _identities(modes: Any) -> str:
    """Per identity of a chain file: its own certificate ("real") or a shadow-PKI stand-in ("shadow")."""
    if not modes:
        return ""
    items = ", ".join(f"{_e(name)}: <b>{_e(mode)}</b>" for name, mode in sorted(modes.items()))
    return (f'<p class="muted">Certificates per identity of the chain file — real: your certificate and key; '
            f"shadow: a stand-in with the same profile and trust, harness-made key — {items}</p>")
