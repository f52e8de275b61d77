"""``python -m harness.pod`` runs the echo pod (see :mod:`harness.pod.echo`)."""

from __future__ import annotations

import sys

from harness.pod.echo import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
