"""The workflow through a real one-node SLURM cluster, with profiles/slurm and the executor plugin.

The test starts munged, slurmctld and slurmd itself (tests/slurm/cluster.py), with one fake GPU
on the node, runs a tiny GPU config (`resources: {gpu: 1}`, so the training jobs ask for
`--gres=gpu:fake:1`; the code falls back to the CPU) with `--profile profiles/slurm`, and checks
that the training jobs went through SLURM and that the results equal a local `--cores 2` run's.
Needs SLURM and munge installed (Debian: `apt-get install slurm-wlm munge`) and root; skipped
otherwise. `pytest -s tests/test_slurm.py` prints the number of SLURM jobs and the wall time.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("repel_test_slurm_cluster", ROOT / "tests/slurm/cluster.py")
cluster_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster_mod)

pytestmark = pytest.mark.skipif(bool(cluster_mod.blocked()), reason=str(cluster_mod.blocked()))

PARTITION, GPU_TYPE = "test", "fake"
TINY = {
    "datasets": ["digits"],
    "models": ["cnn"],
    "seeds": [0],
    "threads": 1,
    "device": "auto",
    # the GPU request path: every training job asks for gres=gpu:fake:1 (get_gres in common.smk)
    "resources": {"gpu": 1, "gpu_model": GPU_TYPE, "mem_mb": 500, "runtime": 10},
    "base": {"epochs": 2},
    "continuation": {
        "defaults": {"epochs": 2, "lr": 0.01, "schedule": "constant", "kernel": "rbf", "width": 1.0, "distance": "sum"},
        "families": {"push": {"sweep": {"strength": [10]}}},
    },
    "pack": "off",  # one job per run: these tests follow single jobs (packs: tests/test_workflow.py)
}
# several trainings in one SLURM job (profiles/slurm's commented `groups`)
GROUPS = ["continue_run=train", "landscape=train"]
TIMING = ["epoch_seconds", "train_seconds", "images_per_second"]
# What the test adds to profiles/slurm: this cluster's partition, no account, and squeue for the
# job status (sacct needs slurmdbd, which the test cluster does not run; MinJobAge keeps finished
# jobs in squeue). The others only make the test faster or leave evidence behind.
SLURM_ARGS = [
    "--profile",
    str(ROOT / "profiles/slurm"),
    "--default-resources",
    f"slurm_partition={PARTITION}",
    "--slurm-no-account",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",
]
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))
    env = cluster_mod.clean_env()
    # the jobs run `python -m repel` in the job step, with the submitting shell's environment
    # (sbatch --export=ALL): this interpreter's directory must come first on PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    (workdir / "snakemake.out").write_text(result.stdout + result.stderr)
    return result


def table(path: Path) -> pd.DataFrame:
    """An aggregate table without its timing columns, its rows in a fixed order."""
    df = pd.read_parquet(path)
    df = df.drop(columns=[c for c in TIMING if c in df.columns])
    keys = [c for c in ("phase", "split", "dataset", "model", "run", "seed", "epoch", "alpha") if c in df.columns]
    return df.sort_values(keys).reset_index(drop=True)


class SlurmRun:
    """A finished snakemake run on the cluster: its output, the SLURM jobs it submitted, its time."""

    def __init__(self, workdir: Path, result: subprocess.CompletedProcess, seconds: float):
        self.workdir, self.seconds = workdir, seconds
        self.output = result.stdout + result.stderr
        self.submitted = {m[2]: Path(m[3]) for m in SUBMITTED.finditer(self.output)}  # SLURM id -> log


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = cluster_mod.Cluster(tmp_path_factory.mktemp("slurm"), partition=PARTITION, gpu_type=GPU_TYPE)
    try:
        t0 = time.monotonic()
        cluster.start()
        print(f"\n[slurm] cluster started in {time.monotonic() - t0:.1f} s (state and logs: {cluster.root})")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("local")
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return workdir


def run_on(cluster, workdir: Path, *args: str, what: str) -> SlurmRun:
    t0 = time.monotonic()
    result = snakemake(workdir, *SLURM_ARGS, *args)
    run = SlurmRun(workdir, result, time.monotonic() - t0)
    assert result.returncode == 0, f"{run.output[-6000:]}\n{cluster.logs()}"
    print(
        f"\n[slurm] {what}: {len(run.submitted)} jobs submitted to SLURM "
        f"(ids {', '.join(run.submitted)}), wall time {run.seconds:.1f} s"
    )
    return run


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> SlurmRun:
    return run_on(cluster, tmp_path_factory.mktemp("on_slurm"), what="workflow on SLURM")


def test_training_jobs_went_through_slurm_with_a_gpu_request(slurm_run, cluster, record_property):
    record_property("slurm_jobs_submitted", len(slurm_run.submitted))
    record_property("slurm_wall_seconds", round(slurm_run.seconds, 1))
    # every job of a rule that is not a local rule was submitted, and nothing else
    remote = Counter(re.findall(r"^rule (\w+):$", slurm_run.output, re.M))
    local = set(re.findall(r"^localrule (\w+):$", slurm_run.output, re.M))
    assert {"train_base": 1, "continue_run": 2}.items() <= remote.items(), remote
    assert {"prepare_data", "aggregate", "plot_family"} <= local, local
    jobs, completed = cluster.jobs(), cluster.jobcomp()
    submitted = Counter()
    for jobid, log in slurm_run.submitted.items():
        job = jobs[jobid]  # slurmctld knows it (MinJobAge keeps finished jobs)
        rule = re.match(r"rule_(\w+?)_wildcards_", job["Comment"])[1]
        submitted[rule] += 1
        assert job["JobState"] == "COMPLETED", job
        assert job["Partition"] == PARTITION and job["WorkDir"] == str(slurm_run.workdir), job
        assert job["TresPerNode"] == f"gres:gpu:{GPU_TYPE}:1", job  # what get_gres asked for
        assert "JobState=COMPLETED" in completed[jobid]  # slurmctld's completion record
        # the plugin's log of the job: the job step's snakemake ran the rule there
        assert log.is_file() and log.is_relative_to(slurm_run.workdir / ".snakemake/slurm_logs"), log
        assert f"rule {rule}:" in log.read_text()
    assert submitted == remote, (submitted, remote)
    assert {p.name for p in (slurm_run.workdir / ".snakemake/slurm_logs").iterdir()} == {
        f"rule_{rule}" for rule in remote
    }
    # no CUDA behind the fake GPU: the trainings fell back to the CPU (device: auto)
    for rule in ("train_base", "continue_run"):
        for log in (slurm_run.workdir / "results/logs" / rule).rglob("*.log"):
            assert "device: cpu" in log.read_text(), log


def assert_same_results(workdir: Path, reference: Path) -> None:
    """Every aggregate table equals the reference run's, bit for bit, but for the timings."""
    tables = sorted(p.name for p in (reference / "results/aggregate").glob("*.parquet"))
    assert "metrics.parquet" in tables
    for name in tables:
        pd.testing.assert_frame_equal(
            table(workdir / "results/aggregate" / name),
            table(reference / "results/aggregate" / name),
            check_exact=True,
            obj=name,
        )


