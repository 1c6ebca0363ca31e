"""The claims' verdicts on synthetic tables built by hand.

One small world of runs (every family the claims use, 3 seeds, 20 epochs after a checkpoint at
epoch 10) is drawn twice: as the source study claims (every claim holds) and with each effect
flipped (every claim does not hold); with one seed every claim is inconclusive. The curves are
closed formulas, so the expected statistics are computed here by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repel import claims, grid

SEEDS = (0, 1, 2)
CHECKPOINT = 10  # the base's last epoch
EPOCHS = 20      # after the checkpoint
BASE_ACC = 0.9   # validation accuracy at the checkpoint
CONTINUATION = {
    "defaults": {"epochs": EPOCHS, "lr": 0.01, "schedule": "constant", "kernel": "rbf", "gamma": 1e-2,
                 "distance": "sum", "strength": 10},
    "families": {
        "baseline": {"sweep": {"strength": [10]}},
        "strength": {"sweep": {"strength": [1, 10, 100]}},
        "width": {"sweep": {"gamma": [1e-2, 1e-3, 1e-4]}},
        "lr": {"sweep": {"lr": [0.001, 0.01, 0.1], "strength": [0, 10]}},
        "multiple": {"sweep": {"checkpoint_every": [5, 10]}},
        "merge": {"fixed": {"checkpoint_every": 5}, "sweep": {"merge": [False, True]}},
    },
}
FAMILIES = grid.families(CONTINUATION)
RUNS = grid.expand(CONTINUATION, list(SEEDS))
METRIC_CLAIMS = [c.id for c in claims.CLAIMS if c.family != "ensembles"]
ENSEMBLE_CLAIMS = [c.id for c in claims.CLAIMS if c.family == "ensembles"]

# by gamma (wider = smaller gamma): how slowly a hill's push saturates, and how far it ends
TAU = {1e-2: 1, 1e-3: 4, 1e-4: 16}
WIDE = {1e-2: 1, 1e-3: 2, 1e-4: 4}
WIDE_FLIPPED = {1e-2: 1, 1e-3: 0.5, 1e-4: 0.25}
WIDTH_INDEX = {1e-2: 0, 1e-3: 1, 1e-4: 2}
HILLS = {(False, False): 1.5, (False, True): 1.2, (True, False): 0.8, (True, True): 0.9}  # (flip, merge)


def curves(p: dict, seed: int, flip: bool) -> dict:
    """One run's per-epoch dist, val_acc and train_ce, t = 1..EPOCHS epochs after the checkpoint."""
    t = np.arange(1, EPOCHS + 1)
    s, lr = p["strength"], p["lr"] / 0.01
    scale = 1 + 0.01 * seed            # each seed its own scale ...
    jitter = 0.002 * seed * np.sqrt(t)  # ... and a small shift shared by all its runs
    gamma = p["gamma"]
    if s == 0:
        if flip:  # rises fast, then walks back: concave, farther than the penalized runs
            dist = lr * (5 * (1 - np.exp(-t / 2)) - 0.02 * np.maximum(0, t - 15)) * scale
        else:     # SGD walks on linearly
            dist = 0.05 * t * lr * scale
        final = {True: 0.95, False: 0.8}[flip] if p["lr"] > 0.01 else BASE_ACC
        drop = 0.0
        rate = 1 / (4 * lr) if flip else lr / 4  # flipped: the lowest lr converges fastest
        train_ce = 0.1 + np.exp(-t * rate) * scale
    else:
        # final-distance factor of a new hill every K epochs, one hill each or merged, over a single hill
        hills = 1.0 if not p["checkpoint_every"] else HILLS[flip, p["merge"]]
        if flip:  # straight lines, shorter for larger s and wider kernels
            dist = 0.1 * t * (2 - 0.3 * math.log10(s)) * WIDE_FLIPPED[gamma] * lr * hills * scale
            final = BASE_ACC + 0.05 + 0.03 * WIDTH_INDEX[gamma] + 0.001 * seed
            drop = 0.08 - 0.02 * math.log10(s) + 0.001 * seed
        else:     # saturating: farther for larger s and wider kernels, which saturate later
            dist = 2 * (1 + math.log10(s)) * WIDE[gamma] * lr * hills * (1 - np.exp(-t / TAU[gamma])) * scale
            final = BASE_ACC - (0.03 if s >= 100 else 0) + 0.001 * (seed % 2 - 0.5) * 2 \
                + 0.002 * WIDTH_INDEX[gamma] * (seed + 1) / 3
            drop = 0.02 * (1 + math.log10(s)) + 0.02 + 0.001 * seed
        train_ce = 0.1 + np.exp(-t) * scale
    # from the checkpoint's accuracy minus the drop at t = 1 towards the final accuracy
    val_acc = final + (BASE_ACC - drop - final) * np.exp(-(t - 1) / 2)
    return {"dist": dist + jitter, "val_acc": val_acc, "train_ce": train_ce}


