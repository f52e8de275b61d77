"""The chain as data: hops, listeners, upstreams, identities, the Ingress and its annotations, the PKI plan.

Owns :mod:`~harness.model.topology` (the one model every other package reads) and :mod:`~harness.model.wire` (the
names that travel on the wire: the hop-trace headers, the response-detail header, the stand-ins' Server names) and
:mod:`~harness.model.chainfile` (the chain file's shape: its keys, JSON Schema, YAML parsing with one-line errors).
May import: nothing of the harness but :mod:`harness.errors`.
"""

from __future__ import annotations
