# The README's commands. `make run` and `make test` install what they need first (scripts/setup.sh).
PY := .venv/bin/python

.PHONY: setup run test lint bench clean

setup:
	@scripts/setup.sh

run: setup  ## the main job: the handshake suite on the local target, with a report
	$(PY) -m harness run --target local --report reports

test: setup  ## the whole test suite (tests of the harness + the handshake suite on the local target)
	$(PY) -m pytest -n 2 tests

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf reports .pytest_cache .mypy_cache .ruff_cache
