"""The Azure posture checks in a checkout (they ship inside the package: harness/suite/test_posture.py)."""

from harness.suite.test_posture import *  # noqa: F403
