"""Running the workflow from the tests: snakemake on a config dict, in a work directory."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# the smallest config that runs: 2 epochs to the checkpoint, 2 after it, one family of two widths
TINY = {
    "datasets": ["digits"],
    "models": ["cnn"],
    "seeds": [0],
    "base": {"epochs": 2},
    "continuation": {
        "defaults": {
            "epochs": 2,
            "lr": 0.01,
            "schedule": "constant",
            "kernel": "rbf",
            "width": 1.0,
            "distance": "sum",
            "strength": 10,
        },
        "families": {"width": {"sweep": {"width": [1.0, 0.5]}}},
    },
}


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))  # keys sorted: a point's keys are named in that order
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(path),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def planned_outputs(result: subprocess.CompletedProcess) -> list[str]:
    """Every output path of a dry run's jobs."""
    assert result.returncode == 0, result.stderr + result.stdout
    lines = re.findall(r"^\s+output: (.*)$", result.stdout + result.stderr, re.M)
    return [path for line in lines for path in line.split(", ")]


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """rule -> job count from a dry run's 'Job stats' table."""
    assert result.returncode == 0, result.stderr + result.stdout
    table = (result.stdout + result.stderr).split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}