def test_results_equal_a_local_run(slurm_run, local_run):
    assert_same_results(slurm_run.workdir, local_run)


def test_grouped_trainings_share_one_gpu(slurm_run, local_run, cluster, tmp_path_factory):
    """profiles/slurm's commented grouping: the trainings of a group job share its one GPU."""
    workdir = tmp_path_factory.mktemp("grouped")
    shutil.copytree(slurm_run.workdir, workdir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("slurm_logs"))
    run = run_on(
        cluster,
        workdir,
        "--forcerun",
        "continue_run",
        "--groups",
        *GROUPS,
        "--group-components",
        "train=2",
        "--verbose",
        what="grouped continuations on SLURM",
    )
    assert len(run.submitted) == 1, run.submitted  # both runs, and their landscapes, in one SLURM job
    [(jobid, log)] = run.submitted.items()
    assert log.parent.name.startswith("group_train") and log.is_relative_to(workdir / ".snakemake/slurm_logs"), log
    [call] = re.findall(r"sbatch call: (.*)", run.output)
    assert " --gres=gpu:fake:1 " in call + " " and "--gpus" not in call, call  # gpu:1, not gpu:2
    assert "--cpus-per-task=2" in call and "--mem 1000" in call, call  # threads and memory add up
    job = cluster.jobs()[jobid]
    assert job["JobState"] == "COMPLETED" and job["TresPerNode"] == f"gres:gpu:{GPU_TYPE}:1", job
    assert len(re.findall(r"^rule continue_run:$", log.read_text(), re.M)) >= 2
    assert_same_results(workdir, local_run)