def metrics_table(flip=False, seeds=SEEDS, dataset="digits", model="cnn", runs=RUNS, diverge=()) -> pd.DataFrame:
    """The aggregated metrics table: base rows, then every run's rows. `diverge`: run ids whose
    last epoch diverged (NaN losses and distance; their val_acc is left high on purpose)."""
    rows = []
    for seed in seeds:
        for epoch in range(1, CHECKPOINT + 1):
            rows.append({"phase": "base", "dataset": dataset, "model": model, "seed": seed, "run": "base",
                         "epoch": epoch, "val_acc": BASE_ACC * epoch / CHECKPOINT, "train_ce": 1.0,
                         "dist": math.nan, "diverged": False, "label": "base", "control": "base"})
        for rid, run in runs.items():
            p = run["params"]
            c = curves(p, seed, flip)
            for k in range(EPOCHS):
                diverged = rid in diverge and k == EPOCHS - 1
                rows.append({
                    "phase": "continue", "dataset": dataset, "model": model, "seed": seed, "run": rid,
                    "epoch": CHECKPOINT + 1 + k, "checkpoint_epoch": CHECKPOINT, "strength": p["strength"],
                    "kernel": p["kernel"], "width": p["width"], "gamma": p["gamma"], "distance": p["distance"],
                    "checkpoint_every": p["checkpoint_every"], "merge": p["merge"], "lr_init": p["lr"],
                    "schedule": p["schedule"], "epochs": p["epochs"], "label": ",".join(run["labels"]),
                    "control": run["control"], "val_acc": c["val_acc"][k], "test_acc": c["val_acc"][k],
                    "train_ce": math.nan if diverged else c["train_ce"][k],
                    "train_loss": math.nan if diverged else c["train_ce"][k],
                    "dist": math.nan if diverged else c["dist"][k], "diverged": diverged,
                })
                if diverged:
                    rows[-1]["val_acc"] = 0.95  # a diverged run's accuracy must count as 0, not this
    df = pd.DataFrame(rows)
    df["width"] = df["width"].astype(float)
    df["gamma"] = df["gamma"].astype(float)
    df["dist_min"] = df["dist"]
    return df


METHODS = ["sgdr", "independent", "sgdr_distance", "distance"]
PAIR_SHAPE = [0, 1, 0]  # the middle pair disagrees a little more: no trend with weight distance


