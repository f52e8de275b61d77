"""`mtls-harness certs generate|check`: exit codes 0 (clean) / 1 (findings) / 2 (unusable input), one-line errors,

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in tests/unit/test_certs_cli.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness.pki.certset import CertSet
from tests.unit.test_certs_cli import MTLS_HARNESS, _one_error_line


# --- the installed command, end to end --------------------------------------------------------------------------
def test_installed_command_checks_a_set_and_reports_bad_input(pki_set: CertSet, tmp_path: Path) -> None:
    ok = subprocess.run([str(MTLS_HARNESS), "certs", "check", str(pki_set.directory), "--json"],
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    bad = subprocess.run([str(MTLS_HARNESS), "certs", "check", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2
    assert "does not exist" in _one_error_line(bad.stderr)
