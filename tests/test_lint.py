"""The tree is lint-clean and formatted as pyproject.toml configures: ruff (lint and format) for the
Python, snakefmt for the Snakefiles (snakemake --lint is tests/test_workflow.py's)."""

import subprocess
import sys

import pytest
from workflow_run import ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["snakefmt", "--check", "Snakefile", "workflow"]],
    ids=" ".join,
)
def test_the_tree_passes(command):
    result = _run(*command)  # both are dependencies: pip install -e . installs them
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
