"""The method made visible: the two figures that open the report's method section.

- `kernels_figure`: every kernel setting the runs used (read from the aggregated metrics table, so
  it shows what ran), its penalty s·k(d) and the size of its push on the weights against the
  distance ‖θ − θ_c‖, with the distances each run actually travelled on the same axis.
- `hill_figure`: the source's ball analogy on a stated 2-D loss with two basins: SGD with momentum
  and a little seeded gradient noise settles in the shallower basin, then continues with the
  project's own DistancePenalty on that point, for a few strengths.

Both evaluate the kernel with repel.penalty's own functions, so the curves are what training used.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import plots, storage  # plots sets the Agg backend
from .kernels import kernel_and_slope
from .kernels import scale as _scale

if TYPE_CHECKING:  # the 2-D demonstration trains, with torch; the kernels figure needs none
    import torch

    from .penalty import DistancePenalty

plt = plots.plt

# the width sigma each kernel's gamma stands for (penalty._scale inverted): gamma -> sigma
SIGMA_OF_GAMMA = {
    "rbf": lambda g: 1 / math.sqrt(2 * g),
    "imq": lambda g: 1 / math.sqrt(g),
    "laplacian": lambda g: 1 / g,
    "hinge": lambda g: 1 / g,
}
MAPPING = "γ ↔ σ:  rbf γ = 1/(2σ²),  imq γ = 1/σ²,  laplacian and hinge γ = 1/σ"
SETTING = ["kernel", "width", "gamma", "distance", "strength", "n_params"]  # what decides a run's curve


# ---------------------------------------------------------------------------------------------
# The kernels as the runs felt them


def penalty_and_push(kernel: str, scale: float, strength: float, r: np.ndarray, n: float = 1.0):
    """s·k(d) and ‖∇_θ s·k(d)‖ = s·|dk/dd|·2r/n at distances r = ‖θ − θ_c‖, d = r²/n
    (n = 1 for a summed distance, the number of trainable parameters for a mean one)."""
    r = np.asarray(r, dtype=np.float64)
    k, slope = kernel_and_slope(kernel, scale, r**2 / n)
    return strength * k, strength * np.abs(slope) * 2 * r / n


def kernel_settings(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, kernel setting) among the penalized continuation runs, with its
    scale, its label and the runs that used it."""
    missing = [c for c in ["phase", "run", "seed", "epoch", "dist"] + SETTING[:-1] if c not in df]
    if missing:
        raise ValueError(
            f"the metrics table has no column {', '.join(missing)}: make it again with `snakemake --forcerun aggregate`"
        )
    runs = df[(df["phase"] == "continue") & (df["strength"] > 0) & (df["kernel"] != "none")].copy()
    if "n_params" not in runs:  # tables written before the count was recorded
        runs["n_params"] = np.nan
    runs.loc[runs["distance"] == "sum", "n_params"] = 1.0  # a sum needs no count: keep such settings one
    keys = ["dataset", "model"] + SETTING
    rows = []
    for values, g in runs.groupby(keys, dropna=False, sort=True):
        row = dict(zip(keys, values))
        width = row["width"] if pd.notna(row["width"]) else None
        gamma = row["gamma"] if pd.notna(row["gamma"]) else None
        row["scale"] = _scale(row["kernel"], width, gamma)
        row["label"] = setting_label(row["kernel"], width, gamma, row["strength"], row["distance"])
        row["runs"] = sorted(g["run"].unique())
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=keys + ["scale", "label", "runs"])
    # per kernel, summed distances first, from the narrowest hill to the widest
    out = pd.DataFrame(rows).assign(mean=lambda t: t["distance"] == "mean", reach=lambda t: -t["scale"])
    return out.sort_values(["dataset", "model", "kernel", "mean", "reach", "strength"], ignore_index=True).drop(
        columns=["mean", "reach"]
    )


