"""The ``mtls-harness`` command: one module per command (run, certs, images, rotate; up/down/status in
:mod:`~harness.cli.main`), the options they share in :mod:`~harness.cli.options`.

May import anything of the harness; nothing imports it but ``harness.__main__`` and the console script.
"""

from __future__ import annotations
