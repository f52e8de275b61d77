# The README's commands. `make run` and `make test` install what they need first (scripts/setup.sh).
PY := .venv/bin/python

.PHONY: setup run test test-unit test-local test-selftest test-gateway-api test-containers test-isolated lint bench clean

setup:
	@scripts/setup.sh

run: setup  ## the main job: the handshake suite on the local target, with a report in reports/
	$(PY) -m harness run --target local --report reports

# the whole test suite: lint (ruff, strict mypy, the import-layer contracts), the harness's own tests (tests/unit:
# no process started, seconds; tests/integration: real nginx, Envoy, Docker, namespaces) and the handshake suite on
# the local target, then the handshake suite on the containers target (needs Docker) and with every hop in its own
# network namespace (needs root); without Docker or root those two skip with the reason (CI sets
# MTLS_HARNESS_REQUIRE_TOOLS=1: they must run, and a case that skips for a reason its target did not declare fails).
# Every pytest run is in a random order (pytest-randomly, a dev extra): the seed is printed in the header
# ("Using --randomly-seed=N"); reproduce an order with `pytest -p randomly --randomly-seed=N ...`. The handshake
# suite's runs pass `--dist loadgroup`, as `mtls-harness run -n N` does: each xdist worker runs whole lanes and starts
# its chain with only its own (harness.xdist_lanes).
test: lint test-local test-selftest test-gateway-api test-containers test-isolated

test-unit: setup
	$(PY) -m pytest -p randomly -n 2 tests/unit

test-local: setup
	$(PY) -m pytest -p randomly -n 2 tests

# the self-test: every mutant of harness/selftest/mutants.py on the local chain must be caught by the case catalogue;
# (a mutant marked pending may survive only under --allow-pending, which CI does not pass)
test-selftest: setup
	$(PY) -m harness selftest

# the catalogue again with the ingress hop migrated to Gateway API: as Envoy Gateway, then as Application Gateway for
# Containers configures real Envoy (docs/gateway-api.md)
test-gateway-api: setup
	$(PY) -m pytest -p randomly -n 2 --dist loadgroup tests/e2e/test_handshakes.py --mtls-ingress gateway-api
	$(PY) -m pytest -p randomly -n 2 --dist loadgroup tests/e2e/test_handshakes.py --mtls-ingress gateway-api:agc

test-containers: setup
	@if docker info >/dev/null 2>&1; then $(PY) -m harness images build; \
	else echo "test-containers: no Docker engine reachable — the containers cases will skip"; fi
	$(PY) -m pytest -p randomly -n 2 --dist loadgroup tests/e2e --mtls-target containers
	$(PY) -m pytest -p randomly -n 2 --dist loadgroup tests/e2e/test_handshakes.py --mtls-target containers --mtls-ingress gateway-api
	$(PY) -m pytest -p randomly -n 2 --dist loadgroup tests/e2e/test_handshakes.py --mtls-target containers --mtls-ingress gateway-api:agc

test-isolated: setup
	$(PY) -m pytest -p randomly -n 2 --dist loadgroup tests/e2e --mtls-isolate

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf reports .pytest_cache .mypy_cache .ruff_cache
