"""The figures, checked on their matplotlib objects; every expected value is worked out by hand
from the small synthetic tables built here."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from repel import cli, plots

CONTROL = "s0_lr0.01-const-e20"
PUSHED = "s10-rbf-w0.5-every5_lr0.01-const-e20"  # a new checkpoint every 5 epochs
W1 = "s10-rbf-w1_lr0.01-const-e20"
LONER = "s10-rbf-w1-every5_lr0.01-const-e20"  # in no family
SEEDS = (0, 1)
CHECKPOINT, EPOCHS, EVERY = 10, 20, 5
SETTINGS = {  # run -> its grid settings, as the metrics and summary tables have them
    CONTROL: dict(strength=0.0, kernel="none", width=np.nan, checkpoint_every=0),
    PUSHED: dict(strength=10.0, kernel="rbf", width=0.5, checkpoint_every=EVERY),
    W1: dict(strength=10.0, kernel="rbf", width=1.0, checkpoint_every=0),
    LONER: dict(strength=10.0, kernel="rbf", width=1.0, checkpoint_every=EVERY),
}
COMMON = dict(gamma=np.nan, distance="sum", merge=False, lr_init=0.01, schedule="constant", epochs=EPOCHS)
SPEC = {
    "runs": [CONTROL, PUSHED],
    "varying": ["width"],
    "figure": "curves",
    "panels": ["val_acc", "dist", "dist_min", "dist_rel", "grad_ratio", "step_cos", "func_disagree"],
    "x": "width",
}


def _continuation(run: str, seed: int, epoch: int) -> dict:
    pushed = run != CONTROL
    since = epoch - CHECKPOINT
    return dict(
        phase="continue",
        run=run,
        seed=seed,
        epoch=epoch,
        checkpoint_epoch=CHECKPOINT,
        **SETTINGS[run],
        **COMMON,
        # control 0.95 .. 0.9605, pushed 0.96 .. 0.98: with the checkpoint's 0.94, [0.94, 0.98]
        val_acc=(0.96 + 0.001 * (since - 1) if pushed else 0.95 + 0.0005 * (since - 1)) + 0.001 * seed,
        dist=(0.5 if pushed else 0.1) * since,
        dist_rel=(0.05 if pushed else 0.01) * since,
        # back to 0.5 after each new checkpoint: 2.5 at epochs 15, 20, 25
        dist_min=0.5 * ((since - 1) % EVERY + 1) if pushed else 0.1 * since,
        grad_ratio=10.0 ** ((epoch - 20) / 5) if pushed else 0.0,  # 1e-2 .. 1e2; the control's 0
        step_cos=np.nan if since == 1 else (0.9 if pushed else 0.1),  # no earlier step in the first epoch
        func_disagree=(0.02 if pushed else 0.01) * since,
        lr=0.01,
        diverged=False,
    )


def metrics(collapse: bool = False) -> pd.DataFrame:
    """Base epochs 1-10 (val_acc 0.1 .. 0.94), then the control and PUSHED for epochs 11-30, two seeds.
    collapse: PUSHED's accuracy falls to 0.3, so the continuation spans most of the panel."""
    rows = [
        dict(
            phase="base",
            run="base",
            seed=seed,
            epoch=e,
            val_acc=0.1 + (0.94 - 0.1) * (e - 1) / 9,
            lr=0.01,
            diverged=False,
        )
        for seed in SEEDS
        for e in range(1, CHECKPOINT + 1)
    ]
    rows += [
        _continuation(run, seed, e)
        for run in (CONTROL, PUSHED)
        for seed in SEEDS
        for e in range(CHECKPOINT + 1, CHECKPOINT + EPOCHS + 1)
    ]
    df = pd.DataFrame(rows).assign(dataset="digits", model="cnn")
    if collapse:
        df.loc[df["run"] == PUSHED, "val_acc"] = 0.3
    return df


def panel(fig, ylabel: str):
    (ax,) = [ax for ax in fig.axes if ax.get_ylabel() == ylabel]
    return ax


