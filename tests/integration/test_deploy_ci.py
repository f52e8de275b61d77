"""The CI files users copy (deploy/ci/): each validates against its service's published schema, as vendored by
check-jsonschema (GitHub workflow schema; Azure Pipelines schema, which types scalars as strings), and the
pull-request workflows run the twin of the chain file and post reports/summary.md (docs/findings.md, issue 17)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CI = Path(__file__).resolve().parents[2] / "deploy" / "ci"
CHECK = Path(sys.executable).with_name("check-jsonschema")


@pytest.mark.parametrize(("schema", "pattern"), [("vendor.github-workflows", "github-actions-*.yml"),
                                                 ("vendor.azure-pipelines", "azure-pipelines-*.yml")])
def test_each_workflow_validates_against_its_services_schema(schema: str, pattern: str) -> None:
    files = sorted(CI.glob(pattern))
    assert len(files) == 2  # nightly and pr
    out = subprocess.run([str(CHECK), "--regex-variant", "nonunicode", "--builtin-schema", schema, *map(str, files)],
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["github-actions-pr.yml", "azure-pipelines-pr.yml"])
def test_the_pr_workflows_run_the_twin_and_post_the_summary(name: str) -> None:
    text = (CI / name).read_text()
    doc = yaml.safe_load(text)
    assert "pull_request" in doc.get(True, doc.get("on", {})) or "pr" in doc  # YAML 1.1 reads `on:` as True
    assert "mtls-harness chain check" in text
    assert "mtls-harness run -n auto --report reports" in text
    assert "reports/summary.md" in text
    assert "MTLS_HARNESS_CHAIN: mtls-chain/chain.yaml" in text
