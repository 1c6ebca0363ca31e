"""The method figures: the kernel curves against the formulas worked out by hand, the kernels
figure against the small metrics table built here, and the 2-D ball analogy's outcome."""

import math

import numpy as np
import pandas as pd
import pytest

from repel import cli
from repel import method_figures as mf

RBF = "s10-rbf-w1_lr0.01-const-e20"
GAMMA = "s10-rbf-g0.001_lr0.01-const-e20"
MEAN = "s10-rbf-g1-mean_lr0.01-const-e20"
CONTROL = "s0_lr0.01-const-e20"
N_PARAMS = 400
SETTINGS = {  # run -> kernel, width, gamma, strength, distance
    RBF: ("rbf", 1.0, np.nan, 10.0, "sum"),
    GAMMA: ("rbf", np.nan, 1e-3, 10.0, "sum"),
    MEAN: ("rbf", np.nan, 1.0, 10.0, "mean"),
    CONTROL: ("none", np.nan, np.nan, 0.0, "sum"),
}


def metrics(n_params: bool = True) -> pd.DataFrame:
    """Two seeds of each run, epochs 11-20: seed k's distance is (1 + k) * 0.1 * (epoch - 10),
    so seed 0 travels 0.1 .. 1.0 and seed 1 0.2 .. 2.0; a base epoch that has no distance."""
    rows = [
        dict(
            phase="base",
            run="base",
            seed=0,
            epoch=10,
            dist=np.nan,
            kernel=None,
            width=np.nan,
            gamma=np.nan,
            strength=np.nan,
            distance=None,
        )
    ]
    for run, (kernel, width, gamma, strength, distance) in SETTINGS.items():
        rows += [
            dict(
                phase="continue",
                run=run,
                seed=seed,
                epoch=e,
                kernel=kernel,
                width=width,
                gamma=gamma,
                strength=strength,
                distance=distance,
                dist=(1 + seed) * 0.1 * (e - 10),
                diverged=False,
                **({"n_params": N_PARAMS} if n_params else {}),
            )
            for seed in (0, 1)
            for e in range(11, 21)
        ]
    return pd.DataFrame(rows).assign(dataset="digits", model="cnn", checkpoint_every=0, merge=False)


