"""Where the harness keeps the cert sets it generates: the user's cache directory, never site-packages nor the working
tree."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_root"]

#: the environment variable that moves the cache (a CI cache directory, a test's temp dir)
CACHE_ENV = "MTLS_HARNESS_CERT_CACHE"


def cache_root() -> Path:
    """Where :func:`cert_set_for` caches sets: ``$MTLS_HARNESS_CERT_CACHE`` if set, else ``cert-sets/`` in the
    user's cache directory (platformdirs: ``~/.cache/mtls-harness/`` on Linux, ``~/Library/Caches/mtls-harness/``
    on macOS, ``%LOCALAPPDATA%\\mtls-harness\\Cache\\`` on Windows) — never site-packages nor the working tree, so an
    installed tool and a checkout behave alike and a read-only install works."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mtls-harness", appauthor=False)) / "cert-sets"