def ensemble_tables(flip=False, ensembles=("seed0", "seed1", "seed2"), dataset="digits", model="cnn"):
    """ensembles.parquet and ensemble_pairs.parquet as `repel ensembles` writes them (3 members)."""
    curves_rows, pair_rows = [], []
    for g, method in enumerate(METHODS):
        for k, name in enumerate(ensembles):
            gain = -0.01 - 0.001 * k if flip else 0.01 + 0.001 * k
            for m, gain_best in ((1, 0.0), (2, -2 * gain), (3, gain)):  # only the largest m counts
                curves_rows.append({"dataset": dataset, "model": model, "method": method, "ensemble": name, "m": m,
                                    "accuracy": 0.9, "gain": gain_best, "gain_best": gain_best})
            for pair, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
                if flip:  # disagreement follows weight distance; distance snapshots the most diverse
                    weight_distance = 3 * g + pair + 1 + 12 * k
                    disagreement = 0.01 * weight_distance + (0.001 * k if method == "distance" else 0)
                else:
                    weight_distance = pair + 1
                    base = {"distance": 0.05 + 0.002 * k, "sgdr": 0.10}.get(method, 0.07)
                    disagreement = base + 0.001 * k + 0.01 * PAIR_SHAPE[pair]
                pair_rows.append({"dataset": dataset, "model": model, "method": method, "ensemble": name,
                                  "i": i, "j": j, "disagreement": disagreement, "weight_distance": weight_distance})
    return pd.DataFrame(curves_rows), pd.DataFrame(pair_rows)


def verdicts(table: pd.DataFrame, dataset="digits", model="cnn") -> pd.Series:
    cell = table[(table["dataset"] == dataset) & (table["model"] == model)]
    return cell.set_index("claim")["verdict"]


@pytest.fixture(scope="module")
def as_claimed():
    return claims.evaluate(metrics_table(), FAMILIES, *ensemble_tables())


@pytest.fixture(scope="module")
def flipped():
    return claims.evaluate(metrics_table(flip=True), FAMILIES, *ensemble_tables(flip=True))


@pytest.fixture(scope="module")
def one_seed():
    return claims.evaluate(metrics_table(seeds=(0,)), FAMILIES, *ensemble_tables(ensembles=("seed0",)))


# --- the statistics, against numbers computed by hand ------------------------------------------

def test_t_interval_by_hand():
    mean, low, high, p = claims.t_interval([1.0, 2.0, 3.0], 0.95)
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2 dof) x sd 1 / sqrt(3)
    assert mean == pytest.approx(2.0)
    assert (low, high) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert p == pytest.approx(stats.ttest_1samp([1.0, 2.0, 3.0], 0).pvalue)


def test_spearman_by_hand():
    rho, p = claims.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert rho == pytest.approx(1 - 6 * 4 / (5 * 24))  # rank differences 1, -1, 1, -1, 0
    t = 0.8 * math.sqrt(3 / (1 - 0.64))
    assert p == pytest.approx(2 * stats.t.sf(t, 3))


def test_paired_rule():
    up = lambda d: claims.paired(pd.Series(d, dtype=float), +1, 0.95).verdict
    assert up([1.0, 1.1, 0.9]) == "holds"
    assert up([-1.0, -1.1, -0.9]) == "does not hold"
    assert up([1.0, -1.0, 0.5]) == "inconclusive"  # the interval straddles 0
    # the interval lies above 0, but one seed went the other way
    assert up([1.0] * 9 + [-0.01]) == "inconclusive"
    assert claims.paired(pd.Series([-1.0, -1.1, -0.9]), -1, 0.95).verdict == "holds"
    assert claims.paired(pd.Series([1.0, 1.1, 0.9]), -1, 0.95).verdict == "does not hold"
    assert up([2.0, math.nan]) == "inconclusive"  # one seed with a value


def test_within_and_grows_with_rules():
    same = lambda d: claims.within(pd.Series(d), -0.01, 0.01, 0.95).verdict
    assert same([0.001, -0.001, 0.002]) == "holds"
    assert same([0.05, 0.06, 0.055]) == "does not hold"
    assert same([-0.05, -0.06, -0.055]) == "does not hold"  # below -margin is not "about the same" either
    assert same([0.005, -0.004, 0.02]) == "inconclusive"
    points = lambda y: pd.DataFrame({"x": [1, 2, 3] * 2, "y": y, "seed": [0] * 3 + [1] * 3})
    assert claims.grows_with(points([1, 2, 3, 1.1, 2.1, 3.1]), 0.95).verdict == "holds"
    assert claims.grows_with(points([3, 2, 1, 3.1, 2.1, 1.1]), 0.95).verdict == "does not hold"
    weak = claims.grows_with(points([1, 3, 2, 2.1, 1.1, 3.1]), 0.95)  # ρ > 0 but p well above 0.05
    assert weak.value > 0 and weak.p_value > 0.05 and weak.verdict == "inconclusive"


