"""The ensembles under dataset shift: one table of every ensemble's metrics per corruption and
severity (written by `predict --shift`, one file per ensemble), and its figure in the style of
Ovadia et al. 2019: each metric against severity, one line per method (the mean over its
ensembles, one per seed) with a min-max band over them. Severity 0 is the clean test split, drawn
at the left of every corruption's panel. Pandas and matplotlib only: no network is run here."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SHIFT_METRICS = {"accuracy": "test accuracy", "nll": "NLL", "brier": "Brier score", "ece": "ECE"}
KEYS = ["dataset", "model", "method", "ensemble", "corruption", "severity"]


def combine(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The per-ensemble tables as one; the clean split (severity 0) repeated under each corruption
    so that each corruption's rows start at the clean value."""
    t = pd.concat(tables, ignore_index=True)
    clean, shifted = t[t["severity"] == 0], t[t["severity"] > 0]
    repeated = [clean.assign(corruption=name) for name in shifted["corruption"].unique()]
    out = pd.concat([*repeated, shifted], ignore_index=True)
    return out.sort_values(KEYS, ignore_index=True)


def aggregate(args) -> None:
    from . import storage

    table = combine([storage.read_parquet(p, "ensemble shift metrics") for p in args.tables])
    storage.save_parquet(table, args.out)
    print(f"{len(args.tables)} ensembles' metrics under shift -> {args.out}")


def shift_figure(table: pd.DataFrame):
    from .plots import method_colors, method_groups, method_label, plt

    cells = sorted(table.groupby(["dataset", "model"]).groups)
    corruptions = list(dict.fromkeys(table["corruption"]))
    colors = method_colors(table["method"])
    columns = [(cell, c) for cell in cells for c in corruptions]
    fig, axes = plt.subplots(
        len(SHIFT_METRICS), len(columns), figsize=(3.6 * len(columns), 2.8 * len(SHIFT_METRICS)), squeeze=False
    )
    for col, ((dataset, model), corruption) in enumerate(columns):
        panel = table[(table["dataset"] == dataset) & (table["model"] == model) & (table["corruption"] == corruption)]
        for method, g in method_groups(panel):
            n = g["ensemble"].nunique()
            for row, metric in enumerate(SHIFT_METRICS):
                s = g.groupby("severity")[metric].agg(["mean", "min", "max"])
                ax = axes[row, col]
                ax.plot(s.index, s["mean"], "o-", ms=3, color=colors[method], label=f"{method_label(method)} ({n})")
                if n > 1:
                    ax.fill_between(s.index, s["min"], s["max"], color=colors[method], alpha=0.15, linewidth=0)
        for row, label in enumerate(SHIFT_METRICS.values()):
            ax = axes[row, col]
            ax.grid(alpha=0.3)
            ax.set_xticks(sorted(panel["severity"].unique()))
            if col == 0:
                ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"{dataset} / {model}: {corruption}", fontsize=9)
            if row == len(SHIFT_METRICS) - 1:
                ax.set_xlabel("severity (0: clean)")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), title="method (ensembles)")
    fig.suptitle("Ensembles under dataset shift: mean over each method's ensembles, min-max band", fontsize=10)
    return fig


def aggregate_ood(args) -> None:
    from . import ood, storage

    points = pd.concat([storage.read_parquet(p, "ensemble OOD scores") for p in args.scores], ignore_index=True)
    storage.save_parquet(ood.detection_table(points), args.out)
    print(f"{len(args.scores)} ensembles' OOD scores -> {args.out}")


OOD_METRICS = {"auroc": "AUROC (OOD the positives)", "fpr95": "FPR at 95 % TPR"}


def ood_figure(table: pd.DataFrame):
    """Per dataset/model and OOD set: each score's AUROC and FPR@95 per method, the mean over the
    method's ensembles with a min-max bar."""
    from .ood import SCORES
    from .plots import method_colors, method_label, plt

    columns = sorted(table.groupby(["dataset", "model", "ood"]).groups)
    colors = method_colors(table["method"])
    methods = list(colors)  # in method_key order
    fig, axes = plt.subplots(2, len(columns), figsize=(4.2 * len(columns), 6), squeeze=False)
    width = 0.8 / len(methods)
    for col, (dataset, model, name) in enumerate(columns):
        panel = table[(table["dataset"] == dataset) & (table["model"] == model) & (table["ood"] == name)]
        for row, (metric, label) in enumerate(OOD_METRICS.items()):
            ax = axes[row, col]
            for k, method in enumerate(methods):
                s = panel[panel["method"] == method].groupby("score")[metric].agg(["mean", "min", "max"])
                s = s.reindex(list(SCORES))
                x = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(SCORES))]
                err = [s["mean"] - s["min"], s["max"] - s["mean"]]
                ax.bar(x, s["mean"], width, yerr=err, color=colors[method], label=method_label(method), capsize=2)
            ax.set_xticks(range(len(SCORES)), list(SCORES))
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3, axis="y")
            if col == 0:
                ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"{dataset} / {model}: OOD {name}", fontsize=9)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), title="method")
    fig.suptitle(
        "How well each score flags OOD inputs: mean over each method's ensembles, min-max bar "
        "(msp: 1 − max softmax probability, entropy: of the mean softmax, mi: mutual information)",
        fontsize=9,
    )
    return fig


def plot(args) -> None:
    from . import storage
    from .plots import _save

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    formats, written = args.formats or ("png", "pdf"), []
    if args.shift:
        table = storage.read_parquet(args.shift, "ensemble shift table")
        written += _save(shift_figure(table), out, "ensemble_shift", formats, tight_layout=False)
    if args.ood:
        table = storage.read_parquet(args.ood, "ensemble OOD table")
        written += _save(ood_figure(table), out, "ensemble_ood", formats, tight_layout=False)
    print("wrote " + ", ".join(map(str, written)))
