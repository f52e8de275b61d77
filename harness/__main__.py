"""``python -m harness`` — the same as the ``mtls-harness`` command."""

from __future__ import annotations

from harness.cli.main import entry

if __name__ == "__main__":
    entry()
