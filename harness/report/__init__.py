"""Reports of a handshake-suite run: what ``mtls-harness run`` and ``pytest tests/e2e --mtls-report DIR`` write.

- :mod:`harness.report.results` — the results document (``results.json``): one record per case, no key material;
- :mod:`harness.report.collect` — the pytest plugin object that gathers the records (also from xdist workers) and
  writes the files;
- :mod:`harness.report.matrix` — the hop × case matrix (rich tables in the terminal);
- :mod:`harness.report.html` — ``index.html``: the chain diagram, the matrix and every case's handshake facts.

The submodules are imported where needed (the e2e suite imports only ``collect``), so this package imports nothing.
"""

from __future__ import annotations

__all__: list[str] = []
