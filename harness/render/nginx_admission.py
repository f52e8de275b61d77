"""What ingress-nginx's admission webhook refuses, and which annotations the local stand-in does not model.

Sources (kubernetes/ingress-nginx at tag controller-v1.15.1; docs/fidelity.md has the ledger):

- snippets: with the ConfigMap's ``allow-snippet-annotations`` false (the default, config.go 765), ANY annotation key
  ending in ``-snippet`` is refused before parsing (internal/ingress/controller/controller.go 402-404);
- risk: every annotation has a risk level (docs/user-guide/nginx-configuration/annotations-risk.md); one above the
  ConfigMap's ``annotations-risk-level`` (default High, config.go 769; parsed case-insensitively, an unknown value
  is Low: parser/main.go 200-211) refuses the Ingress (parser/validators.go 253-265);
- ``auth-tls-match-cn``: the part after ``CN=`` must compile as a Go ``regexp`` (RE2 syntax,
  parser/validators.go 127-139): checked here with the RE2 library itself (google-re2), so a lookahead that Python's
  ``re`` or nginx's PCRE would take is refused as the controller refuses it.

The webhook's own message does not carry the value (internal/ingress/errors/errors.go 126-145); the harness's line
names the annotation, the value and the rule, and says the fix.
"""

from __future__ import annotations

import re2

from harness.model.controller import ControllerSettings
from harness.model.topology import ANNOTATION_PREFIX, Ingress, IngressHop

__all__ = ["MODELLED_ANNOTATIONS", "RISK", "admission_refusal", "annotation_warnings", "re2_error"]

_LEVELS = ("low", "medium", "high", "critical")

#: annotation → risk (annotations-risk.md at controller-v1.15.1, line in the ledger); only these are checked
RISK: dict[str, str] = {
    **dict.fromkeys(("configuration-snippet", "server-snippet", "auth-snippet", "modsecurity-snippet",
                     "stream-snippet"), "Critical"),
    **dict.fromkeys(("server-alias", "auth-tls-error-page", "auth-tls-match-cn", "proxy-ssl-name", "auth-url",
                     "auth-signin", "mirror-target", "mirror-host", "upstream-hash-by"), "High"),
    **dict.fromkeys(("allowlist-source-range", "whitelist-source-range", "denylist-source-range", "rewrite-target",
                     "auth-tls-secret", "auth-tls-verify-client", "proxy-ssl-secret", "proxy-ssl-ciphers",
                     "force-ssl-redirect"), "Medium"),
    **dict.fromkeys(("ssl-ciphers", "ssl-prefer-server-ciphers", "ssl-passthrough", "custom-http-errors",
                     "backend-protocol", "use-regex", "proxy-ssl-protocols", "proxy-ssl-verify",
                     "proxy-ssl-verify-depth", "proxy-ssl-server-name", "auth-tls-verify-depth",
                     "auth-tls-pass-certificate-to-upstream"), "Low"),
}

#: the annotations the local stand-in renders (docs/ingress-nginx-fidelity.md); any other one is a warning
MODELLED_ANNOTATIONS = frozenset({
    "auth-tls-secret", "auth-tls-verify-client", "auth-tls-verify-depth", "auth-tls-error-page",
    "auth-tls-pass-certificate-to-upstream", "auth-tls-match-cn", "backend-protocol", "proxy-ssl-secret",
    "proxy-ssl-verify", "proxy-ssl-verify-depth", "proxy-ssl-ciphers", "proxy-ssl-protocols", "proxy-ssl-name",
    "proxy-ssl-server-name", "ssl-passthrough",
})


def _level(value: str) -> int:
    value = value.strip().lower()
    return _LEVELS.index(value) if value in _LEVELS else 0


def re2_error(pattern: str) -> str | None:
    """RE2's reason for refusing ``pattern`` (e.g. "invalid perl operator: (?="), or None when it compiles."""
    options = re2.Options()
    options.log_errors = False  # the library would print to stderr; the caller says it in one line
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        msg = exc.args[0] if exc.args else exc
        return msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
    return None


def admission_refusal(ing: Ingress, controller: ControllerSettings) -> str | None:
    """The one line the admission webhook's refusal of ``ing`` comes down to, or None when it accepts it."""
    who = f"Ingress {ing.namespace}/{ing.name}: annotation"
    snippets_ok = controller.flag("allow-snippet-annotations")
    max_risk = controller.get("annotations-risk-level")
    for key, value in ing.annotations.items():
        if key.endswith("-snippet") and not snippets_ok:
            return (f"{who} {ANNOTATION_PREFIX}{key}={value!r} is refused: snippet directives are disabled "
                    "(ConfigMap allow-snippet-annotations is false; ingress-nginx controller.go 402-404) — remove "
                    "the annotation, or set ingress.config_map allow-snippet-annotations: \"true\"")
        risk = RISK.get(key)
        if risk is not None and _level(risk) > _level(max_risk):
            return (f"{who} {ANNOTATION_PREFIX}{key}={value!r} is refused: its risk {risk} is above "
                    f"annotations-risk-level {max_risk} (ingress-nginx parser/validators.go 253-265) — remove the "
                    f"annotation, or raise ingress.config_map annotations-risk-level to {risk}")
    match_cn = ing.annotation("auth-tls-match-cn")
    if match_cn:
        why = "must start with CN=" if not match_cn.startswith("CN=") else re2_error(match_cn[3:])
        if why is not None:
            return (f"{who} {ANNOTATION_PREFIX}auth-tls-match-cn={match_cn!r} is refused: the part after CN= must "
                    f"be a Go regexp (RE2 syntax: no lookaround, no backreference; ingress-nginx "
                    f"parser/validators.go 127-139): {why} — rewrite the regex without it")
    return None


def annotation_warnings(hop: IngressHop) -> list[str]:
    """One line per annotation the local stand-in does not model (it is ignored here; the controller applies it)."""
    out = []
    for ing in hop.ingresses:
        for key in ing.annotations:
            if key not in MODELLED_ANNOTATIONS and not key.endswith("-snippet"):
                out.append(f"Ingress {ing.namespace}/{ing.name}: annotation {ANNOTATION_PREFIX}{key} is not "
                           "modelled by the local ingress stand-in (ignored here; the controller applies it)")
    return out
