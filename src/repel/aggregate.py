"""Aggregation: every run's per-epoch Parquet -> one table, and one summary row per grid point."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import storage
from .grid import control_id

RUN_KEYS = ["dataset", "model", "run"]
GRID_COLUMNS = ["label", "strength", "kernel", "width", "gamma", "distance", "checkpoint_every", "merge",
                "lr_init", "schedule", "epochs"]
FINAL_METRICS = {"val_acc": "final_val_acc", "test_acc": "final_test_acc", "dist": "final_dist"}


def combine(paths, labels: dict[str, str]) -> pd.DataFrame:
    """One row per run and epoch; `label` names the run's families, `control` the run it is compared
    with. The per-step learning rates stay in each run's own table: at the study's scale they
    would make this one hundreds of times larger, and `lr` (the epoch's first) draws the schedule."""
    df = pd.concat([storage.read_parquet(p, "metrics").drop(columns="lr_steps", errors="ignore") for p in paths],
                   ignore_index=True)
    is_run = df["phase"] == "continue"
    df["label"] = df["run"].map(lambda r: labels.get(r, r))
    df["control"] = df["run"]
    df.loc[is_run, "control"] = df.loc[is_run, "run"].map(control_id)
    return df.sort_values(["dataset", "model", "seed", "phase", "run", "epoch"], ignore_index=True)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per continuation run and seed: final accuracy and distance, worst drop, divergence."""
    base = df[df["phase"] == "base"].groupby(["dataset", "model", "seed"])["val_acc"].last().rename("checkpoint_val_acc")
    runs = df[df["phase"] == "continue"].groupby(RUN_KEYS + ["seed"], sort=True)
    out = runs[GRID_COLUMNS].first()
    last = df[df["phase"] == "continue"].sort_values("epoch").groupby(RUN_KEYS + ["seed"]).tail(1)
    # the last epoch's values, NaN included (GroupBy.last would skip back to a finite one)
    out = out.join(last.set_index(RUN_KEYS + ["seed"])[list(FINAL_METRICS)].rename(columns=FINAL_METRICS))
    out["min_val_acc"] = runs["val_acc"].min()
    out["diverged"] = runs["diverged"].any()
    out = out.reset_index().join(base, on=["dataset", "model", "seed"])
    # how far validation accuracy fell below its value at the checkpoint (0 if it never did)
    out["max_val_acc_drop"] = (out["checkpoint_val_acc"] - out["min_val_acc"]).clip(lower=0)
    return out.drop(columns="min_val_acc")


def summary_markdown(summary: pd.DataFrame) -> str:
    """Grid points as rows, seeds folded into mean ± std (std shown when there are several seeds)."""
    metrics = ["final_val_acc", "final_test_acc", "final_dist", "max_val_acc_drop"]
    rows = []
    for keys, g in summary.groupby(RUN_KEYS, sort=True):
        row = dict(zip(RUN_KEYS, keys), label=g["label"].iloc[0], seeds=len(g))
        for m in metrics:
            row[m] = f"{g[m].mean():.4f}" + (f" ± {g[m].std():.4f}" if len(g) > 1 else "")
        row["diverged"] = f"{int(g['diverged'].sum())}/{len(g)}" if g["diverged"].any() else "no"
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False) + "\n"


def aggregate(paths, labels: dict[str, str], out_dir: Path) -> None:
    df = combine(paths, labels)
    summary = summarize(df)
    storage.save_parquet(df, out_dir / "metrics.parquet")
    storage.save_parquet(summary, out_dir / "summary.parquet")
    storage.save_text(summary.to_csv(index=False), out_dir / "summary.csv")
    storage.save_text("# Continuation runs: final metrics\n\n" + summary_markdown(summary), out_dir / "summary.md")


def aggregate_ensembles(paths, landscape_paths, out_dir: Path) -> None:
    """Stored member predictions -> ensemble metrics for m = 1..M, pairwise diversity, a summary
    with the mean loss barrier between consecutive members (from `landscape --between`).

    Only tensors already on disk are read: another m or metric never re-runs a network.
    """
    from .ensemble import ensemble_curve, pairwise_table

    curves, pairs = [], []
    for path in paths:
        pred = storage.load_torch(path, "predictions")
        keys = {"dataset": pred["dataset"], "model": pred["model"], "method": pred["method"]}
        curve = ensemble_curve(pred["probs"], pred["labels"])
        pair = pairwise_table(pred["probs"], list(pred["weights"]), pred["theta_c"])
        curves.append(curve.assign(**keys))
        pairs.append(pair.assign(**keys))
    curves = pd.concat(curves, ignore_index=True)
    pairs = pd.concat(pairs, ignore_index=True)
    final = curves.loc[curves.groupby(["dataset", "model", "method"])["m"].idxmax()]
    summary = final.merge(pairs.groupby(["dataset", "model", "method"])["disagreement"].mean().rename("mean_disagreement"),
                          on=["dataset", "model", "method"])
    landscape = pd.concat([storage.read_parquet(p, "member landscape") for p in landscape_paths], ignore_index=True)
    landscape = landscape.rename(columns={"run": "method"})
    barriers = landscape.groupby(["dataset", "model", "method", "pair"])["barrier"].first()
    summary = summary.merge(barriers.groupby(["dataset", "model", "method"]).mean().rename("mean_member_barrier"),
                            on=["dataset", "model", "method"])
    summary = summary[["dataset", "model", "method", "m", "accuracy", "nll", "ece", "brier", "mean_member_accuracy",
                       "gain", "mean_disagreement", "mean_member_barrier"]].rename(columns={"m": "members"})
    storage.save_parquet(curves, out_dir / "ensembles.parquet")
    storage.save_parquet(pairs, out_dir / "ensemble_pairs.parquet")
    storage.save_parquet(landscape, out_dir / "member_landscape.parquet")
    storage.save_text(summary.to_csv(index=False), out_dir / "ensemble_summary.csv")
    storage.save_text("# Ensembles at an equal epoch budget\n\n" + summary.to_markdown(index=False, floatfmt=".4f") + "\n",
                      out_dir / "ensemble_summary.md")
