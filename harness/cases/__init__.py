"""The case catalogue: the case model and runner, and the cases every target runs (the handshake catalogue and
the OAuth cases).

May import: :mod:`harness.targets` and everything below it; never the CLI, the pytest plugin or the reports.
"""

from __future__ import annotations