def test_early_drop_and_half_ratio_by_hand():
    rows = pd.DataFrame({"epoch": range(11, 17), "checkpoint_epoch": 10,
                         "val_acc": [0.88, 0.89, 0.9, 0.9, 0.9, 0.7], "dist": [1, 2, 3, 4, 4, 4.0]})
    assert claims.early_drop(rows, 0.9, 5) == pytest.approx(0.02)  # the dip at epoch 16 is not early
    assert claims.early_drop(rows, 0.85, 5) == 0.0                  # never below the checkpoint
    assert math.isnan(claims.early_drop(rows, math.nan, 5))         # no base row for the seed: no drop
    assert claims.half_ratio(rows) == pytest.approx(3 / 4)          # epoch 13 of 10..16
    assert claims.last_fifth_growth(rows, 0.2) == 0.0               # the last round(0.2 x 6) = 1 epoch
    assert claims.last_fifth_growth(rows, 0.5) == pytest.approx(1.0)  # epochs 13 -> 16


def test_baseline_farther_interval_by_hand(as_claimed):
    row = as_claimed.set_index("claim").loc["baseline.farther"]
    # final distances: penalty 4 (1 - e^-20) x scale, control 0.05 x 20 x scale; scale = 1 + 0.01 seed
    d = np.array([3 * (1 + 0.01 * k) for k in SEEDS])
    half = 4.302653 * d.std(ddof=1) / math.sqrt(3)
    assert row["seeds"] == 3
    assert row["value"] == pytest.approx(d.mean(), abs=1e-6)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-5)
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-4)
    assert row["verdict"] == "holds"


def test_strength_drop_rho_by_hand(as_claimed):
    row = as_claimed.set_index("claim").loc["strength.drop"]
    s = [1, 10, 100] * 3
    drop = [0.02 * (1 + math.log10(x)) + 0.02 + 0.001 * k for k in SEEDS for x in [1, 10, 100]]
    expected = stats.spearmanr(s, drop)
    assert row["value"] == pytest.approx(expected.statistic)
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert row["verdict"] == "holds"


# --- every claim: holds as claimed, does not hold flipped, inconclusive with one seed -----------

@pytest.mark.parametrize("claim", METRIC_CLAIMS + ENSEMBLE_CLAIMS)
def test_holds_as_claimed(as_claimed, claim):
    row = as_claimed.set_index("claim").loc[claim]
    assert row["verdict"] == "holds", row["note"]


@pytest.mark.parametrize("claim", METRIC_CLAIMS + ENSEMBLE_CLAIMS)
def test_does_not_hold_flipped(flipped, claim):
    row = flipped.set_index("claim").loc[claim]
    assert row["verdict"] == "does not hold", row["note"]


@pytest.mark.parametrize("claim", METRIC_CLAIMS + ENSEMBLE_CLAIMS)
def test_one_seed_is_inconclusive(one_seed, claim):
    row = one_seed.set_index("claim").loc[claim]
    assert row["verdict"] == "inconclusive"
    assert row["seeds"] <= 1
    assert "1 seed" in row["note"]


def test_one_seed_gives_that_seeds_value(one_seed):
    row = one_seed.set_index("claim").loc["baseline.farther"]
    assert row["value"] == pytest.approx(3.0, abs=1e-6)  # seed 0: 4 - 1
    assert math.isnan(row["ci_low"]) and math.isnan(row["p_value"])
    # half-ratios of seed 0: (1 - e^-10) / (1 - e^-20) for the penalty, 0.05 x 10 / (0.05 x 20) for the control
    shape = one_seed.set_index("claim").loc["baseline.shape", "value"]
    assert shape == pytest.approx((1 - math.exp(-10)) / (1 - math.exp(-20)) - 0.5)


