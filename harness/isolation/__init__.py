"""Network namespaces: one per hop with no default route, the packet capture on every link, and the
in-namespace probe runner (a probe run by a child process inside a namespace, its result sent back as JSON).

May import: :mod:`harness.runtime`, :mod:`harness.probe`, :mod:`harness.model` and :mod:`harness.errors`.
"""

from __future__ import annotations
