"""Figures from the aggregated tables: one per family of the grid, the landscape, the ensembles.

A family's figure has a row per dataset/model and a column per metric. Several seeds are drawn as
their mean with a min–max band (curves) or mean ± 1 std (final values). The base training before
the checkpoint is grey, the control (s = 0) red, as in the source's figures. The landscape figure
has a row per family and dataset/model, its lines labelled as in the family's figure.

Each figure is built by a `*_figure` function that returns it (for tests to inspect) and saved by
the `plot_*` function that calls it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from . import grid  # noqa: E402
from . import spec as run_spec  # noqa: E402
from .claims import VERDICTS  # noqa: E402

CONTROL_COLORS = ["tab:red", "darkred", "lightcoral", "orangered"]
POINT_COLORS = [
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
    "navy",
    "teal",
    "goldenrod",
]  # no red: red is the control


def method_key(method: str) -> tuple:
    """Sort key of ensemble methods: by name, a strength's distance methods by s (s3 before s10)."""
    kind = grid.method_strength(method)
    return (method, 0.0) if kind is None or kind[1] is None else (kind[0], kind[1])


def method_label(method: str) -> str:
    """A method in a legend: a strength's distance method as 'distance, s=10' (spec's label of s)."""
    kind = grid.method_strength(method)
    return method if kind is None or kind[1] is None else f"{kind[0]}, {run_spec.label('strength', kind[1])}"


def method_groups(frame: pd.DataFrame) -> list:
    """(method, its rows) in method_key order."""
    return sorted(frame.groupby("method"), key=lambda kv: method_key(kv[0]))


def method_colors(methods) -> dict:
    """method -> colour, in method_key order (the colours repeat past the twelfth method)."""
    return {m: POINT_COLORS[k % len(POINT_COLORS)] for k, m in enumerate(sorted(set(methods), key=method_key))}


PANELS = {  # metrics column -> y-axis label
    "val_acc": "validation accuracy",
    "test_acc": "test accuracy",
    "train_acc": "training accuracy",
    "val_loss": "validation loss",
    "train_loss": "training loss (CE + penalty)",
    "dist": "distance to the checkpoint ‖θ − θ_c‖₂",
    "dist_min": "distance to the nearest checkpoint",
    "dist_rel": "‖θ − θ_c‖ / ‖θ_c‖",
    "penalty": "penalty",
    "grad_ratio": "‖∇penalty‖ / ‖∇CE‖",
    "lr": "learning rate",
    "weight_norm": "‖θ‖₂",
    "step_cos": "cos(step, previous step)",
    "radial_cos": "cos(step, θ − θ_c)  (1: away, −1: back)",
    "func_disagree": "val. labels differing from θ_c's",
    "func_kl": "KL(p_c ‖ p_θ) on validation",
}
# their value at the checkpoint itself
START_AT_ZERO = {"dist", "dist_min", "dist_rel", "penalty", "func_disagree", "func_kl"}
NOT_IN_BASE = START_AT_ZERO | {"grad_ratio", "step_cos", "radial_cos"}  # no meaning before the checkpoint
LOG_PANELS = {"grad_ratio"}  # ratios that span orders of magnitude
ZOOM_BELOW = 0.25  # an inset zooms on the continuation where its y-range is under this share of the panel's
BARRIER_SHOWN = 1e-3  # smaller landscape barriers are noise: the line stays in the basin


def describe(run: pd.Series, varying: list[str]) -> str:
    """Legend text: the values of the keys the family varies (all of the penalty's if none), as
    spec.py labels them, read from the run's grid columns."""
    if run["strength"] == 0:  # a control has no penalty settings
        keys = [k for k in varying if k not in run_spec.PENALTY_KEYS]
        parts = ["control (s=0)"]
    else:
        keys = varying or ["strength", "kernel", "gamma" if pd.notna(run["gamma"]) else "width"]
        parts = []
    parts += [run_spec.label(key, run[run_spec.column(key)]) for key in keys]
    return ", ".join(dict.fromkeys(parts))


def _band(ax, df: pd.DataFrame, column: str, color, label: str, **style) -> None:
    stats = df.groupby("epoch")[column].agg(["mean", "min", "max"])
    ax.plot(stats.index, stats["mean"], color=color, label=label, **style)
    if df["seed"].nunique() > 1:
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, linewidth=0)