def setting_label(kernel: str, width: float | None, gamma: float | None, strength: float, distance: str) -> str:
    """ "rbf σ=1 (γ=0.5), s=10": the number as configured, and what it is in the other parametrization."""
    if gamma is not None:
        scale = f"γ={gamma:g} (σ={SIGMA_OF_GAMMA[kernel](gamma):.3g})"
    else:
        scale = f"σ={width:g} (γ={_scale(kernel, width, None):.3g})"
    return f"{kernel} {scale}, s={strength:g}" + (", mean distance" if distance == "mean" else "")


def _reach(kernel: str, scale: float, n: float) -> float:
    """The distance r at which the kernel's exponent is 1 (k = e⁻¹ for rbf and laplacian)."""
    d = 1 / scale if kernel in ("rbf", "imq") else 1 / scale**2  # laplacian and hinge act on sqrt(d)
    return math.sqrt(d * n)


def travelled(df: pd.DataFrame, dataset: str, model: str, runs: list[str]) -> pd.DataFrame:
    """Per run and seed: the smallest, largest and final distance to the first checkpoint over the
    continuation's epochs (finite values only), and whether it diverged."""
    rows = df[
        (df["phase"] == "continue") & (df["dataset"] == dataset) & (df["model"] == model) & df["run"].isin(runs)
    ].sort_values("epoch")
    out = []
    for (run, seed), g in rows.groupby(["run", "seed"], sort=True):
        dist = g["dist"][np.isfinite(g["dist"])]
        if len(dist):
            out.append(
                dict(
                    run=run,
                    seed=seed,
                    low=dist.min(),
                    high=dist.max(),
                    final=dist.iloc[-1],
                    diverged=bool(g.get("diverged", pd.Series(False)).any()),
                )
            )
    return pd.DataFrame(out, columns=["run", "seed", "low", "high", "final", "diverged"])


def kernels_figure(df: pd.DataFrame):
    """A column per dataset/model: the penalty (top), its push (middle, log) and the distances the
    runs travelled (bottom), all against ‖θ − θ_c‖ on one log axis."""
    settings = kernel_settings(df)
    if settings.empty:
        fig, ax = plt.subplots(figsize=(7, 2))
        ax.text(0.5, 0.5, "no run with a penalty (every run is a control, s = 0)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    cells = list(dict.fromkeys(zip(settings["dataset"], settings["model"])))
    colors = dict(
        zip(settings["label"].unique(), plots._distinct(plots.POINT_COLORS, "viridis", settings["label"].nunique()))
    )
    n_rows = max(
        sum(len(r) for r in settings.loc[(settings["dataset"] == d) & (settings["model"] == m), "runs"])
        for d, m in cells
    )
    fig, axes = plt.subplots(
        3,
        len(cells),
        squeeze=False,
        sharex="col",
        figsize=(7.5 * len(cells), 6.2 + 0.22 * n_rows),
        gridspec_kw=dict(height_ratios=[2, 2, 0.6 + 0.16 * n_rows], hspace=0.08),
    )
    for j, (dataset, model) in enumerate(cells):
        _kernel_column(
            axes[:, j], df, settings[(settings["dataset"] == dataset) & (settings["model"] == model)], colors
        )
        axes[0, j].set_title(f"{dataset} / {model}", fontsize=10)
    handles = [plt.Line2D([], [], color=c, lw=2, label=label) for label, c in colors.items()]
    handles += [
        plt.Line2D([], [], color="0.3", marker="o", ls="", label="a run's final distance (per seed)"),
        plt.Line2D([], [], color="0.3", marker="v", ls="", label="its push below the panel: gone flat"),
    ]
    axes[0, -1].legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.02, 1),
        fontsize=8,
        borderaxespad=0,
        title="kernel setting (as configured, and in the other parametrization)",
        title_fontsize=8,
    )
    axes[1, -1].text(
        1.02,
        1,
        MAPPING + "\n(for d summed; for a mean distance d/n, σ and γ are per parameter)",
        transform=axes[1, -1].transAxes,
        fontsize=8,
        va="top",
    )
    fig.suptitle(
        "The penalty as the runs felt it: its height, its push on the weights, and how far the runs went", fontsize=11
    )
    return fig


