"""Figures from the aggregated metrics table: the source study's curves, control vs each variant.

One panel per dataset/model. Several seeds are drawn as their mean with a min–max band. The base
training before the checkpoint is grey, the control (s = 0) red, as in the source's figures.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

CONTROL_COLORS = ["tab:red", "darkred", "lightcoral", "orangered"]
VARIANT_COLORS = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"] if c != "#d62728"]
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
            parts.append(f"{'merged ' if run['merge'] else ''}checkpoint every {run['checkpoint_every']} ep")
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
        n = len(panels)
        fig, axes = plt.subplots(1, n, figsize=(7 * n, 4.8), squeeze=False)
        for ax, ((dataset, model), panel) in zip(axes[0], panels):
            _panel(ax, panel, column, with_base)
            seeds = panel["seed"].nunique()
            ax.set_title(f"{dataset} / {model}" + (f" ({seeds} seeds: mean, min–max band)" if seeds > 1 else ""))
            ax.set_xlabel("epoch (dotted line: the checkpoint)")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=8, loc="best")
        fig.suptitle(f"{ylabel} vs epoch\ncontrol (s = 0, red) vs distance penalty; × marks a diverged run",
                     fontsize=10)
        fig.tight_layout()
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            fig.savefig(path, dpi=130)
            written.append(path)
        plt.close(fig)
    return written
