"""Aggregation: every run's per-epoch Parquet -> one table, and one summary row per grid point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import spec, storage

RUN_KEYS = ["dataset", "model", "run"]
GRID_COLUMNS = ["label", *spec.GRID_COLUMNS]
QUIET_COLUMNS = {spec.column(name): spec.DEFAULTS[name] for name in spec.QUIET}  # absent: the default
FINAL_METRICS = {
    "val_acc": "final_val_acc",
    "test_acc": "final_test_acc",
    "dist": "final_dist",
    "aligned_dist": "final_aligned_dist",  # measured at the last epoch only (repel.align)
}


def read_run(path) -> pd.DataFrame:
    """One run's metrics.parquet, checked to be one: a continuation run's has its grid columns."""
    df = storage.read_parquet(path, "metrics")
    needed = ["phase", "run", "seed", "epoch"]
    if "phase" in df and (df["phase"] == "continue").any():
        needed += ["control", *(c for c in spec.GRID_COLUMNS if c not in QUIET_COLUMNS)]
    if missing := [c for c in needed if c not in df]:
        raise storage.BadFileError(
            path,
            f"has no column {', '.join(missing)} (it holds {', '.join(df.columns[:8])}"
            f"{', ...' if len(df.columns) > 8 else ''})",
            "metrics",
        )
    return df.drop(columns="lr_steps", errors="ignore")


def combine(paths, labels: dict[str, str]) -> pd.DataFrame:
    """One row per run and epoch; `label` names the run's families, `control` the run it is compared
    with. The per-step learning rates stay in each run's own table: at the study's scale they
    would make this one hundreds of times larger, and `lr` (the epoch's first) draws the schedule."""
    df = pd.concat([read_run(p) for p in paths], ignore_index=True)
    is_run = df["phase"] == "continue"
    df["label"] = df["run"].map(lambda r: labels.get(r, r))
    if "control" not in df:
        raise ValueError("no continuation run's metrics among the inputs; give at least one run's metrics.parquet")
    df["control"] = df["control"].where(is_run, df["run"])  # a base training is its own reference
    for col, default in QUIET_COLUMNS.items():  # a quiet key at its default has no value in its run's table
        given = df[col] if col in df else pd.Series(None, index=df.index, dtype=object)
        df[col] = given.where(~is_run | given.notna(), default)
    return df.sort_values(["dataset", "model", "seed", "phase", "run", "epoch"], ignore_index=True)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per continuation run and seed: final accuracy and distance, worst drop, divergence."""
    base = (
        df[df["phase"] == "base"].groupby(["dataset", "model", "seed"])["val_acc"].last().rename("checkpoint_val_acc")
    )
    runs = df[df["phase"] == "continue"].groupby(RUN_KEYS + ["seed"], sort=True)
    out = runs[GRID_COLUMNS].first()
    last = df[df["phase"] == "continue"].sort_values("epoch").groupby(RUN_KEYS + ["seed"]).tail(1)
    last = last.reindex(columns=last.columns.union(list(FINAL_METRICS), sort=False))  # tables from before align: NaN
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
    metrics = ["final_val_acc", "final_test_acc", "final_dist", "final_aligned_dist", "max_val_acc_drop"]
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


def aggregate_landscapes(paths, out) -> None:
    """Every run's landscape table -> one."""
    storage.save_parquet(pd.concat([storage.read_parquet(p, "landscape") for p in paths], ignore_index=True), out)


ENSEMBLE_KEYS = ["dataset", "model", "method", "ensemble"]
# what predict stores (predict.member_predictions and its job's records); swa_log_probs where a run has SWA
PREDICTION_KEYS = [*ENSEMBLE_KEYS, "log_probs", "labels", "weights", "theta_c", "average_log_probs"]
ENSEMBLE_SUMMARY = [
    "accuracy",
    "nll",
    "ece",
    "brier",
    "mean_member_accuracy",
    "gain",
    "gain_best",
    "mean_disagreement",
    "mean_member_barrier",
    "mean_aligned_barrier",
]


def aggregate_ensembles(paths, landscape_paths, out_dir: Path) -> None:
    """Stored member predictions -> ensemble metrics for m = 1..M, pairwise diversity, a summary
    with the mean loss barrier between consecutive members (from `landscape --between`).
    Each method has one ensemble per seed (or per group of independent seeds): the tables keep
    them apart (`ensemble`), the summary gives their mean ± std.

    Beside each ensemble, its weight-averaged models (weight_averages.parquet): the members'
    average, and SWA's own average over every epoch for the swa method.

    Only tensors already on disk are read: another m or metric never re-runs a network.
    """
    from .ensemble import ensemble_curve, pairwise_table

    curves, pairs, averages = [], [], []
    for path in paths:
        pred = storage.load_arrays(path, "predictions")
        missing = sorted(set(PREDICTION_KEYS) - set(pred))
        if missing:
            raise ValueError(
                f"{path}: its predictions lack {', '.join(missing)}: an older or foreign file; "
                "make it again with `snakemake --forcerun predict`"
            )
        keys = {key: str(pred[key]) for key in ENSEMBLE_KEYS}
        curve = ensemble_curve(pred["log_probs"], pred["labels"]).assign(**keys)
        curves.append(curve)
        aligned = pred.get("aligned_distance")  # absent from predictions made before repel.align
        pair_table = pairwise_table(pred["log_probs"], list(pred["weights"]), pred["theta_c"], aligned)
        pairs.append(pair_table.assign(**keys, alignment=alignment_note(aligned, keys["model"])))
        averages += weight_average_rows(pred, curve.iloc[-1], keys)
    curves = pd.concat(curves, ignore_index=True)
    pairs = pd.concat(pairs, ignore_index=True)
    averages = pd.DataFrame(averages)
    # each ensemble at its full size, with its mean pairwise disagreement and member barrier
    final = curves.loc[curves.groupby(ENSEMBLE_KEYS)["m"].idxmax()].rename(columns={"m": "members"})
    final = final.join(
        pairs.groupby(ENSEMBLE_KEYS)["disagreement"].mean().rename("mean_disagreement"), on=ENSEMBLE_KEYS
    )
    landscape = pd.concat([storage.read_parquet(p, "member landscape") for p in landscape_paths], ignore_index=True)
    if "aligned" not in landscape:  # written before repel.align: plain lines only
        landscape = landscape.assign(aligned=False)
    landscape["aligned"] = landscape["aligned"].fillna(False).astype(bool)
    for aligned, name in ((False, "mean_member_barrier"), (True, "mean_aligned_barrier")):
        lines = landscape[landscape["aligned"] == aligned]
        barriers = lines.groupby(ENSEMBLE_KEYS + ["pair"])["barrier"].first().groupby(ENSEMBLE_KEYS).mean()
        final = final.join(barriers.rename(name), on=ENSEMBLE_KEYS)
    summary = ensemble_summary(final)
    storage.save_parquet(curves, out_dir / "ensembles.parquet")
    storage.save_parquet(pairs, out_dir / "ensemble_pairs.parquet")
    storage.save_parquet(landscape, out_dir / "member_landscape.parquet")
    storage.save_parquet(averages, out_dir / "weight_averages.parquet")
    storage.save_text(summary.to_csv(index=False), out_dir / "ensemble_summary.csv")
    storage.save_text(
        "# Ensembles at an equal epoch budget\n\n" + ensemble_markdown(summary) + "\n\n"
        "## Weight-averaged models beside their ensembles\n\n"
        "BatchNorm statistics recomputed on the training split; mean ± std over a method's ensembles.\n\n"
        + average_markdown(averages)
        + "\n",
        out_dir / "ensemble_summary.md",
    )


def alignment_note(aligned, model: str) -> str:
    """What the pairs' aligned_distance is: weight matching, or why it is NaN."""
    if aligned is None:
        return "not aligned: predictions made before repel.align (make them again)"
    if np.isnan(aligned).all() and len(aligned) > 1:
        return f"not aligned: no permutation spec for {model} (residual blocks share permutations)"
    return "weight matching"


AVERAGES = {"members": "the members' weight average", "swa": "SWA: the average over every epoch of the run"}


def weight_average_rows(pred: dict, ensemble: pd.Series, keys: dict) -> list[dict]:
    """One row per weight-averaged model of an ensemble's predictions: its metrics, and the
    full ensemble's accuracy and NLL beside them."""
    from .ensemble import model_metrics

    swa = pred.get("swa_log_probs", [])
    models = [("members", pred["average_log_probs"]), *(("swa", log_p) for log_p in swa)]
    return [
        {
            **keys,
            "averaged": kind,
            **model_metrics(log_p, pred["labels"]),
            "ensemble_accuracy": ensemble["accuracy"],
            "ensemble_nll": ensemble["nll"],
            "best_member_accuracy": ensemble["accuracy"] - ensemble["gain_best"],
        }
        for kind, log_p in models
    ]


def average_markdown(averages: pd.DataFrame) -> str:
    """Methods x averaged model as rows, metrics as mean ± std over the method's ensembles."""
    rows = []
    metrics = ["accuracy", "nll", "ece", "brier", "ensemble_accuracy", "best_member_accuracy"]
    for (dataset, model, method, kind), g in averages.groupby(["dataset", "model", "method", "averaged"], sort=True):
        row = {
            "dataset": dataset,
            "model": model,
            "method": method,
            "averaged model": AVERAGES[kind],
            "ensembles": len(g),
        }
        for metric in metrics:
            row[metric] = f"{g[metric].mean():.4f}" + (f" ± {g[metric].std():.4f}" if len(g) > 1 else "")
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


def ensemble_summary(final: pd.DataFrame) -> pd.DataFrame:
    """One row per method: each metric's mean and std over the method's ensembles (std NaN for one)."""
    groups = final.groupby(["dataset", "model", "method"], sort=True)
    summary = groups[ENSEMBLE_SUMMARY].agg(["mean", "std"])
    summary.columns = [f"{metric}_std" if stat == "std" else metric for metric, stat in summary.columns]
    summary.insert(0, "members", groups["members"].first())
    summary.insert(1, "ensembles", groups["ensemble"].apply(" ".join))
    return summary.reset_index()


def ensemble_markdown(summary: pd.DataFrame) -> str:
    """Methods as rows, each metric as mean ± std over the method's ensembles (std with several)."""
    rows = []
    for _, r in summary.iterrows():
        several = len(r["ensembles"].split()) > 1
        row = {key: r[key] for key in ("dataset", "model", "method", "members", "ensembles")}
        for metric in ENSEMBLE_SUMMARY:
            row[metric] = f"{r[metric]:.4f}" + (f" ± {r[metric + '_std']:.4f}" if several else "")
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)