@pytest.mark.parametrize(
    "kernel, width, gamma, n, penalty, push",
    [
        # rbf, sigma 1: k = exp(-r^2 / 2), push = s * (1/2) * k * 2r
        ("rbf", 1.0, None, 1, lambda r: 10 * math.exp(-(r**2) / 2), lambda r: 10 * r * math.exp(-(r**2) / 2)),
        # rbf, gamma 0.1, mean over 100 parameters: d = r^2 / 100, push = s * 0.1 * k * 2r / 100
        (
            "rbf",
            None,
            0.1,
            100,
            lambda r: 10 * math.exp(-0.1 * r**2 / 100),
            lambda r: 10 * 0.1 * math.exp(-0.1 * r**2 / 100) * 2 * r / 100,
        ),
        # laplacian, sigma 2: k = exp(-r / 2), dk/dd = -k / (2 * 2r), push = s * k / 2
        ("laplacian", 2.0, None, 1, lambda r: 10 * math.exp(-r / 2), lambda r: 10 * math.exp(-r / 2) / 2),
        # imq, sigma 2: k = (1 + r^2/4)^-1/2, dk/dd = -(1/8)(1 + r^2/4)^-3/2, push = s * (r/4) * (1 + r^2/4)^-3/2
        ("imq", 2.0, None, 1, lambda r: 10 / math.sqrt(1 + r**2 / 4), lambda r: 10 * r / 4 * (1 + r**2 / 4) ** -1.5),
        # hinge, gamma 0.5: k = 1 - r/2 up to r = 2, then 0; push = s * 0.5 while k > 0
        ("hinge", None, 0.5, 1, lambda r: 10 * max(0.0, 1 - r / 2), lambda r: 10 * 0.5 * (r < 2)),
    ],
)
def test_kernel_curves_match_the_formulas(kernel, width, gamma, n, penalty, push):
    r = np.array([0.3, 1.0, 1.7, 3.0])
    value, force = mf.penalty_and_push(kernel, mf._scale(kernel, width, gamma), 10.0, r, n)
    np.testing.assert_allclose(value, [penalty(x) for x in r], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(force, [push(x) for x in r], rtol=1e-12, atol=1e-15)


def test_the_force_is_zero_on_the_checkpoint():
    _, force = mf.penalty_and_push("rbf", 0.5, 10.0, np.array([0.0]))
    assert force[0] == 0


def test_settings_come_from_the_table_and_name_both_parametrizations():
    settings = mf.kernel_settings(metrics()).set_index("label")
    # the control is not a kernel setting; sigma 1 is gamma 1/2, gamma 1e-3 is sigma 1/sqrt(2e-3) = 22.36
    assert sorted(settings.index) == [
        "rbf γ=0.001 (σ=22.4), s=10",
        "rbf γ=1 (σ=0.707), s=10, mean distance",
        "rbf σ=1 (γ=0.5), s=10",
    ]
    assert settings.loc["rbf σ=1 (γ=0.5), s=10", "runs"] == [RBF]
    assert settings.loc["rbf γ=1 (σ=0.707), s=10, mean distance", "n_params"] == N_PARAMS


def test_travelled_is_each_seeds_range_and_final_distance():
    t = mf.travelled(metrics(), "digits", "cnn", [RBF]).set_index("seed")
    assert t.loc[0, ["low", "high", "final"]].tolist() == pytest.approx([0.1, 1.0, 1.0])
    assert t.loc[1, ["low", "high", "final"]].tolist() == pytest.approx([0.2, 2.0, 2.0])


def _lines(ax, color):
    return [line for line in ax.get_lines() if line.get_color() == color]


def test_kernels_figure_draws_each_setting_with_its_runs_ranges():
    fig = mf.kernels_figure(metrics())
    top, push, strip = fig.axes[:3]
    assert [t.get_text() for t in strip.get_yticklabels()] == [RBF, GAMMA, MEAN]  # no control; narrowest first
    assert top.get_xscale() == "log" and push.get_yscale() == "log"
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    colors = {t.get_text(): h.get_color() for t, h in zip(legend.get_texts(), legend.legend_handles)}
    color = colors["rbf σ=1 (γ=0.5), s=10"]
    curve = max(_lines(push, color), key=lambda line: len(line.get_xdata()))
    x, y = curve.get_xdata(), curve.get_ydata()
    i = np.argmin(abs(x - 1.0))
    assert y[i] == pytest.approx(10 * x[i] * math.exp(-(x[i] ** 2) / 2))  # s·|k'|·2r with sigma 1
    # each seed's range in the strip, from its first to its largest distance, and its final on the curve
    ranges = sorted(tuple(line.get_xdata()) for line in _lines(strip, color) if len(line.get_xdata()) == 2)
    assert ranges == [pytest.approx((0.1, 1.0)), pytest.approx((0.2, 2.0))]
    finals = sorted(line.get_xdata()[0] for line in _lines(push, color) if len(line.get_xdata()) == 1)
    assert finals == pytest.approx([1.0, 2.0])
    # the mean distance is drawn on the same axis: d = r^2 / 400, so with gamma 1 the push peaks at r = sqrt(200)
    mean = max(_lines(push, colors["rbf γ=1 (σ=0.707), s=10, mean distance"]), key=lambda ln: len(ln.get_xdata()))
    peak = mean.get_xdata()[np.nanargmax(mean.get_ydata())]
    assert peak == pytest.approx(math.sqrt(N_PARAMS / 2), rel=0.02)


def test_a_mean_distance_without_its_parameter_count_is_drawn_in_its_own_unit():
    fig = mf.kernels_figure(metrics(n_params=False))
    strip = fig.axes[2]
    assert MEAN not in [t.get_text() for t in strip.get_yticklabels()]  # its distances are in another unit
    assert "n_params" in strip.get_xlabel()
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1


def test_a_table_without_a_setting_column_is_named():
    with pytest.raises(ValueError, match="gamma"):
        mf.kernel_settings(metrics().drop(columns="gamma"))


def test_cli_writes_the_kernels_figure(tmp_path):
    path = tmp_path / "metrics.parquet"
    metrics().to_parquet(path)
    assert (
        cli.main(["plot-method", "--metrics", str(path), "--out-dir", str(tmp_path / "plots"), "--formats", "png"]) == 0
    )
    assert (tmp_path / "plots" / "kernels.png").stat().st_size > 0
    assert cli.main(["plot-method", "--out-dir", str(tmp_path)]) == 1  # nothing asked for


@pytest.fixture(scope="module")
def hill():
    return mf.hill_paths()


def ridge() -> float:
    """Where the 2-D loss's two basins meet on θ₂ = 0: the middle root of ∂L/∂θ₁ = 4x³ − 4x + 0.4."""
    roots = np.sort(np.roots([4.0, 0.0, -4.0, mf.TILT]).real)
    return roots[1]


def test_without_the_hill_the_ball_stays_and_the_strongest_hill_carries_it_over(hill):
    x_ridge = ridge()
    assert 0 < x_ridge < 0.2
    center = hill["center"].numpy()
    assert center[0] > x_ridge + 0.5  # it settled in the shallower basin, the one it started in
    finals = {s: path[-1].numpy() for s, path in hill["paths"].items()}
    assert finals[0.0][0] > x_ridge and np.linalg.norm(finals[0.0] - center) < 0.2
    weakest, strongest = min(mf.HILL_STRENGTHS), max(mf.HILL_STRENGTHS)
    assert finals[weakest][0] > x_ridge  # a small hill: the ball comes back into its basin
    assert finals[strongest][0] < x_ridge - 0.5  # the deeper basin, near its minimum at x ≈ -1.05
    assert all((path[0] == hill["center"]).all() for path in hill["paths"].values())


def test_hill_figure_names_the_final_distances(hill):
    fig = mf.hill_figure(hill)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    strongest = hill["paths"][max(mf.HILL_STRENGTHS)]
    final = float((strongest[-1] - hill["center"]).norm())
    assert f"hill s = {max(mf.HILL_STRENGTHS):g}: final ‖θ−θ_c‖ = {final:.2f}" in texts
    assert final > 1.5  # the two minima are about 2 apart


def test_a_table_of_controls_only_says_so_instead_of_failing():
    fig = mf.kernels_figure(metrics()[lambda t: t["run"].isin(["base", CONTROL])])
    assert "no run with a penalty" in fig.axes[0].texts[0].get_text()
