"""Figures from the aggregated metrics table: the source study's curves, control vs each variant.

One panel per dataset/model. Several seeds are drawn as their mean with a min–max band. The base
training before the checkpoint is grey, the control (s = 0) red, as in the source's figures.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

CONTROL_COLORS = ["tab:red", "darkred", "lightcoral", "orangered"]
VARIANT_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
                  "tab:olive", "tab:cyan", "navy", "teal", "goldenrod"]  # no red: red is the control
FIGURES = {  # file stem -> (column, y-axis label, draw the base phase too)
    "val_acc": ("val_acc", "validation accuracy", True),
    "distance": ("dist", "distance to the checkpoint ‖θ − θ_c‖₂", False),
}


def describe(run: pd.Series, varying: set[str]) -> str:
    """Legend text: the variant's name and the parameter values that tell it apart."""
    if run["strength"] == 0:
        parts = ["s=0"]
    else:
        kernel = run["kernel"]
        scale = f"σ={run['width']:g}" if pd.notna(run["width"]) else f"γ={run['gamma']:g}"
        parts = [f"s={run['strength']:g}", f"{kernel} {scale}" if kernel != "none" else "no kernel"]
        if run["distance"] == "mean":
            parts.append("mean d")
        if run["checkpoint_every"]:
            parts.append(f"{'merged ' if run['merge'] else ''}checkpoint every {int(run['checkpoint_every'])} ep")
    if "lr_init" in varying:
        parts.append(f"lr={run['lr_init']:g}")
    if "schedule" in varying:
        parts.append(run["schedule"])
    if "epochs" in varying:
        parts.append(f"{run['epochs']} ep")
    return f"{run['label']} ({', '.join(parts)})"


def _band(ax, df: pd.DataFrame, column: str, color, label: str, **style) -> None:
    stats = df.groupby("epoch")[column].agg(["mean", "min", "max"])
    ax.plot(stats.index, stats["mean"], color=color, label=label, **style)
    if df["seed"].nunique() > 1:
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, linewidth=0)


