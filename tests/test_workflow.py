"""The whole Snakemake workflow on a tiny config, in a temporary directory, with --cores 2."""

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from repel import grid

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "datasets": ["digits"],
    "models": ["cnn"],
    "seeds": [0],
    "base": {"epochs": 2},
    "continuation": {
        "defaults": {"epochs": 2, "lr": 0.01, "schedule": "constant", "kernel": "rbf", "width": 1.0,
                     "distance": "sum", "strength": 10},
        "families": {
            "width": {"sweep": {"width": [1.0, 0.5]}},
            "unstable": {"sweep": {"lr": [1e6]}, "figure": "final"},  # a loss that becomes NaN
        },
    },
}
RUNS = ["s0_lr0.01-const-e2", "s10-rbf-w1_lr0.01-const-e2", "s10-rbf-w0.5_lr0.01-const-e2"]
DIVERGED = ["s0_lr1e6-const-e2", "s10-rbf-w1_lr1e6-const-e2"]


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """rule -> job count from a dry run's 'Job stats' table."""
    assert result.returncode == 0, result.stderr + result.stdout
    table = (result.stdout + result.stderr).split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir, TINY, "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def test_metrics_table_has_the_schema_and_one_row_per_run_and_epoch(finished):
    df = pd.read_parquet(finished / "results/aggregate/metrics.parquet")
    for column in ("epoch", "lr", "train_loss", "train_ce", "train_acc", "penalty", "val_loss", "val_acc",
                   "test_loss", "test_acc", "dist", "dist_rel", "dist_min", "weight_norm", "grad_ratio",
                   "epoch_seconds", "train_seconds", "images_per_second", "diverged", "phase", "dataset", "model", "seed",
                   "run", "label", "control", "strength", "kernel", "width", "gamma", "lr_init", "schedule"):
        assert column in df.columns, column
    runs = df[(df["phase"] == "continue") & df["run"].isin(RUNS)]
    assert len(df[df["phase"] == "base"]) == 2
    assert sorted(df.loc[df["phase"] == "continue", "run"].unique()) == sorted(RUNS + DIVERGED)
    assert len(runs) == 3 * 2
    assert runs["epoch"].min() == 3  # continuation epochs follow the checkpoint's
    assert set(runs["control"]) == {"s0_lr0.01-const-e2"}
    assert set(runs["label"]) == {"control", "width"}
    assert "lr_steps" not in df.columns  # per-step lrs stay in each run's own table
    assert runs.loc[runs["strength"] == 0, "penalty"].eq(0).all()
    assert runs.loc[runs["strength"] > 0, "penalty"].gt(0).all()


def test_summary_has_one_row_per_grid_point(finished):
    summary = pd.read_csv(finished / "results/aggregate/summary.csv")
    assert sorted(summary["run"]) == sorted(RUNS + DIVERGED)
    assert {"final_val_acc", "final_test_acc", "final_dist", "max_val_acc_drop", "diverged"} <= set(summary.columns)
    assert "| control" in (finished / "results/aggregate/summary.md").read_text()


def test_every_family_has_its_figure_as_png_and_pdf(finished):
    for family in TINY["continuation"]["families"]:
        png = finished / f"results/plots/families/{family}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (finished / f"results/plots/families/{family}.pdf").read_bytes()[:4] == b"%PDF"


def test_a_run_whose_loss_becomes_nan_is_marked_diverged_and_the_workflow_goes_on(finished):
    summary = pd.read_csv(finished / "results/aggregate/summary.csv").set_index("run")
    assert summary.loc[DIVERGED, "diverged"].all() and not summary.loc[RUNS, "diverged"].any()
    df = pd.read_parquet(finished / "results/aggregate/metrics.parquet")
    for rid in DIVERGED:  # stopped at the first epoch whose loss is not finite
        rows = df[df["run"] == rid]
        assert len(rows) == 1 and rows["diverged"].iloc[-1]
    assert "| 1/1" in (finished / "results/aggregate/summary.md").read_text()  # diverged seeds / seeds
    assert "diverged at epoch 3" in (finished / f"results/logs/continue_run/digits/cnn/{DIVERGED[0]}/seed0.log").read_text()


