"""The handshake suite, shipped inside the package so ``mtls-harness run`` works from any directory, installed from a
wheel or not: ``test_handshakes.py`` (one test per catalogue case, on whichever ``--mtls-target`` is selected) and
``test_posture.py`` (the Azure posture checks, ``--mtls-target azure`` only).

Top layer (with ``cli`` and ``pytest_plugin``): pytest imports these modules; nothing in the harness imports them.
``find_suite()`` in :mod:`harness.cli.run` hands their paths to pytest. In a checkout, ``tests/e2e`` re-exports them.
"""
