"""The handshake suite in a checkout: the cases ship inside the package (harness/suite/test_handshakes.py, what
``mtls-harness run`` runs from any directory); this module re-exports them so ``pytest tests/e2e`` runs them too."""

from harness.suite.test_handshakes import *  # noqa: F403