@pytest.fixture(scope="module")
def family():
    return plots.family_figure(metrics(), "width", SPEC)


def test_accuracy_panel_has_an_inset_on_the_continuation(family):
    ax = panel(family, "validation accuracy")
    (inset,) = ax.child_axes
    low, high = inset.get_ylim()
    assert 0.94 - 0.01 <= low < 0.94 and 0.98 < high <= 0.98 + 0.01  # the continuation's range, a small margin
    assert inset.get_xlim() == (CHECKPOINT, CHECKPOINT + EPOCHS)
    assert ax.get_ylim()[0] <= 0.1  # the base stays in the panel
    assert len([line for line in inset.get_lines() if line.get_xydata().size]) >= 2  # both runs drawn in it


def test_no_inset_without_a_base_curve_or_when_the_continuation_spans_the_panel(family):
    assert not panel(family, plots.PANELS["dist"]).child_axes
    collapsed = plots.family_figure(metrics(collapse=True), "width", {**SPEC, "panels": ["val_acc"]})
    assert not panel(collapsed, "validation accuracy").child_axes


def test_grad_ratio_is_on_a_log_axis_without_non_positive_values(family):
    ax = panel(family, "‖∇penalty‖ / ‖∇CE‖")
    assert ax.get_yscale() == "log"
    curves = [line for line in ax.get_lines() if not line.get_label().startswith("_")]  # not the dotted line
    ys = np.concatenate([line.get_ydata() for line in curves]).astype(float)
    assert (ys[np.isfinite(ys)] > 0).all() and np.isclose(ys[np.isfinite(ys)].max(), 100)


def test_dist_rel_label_names_the_checkpoint_norm(family):
    assert panel(family, "‖θ − θ_c‖ / ‖θ_c‖")


def test_dist_min_marks_the_new_checkpoints_on_the_pushed_run(family):
    ax = panel(family, plots.PANELS["dist_min"])
    (ticks,) = [line for line in ax.get_lines() if line.get_marker() == "|"]
    assert list(ticks.get_xdata()) == [15, 20, 25]
    assert list(ticks.get_ydata()) == [2.5, 2.5, 2.5]
    pushed_curve = [line for line in ax.get_lines() if line.get_label() == "σ=0.5"]
    assert to_hex(ticks.get_color()) == to_hex(pushed_curve[0].get_color())
    assert family.get_suptitle().count("new checkpoint") == 1


@pytest.mark.parametrize(
    "settings, expected",
    [
        (dict(checkpoint_epoch=10, checkpoint_every=5, epochs=20), [15, 20, 25]),
        (dict(checkpoint_epoch=10, checkpoint_every=7, epochs=20), [17, 24]),
        (dict(checkpoint_epoch=100, checkpoint_every=0, epochs=900), []),
        (dict(checkpoint_epoch=10.0, checkpoint_every=np.nan, epochs=20.0), []),
    ],
)
def test_checkpoint_epochs(settings, expected):
    assert plots.checkpoint_epochs(pd.Series(settings)) == expected


def test_plot_family_writes_the_png(tmp_path):
    (path,) = plots.plot_family(metrics(), "width", {**SPEC, "panels": ["val_acc"]}, tmp_path, formats=("png",))
    assert path == tmp_path / "width.png" and path.read_bytes()[:4] == b"\x89PNG"


# the landscape: PUSHED's barrier is 0.25 (mean of 0.2 and 0.3), W1's 1e-4 (noise), the others 0
BARRIERS = {PUSHED: (0.2, 0.3), W1: (1e-4, 1e-4)}
FAMILIES = {
    "width": {
        "runs": [CONTROL, PUSHED, W1],
        "varying": ["width"],
        "figure": "curves",
        "panels": ["val_acc"],
        "x": "width",
    },
    "strength": {
        "runs": [CONTROL, W1],
        "varying": ["strength"],
        "figure": "curves",
        "panels": ["val_acc"],
        "x": "strength",
    },
}