def _kernel_column(axes, df: pd.DataFrame, settings: pd.DataFrame, colors: dict) -> None:
    top, push_ax, strip = axes
    known = settings["n_params"].notna()  # a mean distance without its parameter count: its own unit
    spans = [travelled(df, s["dataset"], s["model"], s["runs"]) for _, s in settings.iterrows()]
    reach = [
        _reach(s["kernel"], s["scale"], s["n_params"] if k else 1.0) for (_, s), k in zip(settings.iterrows(), known)
    ]
    finals = pd.concat([t for t, k in zip(spans, known) if k] or [pd.DataFrame(columns=["low", "high"])])
    lo = min([*reach, *finals["low"][finals["low"] > 0]]) / 10
    hi = max([*reach, *finals["high"]]) * 10
    r = np.geomspace(lo, hi, 600)
    peak = 0.0
    row = 0
    pushed = []  # (final distance, push there, colour): drawn once the push panel's range is known
    labels = []
    for (_, s), span, is_known in zip(settings.iterrows(), spans, known):
        n = s["n_params"] if is_known else 1.0
        color = colors[s["label"]]
        value, push = penalty_and_push(s["kernel"], s["scale"], s["strength"], r, n)
        style = dict(color=color, lw=1.8) if is_known else dict(color=color, lw=1.8, ls="--")
        top.plot(r, value, **style)
        push_ax.plot(r, np.where(push > 0, push, np.nan), **style)
        peak = max(peak, push.max())
        if not is_known:
            continue  # its runs' distances are in another unit than its curve: not drawn on this axis
        for run, g in span.groupby("run", sort=False):
            for i, (_, t) in enumerate(g.iterrows()):
                y = row + 0.25 * (i - (len(g) - 1) / 2) / max(len(g), 1)  # seeds side by side in the run's row
                strip.plot([max(t["low"], lo), t["high"]], [y, y], color=color, lw=2.5, solid_capstyle="butt")
                strip.plot(t["final"], y, "x" if t["diverged"] else "o", color=color, ms=5)
                at_final = penalty_and_push(s["kernel"], s["scale"], s["strength"], np.array([t["final"]]), n)
                top.plot(t["final"], at_final[0][0], "o", color=color, ms=4, mec="0.2", mew=0.5)
                pushed.append((t["final"], at_final[1][0], color))
            labels.append(run)
            row += 1
    top.set_xscale("log")
    top.set_ylabel("penalty s·k(d)")
    push_ax.set_yscale("log")
    bottom = peak * 1e-6
    push_ax.set_ylim(bottom, peak * 3)
    for x, y, color in pushed:  # a push below the panel's range sits on its bottom edge as ▼: it had gone flat
        push_ax.plot(
            x,
            max(y, bottom),
            "o" if y >= bottom else "v",
            color=color,
            ms=4 if y >= bottom else 6,
            mec="0.2",
            mew=0.5,
            clip_on=False,
        )
    push_ax.set_ylabel("its push ‖∇_θ s·k‖ (log)")
    strip.set_yticks(range(len(labels)), labels, fontsize=7)
    strip.yaxis.tick_right()  # run ids are long: on the left they would run into the panels' labels
    strip.set_ylim(len(labels) - 0.5, -0.5)
    strip.set_ylabel("distances the\nruns reached\n(● final)", fontsize=8)
    strip.set_xlabel(
        "distance to the checkpoint ‖θ − θ_c‖₂ (log)"
        + ("" if known.all() else ";  dashed: a mean distance drawn against ‖θ − θ_c‖/√n (the table has no n_params)")
    )
    for ax in axes:
        ax.grid(alpha=0.3, which="major")
    for label in strip.get_yticklabels():  # each run's label in its setting's colour
        setting = settings[settings["runs"].map(lambda rs: label.get_text() in rs) & known].iloc[0]  # noqa: B023 - used at once
        label.set_color(colors[setting["label"]])