def test_every_job_wrote_its_log(finished):
    logs = list((finished / "results/logs").rglob("*.log"))
    # data, base, 5 runs and their landscapes, aggregate, aggregate_landscape, 2 families, plot_landscape
    assert len(logs) == 1 + 1 + 5 + 5 + 1 + 1 + 2 + 1
    assert "epoch    4/4" in (finished / f"results/logs/continue_run/digits/cnn/{RUNS[1]}/seed0.log").read_text()


def test_a_new_grid_point_runs_only_itself_and_what_follows(finished):
    config = copy.deepcopy(TINY)
    config["continuation"]["families"]["width"]["sweep"]["width"].append(2.0)
    # the new point's run and landscape, the tables, and every family's figure (the table changed)
    assert planned_jobs(snakemake(finished, config, "-n")) == {
        "continue_run": 1, "landscape": 1, "aggregate": 1, "aggregate_landscape": 1, "plot_family": 2,
        "plot_landscape": 1, "all": 1}


def test_changing_the_base_training_reruns_everything_downstream(finished):
    config = copy.deepcopy(TINY)
    config["base"]["lr"] = 0.02
    assert planned_jobs(snakemake(finished, config, "-n")) == {
        "train_base": 1, "continue_run": 5, "landscape": 5, "aggregate": 1, "aggregate_landscape": 1, "plot_family": 2,
        "plot_landscape": 1, "all": 1}


