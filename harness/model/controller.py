"""The ingress-nginx controller's own settings: its ``--enable-ssl-passthrough`` flag and the ConfigMap keys the harness
models, with the controller's defaults; Go's ``ParseBool`` as its annotations and keys use it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["CONTROLLER_DEFAULTS", "ControllerSettings", "parse_go_bool"]

#: Go's strconv.ParseBool, which ingress-nginx's boolean annotations use (parser/main.go 105-115;
#: https://pkg.go.dev/strconv#ParseBool): exactly these spellings, anything else is invalid
_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


def parse_go_bool(value: str | None) -> bool | None:
    """Go's ``strconv.ParseBool``: True/False, or None for a value Go refuses (``"yes"``, ``"on"``)."""
    return None if value is None else _GO_BOOLS.get(value)


#: the ingress-nginx ConfigMap keys the harness models, with the controller's defaults at controller-v1.15.1
#: (internal/ingress/controller/config/config.go NewDefault 751-923; docs/fidelity.md cites each line)
CONTROLLER_DEFAULTS: Mapping[str, str] = MappingProxyType({
    "ssl-protocols": "TLSv1.2 TLSv1.3",
    "ssl-ciphers": ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                    "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256"),
    "ssl-session-cache": "true",
    "ssl-session-cache-size": "10m",
    "ssl-session-tickets": "false",
    "ssl-session-timeout": "10m",
    "use-http2": "true",
    "hsts": "true",
    "hsts-include-subdomains": "true",
    "hsts-max-age": "31536000",
    "hsts-preload": "false",
    "upstream-keepalive-connections": "320",
    "upstream-keepalive-time": "1h",
    "upstream-keepalive-timeout": "60",
    "upstream-keepalive-requests": "10000",
    "proxy-ssl-location-only": "false",
    "annotations-risk-level": "High",
    "allow-snippet-annotations": "false",
    "ssl-reject-handshake": "false",
    "keep-alive": "75",  # config.go 809; nginx.tmpl 263 `keepalive_timeout {{ $cfg.KeepAlive }}s` (0: no keep-alive)
})


@dataclass(frozen=True)
class ControllerSettings:
    """The ingress-nginx controller's flag ``--enable-ssl-passthrough`` (default false, pkg/flags/flags.go 150) and
    its ConfigMap keys (:data:`CONTROLLER_DEFAULTS`; a key not given keeps the controller's default)."""

    enable_ssl_passthrough: bool = False
    config: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, key: str) -> str:
        return self.config.get(key, CONTROLLER_DEFAULTS[key])

    def flag(self, key: str) -> bool:
        return bool(parse_go_bool(self.get(key)))
