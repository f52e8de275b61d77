"""Security properties and findings: which weaknesses the chain's OWN configuration has, predicted from the model.

A :class:`~harness.findings.predict.Finding` is a property of :data:`~harness.findings.predict.PROPERTIES` that the
chain's configuration breaks (``auth-tls-verify-client: optional``, ``proxy-ssl-verify`` off, a CA Secret that holds
other trust domains' roots, TLS 1.0 allowed, a backend check turned off, …), with the hop, what gets through and the
setting that causes it (:class:`~harness.findings.predict.Setting`; a chain file resolves it to ``file:line``).

:func:`~harness.findings.predict.predict` reads only the model. :func:`~harness.findings.predict.prediction_for`
tells the case runner what a case will see on a chain with findings: the case is then judged against that
prediction, and a weak outcome seen as predicted is a FINDING, not a failure (docs/findings.md).

May import: :mod:`harness.model`, :mod:`harness.probe.outcomes`, :mod:`harness.errors`.
"""

from __future__ import annotations
