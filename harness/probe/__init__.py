"""One probe: one handshake with a chosen identity, trust, SNI and TLS bounds, one HTTP request, and a
:class:`~harness.probe.handshake.ProbeResult` in the one outcome vocabulary (:mod:`~harness.probe.outcomes`).

May import: :mod:`harness.model` and :mod:`harness.errors`.
"""

from __future__ import annotations