def test_width_crossing_epochs_in_value(as_claimed, flipped):
    # gamma 1e-2 -> 1e-3: 8(1 - e^(-t/4)) overtakes 4(1 - e^-t) at t = 3; 1e-3 -> 1e-4: 16(1 - e^(-t/16))
    # overtakes 8(1 - e^(-t/4)) at t = 10 (7.435 > 7.343; at t = 9, 6.881 < 7.157)
    assert as_claimed.set_index("claim").loc["width.crossing", "value_text"] == \
        "γ 0.01→0.001: epoch 13; γ 0.001→0.0001: epoch 20"
    assert flipped.set_index("claim").loc["width.crossing", "value_text"] == \
        "γ 0.01→0.001: no crossing within the budget; γ 0.001→0.0001: no crossing within the budget"


def test_parts_are_in_the_note(as_claimed):
    notes = as_claimed.set_index("claim")["note"]
    assert notes["lr.penalty"].count("holds") == 3  # one part per lr
    assert "lr 0.001" in notes["lr.penalty"] and "lr 0.1" in notes["lr.penalty"]
    assert "merged − single" in notes["multiple.farther"] and "exploratory" in notes["multiple.farther"]
    assert "recovered above its early minimum in 3/3 seeds" in notes["strength.recovery"]


# --- crossing detector ------------------------------------------------------------------------

def _series(values, first=11):
    return pd.Series(values, index=range(first, first + len(values)), dtype=float)


def test_crossing_epoch_finds_a_planted_crossing():
    narrow = _series(np.full(10, 5.0))
    wide = _series([1, 2, 3, 4.9, 5, 6, 7, 8, 9, 10])  # behind until epoch 14, level at 15, ahead after
    assert claims.crossing_epoch(narrow, wide) == 15
    # ahead for a while, behind again, then ahead for good from epoch 18
    wide = _series([1, 6, 6, 6, 4, 4, 4, 6, 6, 6])
    assert claims.crossing_epoch(narrow, wide) == 18


def test_crossing_epoch_none_when_never_for_good():
    narrow = _series(np.full(10, 5.0))
    assert claims.crossing_epoch(narrow, _series(np.full(10, 4.0))) is None       # always behind
    assert claims.crossing_epoch(narrow, _series([1, 6, 6, 6, 6, 6, 6, 6, 6, 4])) is None  # falls back at the end
    assert claims.crossing_epoch(narrow, _series(np.full(10, 6.0))) is None       # the narrower never led


# --- not run, divergence, settings ------------------------------------------------------------

def test_missing_family_and_tables_give_not_run():
    families = {k: v for k, v in FAMILIES.items() if k != "width"}
    table = claims.evaluate(metrics_table(), families)  # and no ensemble tables
    v = verdicts(table)
    assert len(table) == len(claims.CLAIMS)  # nothing dropped
    assert (v[["width.distance", "width.crossing", "width.accuracy"]] == "not run").all()
    assert (v[ENSEMBLE_CLAIMS] == "not run").all()
    assert (v.drop(["width.distance", "width.crossing", "width.accuracy", *ENSEMBLE_CLAIMS]) == "holds").all()
    notes = table.set_index("claim")["note"]
    assert "no family 'width'" in notes["width.distance"] and "no ensemble tables" in notes["ensemble.gain"]


def test_family_without_rows_for_one_model_is_not_run_there():
    mlp = metrics_table(model="mlp")
    metrics = pd.concat([metrics_table(), mlp[~mlp["run"].isin(FAMILIES["strength"]["runs"])]])  # the mlp has none
    table = claims.evaluate(metrics, FAMILIES, *ensemble_tables())
    assert (verdicts(table, model="cnn")[["strength.drop", "strength.distance", "strength.recovery"]] == "holds").all()
    assert (verdicts(table, model="mlp")[["strength.drop", "strength.distance", "strength.recovery"]] == "not run").all()
    assert (verdicts(table, model="mlp")[ENSEMBLE_CLAIMS] == "not run").all()  # no ensembles for the mlp


