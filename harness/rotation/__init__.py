"""The certificate rotation rehearsal: the plan (parse, simulate, static checks), the cert sets it mixes,
the live run on the local chain under load, and the verdicts.

May import: :mod:`harness.targets` and everything below it; never the CLI, the pytest plugin or the reports.
"""

from __future__ import annotations
