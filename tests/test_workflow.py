"""The whole Snakemake workflow on a tiny config, in a temporary directory, with --cores 2.

The tiny config runs once (the `finished` fixture) and most tests read what it left or dry-run
changes of it; expected job counts are counted by hand from the config, not by the grid code.
"""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import workflow_run
import yaml
from workflow_run import ROOT, planned_jobs, planned_outputs, snakemake

from repel import models

TINY = copy.deepcopy(workflow_run.TINY)
TINY["continuation"]["families"]["unstable"] = {"sweep": {"lr": [1e6]}, "figure": "final"}  # a loss that becomes NaN
# 2 members 1 epoch apart; the independent seeds 0 and 1 train the width family's control
# (lr 0.01, constant, 2 epochs) for seed 1 too, a seed the config's families do not use
TINY["ensembles"] = {
    "members": 2,
    "cycle": 1,
    "strength": 10,
    "seeds": [0, 1],
    "fge": {"cycle": 1, "lr_low": 0.001},
    "swa": {"lr": 0.005},
    # shift and OOD through the workflow, in the predict jobs: one corruption, one severity, one set
    "shift": {"corruptions": ["contrast"], "severities": [5]},
    "ood": {"digits": ["inverted"]},
}
RUNS = ["s0_lr0.01-const-e2", "s10-rbf-w1_lr0.01-const-e2", "s10-rbf-w0.5_lr0.01-const-e2"]
DIVERGED = ["s0_lr1e6-const-e2", "s10-rbf-w1_lr1e6-const-e2"]
# the runs the ensemble methods take their members from (seed 0; independent: seeds 0 and 1)
ENSEMBLE_RUNS = {
    "distance": "s10-rbf-w1-every1_lr0.01-const-e2",
    "sgdr": "s0_lr0.01-sgdr1x1-e2",
    "sgdr_distance": "s10-rbf-w1-every1_lr0.01-sgdr1x1-e2",
    "independent": "s0_lr0.01-const-e2",
    "fge": "s0_lr0.01-cyc1min0.001-e2",
    "swa": "s0_lr0.01-swa0.005-e2",
    "snapshots": "s0_lr0.01-const-e2",  # the matching control: the independent seeds' run, with its snapshots
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir, TINY, "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def test_metrics_table_has_the_schema_and_one_row_per_run_and_epoch(finished):
    df = pd.read_parquet(finished / "results/aggregate/metrics.parquet")
    for column in (
        "epoch",
        "lr",
        "train_loss",
        "train_ce",
        "train_acc",
        "penalty",
        "val_loss",
        "val_acc",
        "test_loss",
        "test_acc",
        "dist",
        "dist_rel",
        "dist_min",
        "weight_norm",
        "grad_ratio",
        "step_cos",
        "radial_cos",
        "func_disagree",
        "func_kl",
        "epoch_seconds",
        "train_seconds",
        "images_per_second",
        "diverged",
        "phase",
        "dataset",
        "model",
        "seed",
        "run",
        "label",
        "control",
        "strength",
        "kernel",
        "width",
        "gamma",
        "lr_init",
        "schedule",
    ):
        assert column in df.columns, column
    runs = df[(df["phase"] == "continue") & df["run"].isin(RUNS)]
    assert len(df[df["phase"] == "base"]) == 2  # seed 0's two epochs
    assert sorted(df.loc[df["phase"] == "continue", "run"].unique()) == sorted(RUNS + DIVERGED)
    assert len(runs) == 3 * 2
    assert runs["epoch"].min() == 3  # continuation epochs follow the checkpoint's
    assert set(runs["control"]) == {"s0_lr0.01-const-e2"}
    assert set(runs["label"]) == {"control", "width"}
    assert "lr_steps" not in df.columns  # per-step lrs stay in each run's own table
    assert runs.loc[runs["strength"] == 0, "penalty"].eq(0).all()
    assert runs.loc[runs["strength"] > 0, "penalty"].gt(0).all()


# The stages that train nothing, as the workflow runs them ("ensembles" reads the numpy arrays
# predict wrote); "plot-method --hill", which trains a 2-D toy with the project's SGD, is not one.
TABLE_AND_FIGURE_STAGES = ["aggregate", "aggregate-landscape", "ensembles", "claims", "plot", "plot-method"]


def test_a_stage_that_trains_nothing_never_imports_torch(finished, tmp_path):
    from repel import grid

    res, out = finished / "results", tmp_path
    families = json.dumps(grid.families(TINY["continuation"]))
    width = json.dumps(grid.families(TINY["continuation"])["width"])
    metrics, landscape, summary = (
        str(res / f"aggregate/{name}.parquet") for name in ("metrics", "landscape", "summary")
    )
    ensembles = ["--ensembles", str(res / "aggregate/ensembles.parquet")]
    ensembles += ["--pairs", str(res / "aggregate/ensemble_pairs.parquet")]
    landscapes = list(map(str, res.glob("continue/**/landscape.parquet")))
    predictions = sorted(map(str, res.glob("ensembles/**/predictions.npz")))
    members = [p.replace("predictions.npz", "member_landscape.parquet") for p in predictions]
    family = ["--metrics", metrics, "--family", "width", "--spec", width]
    lines = ["--landscape", landscape, "--summary", summary, "--families", families]
    to, png = ["--out-dir", str(out)], ["--formats", "png"]
    stages = [
        ["aggregate", "--runs", *map(str, res.glob("*/*/*/**/metrics.parquet")), *to],
        ["aggregate-landscape", "--landscapes", *landscapes, "--out", str(out / "landscape.parquet")],
        ["ensembles", "--predictions", *predictions, "--member-landscapes", *members, "--out-dir", str(out / "ens")],
        ["claims", "--metrics", metrics, "--families", families, *ensembles, "--landscape", landscape, *to],
        ["plot", *family, *lines, *ensembles, "--claims", str(out / "claims.parquet"), *to, *png],
        ["plot-method", "--metrics", metrics, *to, *png],
    ]
    assert [argv[0] for argv in stages] == TABLE_AND_FIGURE_STAGES
    # every stage in one process, in the workflow's order, as each job would run it: after each,
    # is torch among the loaded modules?
    script = (
        "import json, sys\nfrom repel.cli import main\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    assert main(argv) == 0, argv\n"
        "    print(argv[0], 'torch' in sys.modules, flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(stages)], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = dict(
        line.rsplit(" ", 1) for line in result.stdout.splitlines() if line.split(" ")[0] in TABLE_AND_FIGURE_STAGES
    )
    assert loaded == dict.fromkeys(TABLE_AND_FIGURE_STAGES, "False")
    assert {"width.png", "landscape.png", "claims.png", "kernels.png"} <= {p.name for p in out.glob("*.png")}
    key = [
        "method",
        "ensemble",
        "m",
    ]  # the ensemble tables again from the stored predictions, as the workflow made them
    again, made = (pd.read_parquet(d / "ensembles.parquet").sort_values(key) for d in (out / "ens", res / "aggregate"))
    pd.testing.assert_frame_equal(again.reset_index(drop=True), made.reset_index(drop=True))


def test_each_run_directory_records_what_made_it(finished):
    from repel import spec

    records = sorted((finished / "results/continue/digits/cnn").glob("*/seed*/run.json"))
    assert len(records) >= len(RUNS) + len(DIVERGED)
    for path in records:
        record = json.loads(path.read_text())
        # the resolved spec names the directory it sits in, and the checkpoint is the seed's base
        assert spec.Run.of(record["spec"]).id == path.parent.parent.name
        assert record["checkpoint"] == f"results/base/digits/cnn/{path.parent.name}/checkpoint.pt"
        assert record["seed"] == int(path.parent.name.removeprefix("seed"))
        assert record["repel"] and record["command"][1] in ("continue", "continue-pack")


def test_controls_are_compared_over_the_configs_seeds_only(finished):
    """The independent-seeds ensemble trains the control for seed 1 too: that seed is the
    ensemble's, and neither the summary, the metrics table nor the figures' base curves pool it."""
    assert (finished / f"results/continue/digits/cnn/{RUNS[0]}/seed1/final.pt").exists()  # it was trained
    for table in ("metrics.parquet", "summary.parquet"):
        df = pd.read_parquet(finished / "results/aggregate" / table)
        assert set(df["seed"]) == set(TINY["seeds"]), table
    summary = pd.read_parquet(finished / "results/aggregate/summary.parquet")
    # only the families' runs: the ensembles' own runs are reported under the ensembles
    assert sorted(summary["run"]) == sorted(RUNS + DIVERGED)


def test_independent_members_are_measured_from_their_own_checkpoints(finished):
    def flat_parameters(path):
        ckpt = torch.load(path, weights_only=True)
        model = models.from_arch(ckpt["arch"])
        model.load_state_dict(ckpt["model"])
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    bases = [flat_parameters(finished / f"results/base/digits/cnn/seed{seed}/checkpoint.pt") for seed in (0, 1)]
    assert not torch.equal(bases[0], bases[1])
    ensembles = finished / "results/ensembles/digits/cnn"
    independent = np.load(ensembles / "independent/seeds0-1/predictions.npz")
    theta_c = torch.from_numpy(independent["theta_c"])
    assert torch.equal(theta_c, torch.stack(bases))  # member i from seed i's checkpoint
    distance = np.load(ensembles / "distance/seed0/predictions.npz")
    assert torch.equal(torch.from_numpy(distance["theta_c"]), torch.stack([bases[0], bases[0]]))  # both from seed 0's
    # the stored cosine of the two displacements, by hand from the weights and their own checkpoints
    d = torch.from_numpy(independent["weights"]) - torch.stack(bases)
    cosine = (d[0] @ d[1] / (d[0].norm() * d[1].norm())).item()
    pairs = pd.read_parquet(finished / "results/aggregate/ensemble_pairs.parquet").set_index("method")
    assert pairs.loc["independent", "displacement_cosine"] == pytest.approx(cosine, abs=1e-5)


def test_every_claim_has_a_verdict_and_one_seed_decides_none(finished):
    from repel.claims import CLAIMS

    claims = pd.read_parquet(finished / "results/aggregate/claims.parquet")
    assert len(claims) == len(CLAIMS) and claims["claim"].is_unique  # every claim, one dataset/model
    # the tiny config has the width family and ensembles; its other families are not run
    by_family = claims.groupby("family")["verdict"].agg(set)
    assert by_family["baseline"] == {"not run"} and by_family["width"] == {"inconclusive"}
    assert set(claims["verdict"]) == {"inconclusive", "not run"}  # one seed decides nothing
    assert (finished / "results/plots/claims.png").read_bytes()[:4] == b"\x89PNG"


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
    # the two runs at lr 1e6 trained as one pack; the pack's log names each run that stopped
    log = (finished / "results/logs/continue_pack/digits/cnn/lr1e6-const-e2_seed0.log").read_text()
    assert all(f"{run}: diverged at epoch 3" in log for run in DIVERGED), log


def test_every_job_wrote_its_log(finished):
    logs = list((finished / "results/logs").rglob("*.log"))
    # data, 2 bases (seeds 0, 1); 6 training jobs for 11 runs: 3 packs (lr 0.01 constant: the width
    # family's 3 runs and distance; lr 1e6: 2 runs; SGDR and SGDR + distance), alone the control for
    # seed 1, FGE and SWA; 2 landscape jobs for the 5 family runs (the first two packs); 7
    # predictions (one per method, the matching control's too, each with its members' landscape
    # and their predictions under shift), aggregate, aggregate_landscape, evaluate_ensembles,
    # 2 families, plot_landscape, plot_ensembles, claims, plot_claims, plot_kernels, plot_hill_2d;
    # prepare_shift, shift_table, ood_table, plot_shift
    assert len(logs) == 1 + 2 + 6 + 2 + 7 + 1 + 1 + 1 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 4
    pack = (finished / "results/logs/continue_pack/digits/cnn/lr0.01-const-e2_seed0.log").read_text()
    assert f"{RUNS[1]}: epoch    4/4" in pack
    assert "one member after another with train.fit (a conv net on a CPU: batching" in pack  # nobody asked
    predict = (finished / "results/logs/predict/digits/cnn/fge/seed0.log").read_text()
    assert "loss barrier from" in predict and "member_landscape.parquet" in predict
    assert "under shift: corrupted test splits 1 " in predict and "OOD sets inverted" in predict


def training_jobs(jobs: dict[str, int]) -> dict[str, int]:
    return {rule: n for rule, n in jobs.items() if rule.startswith("continue_")}


def test_a_new_grid_point_reruns_only_the_pack_it_joins_and_what_follows(finished):
    config = copy.deepcopy(TINY)
    config["continuation"]["families"]["width"]["sweep"]["width"].append(2.0)
    jobs = planned_jobs(snakemake(finished, config, "-n"))
    # the pack of lr 0.01, constant, 2 epochs, seed 0 gains the point: that one job re-trains
    ((pack, n),) = training_jobs(jobs).items()
    assert pack.startswith("continue_pack_") and n == 1
    # the landscapes of its compared runs (one job, as the pack), the tables and the figures
    assert [n for rule, n in jobs.items() if rule.startswith("landscape")] == [1]
    assert jobs["aggregate"] == 1 and jobs["plot_family"] == 2


def test_without_packs_a_new_grid_point_runs_only_itself_and_what_follows(tmp_path):
    config = copy.deepcopy(workflow_run.TINY)  # the width family alone: 3 runs
    config.update(pack="off", landscape=False)
    assert snakemake(tmp_path, config, "--cores", "2").returncode == 0
    config["continuation"]["families"]["width"]["sweep"]["width"].append(2.0)
    assert planned_jobs(snakemake(tmp_path, config, "-n")) == {
        "continue_run": 1,
        "aggregate": 1,
        "plot_family": 1,
        "claims": 1,
        "plot_claims": 1,
        "plot_kernels": 1,
        "all": 1,
    }


def _trained_together(results: Path) -> list[set[str]]:
    """The runs each training job of a finished run trained, from the jobs' logs (a line per member
    and epoch in a pack's; a run alone is its job)."""
    packs = [
        set(re.findall(r"^(\S+): epoch", log.read_text(), re.M)) for log in results.glob("logs/continue_pack/**/*.log")
    ]
    return packs + [{log.parent.name} for log in results.glob("logs/continue_run/*/*/*/seed*.log")]


def test_with_packs_a_new_grid_point_retrains_only_the_pack_it_falls_into(tmp_path):
    config = copy.deepcopy(workflow_run.TINY)  # the width family alone: 6 runs, packs of at most 2
    config.update(pack=2, landscape=False)
    widths = config["continuation"]["families"]["width"]["sweep"]["width"] = [1.0, 0.5, 0.25, 2.0, 4.0]
    assert snakemake(tmp_path, config, "--cores", "2").returncode == 0
    jobs = _trained_together(tmp_path / "results")
    assert all(len(job) <= 2 for job in jobs) and sum(map(len, jobs)) == len(set().union(*jobs)) == 6
    for added in (0.125, 3.0, 8.0):
        config["continuation"]["families"]["width"]["sweep"]["width"] = [*widths, added]
        new = f"s10-rbf-w{added:g}_lr0.01-const-e2"
        outputs = planned_outputs(snakemake(tmp_path, config, "-n"))
        trained = {Path(out).parent.parent.name for out in outputs if out.endswith("/final.pt")}
        # the new run, and the runs of at most one of the jobs that trained before
        assert new in trained and (trained == {new} or trained - {new} in jobs), (added, trained, jobs)


def test_changing_the_base_training_reruns_everything_downstream(finished):
    config = copy.deepcopy(TINY)
    config["base"]["lr"] = 0.02
    jobs = planned_jobs(snakemake(finished, config, "-n"))
    # 3 packs: lr 0.01 constant (the 3 width runs, distance, and the control for seeds 0), lr 1e6
    # (2 runs), SGDR and SGDR + distance; alone: the control for seed 1, FGE, SWA
    training = training_jobs(jobs)
    assert sum(n for rule, n in training.items() if rule.startswith("continue_pack_")) == 3
    assert {rule: n for rule, n in training.items() if not rule.startswith("continue_pack_")} == {
        # the control for seed 1: an independent member, its snapshots the matching control's
        "continue_run_snapshots": 1,
        "continue_run_fge": 1,
        "continue_run_swa": 1,
    }
    # the landscapes of the two packs that hold compared runs (the width family's, lr 1e6)
    assert sum(n for rule, n in jobs.items() if rule.startswith("landscape_pack_")) == 2
    assert {rule: n for rule, n in jobs.items() if rule not in training and not rule.startswith("landscape_pack_")} == {
        "train_base": 2,
        "predict": 7,
        "aggregate": 1,
        "aggregate_landscape": 1,
        "evaluate_ensembles": 1,
        "plot_family": 2,
        "plot_landscape": 1,
        "plot_ensembles": 1,
        "claims": 1,
        "plot_claims": 1,
        "plot_kernels": 1,
        "shift_table": 1,  # the members under shift, from the predict jobs (prepare_shift reads only the data)
        "ood_table": 1,
        "plot_shift": 1,
        "all": 1,
    }


def test_options_that_change_how_a_job_runs_rerun_nothing(finished):
    config = copy.deepcopy(TINY)
    config.update(
        device="cpu",
        threads=2,
        save_every=1,
        tensorboard=False,
        resources={"gpu": 1, "mem_mb": 100, "runtime": 5},
        speed={"amp": "bf16", "channels_last": "off", "compile": "on"},
    )
    result = snakemake(finished, config, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "method, member, rule",
    [
        ("sgdr", "snapshots/epoch3.pt", "continue_pack_"),  # trained in a pack with SGDR + distance
        ("fge", "snapshots/epoch4.pt", "continue_run_fge"),
        ("swa", "swa.pt", "continue_run_swa"),
    ],
)
def test_a_lost_snapshot_is_made_again_when_its_ensemble_is(finished, tmp_path, method, member, rule):
    snapshot = finished / f"results/continue/digits/cnn/{ENSEMBLE_RUNS[method]}/seed0/{member}"
    kept = tmp_path / snapshot.name
    shutil.move(snapshot, kept)
    try:
        result = snakemake(finished, TINY, "-n", "--forcerun", "predict")
        jobs = planned_jobs(result)
        assert [n for name, n in training_jobs(jobs).items() if name.startswith(rule)] == [1]
        assert jobs["predict"] == 7
        assert str(snapshot.relative_to(finished)) in planned_outputs(result)
    finally:
        shutil.move(kept, snapshot)


def test_each_config_writes_under_its_own_results_root(finished):
    config = copy.deepcopy(TINY)
    config["results"] = "results/other"
    outputs = planned_outputs(snakemake(finished, config, "-n"))
    assert len(outputs) > 50 and all(path.startswith("results/other/") for path in outputs)
    # the shipped configs name three different roots
    roots = [
        yaml.safe_load((ROOT / f"config/{name}.yaml").read_text())["results"] for name in ("config", "reduced", "study")
    ]
    assert len(set(roots)) == 3


def test_nothing_to_do_when_nothing_changed(finished):
    result = snakemake(finished, TINY, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_a_finished_run_moved_to_another_directory_plans_nothing(finished, tmp_path):
    # a rule's params re-run it when they change: none may hold the work directory's own path
    # (the report captions' config file is named relative to it)
    moved = tmp_path / "moved"
    shutil.copytree(finished, moved, symlinks=True)  # copy2: every file keeps its time
    result = snakemake(moved, TINY, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]


def test_lint_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Congratulations, your workflow is in a good condition!" in output, output


def test_a_given_config_replaces_the_embedded_default(tmp_path):
    config = copy.deepcopy(TINY)
    defaults = config["continuation"]["defaults"]
    defaults["gamma"] = defaults.pop("width")  # would clash with the default config's width if merged
    config["continuation"]["families"] = {"push": {"sweep": {"strength": [10]}}}
    config["landscape"] = False
    config.pop("ensembles")
    assert planned_jobs(snakemake(tmp_path, config, "-n")) == {  # s10 and its control: one pack
        "prepare_data": 1,
        "train_base": 1,
        "continue_pack_0": 1,
        "aggregate": 1,
        "plot_family": 1,
        "claims": 1,
        "plot_claims": 1,
        "plot_kernels": 1,
        "plot_hill_2d": 1,
        "all": 1,
    }


# config/study.yaml's grid counted by hand: the points each family adds to those before it, with
# their controls (defaults: s 10, rbf, gamma 1e-3, lr 0.01, constant, 800 epochs)
STUDY_NEW_POINTS = {
    "baseline": 2,  # s10 and its control s0 (lr 0.01, constant, e800)
    "strength": 3,  # s 0.1, 1, 100 (s10 and the control are the baseline's)
    "width": 4,  # gamma 1, 0.1, 0.01, 1e-4 (1e-3 is the baseline)
    "kernel": 2,  # laplacian, imq
    "multiple": 2,  # a new hill every 100, every 200 epochs
    "merge": 1,  # every 100 merged (every 100 unmerged is the multiple family's)
    "lr": 4,  # s10 and s0 at lr 0.001 and 0.1 (lr 0.01 is the baseline)
    "schedule": 6,  # s10 and s0 with step, cosine, SGDR (constant is the baseline)
    "epochs": 6,  # s10 and s0 at 100, 200, 400 epochs (800 is the baseline)
    "release": 4,  # s10 and s100 released after 50 and after 200 epochs (their control is the baseline's)
    "longer": 3,  # s100 and gamma 1e-4 at 1600 epochs, and their control s0 at 1600
    "from_init": 3,  # s10 and s100 from the initial weights, and their control s0 from them
}


def test_the_study_config_expands_to_every_grid_point_seed_model_and_dataset(tmp_path):
    study = yaml.safe_load((ROOT / "config/study.yaml").read_text())
    packed = planned_outputs(snakemake(tmp_path, study, "-n"))
    study["pack"] = "off"  # one job per run and seed, as counted here
    result = snakemake(tmp_path, study, "-n")
    # packs change which jobs make the files, not which files are made
    assert sorted(packed) == sorted(planned_outputs(result))
    jobs = planned_jobs(result)
    cells = len(study["datasets"]) * len(study["models"])
    points = sum(STUDY_NEW_POINTS.values())
    # the ensembles: snapshot runs (distance and SGDR + distance at each strength, SGDR, FGE, SWA) on
    # each of the 3 seeds, and the independent run on each of 4 seeds
    seeds = len(study["seeds"])
    strengths = len(study["ensembles"]["strength"])  # a list in the study: one method per strength
    ensemble_runs = (2 * strengths + 3) * seeds + len(study["ensembles"]["seeds"])
    training = ["continue_run", "continue_run_snapshots", "continue_run_fge", "continue_run_swa"]
    assert jobs["train_base"] == cells * 4  # seeds 0-2, and 3 for the independent ensemble
    assert jobs["init_base"] == cells * seeds  # the initial weights of the seeds from_init runs on
    assert sum(jobs[rule] for rule in training) == cells * (points * seeds + ensemble_runs)
    # distance and SGDR + distance at each strength, SGDR, on each seed; the independent run keeps its
    # snapshots on each of its 4 seeds (the first seeds' are the matching control's members)
    assert jobs["continue_run_snapshots"] == cells * ((2 * strengths + 1) * seeds + len(study["ensembles"]["seeds"]))
    assert jobs["continue_run_fge"] == jobs["continue_run_swa"] == cells * seeds
    assert jobs["landscape"] == cells * points * seeds  # the families' runs
    # one ensemble per snapshot method (the matching control's too) and seed; the 4 independent seeds
    # are one group of M = 4
    assert jobs["predict"] == cells * ((2 * strengths + 4) * seeds + 1)
    assert jobs["plot_family"] == len(study["continuation"]["families"])
    assert (
        set(study["continuation"]["families"]) == set(STUDY_NEW_POINTS) == FAMILIES | {"release", "longer", "from_init"}
    )


# every family of the study, and how many grid points (with their controls) it has in the default config
FAMILIES = {"baseline", "strength", "width", "kernel", "multiple", "merge", "lr", "schedule", "epochs"}
DEFAULT_POINTS = {
    "baseline": 2,
    "strength": 3,
    "width": 3,
    "kernel": 4,
    "multiple": 2,
    "merge": 3,
    "lr": 4,
    "schedule": 4,
    "epochs": 4,
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_of_the_default_config_expands_to_its_points_and_their_controls(tmp_path, family):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["continuation"]["families"] = {family: config["continuation"]["families"][family]}
    config.pop("ensembles")
    config["landscape"] = False
    config["pack"] = "off"
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


def test_every_ensemble_method_is_evaluated_from_stored_predictions(finished):
    summary = pd.read_csv(finished / "results/aggregate/ensemble_summary.csv")
    assert sorted(summary["method"]) == ["distance", "fge", "independent", "sgdr", "sgdr_distance", "snapshots", "swa"]
    assert (summary["members"] == 2).all() and summary["accuracy"].between(0, 1).all()
    curves = pd.read_parquet(finished / "results/aggregate/ensembles.parquet")
    assert sorted(curves["m"].unique()) == [1, 2]
    pairs = pd.read_parquet(finished / "results/aggregate/ensemble_pairs.parquet")
    assert len(pairs) == 7  # one pair per method
    # beside each ensemble its members' weight average; SWA's own average beside SWA's
    averages = pd.read_parquet(finished / "results/aggregate/weight_averages.parquet")
    assert sorted(averages["method"] + "/" + averages["averaged"]) == sorted(
        [f"{method}/members" for method in summary["method"]] + ["swa/swa"]
    )
    assert averages["accuracy"].between(0, 1).all()
    between = pd.read_parquet(finished / "results/aggregate/member_landscape.parquet")
    assert sorted(between["method"].unique()) == sorted(summary["method"])
    assert (between.groupby("method")["pair"].nunique() == 1).all()  # 2 members: one line each
    assert (summary["mean_member_barrier"] >= 0).all()
    # every ensemble under shift and on the OOD set, from its predict job
    shift = pd.read_parquet(finished / "results/aggregate/shift.parquet")
    assert sorted(set(zip(shift["corruption"], shift["severity"]))) == [("contrast", 0), ("contrast", 5)]
    assert sorted(shift["method"].unique()) == sorted(summary["method"]) and shift["accuracy"].between(0, 1).all()
    ood = pd.read_parquet(finished / "results/aggregate/ood.parquet")
    assert set(ood["ood"]) == {"inverted"} and sorted(ood["method"].unique()) == sorted(summary["method"])
    figures = ("ensemble_accuracy", "ensemble_disagreement", "diversity_vs_distance", "weight_averages")
    for figure in (*figures, "ensemble_shift", "ensemble_ood"):
        assert (finished / f"results/plots/{figure}.png").read_bytes()[:4] == b"\x89PNG"
    # members of the snapshot methods: one per cycle of the first seed's run (epochs 3 and 4)
    snapshots = finished / f"results/continue/digits/cnn/{ENSEMBLE_RUNS['distance']}/seed0/snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["epoch3.pt", "epoch4.pt"]
    fge = finished / f"results/continue/digits/cnn/{ENSEMBLE_RUNS['fge']}/seed0/snapshots"  # FGE's cycle is 1 too
    assert sorted(p.name for p in fge.iterdir()) == ["epoch3.pt", "epoch4.pt"]
    # evaluating again (another metric, another m) re-runs no network, only the evaluation and its plots
    jobs = planned_jobs(snakemake(finished, TINY, "-n", "--forcerun", "evaluate_ensembles"))
    assert jobs == {"evaluate_ensembles": 1, "plot_ensembles": 1, "claims": 1, "plot_claims": 1, "all": 1}


def test_after_snakemake_itself_is_killed_unlock_and_rerun_incomplete_finish_the_run(tmp_path):
    """What the README says to do when snakemake itself dies (SIGKILL, a lost login node)."""
    config = copy.deepcopy(TINY)
    config.pop("ensembles")
    config.update(landscape=False, base={"epochs": 6})
    config["continuation"]["families"] = {"push": {"sweep": {"strength": [10]}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(tmp_path),
        "--configfile",
        str(path),
        "--cores",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = tmp_path / "results/logs/train_base/digits/cnn/seed0.log"
    deadline = time.time() + 120
    while time.time() < deadline and "epoch" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its running job, as when a node dies
    proc.wait()
    again = snakemake(tmp_path, config, "--cores", "1")
    assert again.returncode != 0 and "--unlock" in again.stdout + again.stderr
    assert snakemake(tmp_path, config, "--unlock").returncode == 0
    done = snakemake(tmp_path, config, "--cores", "1", "--rerun-incomplete")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "results/aggregate/summary.csv")) == 2  # the push and its control


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
    for name in (
        "width.png",
        "unstable.png",
        "landscape.png",
        "summary.csv",
        "claims.csv",
        "claims.png",
        "kernels.png",
        "hill_2d.png",
    ):
        assert name in html, name
    # each family's caption names the config file and quotes the family's block
    assert html.count("from the config config.yaml") == len(TINY["continuation"]["families"])
    assert "[1000000.0]" in html


def test_the_local_profile_is_valid():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/local", "-n", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