def landscape(runs=(CONTROL, PUSHED, W1, LONER), bn: bool = False) -> pd.DataFrame:
    alphas = [-0.5, 0.0, 0.5, 1.0, 1.5]
    return pd.DataFrame(
        [
            dict(
                alpha=a,
                loss=1 + (a - 0.5) ** 2 + k,
                error=0.1 + 0.01 * k,
                pair=0,
                start="c.pt",
                end="f.pt",
                barrier=BARRIERS.get(run, (0.0, 0.0))[seed],
                split="val",
                dataset="digits",
                model="cnn",
                run=run,
                seed=seed,
                bn_recomputed=bn,
            )
            for k, run in enumerate(runs)
            for seed in SEEDS
            for a in alphas
        ]
    )


def summary(runs=(CONTROL, PUSHED, W1, LONER)) -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(
                dataset="digits",
                model="cnn",
                run=run,
                seed=seed,
                label="x",
                **SETTINGS.get(run, SETTINGS[W1]),
                **COMMON,
            )
            for run in runs
            for seed in SEEDS
        ]
    )


def legends(fig) -> dict[str, list[str]]:
    """Row title -> its legend's texts (the legend sits on the row's error panel)."""
    return {
        ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()]
        for ax in fig.axes
        if ax.get_legend() is not None
    }


def test_landscape_legends_name_the_swept_values_and_only_real_barriers():
    fig = plots.landscape_figure(landscape(), summary(), FAMILIES)
    assert legends(fig) == {
        "family 'width': digits / cnn": ["control (s=0)", "σ=0.5 (barrier 0.25)", "σ=1"],
        "family 'strength': digits / cnn": ["control (s=0)", "s=10"],
        "runs of no family: digits / cnn": [LONER],
    }


def test_landscape_lines_of_a_panel_have_distinct_colours_and_the_control_is_red():
    many = [f"s{k}-rbf-w1_lr0.01-const-e20" for k in range(1, 15)]  # more runs than the palette has colours
    fig = plots.landscape_figure(landscape([CONTROL, *many]), summary([CONTROL, *many]), {})
    for ax in fig.axes:
        lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert len(lines) == 15
        assert len({to_hex(line.get_color()) for line in lines}) == 15
        assert to_hex(lines[0].get_color()) == to_hex("tab:red") and lines[0].get_label() == CONTROL


def test_landscape_mentions_batchnorm_only_for_models_with_it():
    assert "BatchNorm" not in plots.landscape_figure(landscape(bn=False), summary(), FAMILIES).get_suptitle()
    assert "BatchNorm" in plots.landscape_figure(landscape(bn=True), summary(), FAMILIES).get_suptitle()


@pytest.mark.parametrize("n_families", [2, 9])
def test_landscape_title_does_not_overlap_the_panel_titles(n_families):
    families = {f"family{i}": FAMILIES["width"] for i in range(n_families)}
    fig = plots.landscape_figure(landscape(bn=True), summary(), families)  # bn: the longest title
    fig.set_dpi(30)  # a quicker draw; the layout is in inches, the same at any dpi
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (title,) = [t for t in fig.texts if t.get_text() == fig.get_suptitle()]
    box = title.get_window_extent(renderer)
    assert len(fig.axes) == 2 * (n_families + 1)
    for ax in fig.axes:
        assert not box.overlaps(ax.title.get_window_extent(renderer)), ax.get_title()


def test_plot_command_draws_the_landscape(tmp_path):
    landscape().to_parquet(tmp_path / "landscape.parquet")
    summary().to_parquet(tmp_path / "summary.parquet")
    args = [
        "plot",
        "--landscape",
        str(tmp_path / "landscape.parquet"),
        "--out-dir",
        str(tmp_path / "plots"),
        "--formats",
        "png",
    ]
    assert cli.main(args) == 1  # without --summary and --families: an error, no figure
    families = json.dumps({"strength": FAMILIES["strength"]})
    assert cli.main([*args, "--summary", str(tmp_path / "summary.parquet"), "--families", families]) == 0
    assert (tmp_path / "plots/landscape.png").read_bytes()[:4] == b"\x89PNG"


