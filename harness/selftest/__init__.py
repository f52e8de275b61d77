"""The self-test: named misconfigurations ("mutants") applied to the harness's own local chain, and the case
catalogue run on each to prove that it catches them (``mtls-harness selftest``).

Layer: above ``cases`` and ``targets`` (it runs the catalogue on the local target), beside ``rotation``; imported
only by the CLI. mutants.py: the mutant catalogue; run.py: running the catalogue on a chain, judging a mutant.
"""

from __future__ import annotations

from harness.selftest.mutants import MUTANTS, Mutant, mutant_named
from harness.selftest.run import CatalogueRun, MutantResult, run_catalogue, run_mutant, select_cases

__all__ = ["MUTANTS", "CatalogueRun", "Mutant", "MutantResult", "mutant_named", "run_catalogue", "run_mutant",
           "select_cases"]