def _start(base: pd.DataFrame, rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """Each seed's curve starts at the checkpoint: distance 0, or the base's value at the checkpoint's
    epoch (none for a run from the initial weights, epoch 0, where nothing was measured)."""
    first = rows.groupby("seed").head(1).copy()
    first["epoch"] = first["checkpoint_epoch"]
    if column in START_AT_ZERO:
        first[column] = 0.0
    else:
        at = base.groupby(["seed", "epoch"])[column].last()
        keys = pd.MultiIndex.from_arrays([first["seed"], first["epoch"]])
        first[column] = at.reindex(keys).to_numpy()
    return first.dropna(subset=[column])


def _distinct(palette: list[str], cmap: str, n: int) -> list:
    """n distinct colours: the palette's, or evenly spaced ones of a colormap where it has too few."""
    if n <= len(palette):
        return palette[:n]
    return [matplotlib.colormaps[cmap](x) for x in np.linspace(0.3, 0.95, n)]


def _runs_in_order(firsts: pd.DataFrame, runs: list[str]):
    """(run id, first row, colour): controls first and red, so the red curves sit under the others;
    every run its own colour."""
    present = [r for r in runs if r in firsts.index]
    controls = [r for r in present if firsts.loc[r, "strength"] == 0]
    others = [r for r in present if firsts.loc[r, "strength"] != 0]
    colors = _distinct(CONTROL_COLORS, "Reds", len(controls)) + _distinct(POINT_COLORS, "viridis", len(others))
    for rid, color in zip(controls + others, colors):
        yield rid, firsts.loc[rid], color


def _continuations(base: pd.DataFrame, runs: pd.DataFrame, column: str, spec: dict):
    """(first row, colour, its rows from the checkpoint on) for each of the family's runs."""
    for rid, run, color in _runs_in_order(runs.groupby("run").first(), spec["runs"]):
        rows = runs[runs["run"] == rid]
        if column != "lr":  # the lr has no value "at the checkpoint" to start from
            rows = pd.concat([_start(base, rows, column), rows])
        if column in LOG_PANELS:  # a log axis has no place for them (a control's ratio is 0)
            rows = rows.assign(**{column: rows[column].where(rows[column] > 0)})
        yield run, color, rows


def _draw_runs(ax, curves: list, column: str, spec: dict) -> None:
    for run, color, rows in curves:
        _band(ax, rows, column, color, describe(run, spec["varying"]), linewidth=1.4)
        for _, end in rows[rows["diverged"]].iterrows():
            ax.plot(end["epoch"], 0 if pd.isna(end[column]) else end[column], "x", color=color, markersize=9)


def checkpoint_epochs(run: pd.Series) -> list[int]:
    """The epochs after which a run took a new checkpoint: every K epochs of its continuation,
    before its last epoch."""
    if not run["checkpoint_every"] > 0:
        return []
    start, every = int(run["checkpoint_epoch"]), int(run["checkpoint_every"])
    return list(range(start + every, start + int(run["epochs"]), every))


def release_epochs(run: pd.Series) -> list[int]:
    """The epoch after which a run's penalty was switched off (none: never)."""
    release = run.get("release_after")
    return [] if pd.isna(release) else [int(run["checkpoint_epoch"]) + int(release)]


def _mark(ax, curves: list, column: str, epochs_of, marker: str, size: int) -> None:
    """A marker on each run's mean curve at the epochs `epochs_of(run)` names."""
    for run, color, rows in curves:
        mean = rows.groupby("epoch")[column].mean()
        epochs = [e for e in epochs_of(run) if e in mean.index]
        if epochs:
            ax.plot(
                epochs,
                mean.loc[epochs],
                linestyle="none",
                marker=marker,
                markersize=size,
                markeredgewidth=1.8,
                color=color,
            )


def _zoom(ax, base: pd.DataFrame, curves: list, column: str, spec: dict) -> None:
    """An inset on the continuation where the base's range dwarfs it (accuracies: 0.1 to 0.99 in
    the base, 0.95 to 0.99 after the checkpoint), on the side away from the continuation."""
    rows = pd.concat([r for _, _, r in curves])
    values = rows[column][np.isfinite(rows[column])]
    everything = pd.concat([values, base[column][np.isfinite(base[column])]])
    lo, hi = values.min(), values.max()
    if values.empty or hi - lo >= ZOOM_BELOW * (everything.max() - everything.min()):
        return
    high = (lo + hi) / 2 > (everything.min() + everything.max()) / 2
    inset = ax.inset_axes([0.42, 0.07, 0.55, 0.5] if high else [0.42, 0.45, 0.55, 0.5])
    _draw_runs(inset, curves, column, spec)
    pad = 0.08 * (hi - lo) or 0.01 * max(abs(hi), 1e-3)  # flat curves still get a visible range
    inset.set_xlim(rows["checkpoint_epoch"].min(), rows["epoch"].max())
    inset.set_ylim(lo - pad, hi + pad)
    inset.tick_params(labelsize=7)
    inset.grid(alpha=0.3)
    ax.indicate_inset_zoom(inset, edgecolor="0.4")


def _curves(ax, panel: pd.DataFrame, column: str, spec: dict) -> None:
    base = panel[panel["phase"] == "base"]
    runs = panel[panel["phase"] == "continue"]
    with_base = column not in NOT_IN_BASE and not base.empty
    if with_base:
        _band(ax, base, column, "0.55", "base training", linewidth=1.2)
    for epoch in sorted(runs["checkpoint_epoch"].dropna().unique()):  # the base's, or 0 for a start at init
        ax.axvline(epoch, color="0.3", linestyle=":", linewidth=1)
    curves = list(_continuations(base, runs, column, spec))
    _draw_runs(ax, curves, column, spec)
    if column == "dist_min":  # dist_min drops after each new checkpoint
        _mark(ax, curves, column, checkpoint_epochs, "|", 12)
    _mark(ax, curves, column, release_epochs, "v", 8)
    if column in LOG_PANELS and any((rows[column] > 0).any() for _, _, rows in curves):
        ax.set_yscale("log")
    if with_base:
        _zoom(ax, base, curves, column, spec)
    ax.set_xlabel("epoch (dotted line: the checkpoint)")
    ax.grid(alpha=0.3)


def _finals(ax, panel: pd.DataFrame, column: str, spec: dict) -> None:
    """Each run's last value (mean ± std over seeds) against the first swept key; one line per
    combination of the other keys the family varies."""
    runs = panel[panel["phase"] == "continue"]
    x_key = spec["x"]
    x_column = run_spec.column(x_key)
    last = runs.sort_values("epoch").groupby(["run", "seed"]).tail(1)  # a diverged run's too
    others = [k for k in spec["varying"] if k != x_key]
    firsts = last.groupby("run").first()
    lines: dict[str, tuple[list[str], str]] = {}  # legend text -> (its runs, the first run's colour)
    for rid, run, color in _runs_in_order(firsts, spec["runs"]):
        lines.setdefault(describe(run, others), ([], color))[0].append(rid)
    for label, (ids, color) in lines.items():
        g = last[last["run"].isin(ids)].groupby(x_column)
        stats = g[column].agg(["mean", "std"]).sort_index()
        diverged = int(last.loc[last["run"].isin(ids), "diverged"].sum())
        text = label + (f" ({diverged} diverged)" if diverged else "")
        ax.errorbar(
            stats.index, stats["mean"], yerr=stats["std"].fillna(0), fmt="o-", capsize=3, color=color, label=text
        )
    ax.set_xlabel(x_key)
    if (
        last[x_column].dtype.kind in "fi"
        and last[x_column].min() > 0
        and last[x_column].max() / last[x_column].min() > 20
    ):
        ax.set_xscale("log")
    ax.grid(alpha=0.3)


def plot_family(df: pd.DataFrame, name: str, spec: dict, out_dir: Path, formats=("png", "pdf")) -> list[Path]:
    """One family's figure (`family_figure`), saved as out_dir/<name>.<format>."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save(family_figure(df, name, spec), out_dir, name, formats, tight_layout=False)


def family_figure(df: pd.DataFrame, name: str, spec: dict):
    """One family's figure: a row per dataset/model, a column per panel (a metric)."""
    runs = df[(df["phase"] == "continue") & df["run"].isin(spec["runs"])]
    # the base trainings of these runs' seeds only (other seeds may train bases for the ensembles)
    df = pd.concat([df[(df["phase"] == "base") & df["seed"].isin(runs["seed"])], runs])
    several = runs["seed"].nunique() > 1
    missing = sorted(set(spec["runs"]) - set(runs["run"]))
    if missing:
        raise ValueError(f"family '{name}': no metrics for the runs {', '.join(missing)}; is the table up to date?")
    cells = list(df.groupby(["dataset", "model"], sort=True))
    panels = spec["panels"]
    fig, axes = plt.subplots(len(cells), len(panels), figsize=(5.2 * len(panels), 4 * len(cells)), squeeze=False)
    for row, ((dataset, model), cell) in enumerate(cells):
        for col, column in enumerate(panels):
            ax = axes[row, col]
            (_finals if spec["figure"] == "final" else _curves)(ax, cell, column, spec)
            final = "final " if spec["figure"] == "final" else ""
            ax.set_ylabel(final + PANELS[column])
            ax.set_title(f"{dataset} / {model}", fontsize=9)
        axes[row, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    if spec["figure"] == "final":
        how = "mean ± 1 std over seeds" if several else "one seed"
        what = f"final values against {spec['x']} ({how})"
    else:
        how = "; several seeds: mean and min–max band" if several else ""
        what = f"per epoch; grey: base training, red: control (s = 0); × marks a diverged run{how}"
        if "dist_min" in panels and (runs["checkpoint_every"] > 0).any():
            what += "; | on a dist_min curve: a new checkpoint"
        if "release_after" in runs and runs["release_after"].notna().any():
            what += "; ▼: the penalty released"
    fig.suptitle(f"family '{name}': {what}", fontsize=10)
    fig.subplots_adjust(hspace=0.35, wspace=0.3)
    return fig


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


def plot_landscape(
    df: pd.DataFrame, runs: pd.DataFrame, families: dict, out_dir: Path, formats=("png", "pdf")
) -> list[Path]:
    """The landscape figure (`landscape_figure`), saved as out_dir/landscape.<format>."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save(landscape_figure(df, runs, families), out_dir, "landscape", formats, tight_layout=False)


def _landscape_groups(df: pd.DataFrame, families: dict):
    """(title, varying keys or None, run ids) for each family with a landscape, then the runs of no family."""
    present, seen = set(df["run"]), set()
    for name, spec in families.items():
        ids = [r for r in spec["runs"] if r in present]
        seen.update(ids)
        if ids:
            yield f"family '{name}'", spec["varying"], ids
    if present - seen:
        yield "runs of no family", None, sorted(present - seen)


def _landscape_row(axes, cell: pd.DataFrame, firsts: pd.DataFrame, varying, ids: list[str]) -> None:
    """One line per run (mean over seeds), labelled by its swept values (its id if in no family)."""
    present = set(cell["run"])
    for rid, run, color in _runs_in_order(firsts, [r for r in ids if r in present]):
        rows = cell[cell["run"] == rid]
        curve = rows.groupby("alpha")[["loss", "error"]].mean()
        height = rows.groupby("seed")["barrier"].first().mean()
        label = (rid if varying is None else describe(run, varying)) + (
            f" (barrier {height:.3g})" if height >= BARRIER_SHOWN else ""
        )
        for ax, column in zip(axes, ("loss", "error")):
            ax.plot(curve.index, curve[column], color=color, label=label, linewidth=1.3)


def landscape_figure(df: pd.DataFrame, runs: pd.DataFrame, families: dict):
    """Validation loss and error along θ(α) = (1−α)θ_c + αθ: a row per family and dataset/model.

    `df` is the landscape table, `runs` the summary table (each run's grid settings, for the
    legends), `families` as grid.families returns it."""
    firsts = runs.groupby("run").first()
    missing = sorted(set(df["run"]) - set(firsts.index))
    if missing:
        raise ValueError(f"no summary rows for the runs {', '.join(missing)}; is summary.parquet up to date?")
    groups = [
        (f"{title}: {dataset} / {model}", varying, ids, cell)
        for title, varying, ids in _landscape_groups(df, families)
        for (dataset, model), cell in df.groupby(["dataset", "model"], sort=True)
        if cell["run"].isin(ids).any()
    ]
    lines = [
        "Validation loss and error along θ(α) = (1−α)θ_c + αθ: α = 0 is the checkpoint θ_c, "
        "α = 1 a run's final weights θ; mean over seeds, red: control (s = 0)",
        f"barrier (in the legend where ≥ {BARRIER_SHOWN:g}): the most the loss rises above the straight line "
        "between its values at α = 0 and α = 1",
    ]
    with_bn = sorted(df.loc[df["bn_recomputed"].eq(True), "model"].unique())
    if with_bn:
        lines.append(f"BatchNorm statistics recomputed at every α ({', '.join(with_bn)})")
    top_in, row_in = 0.3 + 0.2 * len(lines), 3.0  # the title's height and a row's, in inches
    height = top_in + row_in * len(groups)
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, height), squeeze=False)
    for (title, varying, ids, cell), row in zip(groups, axes):
        _landscape_row(row, cell, firsts, varying, ids)
        for ax, ylabel in zip(row, ("validation loss", "validation error")):
            for x in (0, 1):
                ax.axvline(x, color="0.3", linestyle=":", linewidth=1)
            ax.set_xlabel("α  (0: θ_c, 1: θ)")
            ax.set_ylabel(ylabel)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
        row[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    # the title keeps its inches whatever the number of rows, so it never reaches the panels' titles
    fig.suptitle("\n".join(lines), fontsize=9, y=1 - 0.1 / height, va="top")
    fig.subplots_adjust(top=1 - top_in / height, bottom=0.5 / height, hspace=0.45, wspace=0.25)
    return fig


def plot_ensembles(
    curves: pd.DataFrame,
    pairs: pd.DataFrame,
    out_dir: Path,
    formats=("png", "pdf"),
    averages: pd.DataFrame | None = None,
) -> list[Path]:
    """Ensemble metrics vs members, pairwise disagreement, diversity vs weight distance, and (with
    `averages`) each weight-averaged model beside its ensemble.

    A method has one ensemble per seed (or group of independent seeds): curves are their mean with
    a min-max band, heatmaps their mean disagreement, the scatter every pair of every ensemble."""
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = method_colors(curves["method"])
    written = _save(ensemble_accuracy_figure(curves, colors), out_dir, "ensemble_accuracy", formats)
    written += _save(disagreement_figure(pairs), out_dir, "ensemble_disagreement", formats)
    written += _save(diversity_figure(pairs, colors), out_dir, "diversity_vs_distance", formats)
    if averages is not None:
        written += _save(weight_average_figure(averages), out_dir, "weight_averages", formats)
    return written


def ensemble_accuracy_figure(curves: pd.DataFrame, colors: dict):
    panels = sorted(curves.groupby(["dataset", "model"]).groups)
    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 4.5 * len(panels)), squeeze=False)
    for row, (dataset, model) in enumerate(panels):
        panel = curves[(curves["dataset"] == dataset) & (curves["model"] == model)]
        for method, g in method_groups(panel):
            stats = g.groupby("m")[["accuracy", "mean_member_accuracy", "nll"]].agg(["mean", "min", "max"])
            name = method_label(method)
            label = f"{name} ({g['ensemble'].nunique()} ensembles)" if g["ensemble"].nunique() > 1 else name
            for ax, column in ((axes[row, 0], "accuracy"), (axes[row, 1], "nll")):
                ax.plot(stats.index, stats[(column, "mean")], "o-", color=colors[method], label=label)
                ax.fill_between(
                    stats.index,
                    stats[(column, "min")],
                    stats[(column, "max")],
                    color=colors[method],
                    alpha=0.15,
                    linewidth=0,
                )
            axes[row, 0].plot(stats.index, stats[("mean_member_accuracy", "mean")], ":", color=colors[method])
        axes[row, 0].set_ylabel("test accuracy (dotted: mean member)")
        axes[row, 1].set_ylabel("test NLL")
        for ax in axes[row]:
            ax.set_title(f"{dataset} / {model}")
            ax.set_xlabel("members m (the last m snapshots)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(
        "Ensembles of the last m members at an equal epoch budget "
        "(several ensembles per method: mean and min-max band)",
        fontsize=10,
    )
    return fig


def disagreement_figure(pairs: pd.DataFrame):
    panels = sorted(pairs.groupby(["dataset", "model"]).groups)
    methods = sorted(pairs["method"].unique(), key=method_key)
    fig, axes = plt.subplots(len(panels), len(methods), figsize=(3.6 * len(methods), 3.4 * len(panels)), squeeze=False)
    vmax = max(pairs["disagreement"].max(), 1e-3)  # one colour scale, so methods compare at a glance
    for row, (dataset, model) in enumerate(panels):
        for col, method in enumerate(methods):
            g = pairs[(pairs["dataset"] == dataset) & (pairs["model"] == model) & (pairs["method"] == method)]
            n = int(max(g["i"].max(), g["j"].max())) + 1 if len(g) else 1
            mean = g.groupby(["i", "j"], as_index=False)["disagreement"].mean()  # over the method's ensembles
            image = axes[row, col].imshow(pair_matrix(mean, n), vmin=0, vmax=vmax, cmap="viridis")
            axes[row, col].set_xticks(range(n))
            axes[row, col].set_yticks(range(n))
            axes[row, col].set_title(f"{method_label(method)}\n{dataset} / {model}", fontsize=9)
            axes[row, col].set_xlabel("member")
            axes[row, col].set_ylabel("member")
            fig.colorbar(image, ax=axes[row, col], fraction=0.046)
    fig.suptitle(
        "Pairwise disagreement: fraction of test points whose predicted labels differ "
        "(members oldest first; mean over a method's ensembles; one colour scale)",
        fontsize=10,
    )
    return fig


def diversity_figure(pairs: pd.DataFrame, colors: dict):
    panels = sorted(pairs.groupby(["dataset", "model"]).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], panels):
        panel = pairs[(pairs["dataset"] == dataset) & (pairs["model"] == model)]
        for method, g in method_groups(panel):
            ax.scatter(g["weight_distance"], g["disagreement"], color=colors[method], label=method_label(method), s=30)
        ax.set_title(f"{dataset} / {model}")
        ax.set_xlabel("L2 distance between the two members' weights")
        ax.set_ylabel("disagreement")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Diversity vs distance in weight space: one point per pair of members", fontsize=10)
    return fig


AVERAGE_MARKERS = {  # what is drawn for each method: column of weight_averages.parquet, its rows, style
    "ensemble": ("ensemble_accuracy", "members", dict(marker="o", color="black")),
    "best member": ("best_member_accuracy", "members", dict(marker="_", color="gray", markersize=14)),
    "members' weight average": ("accuracy", "members", dict(marker="s", color="tab:blue")),
    "SWA (average over every epoch)": ("accuracy", "swa", dict(marker="D", color="tab:green")),
}


def weight_average_figure(averages: pd.DataFrame):
    """Per method: the ensemble's accuracy, its best member's, its members' weight average and (SWA)
    the run's own average; the mean over the method's ensembles, bars from min to max."""
    panels = sorted(averages.groupby(["dataset", "model"]).groups)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(max(6.0, 1.3 * averages["method"].nunique() + 2) * len(panels), 4.6), squeeze=False
    )
    for ax, (dataset, model) in zip(axes[0], panels):
        panel = averages[(averages["dataset"] == dataset) & (averages["model"] == model)]
        methods = sorted(panel["method"].unique(), key=method_key)
        for k, (label, (column, kind, style)) in enumerate(AVERAGE_MARKERS.items()):
            rows = panel[panel["averaged"] == kind]
            stats = rows.groupby("method")[column].agg(["mean", "min", "max"]).reindex(methods).dropna()
            if stats.empty:
                continue
            x = np.array([methods.index(m) for m in stats.index]) + (k - 1.5) * 0.12
            ax.errorbar(
                x,
                stats["mean"],
                # clipped: the mean of equal values can round an ulp past them, and errorbar refuses < 0
                yerr=[(stats["mean"] - stats["min"]).clip(lower=0), (stats["max"] - stats["mean"]).clip(lower=0)],
                linestyle="none",
                capsize=3,
                label=label,
                **style,
            )
        ax.set_xticks(range(len(methods)), [method_label(m) for m in methods], rotation=20)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{dataset} / {model}")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.suptitle(
        "Weight-averaged models beside their ensembles (BatchNorm recomputed; "
        "mean over a method's ensembles, bars from min to max)",
        fontsize=10,
    )
    return fig


def pair_matrix(pairs: pd.DataFrame, n: int):
    """A symmetric (n, n) disagreement matrix with a zero diagonal, from one row per pair i < j."""
    matrix = np.zeros((n, n))
    for _, r in pairs.iterrows():
        matrix[int(r["i"]), int(r["j"])] = matrix[int(r["j"]), int(r["i"])] = r["disagreement"]
    return matrix


# one colour per verdict, in claims.VERDICTS' order (a verdict without a colour fails at import)
VERDICT_COLORS = dict(zip(VERDICTS, ["#8fd19e", "#f08c8c", "#f3d08b", "#b9d3ee", "#f4f4f4"], strict=True))


def claims_figure(table: pd.DataFrame):
    """The claims' verdicts (claims.evaluate's table): a row per claim, a column per dataset/model,
    each cell coloured by its verdict and labelled with its statistic's value."""
    import textwrap

    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    claim_ids = list(dict.fromkeys(table["claim"]))
    cells = list(dict.fromkeys(zip(table["dataset"], table["model"])))
    verdicts = list(VERDICT_COLORS)
    wrap = textwrap.TextWrapper(width=34, max_lines=3, placeholder=" …")
    rows = table.set_index(["claim", "dataset", "model"])
    codes = np.array([[verdicts.index(rows.loc[(c, *cell), "verdict"]) for cell in cells] for c in claim_ids])
    fig, ax = plt.subplots(figsize=(3.5 + 2.4 * len(cells), 1.2 + 0.5 * len(claim_ids)))
    ax.imshow(
        codes, cmap=ListedColormap(list(VERDICT_COLORS.values())), vmin=-0.5, vmax=len(verdicts) - 0.5, aspect="auto"
    )
    for i, claim in enumerate(claim_ids):
        for j, cell in enumerate(cells):
            row = rows.loc[(claim, *cell)]
            label = "not run" if row["verdict"] == "not run" else (row["value_text"] or row["verdict"])
            # at most three lines: claims.md has every value whole
            ax.text(j, i, wrap.fill(label), ha="center", va="center", fontsize=7, color="0.15")
    ax.set_xticks(range(len(cells)), [f"{d} / {m}" for d, m in cells], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(claim_ids)), claim_ids, fontsize=8)
    ax.set_xticks(np.arange(len(cells) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(claim_ids) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    ax.legend(
        handles=[Patch(facecolor=c, edgecolor="0.6", label=v) for v, c in VERDICT_COLORS.items()],
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=8,
        borderaxespad=0,
    )
    ax.set_title(
        "The source study's claims: verdict per dataset/model\n(cell: the statistic's value; "
        "claims.md gives each statistic, interval and rule)",
        fontsize=9,
    )
    return fig


def plot_claims(table: pd.DataFrame, out_dir: Path, formats=("png", "pdf")) -> list[Path]:
    """The claims figure (`claims_figure`), saved as out_dir/claims.<format>."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save(claims_figure(table), out_dir, "claims", formats, tight_layout=False)


FUNCTION_COLUMNS = ("func_disagree", "func_kl")  # the function distances to θ_c, each a column of the figure


def function_vs_weights_figure(metrics: pd.DataFrame):
    """Each run's final distance to θ_c in function space against its final distance in weights, one
    point per run and seed, a row per dataset/model; a run and its control share a colour, the control
    a star, and the dashed line through the control's mean is proportionality (slope 1 on log axes):
    a run below it is less farther in function than in weights, relative to its control (the claim
    function.vs_weights)."""
    runs = metrics[metrics["phase"] == "continue"].sort_values("epoch")
    final = runs.groupby(["dataset", "model", "run", "seed"], sort=True).tail(1)
    cells = final[["dataset", "model"]].drop_duplicates().to_numpy().tolist()
    fig, axes = plt.subplots(
        max(1, len(cells)),
        len(FUNCTION_COLUMNS),
        figsize=(5 * len(FUNCTION_COLUMNS), 3.6 * max(1, len(cells))),
        squeeze=False,
    )
    for row, (dataset, model) in enumerate(cells):
        cell = final[(final["dataset"] == dataset) & (final["model"] == model)]
        controls = sorted(cell["control"].dropna().unique())
        colors = dict(zip(controls, _distinct(POINT_COLORS, "tab20", len(controls))))
        for ax, column in zip(axes[row], FUNCTION_COLUMNS):
            shown = cell[(cell["dist"] > 0) & (cell[column] > 0)] if column in cell else cell.iloc[:0]
            for control, group in shown.groupby("control"):
                mine = group[group["run"] == control]
                others = group[group["run"] != control]
                color = colors[control]
                ax.scatter(others["dist"], others[column], s=14, color=color, alpha=0.8)
                ax.scatter(
                    mine["dist"],
                    mine[column],
                    s=60,
                    marker="*",
                    color=color,
                    edgecolor="black",
                    linewidth=0.5,
                    label=control.removeprefix("s0_"),
                )
                if len(mine):  # proportional to the control: f = f_c · d / d_c
                    d_c, f_c = mine["dist"].mean(), mine[column].mean()
                    xs = np.geomspace(max(shown["dist"].min(), 1e-12), shown["dist"].max(), 2)
                    ax.plot(xs, f_c * xs / d_c, "--", color=color, linewidth=0.8)
            if len(shown):
                ax.set_xscale("log")
                ax.set_yscale("log")
            else:
                ax.text(0.5, 0.5, f"no run has {column} > 0", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel("final ‖θ − θ_c‖₂")
            ax.set_ylabel(f"final {PANELS[column]}")
            ax.set_title(f"{dataset} / {model}", fontsize=9)
        handles = {label: h for ax in axes[row] for h, label in zip(*ax.get_legend_handles_labels())}
        if handles:  # one legend per row, whichever panel drew the controls
            axes[row][-1].legend(
                handles.values(),
                handles.keys(),
                fontsize=6,
                title="control (★), its runs (·)",
                title_fontsize=7,
                loc="upper left",
                bbox_to_anchor=(1.02, 1),
            )
    return fig


def plot_function_vs_weights(metrics: pd.DataFrame, out_dir: Path, formats=("png", "pdf")) -> list[Path]:
    """The function-vs-weights figure (`function_vs_weights_figure`), out_dir/function_vs_weights.<format>."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save(function_vs_weights_figure(metrics), out_dir, "function_vs_weights", formats, tight_layout=False)


def plot_tables(args) -> None:
    """`repel plot`: the figures its arguments ask for (a family's, the landscape, the ensembles, the claims)."""
    import json

    from . import storage

    out, written, formats = Path(args.out_dir), [], args.formats or ("png", "pdf")
    if args.metrics:
        if not (args.family and args.spec):
            raise ValueError("--metrics needs --family and --spec: the figures are drawn one family at a time")
        written += plot_family(
            storage.read_parquet(args.metrics, "aggregated metrics"), args.family, json.loads(args.spec), out, formats
        )
    if args.landscape:
        if not (args.summary and args.families):
            raise ValueError("--landscape needs --summary and --families: its lines are labelled as the families'")
        written += plot_landscape(
            storage.read_parquet(args.landscape, "aggregated landscape"),
            storage.read_parquet(args.summary, "summary"),
            json.loads(args.families),
            out,
            formats,
        )
    if args.ensembles:
        if not args.pairs:
            raise ValueError("--ensembles needs --pairs (ensemble_pairs.parquet) too")
        averages = storage.read_parquet(args.averages, "weight averages") if args.averages else None
        written += plot_ensembles(
            storage.read_parquet(args.ensembles, "ensemble curves"),
            storage.read_parquet(args.pairs, "ensemble pairs"),
            out,
            formats,
            averages,
        )
    if args.claims:
        written += plot_claims(storage.read_parquet(args.claims, "claims"), out, formats)
    if args.function:
        written += plot_function_vs_weights(storage.read_parquet(args.function, "aggregated metrics"), out, formats)
    if not written:
        raise ValueError("nothing to plot: give --metrics, --landscape, --ensembles, --claims or --function")
    for path in written:
        print(f"wrote {path}", flush=True)