def test_diverged_run_counts_as_accuracy_zero():
    high_lr_control = "s0_lr0.1-const-e20"
    table = claims.evaluate(metrics_table(flip=True, diverge=[high_lr_control]), FAMILIES)
    row = table.set_index("claim").loc["lr.extremes"]
    # flipped, the highest lr would end 0.05 above the middle one; diverged (val_acc 0.95 in its
    # last row) it counts as 0: part 2 is 0 - 0.9 in every seed and holds, part 1 still does not
    assert "final val_acc lr 0.1 − lr 0.01: -0.9" in row["note"]
    assert "diverged" in row["note"]
    assert row["verdict"] == "does not hold"


def test_two_learning_rates_leave_the_low_part_not_run():
    metrics = metrics_table()
    metrics = metrics[~metrics["run"].str.contains("lr0.001-")]
    row = claims.evaluate(metrics, FAMILIES).set_index("claim").loc["lr.extremes"]
    assert row["verdict"] == "inconclusive"
    assert "not run (no lr below 0.01)" in row["note"]


def test_settings_are_shown_and_used(flipped):
    assert flipped.set_index("claim").loc["baseline.accuracy", "thresholds"] == "margin 0.01; confidence 0.95"
    wide = claims.evaluate(metrics_table(flip=True), FAMILIES, settings={"margin": 0.1})
    row = wide.set_index("claim").loc["baseline.accuracy"]
    assert row["thresholds"] == "margin 0.1; confidence 0.95"
    assert "±0.1" in row["rule"]
    assert row["verdict"] == "holds"  # +0.05 is within ±0.1
    with pytest.raises(ValueError, match="unknown setting"):
        claims.evaluate(metrics_table(), FAMILIES, settings={"margn": 0.1})
    with pytest.raises(ValueError, match="confidence"):
        claims.resolve_settings({"confidence": 95})


def test_table_shape_and_markdown(as_claimed):
    assert list(as_claimed.columns) == claims.COLUMNS
    assert set(as_claimed["verdict"]) <= set(claims.VERDICTS)
    assert as_claimed["figure"].str.startswith("plots/").all()
    assert as_claimed["rule"].str.len().gt(20).all()
    text = claims.markdown(as_claimed)
    for claim in claims.CLAIMS:
        assert claim.id in text
    assert "| holds" in text


# --- command line and figure ------------------------------------------------------------------

def test_cli_writes_the_tables_and_plot_draws_them(tmp_path):
    import json

    from repel import cli, plots

    metrics = pd.concat([metrics_table(), metrics_table(flip=True, model="mlp")])
    curves_table, pairs = ensemble_tables()
    for name, df in (("metrics", metrics), ("ensembles", curves_table), ("pairs", pairs)):
        df.to_parquet(tmp_path / f"{name}.parquet")
    out = tmp_path / "claims"
    assert cli.main(["claims", "--metrics", str(tmp_path / "metrics.parquet"), "--families", json.dumps(FAMILIES),
                     "--ensembles", str(tmp_path / "ensembles.parquet"), "--pairs", str(tmp_path / "pairs.parquet"),
                     "--settings", '{"margin": 0.01}', "--out-dir", str(out)]) == 0
    table = pd.read_parquet(out / "claims.parquet")
    assert len(table) == 2 * len(claims.CLAIMS)
    assert (verdicts(table, model="cnn") == "holds").all()
    assert (out / "claims.csv").exists() and "# The source study's claims" in (out / "claims.md").read_text()

    fig = plots.claims_figure(table)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (len(claims.CLAIMS), 2)  # claims x dataset/model
    assert len(ax.texts) == 2 * len(claims.CLAIMS)
    assert cli.main(["plot", "--claims", str(out / "claims.parquet"), "--out-dir", str(tmp_path / "plots"),
                     "--formats", "png"]) == 0
    assert (tmp_path / "plots" / "claims.png").stat().st_size > 0