def test_nothing_to_do_when_nothing_changed(finished):
    result = snakemake(finished, TINY, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.parametrize("change, names", [
    (lambda c: c["continuation"]["families"]["width"].update(fixed={"kernel": "gauss"}), ["kernel", "gauss"]),
    (lambda c: c["continuation"]["families"]["width"]["sweep"].update(width=[-1]), ["width", "-1"]),
    (lambda c: c["continuation"]["families"]["width"]["sweep"].update(colour=[1]), ["colour"]),
    (lambda c: c["continuation"]["defaults"].pop("strength"), ["continuation.families.", "no strength"]),
    (lambda c: c.pop("datasets"), ["datasets", "required"]),
    (lambda c: c["base"].update(epoch=3), ["epoch", "Additional properties"]),
])
def test_a_bad_config_stops_before_any_job_and_names_the_key(tmp_path, change, names):
    config = copy.deepcopy(TINY)
    change(config)
    result = snakemake(tmp_path, config, "--cores", "1")
    assert result.returncode != 0
    for name in names:
        assert name in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_lint_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_given_config_replaces_the_embedded_default(tmp_path):
    config = copy.deepcopy(TINY)
    defaults = config["continuation"]["defaults"]
    defaults["gamma"] = defaults.pop("width")  # would clash with the default config's width if merged
    config["continuation"]["families"] = {"push": {"sweep": {"strength": [10]}}}
    config["landscape"] = False
    assert planned_jobs(snakemake(tmp_path, config, "-n")) == {
        "prepare_data": 1, "train_base": 1, "continue_run": 2, "aggregate": 1, "plot_family": 1, "all": 1}


def test_the_study_config_expands_to_every_grid_point_seed_model_and_dataset(tmp_path):
    study = yaml.safe_load((ROOT / "config/study.yaml").read_text())
    jobs = planned_jobs(snakemake(tmp_path, study, "-n"))
    cells = len(study["datasets"]) * len(study["models"])
    seeds = set(study["seeds"]) | set(study["ensembles"]["seeds"])  # independent seeds train bases too
    runs = grid.expand(study["continuation"], study["seeds"], study["ensembles"])
    assert jobs["train_base"] == cells * len(seeds)
    assert jobs["continue_run"] == cells * sum(len(run["seeds"]) for run in runs.values())
    assert jobs["predict"] == cells * 4 and jobs["landscape"] == jobs["continue_run"]
    assert jobs["plot_family"] == len(study["continuation"]["families"])
    assert set(study["continuation"]["families"]) >= FAMILIES


# every family of the study, and how many grid points (with their controls) it has in the default config
FAMILIES = {"baseline", "strength", "width", "kernel", "multiple", "merge", "lr", "schedule", "epochs"}
DEFAULT_POINTS = {"baseline": 2, "strength": 3, "width": 3, "kernel": 4, "multiple": 2, "merge": 3, "lr": 4,
                  "schedule": 4, "epochs": 4}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_of_the_default_config_expands_to_its_points_and_their_controls(tmp_path, family):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["continuation"]["families"] = {family: config["continuation"]["families"][family]}
    config.pop("ensembles")
    config["landscape"] = False
    jobs = planned_jobs(snakemake(tmp_path, config, "-n"))
    assert jobs["continue_run"] == DEFAULT_POINTS[family] * len(config["seeds"])
    assert jobs["plot_family"] == 1


def test_landscape_table_covers_every_run_from_minus_half_to_one_and_a_half(finished):
    df = pd.read_parquet(finished / "results/aggregate/landscape.parquet")
    assert sorted(df["run"].unique()) == sorted(RUNS + DIVERGED)  # diverged runs too, with NaN losses
    for _, run in df[df["run"].isin(RUNS)].groupby("run"):
        assert len(run) >= 21 and run["alpha"].min() == -0.5 and run["alpha"].max() == 1.5
        assert {0.0, 1.0} <= set(run["alpha"]) and (run["barrier"] >= 0).all()
    assert (finished / "results/plots/landscape.png").read_bytes()[:4] == b"\x89PNG"


def test_every_ensemble_method_is_evaluated_from_stored_predictions(tmp_path):
    config = copy.deepcopy(TINY)
    config.update(landscape=False, ensembles={"members": 2, "cycle": 1, "strength": 10, "seeds": [0, 1]})
    result = snakemake(tmp_path, config, "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    summary = pd.read_csv(tmp_path / "results/aggregate/ensemble_summary.csv")
    assert sorted(summary["method"]) == ["distance", "independent", "sgdr", "sgdr_distance"]
    assert (summary["members"] == 2).all() and summary["accuracy"].between(0, 1).all()
    curves = pd.read_parquet(tmp_path / "results/aggregate/ensembles.parquet")
    assert sorted(curves["m"].unique()) == [1, 2]
    pairs = pd.read_parquet(tmp_path / "results/aggregate/ensemble_pairs.parquet")
    assert len(pairs) == 4  # one pair per method
    between = pd.read_parquet(tmp_path / "results/aggregate/member_landscape.parquet")
    assert sorted(between["method"].unique()) == sorted(summary["method"])
    assert (between.groupby("method")["pair"].nunique() == 1).all()  # 2 members: one line each
    assert (summary["mean_member_barrier"] >= 0).all()
    for figure in ("ensemble_accuracy", "ensemble_disagreement", "diversity_vs_distance"):
        assert (tmp_path / f"results/plots/{figure}.png").read_bytes()[:4] == b"\x89PNG"
    # members of the snapshot methods: one per cycle of the first seed's run (epochs 3 and 4)
    snapshots = tmp_path / "results/continue/digits/cnn/s10-rbf-w1-every1_lr0.01-const-e2/seed0/snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["epoch3.pt", "epoch4.pt"]
    # evaluating again (another metric, another m) re-runs no network, only the evaluation and its plots
    jobs = planned_jobs(snakemake(tmp_path, config, "-n", "--forcerun", "evaluate_ensembles"))
    assert jobs == {"evaluate_ensembles": 1, "plot_ensembles": 1, "all": 1}


def test_a_lost_table_is_made_again_even_if_no_rule_reads_it(finished, tmp_path):
    table = finished / "results/aggregate/summary.parquet"
    kept = tmp_path / "summary.parquet"
    shutil.copy2(table, kept)
    table.unlink()
    try:
        assert "aggregate" in planned_jobs(snakemake(finished, TINY, "-n"))
    finally:
        shutil.copy2(kept, table)


def test_the_report_embeds_the_figures_and_tables(finished):
    result = snakemake(finished, TINY, "--report", str(finished / "report.html"))
    assert result.returncode == 0, result.stderr[-3000:]
    html = (finished / "report.html").read_text()
    for name in ("width.png", "unstable.png", "landscape.png", "summary.csv"):
        assert name in html, name
    # each family's caption names the config file and quotes the family's block
    assert html.count(f"from the config {finished / 'config.yaml'}") == len(TINY["continuation"]["families"])
    assert "[1000000.0]" in html


def test_the_local_profile_is_valid():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/local", "-n", "--quiet"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
