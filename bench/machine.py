"""The machine a bench run was taken on: cores, CPU model, load, and the versions of what the chain runs."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import load_average


def _out(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (done.stdout + done.stderr).strip()


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else "unknown"


def versions() -> dict[str, str]:
    from harness.runtime.binaries import find_envoy, find_nginx

    out: dict[str, str] = {"python": sys.version.split()[0]}
    try:
        m = re.search(r"/(\d+\.\d+\.\d+)/\S*/(\w+)", _out([str(find_envoy()), "--version"]))
        out["envoy"] = f"{m.group(1)} ({m.group(2)})" if m else "unknown"
    except Exception as exc:  # a missing binary is a fact about the machine, not an error of the bench
        out["envoy"] = f"unavailable ({exc})"
    try:
        m = re.search(r"nginx/(\S+)", _out([str(find_nginx()), "-v"]))
        out["nginx"] = m.group(1) if m else "unknown"
    except Exception as exc:
        out["nginx"] = f"unavailable ({exc})"
    out["openssl (CLI)"] = _out(["openssl", "version"]) if shutil.which("openssl") else "not installed"
    import ssl

    out["openssl (python ssl)"] = ssl.OPENSSL_VERSION
    if shutil.which("docker"):
        out["docker"] = _out(["docker", "version", "--format", "{{.Server.Version}}"]).splitlines()[-1]
    return out


def describe() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "load_average": load_average(),
        "versions": versions(),
    }
