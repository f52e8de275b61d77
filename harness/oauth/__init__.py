"""OAuth: the local Entra-shaped token issuer the APIM stand-in trusts, and the summary of an APIM
``validate-jwt`` policy.

May import: :mod:`harness.model` and :mod:`harness.errors`.
"""

from __future__ import annotations
