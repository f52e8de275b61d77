"""The package's public API: every name in ``harness.__all__`` resolves, lazily."""

from __future__ import annotations

import subprocess
import sys


def test_the_public_api_resolves_every_name_it_lists() -> None:
    import harness

    assert harness.__all__ == sorted(harness._EXPORTS)
    for name in harness.__all__:
        assert getattr(harness, name) is not None, name


def test_importing_the_echo_pod_does_not_import_the_rest_of_the_harness() -> None:
    code = "import sys, harness.pod.echo; print(sorted(m for m in sys.modules if m.startswith('harness.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "harness.model.topology" not in out
    assert "harness.pki.certset" not in out