def plot_kernels(df: pd.DataFrame, out_dir: Path, formats=("png", "pdf")) -> list[Path]:
    """The kernels figure (`kernels_figure`), saved as out_dir/kernels.<format>."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return plots._save(kernels_figure(df), out_dir, "kernels", formats, tight_layout=False)


# ---------------------------------------------------------------------------------------------
# The hill on a 2-D loss

TILT, VALLEY = 0.4, 5.0  # the stated loss below; its right basin (x ≈ 0.95) is the shallower one
START = (1.5, 0.4)  # in the shallower basin
HILL_WIDTH = 0.3  # rbf sigma of the demonstration's hill
HILL_STRENGTHS = (0.4, 0.8, 1.6)
NOISE = 0.3  # std of the Gaussian noise added to each gradient component (SGD's minibatch noise)
STEPS = 300  # per phase: enough to settle at lr 1e-2 and momentum 0.9


def loss_2d(x, y):
    """The demonstration's loss: two basins along x, separated by a ridge near x ≈ 0.1; a valley in y.

    L(x, y) = (x² − 1)² + 0.4·x + 5·y²: minima near x ≈ −1.05 (L ≈ −0.4) and x ≈ +0.95 (L ≈ +0.4).
    Works on floats, NumPy arrays and torch tensors alike."""
    return (x**2 - 1) ** 2 + TILT * x + VALLEY * y**2


def descend(start, steps: int, seed: int, penalty: DistancePenalty | None = None, noise: float = NOISE) -> torch.Tensor:
    """SGD as the training jobs build it (TrainConfig's lr, momentum and weight decay) on the 2-D loss,
    with the penalty's add_grad_ after the loss's backward as in train.fit; the path, (steps + 1, 2)."""
    import torch

    from .train import TrainConfig

    cfg = TrainConfig(epochs=0)
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([theta], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    path = [theta.detach().clone()]
    for _ in range(steps):
        optimizer.zero_grad()
        loss_2d(theta[0], theta[1]).backward()
        theta.grad += noise * torch.randn(2, generator=generator, dtype=torch.float64)
        if penalty is not None:
            penalty.add_grad_([theta])
        optimizer.step()
        path.append(theta.detach().clone())
    return torch.stack(path)


def hill_paths(strengths=HILL_STRENGTHS, width: float = HILL_WIDTH, steps: int = STEPS, seed: int = 0) -> dict:
    """Settle from START (seed `seed`), then continue from that point without a penalty (s = 0) and
    with an rbf hill on it for each strength, all with the same noise (seed + 1): strength -> path."""
    from .penalty import DistancePenalty

    settle = descend(START, steps, seed)
    center = settle[-1]
    paths = {}
    for s in (0.0, *strengths):
        penalty = DistancePenalty(s, "rbf", width=width)
        penalty.add_checkpoint([center.clone()])
        paths[s] = descend(center.tolist(), steps, seed + 1, penalty)
    return {"settle": settle, "center": center, "width": width, "paths": paths}


def hill_figure(result: dict | None = None):
    """Left: the paths on the loss's contours. Right: the loss along x through the checkpoint, with
    each hill added: where s/σ² exceeds the loss's curvature, the hill removes the minimum."""
    result = result or hill_paths()
    center, width = result["center"].numpy(), result["width"]
    fig, (ax, cut) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw=dict(width_ratios=[1.6, 1]))
    x, y = np.meshgrid(np.linspace(-1.8, 1.9, 300), np.linspace(-0.9, 0.9, 200))
    levels = np.linspace(-0.5, 3, 22)
    ax.contourf(x, y, loss_2d(x, y), levels=levels, cmap="Greys_r", extend="max", alpha=0.55)
    ax.contour(x, y, loss_2d(x, y), levels=levels, colors="0.45", linewidths=0.4)
    settle = result["settle"].numpy()
    ax.plot(settle[:, 0], settle[:, 1], color="0.15", lw=1, ls=":", label="settling (no penalty)")
    ax.plot(*START, "s", color="0.15", ms=5)
    colors = ["tab:red", *plots._distinct(plots.POINT_COLORS, "viridis", len(result["paths"]) - 1)]
    for (s, path), color in zip(result["paths"].items(), colors):
        p = path.numpy()
        final = float(np.linalg.norm(p[-1] - center))
        name = "no penalty (s = 0)" if s == 0 else f"hill s = {s:g}"
        # the control last, on top: it stays where the weakest hill also stays
        zorder = 5 if s == 0 else 3
        ax.plot(
            p[:, 0],
            p[:, 1],
            color=color,
            lw=1.3,
            alpha=0.9,
            zorder=zorder,
            label=f"{name}: final ‖θ−θ_c‖ = {final:.2f}",
        )
        ax.plot(*p[-1], "o", color=color, ms=7, mec="k", mew=0.8, zorder=zorder + 1)
    ax.add_patch(plt.Circle(center, width, fill=False, ls="--", color="k", lw=0.8, zorder=2))
    ax.plot(
        *center, "*", color="white", ms=16, mec="k", zorder=2, label=f"θ_c, the hill's centre (σ = {width:g}, dashed)"
    )
    ax.set_xlabel("θ₁")
    ax.set_ylabel("θ₂")
    ax.set_aspect("equal")
    ax.set_title("L = (θ₁² − 1)² + 0.4·θ₁ + 5·θ₂²: the ball starts (■) in the shallower basin", fontsize=9)
    ax.legend(fontsize=7.5, loc="lower left", framealpha=0.9)

    xs = np.linspace(-1.8, 1.9, 500)
    cut.plot(xs, loss_2d(xs, center[1]), color="tab:red", lw=1.5, label="L (s = 0)")
    for s, color in zip(list(result["paths"])[1:], colors[1:]):
        r = np.hypot(xs - center[0], 0.0)
        value, _ = penalty_and_push("rbf", _scale("rbf", width, None), s, r)
        curvature = s / width**2  # the hill's −∂²/∂x² at its centre
        cut.plot(
            xs,
            loss_2d(xs, center[1]) + value,
            color=color,
            lw=1.5,
            label=f"L + hill s = {s:g}  (s/σ² = {curvature:.3g})",
        )
    curv = 12 * center[0] ** 2 - 4  # ∂²L/∂θ₁² at the checkpoint
    cut.axvline(center[0], color="0.3", ls="--", lw=1)
    cut.set_ylim(-0.7, 2.5)
    cut.set_xlabel(f"θ₁ (through θ_c, θ₂ = {center[1]:.2f})")
    cut.set_ylabel("loss")
    cut.set_title(f"the hill removes the minimum where s/σ² > ∂²L/∂θ₁² = {curv:.2f} there", fontsize=9)
    cut.legend(fontsize=7.5, loc="upper center")
    cut.grid(alpha=0.3)
    from .train import TrainConfig

    cfg = TrainConfig(epochs=0)
    fig.suptitle(
        f"The ball analogy: a hill on the point where SGD settled (the project's SGD: lr {cfg.lr:g}, momentum "
        f"{cfg.momentum:g}, weight decay {cfg.weight_decay:g}; its DistancePenalty, rbf; gradient noise of "
        f"std {NOISE:g})",
        fontsize=10,
    )
    return fig


def plot_hill(out_dir: Path, formats=("png", "pdf")) -> list[Path]:
    """The 2-D demonstration (`hill_figure`), saved as out_dir/hill_2d.<format>."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return plots._save(hill_figure(), out_dir, "hill_2d", formats)


def plot_method(
    out_dir: Path, metrics: str | Path | None = None, hill: bool = False, formats=("png", "pdf")
) -> list[Path]:
    """The method figures asked for: the kernels (from the aggregated metrics table at `metrics`)
    and/or the 2-D hill."""
    if metrics is None and not hill:
        raise ValueError("nothing to plot: give --metrics (the kernels figure) or --hill")
    written = plot_kernels(storage.read_parquet(metrics, "aggregated metrics"), out_dir, formats) if metrics else []
    return written + (plot_hill(out_dir, formats) if hill else [])