def _two_seed_tables():
    """FGE and SWA, each with two ensembles (seeds 0 and 1) of 2 members, accuracies by hand."""
    curves, averages = [], []
    for method, accs in (
        ("fge", {"seed0": (0.80, 0.90), "seed1": (0.70, 0.84)}),
        ("swa", {"seed0": (0.60, 0.66), "seed1": (0.62, 0.70)}),
    ):
        for ensemble, (one, two) in accs.items():
            curves += [
                {
                    "dataset": "d",
                    "model": "m",
                    "method": method,
                    "ensemble": ensemble,
                    "m": m,
                    "accuracy": a,
                    "mean_member_accuracy": a,
                    "nll": 1 - a,
                }
                for m, a in ((1, one), (2, two))
            ]
            for kind in ("members", "swa") if method == "swa" else ("members",):
                averages.append(
                    {
                        "dataset": "d",
                        "model": "m",
                        "method": method,
                        "ensemble": ensemble,
                        "averaged": kind,
                        "accuracy": two - 0.1,
                        "ensemble_accuracy": two,
                        "best_member_accuracy": one,
                    }
                )
    return pd.DataFrame(curves), pd.DataFrame(averages)


def test_with_two_seeds_the_ensemble_band_spans_both_ensembles():
    curves, _ = _two_seed_tables()
    assert len(curves[curves["m"] == 2].groupby(["method", "ensemble"])) == 4  # two rows per method
    fig = plots.ensemble_accuracy_figure(curves, {"fge": "tab:blue", "swa": "tab:orange"})
    ax = fig.axes[0]
    bands = ax.collections  # one fill_between per method, in method order
    for band, (low, high) in zip(bands, [((0.70, 0.84), (0.80, 0.90)), ((0.60, 0.66), (0.62, 0.70))]):
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(min(low)) and ys.max() == pytest.approx(max(high))
    means = [line.get_ydata() for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert np.allclose(means[0], [0.75, 0.87]) and np.allclose(means[1], [0.61, 0.68])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fge (2 ensembles)", "swa (2 ensembles)"]


def test_seeds_with_equal_values_draw_a_bar_of_length_zero():
    _, averages = _two_seed_tables()
    three = averages[averages["ensemble"] == averages["ensemble"].iloc[0]].assign(ensemble="seed9")
    averages = pd.concat([averages, three], ignore_index=True).assign(accuracy=0.1)
    # three seeds at 0.1: their mean is 0.10000000000000002 in float64, a bar of -2e-17 below it
    assert (averages.groupby(["method", "averaged"])["accuracy"].mean() > 0.1).any()
    fig = plots.weight_average_figure(averages)  # the reduced run stopped here ('yerr' must not be negative)
    assert fig.axes[0].containers


def test_weight_averages_sit_beside_their_ensembles_with_bars_over_the_seeds():
    _, averages = _two_seed_tables()
    fig = plots.weight_average_figure(averages)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ensemble", "best member", "members' weight average", "SWA (average over every epoch)"]
    swa = ax.containers[labels.index("SWA (average over every epoch)")]
    # one point, at the swa column, the mean of 0.56 and 0.60, its bar from min to max
    ((x, y),) = swa.lines[0].get_xydata()
    assert round(x) == 1 and y == pytest.approx(0.58)
    segment = swa.lines[2][0].get_segments()[0]
    assert segment[:, 1].min() == pytest.approx(0.56) and segment[:, 1].max() == pytest.approx(0.60)


def test_direction_panels_start_after_the_first_step_and_function_distance_at_zero(family):
    """step_cos has no value at the checkpoint nor in its first epoch: each curve starts at the
    second continuation epoch; func_disagree is 0 at the checkpoint itself. Neither has a base curve."""
    for column, first_x, first_y in (("step_cos", CHECKPOINT + 2, 0.1), ("func_disagree", CHECKPOINT, 0.0)):
        ax = panel(family, plots.PANELS[column])
        control = [line for line in ax.get_lines() if line.get_label() == "control (s=0)"]
        xs, ys = control[0].get_xdata().astype(float), control[0].get_ydata().astype(float)
        drawn = np.isfinite(ys)  # matplotlib leaves a gap at NaN
        assert xs[drawn][0] == first_x and ys[drawn][0] == first_y
        assert not [line for line in ax.get_lines() if line.get_label() == "base training"]


def test_the_release_epoch_is_marked_on_the_released_run_only():
    table = metrics().assign(release_after=np.nan)
    table.loc[table["run"] == PUSHED, "release_after"] = 5.0  # released after 5 of its 20 epochs
    fig = plots.family_figure(table, "width", {**SPEC, "panels": ["dist"]})
    ax = panel(fig, plots.PANELS["dist"])
    (marks,) = [line for line in ax.get_lines() if line.get_marker() == "v"]
    assert list(marks.get_xdata()) == [CHECKPOINT + 5] and list(marks.get_ydata()) == [0.5 * 5]
    assert "released" in fig._suptitle.get_text()


def test_each_strength_is_a_line_of_its_own_labelled_with_its_s():
    # three strengths' distance methods and the matching control, one ensemble each, m = 1, 2
    rows = [
        {"dataset": "d", "model": "m", "method": method, "ensemble": "seed0", "m": m, "accuracy": acc + 0.01 * m}
        for method, acc in (("distance_s10", 0.8), ("distance_s3", 0.7), ("distance_s0.5", 0.6), ("snapshots", 0.5))
        for m in (1, 2)
    ]
    curves = pd.DataFrame(rows).assign(mean_member_accuracy=0.5, nll=0.3)
    colors = plots.method_colors(curves["method"])
    assert len(set(colors.values())) == 4  # a colour each
    fig = plots.ensemble_accuracy_figure(curves, colors)
    ax = fig.axes[0]
    # written by hand: the strengths in increasing order, s as spec labels it
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["distance, s=0.5", "distance, s=3", "distance, s=10", "snapshots"]
    means = [line.get_ydata() for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert [list(np.round(y, 6)) for y in means] == [[0.61, 0.62], [0.71, 0.72], [0.81, 0.82], [0.51, 0.52]]
    assert plots.method_label("sgdr_distance_s100") == "sgdr_distance, s=100"
    assert plots.method_label("distance") == "distance"  # one strength: the plain name


def test_function_vs_weights_draws_each_run_against_its_controls_proportionality_line():
    df = metrics()
    df["control"] = np.where(df["phase"] == "continue", CONTROL, "base")
    fig = plots.function_vs_weights_figure(df)
    ax, kl = fig.axes[:2]
    # the last epoch (since = 20): the control at (2, 0.2) and PUSHED at (10, 0.4), each seed a point
    points = sorted(tuple(xy) for c in ax.collections for xy in c.get_offsets().tolist())
    assert points == [(2.0, 0.2)] * 2 + [(10.0, 0.4)] * 2
    (line,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    x, y = line.get_data()
    np.testing.assert_allclose(y, 0.2 * np.asarray(x) / 2.0)  # f = f_c · d / d_c through the control
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "no run has func_kl" in kl.texts[0].get_text()  # the table has no func_kl


def test_a_curve_from_the_initial_weights_has_no_base_value_to_start_from():
    df = metrics()
    base, rows = df[df["phase"] == "base"], df[(df["run"] == PUSHED) & (df["phase"] == "continue")]
    start = plots._start(base, rows, "val_acc")
    assert start["epoch"].tolist() == [CHECKPOINT] * 2
    np.testing.assert_allclose(start["val_acc"], [0.94, 0.94])  # the base's value at epoch 10
    from_init = plots._start(base, rows.assign(checkpoint_epoch=0), "val_acc")
    assert from_init.empty  # nothing was measured at epoch 0
    assert plots._start(base, rows.assign(checkpoint_epoch=0), "dist")["dist"].tolist() == [0.0, 0.0]
