"""The claims' statistics against numbers computed by hand, and their verdicts on one small world.

The world (the families of an early grid, 3 seeds, 20 epochs after a checkpoint at epoch 10) is
drawn twice: as the source study claims (every claim it has a family for holds) and with each
effect flipped (every one does not hold); with one seed every claim is inconclusive. The curves
are closed formulas, so the expected statistics are computed here by hand. Calibration and power
of the rules: tests/test_claims_simulation.py.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from repel import claims, grid

SEEDS = (0, 1, 2)
CHECKPOINT = 10  # the base's last epoch
EPOCHS = 20  # after the checkpoint
BASE_ACC = 0.9  # validation accuracy at the checkpoint
CONTINUATION = {
    "defaults": {
        "epochs": EPOCHS,
        "lr": 0.01,
        "schedule": "constant",
        "kernel": "rbf",
        "gamma": 1e-2,
        "distance": "sum",
        "strength": 10,
    },
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
    scale = 1 + 0.01 * seed  # each seed its own scale ...
    jitter = 0.002 * seed * np.sqrt(t)  # ... and a small shift shared by all its runs
    gamma = p["gamma"]
    if s == 0:
        if flip:  # rises fast, then walks back: concave, farther than the penalized runs
            dist = lr * (5 * (1 - np.exp(-t / 2)) - 0.02 * np.maximum(0, t - 15)) * scale
        else:  # SGD walks on linearly
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
        else:  # saturating: farther for larger s and wider kernels, which saturate later
            dist = 2 * (1 + math.log10(s)) * WIDE[gamma] * lr * hills * (1 - np.exp(-t / TAU[gamma])) * scale
            final = (
                BASE_ACC
                - (0.03 if s >= 100 else 0)
                + 0.001 * (seed % 2 - 0.5) * 2
                + 0.002 * WIDTH_INDEX[gamma] * (seed + 1) / 3
            )
            drop = 0.02 * (1 + math.log10(s)) + 0.02 + 0.001 * seed
        train_ce = 0.1 + np.exp(-t) * scale
    # from the checkpoint's accuracy minus the drop at t = 1 towards the final accuracy
    val_acc = final + (BASE_ACC - drop - final) * np.exp(-(t - 1) / 2)
    # the direction: penalized runs keep it (flipped: the control does) and the largest s points out
    keeps = (s == 0) == flip
    step_cos = np.full(EPOCHS, (0.8 if keeps else 0.2) + 0.01 * seed)
    radial_cos = np.full(EPOCHS, (0.5 if flip or s < 100 else 0.95) + 0.01 * seed)
    step_cos[0] = radial_cos[0] = math.nan  # no earlier step, no displacement yet
    out = {"dist": dist + jitter, "val_acc": val_acc, "train_ce": train_ce}
    # in function space √ of the weights' distance: N times farther in weights is √N times in function,
    # a ratio of ratios N^-½: < 1 where the run is farther than its control, > 1 where it is nearer (flipped)
    func = {"func_disagree": 0.05 * np.sqrt(out["dist"]), "func_kl": 0.01 * out["dist"]}
    return out | {"step_cos": step_cos, "radial_cos": radial_cos} | func


def metrics_table(flip=False, seeds=SEEDS, dataset="digits", model="cnn", runs=RUNS, diverge=()) -> pd.DataFrame:
    """The aggregated metrics table: base rows, then every run's rows. `diverge`: run ids whose
    last epoch diverged (NaN losses and distance; their val_acc is left high on purpose)."""
    rows = []
    for seed in seeds:
        for epoch in range(1, CHECKPOINT + 1):
            rows.append(
                {
                    "phase": "base",
                    "dataset": dataset,
                    "model": model,
                    "seed": seed,
                    "run": "base",
                    "epoch": epoch,
                    "val_acc": BASE_ACC * epoch / CHECKPOINT,
                    "train_ce": 1.0,
                    "dist": math.nan,
                    "diverged": False,
                    "label": "base",
                    "control": "base",
                }
            )
        for rid, run in runs.items():
            p = run["spec"].values()
            c = curves(p, seed, flip)
            for k in range(EPOCHS):
                diverged = rid in diverge and k == EPOCHS - 1
                rows.append(
                    {
                        "phase": "continue",
                        "dataset": dataset,
                        "model": model,
                        "seed": seed,
                        **run["spec"].columns(),  # run, control and every grid column, as training writes them
                        "epoch": CHECKPOINT + 1 + k,
                        "checkpoint_epoch": CHECKPOINT,
                        "label": ",".join(run["labels"]),
                        "val_acc": c["val_acc"][k],
                        "test_acc": c["val_acc"][k],
                        "train_ce": math.nan if diverged else c["train_ce"][k],
                        "train_loss": math.nan if diverged else c["train_ce"][k],
                        "dist": math.nan if diverged else c["dist"][k],
                        "step_cos": c["step_cos"][k],
                        "radial_cos": c["radial_cos"][k],
                        "func_disagree": c["func_disagree"][k],
                        "func_kl": c["func_kl"][k],
                        "diverged": diverged,
                    }
                )
                if diverged:
                    rows[-1]["val_acc"] = 0.95  # a diverged run's accuracy must count as 0, not this
    df = pd.DataFrame(rows)
    df["width"] = df["width"].astype(float)
    df["gamma"] = df["gamma"].astype(float)
    df["dist_min"] = df["dist"]
    return df


METHODS = ["sgdr", "independent", "sgdr_distance", "distance", "snapshots"]
PAIR_SHAPE = [0, 1, 1, 0, 0, 1]  # some pairs disagree a little more: Spearman ρ 0.1 with weight distance


def ensemble_tables(flip=False, ensembles=("seed0", "seed1", "seed2"), dataset="digits", model="cnn"):
    """ensembles.parquet and ensemble_pairs.parquet as `repel ensembles` writes them (4 members)."""
    curves_rows, pair_rows = [], []
    for g, method in enumerate(METHODS):
        for k, name in enumerate(ensembles):
            gain = -0.01 - 0.001 * k if flip else 0.01 + 0.001 * k
            for m, gain_best in ((1, 0.0), (2, -2 * gain), (4, gain)):  # only the largest m counts
                curves_rows.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "method": method,
                        "ensemble": name,
                        "m": m,
                        "accuracy": 0.9,
                        "gain": gain_best,
                        "gain_best": gain_best,
                    }
                )
            for pair, (i, j) in enumerate(itertools.combinations(range(4), 2)):
                # flipped: disagreement follows weight distance (by method order: distance snapshots
                # more diverse than SGDR, less than their matching control)
                if flip:
                    weight_distance = 3 * g + pair + 1 + 12 * k
                    disagreement = 0.01 * weight_distance + (0.001 * k if method == "distance" else 0)
                else:
                    weight_distance = pair + 1
                    base = {"distance": 0.05 + 0.002 * k, "sgdr": 0.10, "snapshots": 0.03}.get(method, 0.07)
                    disagreement = base + 0.001 * k + 0.01 * PAIR_SHAPE[pair]
                pair_rows.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "method": method,
                        "ensemble": name,
                        "i": i,
                        "j": j,
                        "disagreement": disagreement,
                        "weight_distance": weight_distance,
                        "aligned_distance": weight_distance * (1 - symmetry_share(method, k, pair, flip)),
                    }
                )
    return pd.DataFrame(curves_rows), pd.DataFrame(pair_rows)


def symmetry_share(method: str, k: int, pair: int, flip: bool) -> float:
    """1 − aligned / plain distance of a pair: large for independent seeds, small within a distance
    run (as claimed; swapped when flipped), the pairs of one ensemble a little apart."""
    large, small = 0.3 + 0.01 * k + 0.002 * pair, 0.02 + 0.001 * k + 0.002 * pair
    return {"independent": small if flip else large, "distance": large if flip else small}.get(method, 0.0)


def test_symmetry_share_is_each_ensemble_s_mean_over_its_pairs(as_claimed):
    # by hand: ensemble k's pairs have shares 0.3 + 0.01 k + 0.002 pair, pair 0..5: mean 0.305 + 0.01 k
    row = as_claimed.set_index("claim").loc["symmetry.independent"]
    assert row["value"] == pytest.approx(np.mean([0.305 + 0.01 * k for k in range(3)]))
    assert row["seeds"] == 3


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


# --- the settings, declared once -----------------------------------------------------------

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def test_the_schema_says_what_the_settings_declare():
    block = yaml.safe_load(SCHEMA.read_text())["properties"]["claims"]["properties"]
    assert block == claims.schema()  # every key, type, bound, default and description


def test_settings_are_checked_with_the_key_named():
    assert claims.resolve_settings({"last_fraction": 1})["last_fraction"] == 1  # the whole run is allowed
    with pytest.raises(ValueError, match="unknown setting.*margn"):
        claims.resolve_settings({"margn": 0.1})
    for key, bad in [
        ("last_fraction", 0),
        ("margin", 1.5),
        ("early_epochs", 2.5),
        ("confidence", 1),
        ("plateau", 1),
        ("weak_rho", -0.1),
        ("last_epochs", 0),
        ("relative_margin", True),
    ]:
        with pytest.raises(ValueError, match=rf"claims: {key} = .* out of range"):
            claims.resolve_settings({key: bad})


# --- the tests, against numbers computed by hand -------------------------------------------------

CELLS = pd.MultiIndex.from_tuples([("d", "a"), ("d", "b")], names=claims.CELL)


def _values(per_cell: dict) -> pd.Series:
    rows = [(*cell, seed, v) for cell, vs in per_cell.items() for seed, v in enumerate(vs)]
    return pd.DataFrame(rows, columns=[*claims.CELL, "seed", "v"]).set_index([*claims.CELL, "seed"])["v"]


def test_t_test_by_hand():
    r = claims.t_test(_values({("d", "a"): [1.0, 2.0, 3.0], ("d", "b"): [2.0]}), 0.0, +1, 0.95, CELLS)
    a, b = r.loc[("d", "a")], r.loc[("d", "b")]
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2 dof) x sd 1 / sqrt(3)
    t = 2 / (1 / math.sqrt(3))  # mean / (sd / sqrt n)
    assert a["value"] == pytest.approx(2.0) and a["seeds"] == 3 and a["fixed"] == ""
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert a["p_holds"] == pytest.approx(stats.t.sf(t, 2))
    assert a["p_against"] == pytest.approx(stats.t.cdf(t, 2))
    assert b["fixed"] == "inconclusive" and b["note"] == claims.ONE_SEED and b["value"] == 2.0
    down = claims.t_test(_values({("d", "a"): [1.0, 2.0, 3.0]}), 2.5, -1, 0.95, CELLS).loc[("d", "a")]
    assert down["p_holds"] == pytest.approx(stats.t.cdf(-0.5 * math.sqrt(3), 2))  # mean 2 below 2.5
    flat = claims.t_test(_values({("d", "a"): [1.0, 1.0, 1.0]}), 0.0, +1, 0.95, CELLS).loc[("d", "a")]
    assert (flat["p_holds"], flat["p_against"]) == (0.0, 1.0)  # no spread: the side decides


def test_equivalence_is_two_one_sided_tests_by_hand():
    d = [0.001, -0.001, 0.003]
    r = claims.equivalence(_values({("d", "a"): d}), 0.01, 0.95, CELLS).loc[("d", "a")]
    sem = np.std(d, ddof=1) / math.sqrt(3)
    above = stats.t.sf((0.001 + 0.01) / sem, 2)  # mean 0.001 vs -0.01
    below = stats.t.cdf((0.001 - 0.01) / sem, 2)  # vs +0.01
    assert r["p_holds"] == pytest.approx(max(above, below))
    assert r["p_against"] == pytest.approx(min(1, 2 * min(1 - above, 1 - below)))


def test_parts_take_the_largest_p_for_holds_and_bonferroni_against():
    one = claims.t_test(_values({("d", "a"): [1.0, 1.1, 0.9]}), 0.0, +1, 0.95, CELLS)
    two = claims.t_test(_values({("d", "a"): [-1.0, 0.5, -2.0]}), 0.0, +1, 0.95, CELLS)
    both = claims.combine({"one": one, "two": two}).loc[("d", "a")]
    assert both["p_holds"] == pytest.approx(two.loc[("d", "a"), "p_holds"])
    against = min(one.loc[("d", "a"), "p_against"], two.loc[("d", "a"), "p_against"])
    assert against < 0.5 and both["p_against"] == pytest.approx(2 * against)
    assert both["value"] == pytest.approx(two.loc[("d", "a"), "value"])  # the part that decides
    assert both["note"].startswith("one: +1 [") and "two: -0.833" in both["note"]
    assert claims.combine({"one": one, "two": two}).loc[("d", "b"), "fixed"] == "inconclusive"  # no values


def test_benjamini_hochberg_by_hand():
    # sorted 0.01, 0.03, 0.04 of m = 3: 0.01 x 3/1 = 0.03, 0.03 x 3/2 = 0.045, 0.04 x 3/3 = 0.04;
    # stepping down from the largest, each is the smallest of itself and those above: 0.03, 0.04, 0.04
    p = pd.Series([0.01, 0.04, 0.03, math.nan, 0.2])
    groups = pd.Series(["x", "x", "x", "x", "y"])
    assert claims._adjust(p, groups).tolist()[:3] == pytest.approx([0.03, 0.04, 0.04])
    assert math.isnan(claims._adjust(p, groups)[3]) and claims._adjust(p, groups)[4] == pytest.approx(0.2)


def test_slopes_are_per_seed_by_hand():
    # seed 0: y = 1 + 2x; seed 1: y = 5 - x (x = 0, 1, 2 for runs r0, r1, r2)
    rows = [("d", "a", f"r{x}", seed, y) for seed, ys in enumerate([[1, 3, 5], [5, 4, 3]]) for x, y in enumerate(ys)]
    values = pd.DataFrame(rows, columns=[*claims.RUN, "seed", "y"]).set_index([*claims.RUN, "seed"])["y"]
    x = pd.Series(
        [0.0, 1.0, 2.0], index=pd.MultiIndex.from_tuples([("d", "a", f"r{k}") for k in range(3)], names=claims.RUN)
    )
    assert claims.slopes(values, x).tolist() == pytest.approx([2.0, -1.0])


def test_spearman_within_each_ensemble_by_hand():
    pairs = pd.DataFrame(
        {
            "dataset": "d",
            "model": "a",
            "method": "distance",
            "ensemble": ["seed0"] * 6 + ["seed1"] * 3,
            "weight_distance": [1, 2, 3, 4, 5, 6, 1, 2, 3],
            "disagreement": [2, 1, 4, 3, 5, 6, 1, 2, 3.0],
        }
    )
    rho = claims.within_ensemble_rho(pairs)
    # seed0: rank differences 1, -1, 1, -1, 0, 0 of 6 pairs; seed1 has fewer than MIN_PAIRS
    assert rho.tolist() == pytest.approx([1 - 6 * 4 / (6 * 35)])
    assert rho.tolist() == pytest.approx([stats.spearmanr([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 5, 6]).statistic])


def test_early_drop_half_ratio_and_growth_by_hand():
    rows = pd.DataFrame(
        {
            "phase": "continue",
            "dataset": "d",
            "model": "a",
            "run": "r",
            "control": "r",
            "seed": 0,
            "epoch": range(11, 17),
            "checkpoint_epoch": 10,
            "strength": 0.0,
            "diverged": False,
            "val_acc": [0.88, 0.89, 0.9, 0.9, 0.9, 0.7],
            "test_acc": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
            "dist": [1, 2, 3, 4, 4, 4.0],
        }
    )
    base = pd.DataFrame(
        {
            "phase": "base",
            "dataset": "d",
            "model": "a",
            "run": "base",
            "seed": [0],
            "epoch": 10,
            "val_acc": 0.9,
            "diverged": False,
        }
    )
    t = claims.Tables(
        pd.concat([base, rows]), {}, None, None, None, claims.resolve_settings({"last_epochs": 2, "last_fraction": 0.5})
    )
    st = t.stats.loc[("d", "a", "r", 0)]
    assert st["early_drop"] == pytest.approx(0.02)  # the dip at epoch 16 is not early (first 5 epochs)
    assert st["half_ratio"] == pytest.approx(3 / 4)  # epoch 13: the middle of 10..16
    assert st["growth_ratio"] == pytest.approx((4 - 3) / 4)  # round(0.5 x 6) = 3 epochs: 13 -> 16
    assert st["final_test"] == pytest.approx(0.95)  # the mean of the last 2 epochs
    assert st["final_dist"] == pytest.approx(4.0)


# --- crossing detector ------------------------------------------------------------------------


def _gap(values):
    return pd.DataFrame(
        {
            "dataset": "d",
            "model": "a",
            "seed": 0,
            "epoch": range(11, 11 + len(values)),
            "gap": np.asarray(values, dtype=float),
        }
    )


def test_crossing_epoch_finds_a_planted_crossing():
    # behind until epoch 14, level at 15, ahead after
    assert claims.crossing_epochs(_gap([-4, -3, -2, -0.1, 0, 1, 2, 3, 4, 5])).tolist() == [15]
    # ahead for a while, behind again, then ahead for good from epoch 18
    assert claims.crossing_epochs(_gap([-4, 1, 1, 1, -1, -1, -1, 1, 1, 1])).tolist() == [18]


def test_crossing_epoch_none_when_not_yet_or_never_behind():
    assert claims.crossing_epochs(_gap([-1] * 10)).isna().all()  # always behind: censored
    assert claims.crossing_epochs(_gap([-4, 1, 1, 1, 1, 1, 1, 1, 1, -1])).isna().all()  # falls back at the end
    assert len(claims.crossing_epochs(_gap([1] * 10)).dropna()) == 0  # the narrower never led


# --- the small world: every claim holds as claimed, does not hold flipped --------------------------

# the small world's ensembles have one strength: ensemble.strength is not run there (tested below)
WORLD_CLAIMS = [
    c.id for c in claims.CLAIMS if (c.family in FAMILIES or c.family == "ensembles") and c.id != "ensemble.strength"
]
DECIDED = [c for c in WORLD_CLAIMS if not next(k for k in claims.CLAIMS if k.id == c).exploratory]


@pytest.mark.parametrize("claim", DECIDED)
def test_holds_as_claimed(as_claimed, claim):
    row = as_claimed.set_index("claim").loc[claim]
    assert row["verdict"] == "holds", row["note"]


@pytest.mark.parametrize("claim", DECIDED)
def test_does_not_hold_flipped(flipped, claim):
    row = flipped.set_index("claim").loc[claim]
    assert row["verdict"] == "does not hold", row["note"]


@pytest.mark.parametrize("claim", WORLD_CLAIMS)
def test_one_seed_is_inconclusive(one_seed, claim):
    row = one_seed.set_index("claim").loc[claim]
    assert row["verdict"] == "inconclusive"
    assert row["seeds"] <= 1
    assert "1 seed" in row["note"] or "no method has 2 ensembles" in row["note"]


def test_function_vs_weights_is_the_log_ratio_of_ratios_by_hand(as_claimed):
    row = as_claimed.set_index("claim").loc["function.vs_weights"]
    # func = 0.05 √dist, so per seed log rr = ½ log(d_run / d_control) − log(d_run / d_control) = −½ log N,
    # N from the final distances (the mean over the last 5 epochs, as in baseline.farther)
    t = np.arange(16, 21)
    log_rr = []
    for k in SEEDS:
        jitter = 0.002 * k * np.sqrt(t)
        run = 4 * (1 - np.exp(-t)) * (1 + 0.01 * k) + jitter
        control = 0.05 * t * (1 + 0.01 * k) + jitter
        log_rr.append(np.log(np.sqrt(run).mean() / np.sqrt(control).mean()) - np.log(run.mean() / control.mean()))
    assert row["value"] == pytest.approx(np.mean(log_rr), rel=1e-9)
    assert row["value"] < 0 and f"ratio of ratios {math.exp(np.mean(log_rr)):.3g}" in row["value_text"]


def test_baseline_farther_interval_by_hand(as_claimed):
    row = as_claimed.set_index("claim").loc["baseline.farther"]
    # final = the mean over the last 5 epochs, t = 16..20: penalty 4 (1 - e^-t) x scale, control
    # 0.05 t x scale (mean 0.05 x 18); scale = 1 + 0.01 seed; the seed's jitter is in both and cancels
    t = np.arange(16, 21)
    d = np.array([(4 * (1 - np.exp(-t)).mean() - 0.05 * 18) * (1 + 0.01 * k) for k in SEEDS])
    half = 4.302653 * d.std(ddof=1) / math.sqrt(3)
    assert row["seeds"] == 3
    assert row["value"] == pytest.approx(d.mean(), abs=1e-6)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-5)
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(d, 0, alternative="greater").pvalue, rel=1e-4)


def test_strength_drop_is_the_seeds_slopes_by_hand(as_claimed):
    row = as_claimed.set_index("claim").loc["strength.drop"]
    # drop = 0.02 (1 + log10 s) + 0.02 + 0.001 seed: every seed's slope per decade is 0.02 exactly
    assert row["value"] == pytest.approx(0.02)
    assert row["value_text"] == "slope +0.02/decade of s"


def test_width_crossing_epochs_in_value(as_claimed, flipped):
    # gamma 1e-2 -> 1e-3: 8(1 - e^(-t/4)) overtakes 4(1 - e^-t) at t = 3; 1e-3 -> 1e-4: 16(1 - e^(-t/16))
    # overtakes 8(1 - e^(-t/4)) at t = 10 (7.435 > 7.343; at t = 9, 6.881 < 7.157)
    assert (
        as_claimed.set_index("claim").loc["width.crossing", "value_text"]
        == "γ 0.01→0.001: epoch 13 (3/3 seeds); γ 0.001→0.0001: epoch 20 (3/3 seeds)"
    )
    assert (
        flipped.set_index("claim").loc["width.crossing", "value_text"]
        == "γ 0.01→0.001: not crossed by epoch 30; γ 0.001→0.0001: not crossed by epoch 30"
    )


def test_parts_are_in_the_note(as_claimed):
    notes = as_claimed.set_index("claim")["note"]
    assert all(f"lr {lr}: " in notes["lr.penalty"] for lr in ("0.001", "0.01", "0.1"))  # one part per lr
    assert "merged − single" in notes["multiple.farther"]
    assert "recovered above its early minimum in 3/3 seeds" in notes["strength.recovery"]
    assert "confounded" in notes["ensemble.diversity"]


def test_no_run_id_is_read_for_a_parameter():
    # every run renamed to an opaque id (and its control and families with it): the same verdicts
    metrics, (curves_table, pairs) = metrics_table(), ensemble_tables()
    names = {rid: f"run{k}" for k, rid in enumerate(sorted(set(metrics["run"]) - {"base"}))}
    renamed = metrics.assign(
        run=metrics["run"].map(lambda r: names.get(r, r)), control=metrics["control"].map(lambda r: names.get(r, r))
    )
    families = {f: {**spec, "runs": [names[r] for r in spec["runs"]]} for f, spec in FAMILIES.items()}
    a = claims.evaluate(metrics, FAMILIES, curves_table, pairs)
    b = claims.evaluate(renamed, families, curves_table, pairs)
    pd.testing.assert_frame_equal(a.drop(columns="note"), b.drop(columns="note"))
    assert a.set_index("claim").loc["multiple.farther", "seeds"] == 3  # single-hill twins found by columns


def test_the_single_hill_twin_matches_every_training_column():
    metrics = metrics_table()
    every5 = next(
        r for r in FAMILIES["multiple"]["runs"] if metrics.loc[metrics["run"] == r, "checkpoint_every"].iloc[0] == 5
    )
    t = claims.Tables(metrics, FAMILIES, None, None, None, claims.resolve_settings(None))
    twin = claims.single_hill(t, t.info.loc[[("digits", "cnn", every5)]])
    assert twin.tolist() == ["s10-rbf-g0.01_lr0.01-const-e20"]
    changed = metrics.assign(lr_init=np.where(metrics["run"] == every5, 0.02, metrics["lr_init"]))
    t = claims.Tables(changed, FAMILIES, None, None, None, claims.resolve_settings(None))
    assert claims.single_hill(t, t.info.loc[[("digits", "cnn", every5)]]).empty  # another lr: no twin


# --- not run, divergence, ensembles ----------------------------------------------------------------


def test_missing_family_and_tables_give_not_run():
    families = {k: v for k, v in FAMILIES.items() if k != "width"}
    table = claims.evaluate(metrics_table(), families)  # and no ensemble tables
    v = verdicts(table)
    width = ["width.distance", "width.crossing", "width.accuracy"]
    assert len(table) == len(claims.CLAIMS)  # nothing dropped
    assert (v[width] == "not run").all() and (v[ENSEMBLE_CLAIMS] == "not run").all()
    assert (v[["kernel.farther", "schedule.escape", "landscape.left"]] == "not run").all()
    notes = table.set_index("claim")["note"]
    assert "no family 'width'" in notes["width.distance"] and "no ensembles table" in notes["ensemble.gain"]


def test_family_without_rows_for_one_model_is_not_run_there():
    mlp = metrics_table(model="mlp")
    metrics = pd.concat([metrics_table(), mlp[~mlp["run"].isin(FAMILIES["strength"]["runs"])]])  # the mlp has none
    table = claims.evaluate(metrics, FAMILIES, *ensemble_tables())
    strength = ["strength.drop", "strength.distance", "strength.recovery"]
    assert (verdicts(table, model="cnn")[strength] == "holds").all()
    assert (verdicts(table, model="mlp")[strength] == "not run").all()
    assert (verdicts(table, model="mlp")[ENSEMBLE_CLAIMS] == "not run").all()  # no ensembles for the mlp


def test_a_diverged_largest_s_is_said_not_counted_as_zero():
    largest = "s100-rbf-g0.01_lr0.01-const-e20"
    row = claims.evaluate(metrics_table(flip=True, diverge=[largest]), FAMILIES).set_index("claim")
    # flipped, the largest s would end above its control; diverged in every seed it has no accuracy
    assert row.loc["strength.recovery", "verdict"] == "inconclusive"
    assert "diverged in 3/3 seeds (left out, not counted as 0)" in row.loc["strength.recovery", "note"]


def test_a_too_high_lr_that_diverges_everywhere_is_unstable():
    row = claims.evaluate(metrics_table(flip=True, diverge=["s0_lr0.1-const-e20"]), FAMILIES).set_index("claim")
    assert row.loc["lr.extremes", "verdict"] == "holds" and row.loc["lr.extremes", "value_text"] == "diverged"
    assert "diverged in 3/3 seeds" in row.loc["lr.extremes", "note"]
    assert "not testable from a converged checkpoint" in row.loc["lr.extremes", "note"]


def test_one_independent_ensemble_does_not_block_the_gain():
    curves_table, pairs = ensemble_tables()
    one = curves_table[(curves_table["method"] != "independent") | (curves_table["ensemble"] == "seed0")]
    row = claims.evaluate(metrics_table(), FAMILIES, one, pairs).set_index("claim").loc["ensemble.gain"]
    assert row["verdict"] == "holds"
    assert "not tested, 1 ensemble: independent" in row["note"]


# --- the table, the command line and the figure -------------------------------------------------


def test_settings_are_shown_and_used(flipped):
    assert (
        flipped.set_index("claim").loc["baseline.accuracy", "thresholds"]
        == "margin 0.01; relative_margin 0; last_epochs 5; confidence 0.95"
    )
    wide = claims.evaluate(metrics_table(flip=True), FAMILIES, settings={"margin": 0.1})
    row = wide.set_index("claim").loc["baseline.accuracy"]
    assert row["thresholds"].startswith("margin 0.1;") and "max(0.1, 0 ×" in row["rule"]
    assert row["verdict"] == "holds"  # +0.05 is within ±0.1
    relative = claims.evaluate(metrics_table(flip=True), FAMILIES, settings={"relative_margin": 1.0})
    # the control's error rate 1 - 0.9 = 0.1 sets the margin: +0.05 is within ±0.1 again
    assert relative.set_index("claim").loc["baseline.accuracy", "verdict"] == "holds"


def test_table_shape_adjustment_and_markdown(as_claimed):
    assert list(as_claimed.columns) == claims.COLUMNS
    assert set(as_claimed["verdict"]) <= set(claims.VERDICTS)
    assert as_claimed["figure"].str.startswith("plots/").all()
    decided = as_claimed[
        as_claimed["verdict"].isin(["holds", "does not hold", "inconclusive"]) & as_claimed["p_value"].notna()
    ]
    assert (decided["p_adjusted"] >= decided["p_value"] - 1e-15).all()  # BH never lowers a p-value
    assert decided["adjusted_with"].str.contains(f"over the {len(decided)} decided tests of this table").all()
    text = claims.markdown(as_claimed)
    for claim in claims.CLAIMS:
        assert claim.id in text
    assert "| holds" in text and "Benjamini–Hochberg" in text


def test_cli_writes_the_tables_and_plot_draws_them(tmp_path):
    import json

    from repel import cli, plots

    metrics = pd.concat([metrics_table(), metrics_table(flip=True, model="mlp")])
    curves_table, pairs = ensemble_tables()
    for name, df in (("metrics", metrics), ("ensembles", curves_table), ("pairs", pairs)):
        df.to_parquet(tmp_path / f"{name}.parquet")
    out = tmp_path / "claims"
    assert (
        cli.main(
            [
                "claims",
                "--metrics",
                str(tmp_path / "metrics.parquet"),
                "--families",
                json.dumps(FAMILIES),
                "--ensembles",
                str(tmp_path / "ensembles.parquet"),
                "--pairs",
                str(tmp_path / "pairs.parquet"),
                "--settings",
                '{"margin": 0.01}',
                "--out-dir",
                str(out),
            ]
        )
        == 0
    )
    table = pd.read_parquet(out / "claims.parquet")
    assert len(table) == 2 * len(claims.CLAIMS)
    assert (verdicts(table, model="cnn")[DECIDED] == "holds").all()
    assert (out / "claims.csv").exists() and "# The source study's claims" in (out / "claims.md").read_text()

    fig = plots.claims_figure(table)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (len(claims.CLAIMS), 2)  # claims x dataset/model
    assert len(ax.texts) == 2 * len(claims.CLAIMS)
    assert (
        cli.main(
            ["plot", "--claims", str(out / "claims.parquet"), "--out-dir", str(tmp_path / "plots"), "--formats", "png"]
        )
        == 0
    )
    assert (tmp_path / "plots" / "claims.png").stat().st_size > 0


def test_the_landscape_claim_needs_its_table_and_the_baseline_family():
    metrics = metrics_table()
    rows = metrics[(metrics["phase"] == "continue")].drop_duplicates(["run", "seed"])
    landscape = rows[["dataset", "model", "run", "seed"]].assign(pair=0, barrier=0.1)
    # the penalized baseline run's barrier 0.2 + 0.01 seed above its control's 0.1
    baseline = FAMILIES["baseline"]["runs"][-1]
    landscape.loc[landscape["run"] == baseline, "barrier"] = 0.3 + 0.01 * landscape["seed"]
    row = claims.evaluate(metrics, FAMILIES, landscape=landscape).set_index("claim").loc["landscape.left"]
    assert row["verdict"] == "holds" and row["value"] == pytest.approx(0.21)
    families = {k: v for k, v in FAMILIES.items() if k != "baseline"}
    row = claims.evaluate(metrics, families, landscape=landscape).set_index("claim").loc["landscape.left"]
    assert row["verdict"] == "not run" and "no family 'baseline'" in row["note"]


def test_release_ratio_and_its_controls_by_hand():
    """A run released after 2 of 6 epochs falls from 2 + 0.1 k to 1.65 + 0.1 k (the mean of its last
    2 epochs): ratio (1.65 + 0.1 k) / (2 + 0.1 k), below 1 − 0.1: it came back. Its control walks
    0.1 per epoch: 0.55 / 0.2 = 2.75 over the same epochs."""
    rows = []
    for seed in SEEDS:
        rows.append(dict(phase="base", run="base", seed=seed, epoch=CHECKPOINT, val_acc=BASE_ACC, dist=math.nan))
        released = [1.0, 2.0, 1.9, 1.8, 1.7, 1.6]
        for k in range(6):
            common = dict(phase="continue", seed=seed, epoch=CHECKPOINT + 1 + k, val_acc=0.9, test_acc=0.9)
            common |= dict(checkpoint_epoch=CHECKPOINT, diverged=False, control="C")
            rows.append(dict(common, run="R", strength=10.0, release_after=2.0, dist=released[k] + 0.1 * seed))
            rows.append(dict(common, run="C", strength=0.0, release_after=math.nan, dist=0.1 * (k + 1)))
    metrics = pd.DataFrame(rows).assign(dataset="d", model="m")
    families = {"release": {"runs": ["C", "R"], "varying": ["release_after"]}}
    table = claims.evaluate(metrics, families, settings={"last_epochs": 2}).set_index("claim")
    row = table.loc["release.stays"]
    expected = np.mean([(1.65 + 0.1 * k) / (2 + 0.1 * k) for k in SEEDS])
    assert row["value"] == pytest.approx(expected) and row["seeds"] == len(SEEDS)
    assert "its control's ratio 2.75" in row["note"]
    assert row["verdict"] == "does not hold"  # it came back


def test_the_shift_and_ood_claims_read_their_tables_by_hand():
    rows, ood_rows = [], []
    for method, extra, mi in (("distance", 0.005, 0.9), ("sgdr", 0.0, 0.8), ("snapshots", 0.0, 0.7)):
        for k in range(3):
            for corruption, top in (("noise", 0.7), ("blur", 0.8)):
                # severity 3 is not the highest: it is not read
                for severity, acc in ((0, 0.9), (3, 0.85), (5, top - extra - 0.001 * k)):
                    row = {"dataset": "digits", "model": "cnn", "method": method, "ensemble": f"seed{k}"}
                    rows.append({**row, "corruption": corruption, "severity": severity, "accuracy": acc, "nll": 0.3})
            ood_rows.append({**row, "ood": "inverted", "score": "mi", "auroc": mi + 0.01 * k})
    table = claims.evaluate(
        metrics_table(), FAMILIES, *ensemble_tables(), shift=pd.DataFrame(rows), ood=pd.DataFrame(ood_rows)
    ).set_index("claim")
    # per seed the drop of distance is 0.005 larger than either other's (the seed's 0.001 k cancels)
    assert table.loc["shift.accuracy", "value"] == pytest.approx(0.005)
    assert table.loc["shift.accuracy", "verdict"] == "holds"  # 0.005 < shift_margin 0.02, no spread
    assert table.loc["shift.nll", "value"] == pytest.approx(0.0)
    assert table.loc["ood.mi", "value"] == pytest.approx(0.2) and table.loc["ood.mi", "verdict"] == "holds"
    missing = claims.evaluate(metrics_table(), FAMILIES).set_index("claim")
    assert missing.loc["ood.mi", "verdict"] == "not run" and "no ood table given" in missing.loc["ood.mi", "note"]


# --- ensembles at several strengths ----------------------------------------------------------------

STRENGTHS = (1, 10, 100)


def strength_tables(diversity_slope=0.01, accuracy_slope=0.002, seeds=3):
    """ensembles.parquet and ensemble_pairs.parquet with distance_s1, _s10, _s100 and the matching
    control (2 members): per seed k, disagreement 0.05 + 0.01 k + slope k' log10 s with a seed's own
    slope (diversity_slope (1 + 0.1 k)), accuracy likewise; the control 0.04 + 0.01 k, accuracy 0.9."""
    curves, pairs = [], []
    for method, s in [*((f"distance_s{s}", s) for s in STRENGTHS), ("snapshots", None)]:
        for k in range(seeds):
            x = np.log10(s) if s else 0.0
            disagreement = 0.05 + 0.01 * k + diversity_slope * (1 + 0.1 * k) * x if s else 0.04 + 0.01 * k
            accuracy = 0.9 + 0.001 * k + accuracy_slope * (1 + 0.1 * k) * x if s else 0.9
            row = {"dataset": "digits", "model": "cnn", "method": method, "ensemble": f"seed{k}"}
            for m in (1, 2):  # only the largest m counts
                curves.append({**row, "m": m, "accuracy": accuracy if m == 2 else 0.5, "gain": 0.0, "gain_best": 0.0})
            pairs.append({**row, "i": 0, "j": 1, "disagreement": disagreement, "weight_distance": 1.0})
    return pd.DataFrame(curves), pd.DataFrame(pairs)


def test_the_strength_claim_is_the_seeds_slopes_by_hand():
    curves, pairs = strength_tables()
    table = claims.evaluate(metrics_table(), FAMILIES, curves, pairs).set_index("claim")
    row = table.loc["ensemble.strength"]
    # each seed's slope by numpy's least squares over (log10 s, value) of its three strengths
    x = np.log10(STRENGTHS)
    per_seed = {
        col: [
            np.polyfit(
                x,
                [
                    frame.loc[(frame["method"] == f"distance_s{s}") & (frame["ensemble"] == f"seed{k}"), col].iloc[-1]
                    for s in STRENGTHS
                ],
                1,
            )[0]
            for k in range(3)
        ]
        for col, frame in (("disagreement", pairs), ("accuracy", curves[curves["m"] == 2]))
    }
    assert per_seed["disagreement"] == pytest.approx([0.01, 0.011, 0.012])  # the planted slopes
    p = {c: stats.ttest_1samp(v, 0, alternative="greater").pvalue for c, v in per_seed.items()}
    # parts: the one with the larger p decides (accuracy: the same relative spread, smaller slopes)
    deciding = max(p, key=p.get)
    assert row["value"] == pytest.approx(np.mean(per_seed[deciding]))
    assert row["p_value"] == pytest.approx(max(p.values()), rel=1e-6)
    assert row["verdict"] == "holds" and row["seeds"] == 3
    assert "diversity: slope +0.011/decade of s" in row["note"] and "accuracy: slope" in row["note"]
    # a shrinking diversity: the diversity part does not hold, so the claim does not (6 seeds: the
    # table's other tests adjust the p-value up)
    flipped = claims.evaluate(metrics_table(), FAMILIES, *strength_tables(diversity_slope=-0.01, seeds=6)).set_index(
        "claim"
    )
    assert flipped.loc["ensemble.strength", "verdict"] == "does not hold"


def test_the_strength_claim_is_not_run_with_one_strength(as_claimed):
    row = as_claimed.set_index("claim").loc["ensemble.strength"]
    assert row["verdict"] == "not run" and "fewer than two strengths" in row["note"]


def test_the_distance_claims_are_made_per_strength():
    curves, pairs = strength_tables()
    table = claims.evaluate(metrics_table(), FAMILIES, curves, pairs).set_index("claim")
    row = table.loc["ensemble.penalty_diversity"]
    assert all(f"s={s}: " in row["note"] for s in STRENGTHS)  # a part per strength
    # per seed, distance_s<s> − snapshots; the part with the largest p decides (scipy's t-test;
    # s = 1 has no spread: every seed 0.01)
    control = pairs[pairs["method"] == "snapshots"]["disagreement"].to_numpy()
    d = {s: pairs[pairs["method"] == f"distance_s{s}"]["disagreement"].to_numpy() - control for s in STRENGTHS}
    p = {s: stats.ttest_1samp(v, 0, alternative="greater").pvalue if v.std() > 0 else 0.0 for s, v in d.items()}
    assert row["value"] == pytest.approx(d[max(p, key=p.get)].mean())
    assert row["verdict"] == "holds"


def test_symmetry_claims_say_when_nothing_was_aligned():
    curves, pairs = ensemble_tables()
    resnet = claims.evaluate(metrics_table(), FAMILIES, curves, pairs.assign(aligned_distance=math.nan))
    row = resnet.set_index("claim").loc["symmetry.independent"]
    assert row["verdict"] == "not run" and "no permutation spec" in row["note"]
    older = claims.evaluate(metrics_table(), FAMILIES, curves, pairs.drop(columns="aligned_distance"))
    row = older.set_index("claim").loc["symmetry.continuation"]
    assert row["verdict"] == "not run" and "made before repel.align" in row["note"]


def test_symmetry_continuation_is_made_per_strength():
    curves, pairs = strength_tables()
    pairs = pairs.assign(aligned_distance=pairs["weight_distance"] * (0.97 + 0.001 * np.arange(len(pairs))))
    row = claims.evaluate(metrics_table(), FAMILIES, curves, pairs).set_index("claim").loc["symmetry.continuation"]
    assert all(f"s={s}: " in row["note"] for s in STRENGTHS)  # a part per strength
    assert row["verdict"] == "holds" and row["seeds"] == 3  # shares about 0.03 < symmetry_share 0.1
