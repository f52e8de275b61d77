"""Container images of the chain's hops: which image each role uses (official or locally built), and
``images build``, which builds them from the binaries installed here.

May import: :mod:`harness.runtime`, :mod:`harness.render`, :mod:`harness.model` and :mod:`harness.errors`.
"""

from __future__ import annotations
