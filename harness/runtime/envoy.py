"""Envoy control: readiness through the admin interface, SDS counters, and the hot swap of one SDS secret.

The files themselves are rendered by :mod:`harness.render.envoy`; this module only talks to a running Envoy.
"""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Protocol

from harness.errors import HarnessError, UsageError
from harness.render.envoy import SECRETS, CertFiles, EnvoyConfig, SecretName, sds_secret_text, write_sds_file
from harness.runtime.wait import wait_until

__all__ = ["AdminPort", "envoy_ready", "rotate_envoy_secret", "sds_counters"]


class AdminPort(Protocol):
    """A rendered Envoy whose admin interface listens on 127.0.0.1 (a stand-in's EnvoyConfig, a GatewayApiEnvoy)."""

    @property
    def admin_port(self) -> int: ...


def _admin_get(config: AdminPort, path: str, timeout: float = 1.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", config.admin_port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def envoy_ready(config: AdminPort) -> bool:
    """True when the admin interface on 127.0.0.1:admin_port answers /ready with LIVE (listeners and SDS secrets
    loaded). False while it is not up yet (connection refused, a non-200 answer)."""
    try:
        status, body = _admin_get(config, "/ready")
    except OSError:
        return False
    return status == 200 and body.strip() == "LIVE"


def sds_counters(config: EnvoyConfig, which: SecretName) -> dict[str, int]:
    """Envoy's counters for one SDS secret (``update_success``, ``update_rejected``, …) from the admin stats."""
    try:
        status, body = _admin_get(config, f"/stats?filter=^sds\\.{which}\\.")
    except OSError as exc:
        raise HarnessError(f"{config.hop}: Envoy's admin on 127.0.0.1:{config.admin_port} is not reachable ({exc}) — "
                           "start the stand-in first, or pass wait=None to only write the SDS file") from exc
    if status != 200:
        raise HarnessError(f"{config.hop} admin /stats answered {status}: {body[:200]}")
    out: dict[str, int] = {}
    prefix = f"sds.{which}."
    for line in body.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith(prefix) and value.strip().isdigit():
            out[name[len(prefix):]] = int(value)
    return out


def rotate_envoy_secret(
    config: EnvoyConfig,
    which: SecretName,
    source: CertFiles | Path,
    *,
    wait: float | None = 5.0,
) -> None:
    """Swap one secret of a running stand-in: ``source`` is a cert set leaf for ``server``/``upstream-client``, a
    PEM bundle path (e.g. ``certs.trust_bundle("old-ca", "new-ca")``) for ``client-ca``/``upstream-ca``.

    The new SDS file is written beside the watched one and renamed over it. With ``wait`` (seconds) this returns
    once Envoy's ``sds.<which>.update_success`` counter has moved, and raises :class:`HarnessError` if Envoy rejected
    the secret or did not pick it up in time; ``wait=None`` only writes the file (Envoy not started yet).
    """
    if which not in SECRETS:
        raise UsageError(f"rotate_envoy_secret: {which!r} is not a secret — use one of {', '.join(SECRETS)}")
    if which not in config.secrets:
        raise UsageError(f"rotate_envoy_secret: the {config.hop} stand-in was rendered without a {which!r} secret "
                         f"(it has {', '.join(config.secrets)}) — change the topology and render it again")
    text = sds_secret_text(which, source)
    path = config.sds_path(which)
    previous = path.read_text() if path.is_file() else None
    if previous == text:
        return  # Envoy would see no change and count no update
    before = sds_counters(config, which) if wait is not None else {}
    write_sds_file(path, text)
    if wait is None:
        return

    def picked_up() -> bool:
        seen = sds_counters(config, which)
        if seen.get("update_rejected", 0) > before.get("update_rejected", 0):
            if previous is not None:  # put the secret in use back, so a restart does not load the rejected one
                write_sds_file(path, previous)
            raise HarnessError(f"{config.hop}: Envoy rejected the new {which!r} secret — check the PEM files (does "
                               "the key match the cert? is the bundle PEM?); the old secret stays in use. "
                               f"Envoy's reason is in its log")
        return seen.get("update_success", 0) > before.get("update_success", 0)

    wait_until(picked_up, f"{config.hop}: Envoy picking up the new {which!r} secret from {path}", timeout=wait,
               interval=0.02, max_interval=0.1)