def _start(base: pd.DataFrame, rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """Each seed's curve starts at the checkpoint: distance 0, or the base's last value."""
    first = rows.groupby("seed").head(1).copy()
    first["epoch"] = first["checkpoint_epoch"]
    if column == "dist":
        first[column] = 0.0
    else:
        last_base = base.sort_values("epoch").groupby("seed")[column].last()
        first[column] = first["seed"].map(last_base)
    return first.dropna(subset=[column])


def _panel(ax, panel: pd.DataFrame, column: str, with_base: bool) -> None:
    base = panel[panel["phase"] == "base"]
    runs = panel[panel["phase"] == "continue"]
    if with_base and not base.empty:
        _band(ax, base, column, "0.55", "base training", linewidth=1.2)
    if not base.empty:
        ax.axvline(base["epoch"].max(), color="0.3", linestyle=":", linewidth=1)
    firsts = runs.groupby("run").first()
    varying = {c for c in ("lr_init", "schedule", "epochs") if firsts[c].nunique() > 1}
    controls, variants = iter(CONTROL_COLORS * 8), iter(VARIANT_COLORS * 8)
    # controls first, so the red curves sit under the variants
    for rid, run in sorted(firsts.iterrows(), key=lambda item: (item[1]["strength"] != 0, item[0])):
        color = next(controls) if run["strength"] == 0 else next(variants)
        rows = pd.concat([_start(base, runs[runs["run"] == rid], column), runs[runs["run"] == rid]])
        _band(ax, rows, column, color, describe(run, varying), linewidth=1.4)
        for _, end in rows[rows["diverged"]].iterrows():
            ax.plot(end["epoch"], 0 if pd.isna(end[column]) else end[column], "x", color=color, markersize=9)
    ax.grid(alpha=0.3)


def plot_all(df: pd.DataFrame, out_dir: Path, formats=("png", "pdf")) -> list[Path]:
    """Write every figure in every format; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = list(df.groupby(["dataset", "model"], sort=True))
    written = []
    for stem, (column, ylabel, with_base) in FIGURES.items():
        # one row per dataset/model, each with its legend on the right
        fig, axes = plt.subplots(len(panels), 1, figsize=(8, 4.5 * len(panels)), squeeze=False)
        for ax, ((dataset, model), panel) in zip(axes[:, 0], panels):
            _panel(ax, panel, column, with_base)
            seeds = panel["seed"].nunique()
            ax.set_title(f"{dataset} / {model}" + (" (several seeds: mean and min–max band)" if seeds > 1 else ""))
            ax.set_xlabel("epoch (dotted line: the checkpoint)")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        fig.suptitle(f"{ylabel} vs epoch\ncontrol (s = 0, red) vs distance penalty; × marks a diverged run",
                     fontsize=10)
        fig.subplots_adjust(hspace=0.35)
        written += _save(fig, out_dir, stem, formats, tight_layout=False)
    return written


def _save(fig, out_dir: Path, stem: str, formats, tight_layout: bool = True) -> list[Path]:
    """Save in every format. Figures with legends outside their axes skip tight_layout, which
    would shrink the axes to make room; bbox_inches="tight" widens the canvas instead."""
    if tight_layout:
        fig.tight_layout()
    paths = [out_dir / f"{stem}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=130, bbox_inches="tight")  # legends sit outside the axes
    plt.close(fig)
    return paths


def plot_landscape(df: pd.DataFrame, out_dir: Path, formats=("png", "pdf")) -> list[Path]:
    """Validation loss and error along θ(α) = (1−α)θ_c + αθ, one column per dataset/model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = list(df.groupby(["dataset", "model"], sort=True))
    # one row per dataset/model: loss and error side by side, the legend on the right
    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 4.5 * len(panels)), squeeze=False)
    for row, ((dataset, model), panel) in enumerate(panels):
        controls, variants = iter(CONTROL_COLORS * 8), iter(VARIANT_COLORS * 8)
        for rid, run in sorted(panel.groupby("run"), key=lambda item: (not item[0].startswith("s0_"), item[0])):
            color = next(controls) if rid.startswith("s0_") else next(variants)
            curve = run.groupby("alpha")[["loss", "error"]].mean()  # mean over seeds
            label = f"{rid} (barrier {run.groupby('seed')['barrier'].first().mean():.3g})"
            for col, column in enumerate(("loss", "error")):
                axes[row, col].plot(curve.index, curve[column], color=color, label=label, linewidth=1.3)
        for col, ylabel in enumerate(("validation loss", "validation error")):
            ax = axes[row, col]
            for x in (0, 1):
                ax.axvline(x, color="0.3", linestyle=":", linewidth=1)
            ax.set_xlabel("α  (0: the checkpoint θ_c, 1: the run's final weights θ)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.set_title(f"{dataset} / {model}")
        axes[row, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.suptitle("Along the straight line from the checkpoint to each run (BatchNorm statistics recomputed "
                 "at every α)\nbarrier = max over α in [0, 1] of the loss above the straight line between "
                 "the endpoints' losses", fontsize=10)
    fig.subplots_adjust(hspace=0.35, wspace=0.25)
    return _save(fig, out_dir, "landscape", formats, tight_layout=False)


def plot_ensembles(curves: pd.DataFrame, pairs: pd.DataFrame, out_dir: Path, formats=("png", "pdf")) -> list[Path]:
    """Ensemble metrics vs members, pairwise disagreement, and diversity vs weight distance."""
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = sorted(curves.groupby(["dataset", "model"]).groups)
    methods = sorted(curves["method"].unique())
    colors = dict(zip(methods, VARIANT_COLORS))
    written = []

    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 4.5 * len(panels)), squeeze=False)
    for row, (dataset, model) in enumerate(panels):
        panel = curves[(curves["dataset"] == dataset) & (curves["model"] == model)]
        for method, g in panel.groupby("method"):
            axes[row, 0].plot(g["m"], g["accuracy"], "o-", color=colors[method], label=method)
            axes[row, 0].plot(g["m"], g["mean_member_accuracy"], ":", color=colors[method])
            axes[row, 1].plot(g["m"], g["nll"], "o-", color=colors[method], label=method)
        axes[row, 0].set_ylabel("test accuracy (dotted: mean member)")
        axes[row, 1].set_ylabel("test NLL")
        for ax in axes[row]:
            ax.set_title(f"{dataset} / {model}")
            ax.set_xlabel("members m (the last m snapshots)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("Ensembles of the last m members at an equal epoch budget", fontsize=10)
    written += _save(fig, out_dir, "ensemble_accuracy", formats)

    fig, axes = plt.subplots(len(panels), len(methods), figsize=(3.6 * len(methods), 3.4 * len(panels)), squeeze=False)
    vmax = max(pairs["disagreement"].max(), 1e-3)  # one colour scale, so methods compare at a glance
    for row, (dataset, model) in enumerate(panels):
        for col, method in enumerate(methods):
            g = pairs[(pairs["dataset"] == dataset) & (pairs["model"] == model) & (pairs["method"] == method)]
            n = int(max(g["i"].max(), g["j"].max())) + 1 if len(g) else 1
            image = axes[row, col].imshow(pair_matrix(g, n), vmin=0, vmax=vmax, cmap="viridis")
            axes[row, col].set_xticks(range(n))
            axes[row, col].set_yticks(range(n))
            axes[row, col].set_title(f"{method}\n{dataset} / {model}", fontsize=9)
            axes[row, col].set_xlabel("member")
            axes[row, col].set_ylabel("member")
            fig.colorbar(image, ax=axes[row, col], fraction=0.046)
    fig.suptitle("Pairwise disagreement: fraction of test points whose predicted labels differ "
                 "(members oldest first; one colour scale)", fontsize=10)
    written += _save(fig, out_dir, "ensemble_disagreement", formats)

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], panels):
        panel = pairs[(pairs["dataset"] == dataset) & (pairs["model"] == model)]
        for method, g in panel.groupby("method"):
            ax.scatter(g["weight_distance"], g["disagreement"], color=colors[method], label=method, s=30)
        ax.set_title(f"{dataset} / {model}")
        ax.set_xlabel("L2 distance between the two members' weights")
        ax.set_ylabel("disagreement")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Diversity vs distance in weight space: one point per pair of members", fontsize=10)
    written += _save(fig, out_dir, "diversity_vs_distance", formats)
    return written


def pair_matrix(pairs: pd.DataFrame, n: int):
    """A symmetric (n, n) disagreement matrix with a zero diagonal, from one row per pair i < j."""
    matrix = np.zeros((n, n))
    for _, r in pairs.iterrows():
        matrix[int(r["i"]), int(r["j"])] = matrix[int(r["j"]), int(r["i"])] = r["disagreement"]
    return matrix
