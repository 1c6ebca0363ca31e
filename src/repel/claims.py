"""The source study's claims as verdicts, computed from the aggregated tables.

Each claim is one row per dataset/model: the statistic that tests it, its value with an interval,
its raw and adjusted one-sided p-values, the decision rule in words, the thresholds it used (keys
of the config's `claims:` block, declared once in SETTINGS) and the verdict (VERDICTS). Verdicts
come from per-seed values, never from a figure. docs/DESIGN.md gives every claim's reasons.

Seeds are the independent units (for the ensemble claims: a method's ensembles). Every test is a
one-sided t-test over those units (scipy.stats.ttest_1samp) at level α/2, α = 1 − confidence,
so "holds" and "does not hold" each have a nominal rate of α/2 at the boundary of their
hypothesis, and a two-sided `confidence` interval is shown beside them:
- paired: per-seed differences d_k (a point minus its own control, same seed): holds when the
  mean is on the claimed side of 0, does not hold when it is on the other side.
- grows with: a least-squares slope per seed of the statistic against log10 of the swept value
  (the sweeps are log-spaced), then the t-test of the seeds' slopes — the trend is estimated
  within each seed, never pooled over (value, seed) pairs.
- about the same (equivalence, two one-sided tests): holds when the mean is inside ±margin,
  does not hold when it is outside.
- not more than (non-inferiority): holds when the mean is below the margin, does not hold when
  it is above it.
- parts: holds when every part holds (p = the largest part's p: an intersection-union test);
  does not hold when some part does not (p = parts × the smallest: Bonferroni).
Then every decidable p-value of the table is adjusted together (Benjamini–Hochberg,
scipy.stats.false_discovery_control), the "holds" and the "does not hold" p-values each as one
family; the verdict reads the adjusted values. Fewer than 2 seeds: inconclusive. A claim on which
the source states no result is "exploratory": its effect and interval are shown, it is not
decided and not adjusted.

Claims find their family by name (the families of config/reduced.yaml and study.yaml). A family
the config lacks, or with no rows for a dataset/model, makes its claims "not run" there; the
ensemble claims need the ensemble tables, landscape.left the landscape table. No parameter is
read back from a run id: the tables' columns say them (`control` names each run's control). An
ensemble method's strength, where `ensembles.strength` lists several, is in its name
(`distance_s10`), read by grid.method_strength, the inverse of the naming.

A diverged run (`diverged` in any epoch) has no final accuracy or distance: its seed drops out of
that run's statistics, and the note says how many did.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Setting:
    """One threshold of the `claims:` block: default, bounds (open or closed) and meaning."""

    default: float
    low: float
    high: float | None  # None: no upper bound
    low_open: bool
    high_open: bool
    integer: bool
    meaning: str

    def ok(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (self.integer and not float(v).is_integer()):
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = self.high is None or (v < self.high if self.high_open else v <= self.high)
        return above and below


# The claims' thresholds, declared once: the schema's claims block must say the same (a test checks it).
SETTINGS = {
    "confidence": Setting(
        0.95, 0, 1, True, True, False, "of the intervals; each test decides one-sided at (1 - confidence)/2"
    ),
    "margin": Setting(0.01, 0, 1, True, False, False, "accuracy margin of 'about the same' (a fraction)"),
    "relative_margin": Setting(
        0.0, 0, 1, False, False, False, "the margin is at least this share of the control's error rate"
    ),
    "last_epochs": Setting(5, 1, None, False, False, True, "a run's final value: the mean over its last k epochs"),
    "early_epochs": Setting(5, 1, None, False, False, True, "'early': the first N epochs after the checkpoint"),
    "last_fraction": Setting(0.2, 0, 1, True, False, False, "'the last fifth' of a run's epochs"),
    "plateau": Setting(
        0.05,
        0,
        1,
        True,
        True,
        False,
        "plateaued: the distance grew by less than this share of its final value over the last fraction",
    ),
    "diversity_margin": Setting(
        0.02,
        0,
        1,
        True,
        False,
        False,
        "'not more diverse': disagreement at most this much higher (a fraction of points)",
    ),
    "weak_rho": Setting(0.3, 0, 1, True, False, False, "'weakly related': Spearman's rho within +-weak_rho"),
    "return_margin": Setting(
        0.1,
        0,
        1,
        True,
        True,
        False,
        "a released run came back: its final distance below (1 - return_margin) x its distance at release",
    ),
    "outward": Setting(
        0.9, 0, 1, True, True, False, "pushed straight out: the mean radial_cos over the early epochs above this"
    ),
    "symmetry_share": Setting(
        0.1,
        0,
        1,
        True,
        True,
        False,
        "'much closer after alignment': weight matching removes more than this share of the members' distance",
    ),
    "shift_margin": Setting(
        0.02, 0, 1, True, False, False, "under shift 'at least as well': an accuracy drop at most this much larger"
    ),
    "shift_nll_margin": Setting(
        0.05, 0, None, True, False, False, "under shift 'at least as well': an NLL rise at most this much larger (nats)"
    ),
}
DEFAULTS = {k: s.default for k, s in SETTINGS.items()}
VERDICTS = ("holds", "does not hold", "inconclusive", "exploratory", "not run")
ADJUSTMENT = "Benjamini–Hochberg"
COLUMNS = [
    "claim",
    "text",
    "family",
    "dataset",
    "model",
    "seeds",
    "statistic",
    "value",
    "value_text",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "p_against",
    "p_against_adjusted",
    "adjusted_with",
    "rule",
    "thresholds",
    "verdict",
    "note",
    "figure",
]
CELL = ["dataset", "model"]
RUN = CELL + ["run"]
UNIT = CELL + ["seed"]
ONE_SEED = "1 seed: the value is that seed's"
# the columns that say how a run was trained; the single-hill twin of a run matches all of them
TRAINING = [
    "strength",
    "kernel",
    "width",
    "gamma",
    "distance",
    "lr_init",
    "schedule",
    "epochs",
    "step_size",
    "step_gamma",
    "t0",
    "t_mult",
    "eta_min",
    "checkpoint_epoch",
]
_R = ["fixed", "value", "ci_low", "ci_high", "p_holds", "p_against", "seeds", "text", "note"]


def schema() -> dict:
    """The schema's claims block properties, as SETTINGS declares them."""
    out = {}
    for key, s in SETTINGS.items():
        prop = {"type": "integer" if s.integer else "number", ("exclusiveMinimum" if s.low_open else "minimum"): s.low}
        if s.high is not None:
            prop["exclusiveMaximum" if s.high_open else "maximum"] = s.high
        out[key] = {**prop, "default": s.default, "description": s.meaning}
    return out


def resolve_settings(settings: dict | None) -> dict:
    """The config's `claims:` block over the defaults; a key or value that makes no sense stops here."""
    settings = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"claims: unknown setting(s) {', '.join(unknown)}; the settings are {', '.join(SETTINGS)}")
    bad = [k for k, s in SETTINGS.items() if not s.ok(settings[k])]
    if bad:
        raise ValueError(
            "claims: " + "; ".join(f"{k} = {settings[k]!r} is out of range ({_bounds(SETTINGS[k])})" for k in bad)
        )
    for k, s in SETTINGS.items():
        if s.integer:
            settings[k] = int(settings[k])
    return settings


def _bounds(s: Setting) -> str:
    kind = "an integer" if s.integer else "a number"
    high = "" if s.high is None else f" and {'<' if s.high_open else '≤'} {s.high:g}"
    return f"{kind} {'>' if s.low_open else '≥'} {s.low:g}{high}"


# --- results per dataset/model: one row per cell, columns _R ------------------------------------


def _blank(index: pd.MultiIndex, fixed: str = "inconclusive", note: str = "") -> pd.DataFrame:
    n = len(index)
    nan = np.full(n, math.nan)
    return pd.DataFrame(
        {
            "fixed": [fixed] * n,
            "value": nan,
            "ci_low": nan,
            "ci_high": nan,
            "p_holds": nan,
            "p_against": nan,
            "seeds": np.zeros(n, int),
            "text": [""] * n,
            "note": [note] * n,
        },
        index=index,
        columns=_R,
    ).astype({"fixed": object, "text": object, "note": object})


def _signed(v: float) -> str:
    return "" if not np.isfinite(v) else f"{v:+.3g}"


def t_test(
    values: pd.Series, bound, sign: int, confidence: float, index: pd.MultiIndex, fmt: Callable[[float], str] = _signed
) -> pd.DataFrame:
    """One-sided t-tests of mean > bound (sign +1) or mean < bound (sign -1) over the units (the
    last index level) of every cell: p_holds for the claimed side, p_against for the other, the
    mean and its two-sided `confidence` t-interval. `bound`: a number or a Series per cell."""
    from scipy import stats  # here, not at the top: the figures read VERDICTS without loading scipy.stats

    wide = values.unstack(-1).reindex(index) if len(values) else pd.DataFrame(index=index)
    a = wide.to_numpy(float)
    bound = np.broadcast_to(
        bound.reindex(index).to_numpy(float) if isinstance(bound, pd.Series) else bound, (len(index),)
    ).astype(float)
    n = np.isfinite(a).sum(1)
    r = _blank(index)
    r["seeds"] = n
    p_up = np.full(len(index), math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0/0 where a cell has no spread or no values: handled below
        mean = np.nanmean(a, 1) if a.shape[1] else np.full(len(index), math.nan)
        sd = np.nanstd(a, 1, ddof=1) if a.shape[1] else np.full(len(index), math.nan)
        for k in set(n[n >= 2].tolist()):  # ttest_1samp by number of values: vectorized, no NaN
            rows = np.flatnonzero(n == k)
            compact = np.sort(np.where(np.isfinite(a[rows]), a[rows], np.inf), axis=1)[:, :k]
            p_up[rows] = stats.ttest_1samp(compact - bound[rows, None], 0.0, axis=1, alternative="greater").pvalue
        half = stats.t.ppf((1 + confidence) / 2, n - 1) * sd / np.sqrt(n)
    flat = (n >= 2) & (sd == 0)  # no spread: the mean's side of the bound decides
    p_up[flat] = np.where(mean[flat] > bound[flat], 0.0, 1.0)
    p_down = np.where(flat, np.where(mean < bound, 0.0, 1.0), 1 - p_up)
    p_down[flat & (mean == bound)] = 1.0
    r["value"] = mean
    r["ci_low"], r["ci_high"] = np.where(n >= 2, mean - half, math.nan), np.where(n >= 2, mean + half, math.nan)
    r["p_holds"], r["p_against"] = (p_up, p_down) if sign > 0 else (p_down, p_up)
    r["fixed"] = np.where(n >= 2, "", "inconclusive")
    r["note"] = np.where(n == 1, ONE_SEED, np.where(n == 0, "no seed has a value", ""))
    r["text"] = [fmt(v) for v in mean]
    return r


def equivalence(values: pd.Series, margin, confidence: float, index: pd.MultiIndex) -> pd.DataFrame:
    """Two one-sided tests: holds when the mean is inside ±margin, does not hold when outside."""
    margin = margin.reindex(index) if isinstance(margin, pd.Series) else pd.Series(float(margin), index=index)
    above = t_test(values, -margin, +1, confidence, index)
    below = t_test(values, margin, -1, confidence, index)
    r = above.copy()
    r["p_holds"] = np.fmax(above["p_holds"], below["p_holds"])
    r["p_against"] = np.minimum(1.0, 2 * np.fmin(above["p_against"], below["p_against"]))
    r["text"] = [f"{t} (±{m:.3g})" if t else "" for t, m in zip(r["text"], margin)]
    return r


def combine(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """A claim of parts, per cell: p_holds the largest part's (a part without one counts 1), p_against
    Bonferroni over the parts that ran; value, interval and seeds of the part that decides (the
    largest p_holds); each part in the note. All parts not run: not run."""
    if len(parts) == 1:
        return next(iter(parts.values()))
    names = list(parts)
    first = parts[names[0]]
    ran = np.array([(p["fixed"] != "not run").to_numpy() for p in parts.values()])  # (parts, cells)
    holds = np.array([p["p_holds"].to_numpy(float) for p in parts.values()])
    against = np.array([p["p_against"].to_numpy(float) for p in parts.values()])
    decidable = np.array([(p["fixed"] == "").to_numpy() for p in parts.values()])
    r = _blank(first.index)
    main = np.where(ran, np.nan_to_num(holds, nan=1.0), -1.0).argmax(0)  # the deciding part, among those that ran
    for col in ("value", "ci_low", "ci_high", "seeds"):
        stack = np.array([p[col].to_numpy(float) for p in parts.values()])
        r[col] = stack[main, np.arange(stack.shape[1])]
    r["seeds"] = r["seeds"].astype(int)
    texts = [p["text"].tolist() for p in parts.values()]
    r["text"] = [f"{names[m]}: {texts[m][c]}" if texts[m][c] else "" for c, m in enumerate(main)]
    r["p_holds"] = np.nan_to_num(np.where(ran, holds, 1.0), nan=1.0).max(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN cells: no part has a p_against
        r["p_against"] = np.minimum(1.0, ran.sum(0) * np.nanmin(np.where(ran, against, np.nan), 0))
    r["fixed"] = np.where(~ran.any(0), "not run", np.where(decidable.any(0), "", "inconclusive"))
    records = {name: p.to_dict("records") for name, p in parts.items()}
    r["note"] = ["; ".join(f"{name}: {_describe(records[name][c])}" for name in names) for c in range(len(r))]
    return r


def _describe(row: dict) -> str:
    """One part in a note: its value, interval, raw one-sided p-values and seeds."""
    if row["fixed"] == "not run":
        return f"not run ({row['note']})"
    bits = [row["text"] or "no value"]
    if np.isfinite(row["ci_low"]):
        bits.append(f"[{row['ci_low']:.3g}, {row['ci_high']:.3g}]")
    if np.isfinite(row["p_holds"]):
        bits.append(f"p {row['p_holds']:.2g} / against {row['p_against']:.2g}")
    extra = f", {row['note']}" if row["note"] and row["note"] != ONE_SEED else ""
    return f"{' '.join(bits)} ({int(row['seeds'])} seed{'' if row['seeds'] == 1 else 's'}{extra})"


def _add_note(r: pd.DataFrame, notes: pd.Series | str) -> pd.DataFrame:
    if isinstance(notes, str):
        notes = pd.Series(notes, index=r.index)
    notes = notes.astype(object).reindex(r.index)
    notes = notes.where(notes.notna(), "")
    r["note"] = ["; ".join(x for x in (a, b) if x) for a, b in zip(r["note"], notes)]
    return r


# --- the tables, reduced to one row per run and seed -----------------------------------------------


class Tables:
    """Every cell's runs as per-(run, seed) statistics (`stats`), each run's settings (`info`), the
    ensemble and landscape tables, the families and the settings."""

    def __init__(self, metrics, families, ensembles, pairs, landscape, settings, shift=None, ood=None):
        self.families, self.s = families, settings
        self.ensembles, self.pairs, self.landscape = ensembles, pairs, landscape
        self.shift, self.ood = shift, ood  # the ensembles under dataset shift, their OOD detection
        self.cells = pd.MultiIndex.from_frame(metrics[CELL].drop_duplicates().sort_values(CELL))
        runs = metrics[metrics["phase"] == "continue"].sort_values(RUN + ["seed", "epoch"])
        self.runs = runs
        columns = [c for c in TRAINING + ["checkpoint_every", "merge", "release_after", "control"] if c in runs]
        self.info = runs.groupby(RUN, sort=True)[columns].first()
        base = metrics[metrics["phase"] == "base"].sort_values("epoch")
        self.checkpoint_acc = base.groupby(UNIT)["val_acc"].last()
        self.stats = self._per_run(runs, settings)
        # the smallest step between a cell's distinct test accuracies: about 1 / (test images)
        acc = runs[CELL + ["test_acc"]].dropna().drop_duplicates().sort_values(CELL + ["test_acc"])
        step = acc.groupby(CELL)["test_acc"].diff()
        self.test_step = step[step > 0].groupby([acc.loc[step.index, k] for k in CELL]).min().reindex(self.cells)

    def _per_run(self, runs: pd.DataFrame, s: dict) -> pd.DataFrame:
        key = RUN + ["seed"]
        g = runs.groupby(key, sort=False)
        pos, n = g.cumcount().to_numpy(), g["epoch"].transform("size").to_numpy()
        out = pd.DataFrame({"diverged": g["diverged"].any()})
        last = runs[pos >= n - s["last_epochs"]].groupby(key)
        out["final_dist"], out["final_test"] = last["dist"].mean(), last["test_acc"].mean()
        end = runs[pos == n - 1].set_index(key)
        out["final_val"] = end["val_acc"]
        # the distance curve starts at 0 at the checkpoint: curve point i is the row at position i - 1
        mid = runs[pos == n // 2 - 1].set_index(key)["dist"].reindex(out.index).fillna(0.0)
        out["half_ratio"] = mid / end["dist"]
        span = np.maximum(1, np.round(s["last_fraction"] * n))
        start = runs[pos == n - 1 - span].set_index(key)["dist"].reindex(out.index).fillna(0.0)
        out["growth_ratio"] = (end["dist"] - start) / end["dist"]
        early = runs[pos < s["early_epochs"]].groupby(key)["val_acc"].min()
        checkpoint = self.checkpoint_acc.reindex(
            pd.MultiIndex.from_arrays([out.index.get_level_values(k) for k in UNIT])
        ).to_numpy()
        out["early_min"] = early
        out["early_drop"] = np.maximum(0.0, checkpoint - early.to_numpy())
        # the direction of travel (NaN in a run's first epoch, and in tables from before it was measured)
        direction = runs if "step_cos" in runs else runs.assign(step_cos=math.nan, radial_cos=math.nan)
        out["mean_step_cos"] = direction.groupby(key)["step_cos"].mean()
        out["early_radial"] = direction[pos < s["early_epochs"]].groupby(key)["radial_cos"].mean()
        # the weights' norm and the function's distance to the checkpoint at the end (NaN in tables
        # from before they were measured)
        for col, name in (("weight_norm", "final_norm"), ("func_disagree", "final_disagree"), ("func_kl", "final_kl")):
            out[name] = last[col].mean() if col in runs else math.nan
        gone = out["diverged"].to_numpy()
        out.loc[
            gone,
            [
                "final_dist",
                "final_test",
                "final_val",
                "half_ratio",
                "growth_ratio",
                "mean_step_cos",
                "early_radial",
                "final_norm",
                "final_disagree",
                "final_kl",
            ],
        ] = math.nan
        return out

    # families and their runs, per cell
    def family_runs(self, name: str) -> pd.DataFrame:
        """info of the family's runs that have rows, every cell."""
        runs = self.families.get(name, {}).get("runs", [])
        return self.info[self.info.index.get_level_values("run").isin(runs)]

    def points(self, name: str) -> pd.DataFrame:
        runs = self.family_runs(name)
        return runs[runs["strength"] > 0]

    def controls(self, name: str) -> pd.DataFrame:
        runs = self.family_runs(name)
        return runs[runs["strength"] == 0]

    def of(self, runs: pd.DataFrame, col: str) -> pd.Series:
        """stats[col] of these runs, indexed (dataset, model, run, seed)."""
        values = self.stats[col]
        keep = pd.MultiIndex.from_arrays([values.index.get_level_values(k) for k in RUN]).isin(runs.index)
        return values[keep]

    def against(self, runs: pd.DataFrame, col: str, other: pd.Series | None = None) -> pd.DataFrame:
        """Per (run, seed): d = stats[col] of the run − of `other` (run -> run, per cell; default
        its control), and c, the other's value."""
        other = runs["control"] if other is None else other
        mine = self.of(runs, col).rename("value").reset_index()
        mine = mine.join(other.rename("other"), on=RUN)
        theirs = self.stats[col].rename("c").reset_index().rename(columns={"run": "other"})
        both = mine.merge(theirs, on=CELL + ["other", "seed"], how="left").set_index(RUN + ["seed"])
        return pd.DataFrame({"d": both["value"] - both["c"], "c": both["c"]})

    def diverged_note(self, runs) -> pd.Series:
        keep = pd.MultiIndex.from_arrays([self.stats.index.get_level_values(k) for k in RUN]).isin(runs)
        n = self.stats.loc[keep, "diverged"].groupby(level=CELL).sum()
        return n[n > 0].map(lambda k: f"{int(k)} diverged run(s) left out: no final accuracy or distance")


def _by_param(values: pd.Series, info: pd.DataFrame, param: str, fmt: Callable) -> dict[str, pd.Series]:
    """Split per-(run, seed) values by a run setting: name -> values per (cell, seed), sorted."""
    frame = values.rename("v").reset_index().join(info[param], on=RUN)
    return {
        fmt(v): g.set_index(UNIT)["v"].groupby(level=UNIT).first()
        for v, g in sorted(frame.groupby(param), key=lambda kv: kv[0])
    }


def slopes(values: pd.Series, x: pd.Series) -> pd.Series:
    """Per cell and seed: the least-squares slope of the values (per run) against x (per run)."""
    df = values.rename("y").reset_index().join(x.rename("x"), on=RUN).dropna(subset=["x", "y"])
    g = df.groupby(UNIT)
    dx, dy = df["x"] - g["x"].transform("mean"), df["y"] - g["y"].transform("mean")
    keys = [df[k] for k in UNIT]
    sxx, sxy = (dx * dx).groupby(keys).sum(), (dx * dy).groupby(keys).sum()
    return (sxy / sxx).where(sxx > 0)


def _slope_text(per: str) -> Callable[[float], str]:
    return lambda v: "" if not np.isfinite(v) else f"slope {v:+.3g}/{per}"


# --- the claims, one function each ------------------------------------------------------------


def _paired_parts(t: Tables, runs: pd.DataFrame, col: str, sign: int, param: str, fmt: Callable) -> pd.DataFrame:
    d = t.against(runs, col)["d"]
    return combine(
        {name: t_test(v, 0.0, sign, t.s["confidence"], t.cells) for name, v in _by_param(d, runs, param, fmt).items()}
    )


def _s(v) -> str:
    return f"s={v:g}"


def baseline_farther(t: Tables) -> pd.DataFrame:
    points = t.points("baseline")
    return _add_note(_paired_parts(t, points, "final_dist", +1, "strength", _s), t.diverged_note(points.index))


def _margins(t: Tables, control_values: pd.Series) -> pd.Series:
    """Per cell: max(margin, relative_margin × the control's mean error rate)."""
    error = 1 - control_values.groupby(level=CELL).mean()
    return np.maximum(t.s["margin"], t.s["relative_margin"] * error).reindex(t.cells).fillna(t.s["margin"])


def _resolution(t: Tables) -> pd.Series:
    # a step below 1e-5 means accuracies that are not counts of images (synthetic tables): no note
    step = t.test_step[t.test_step >= 1e-5]
    return step.map(lambda v: f"test accuracies move in steps of {v:.2g} (about 1/{round(1 / v)})")


def _equivalent_parts(t: Tables, runs: pd.DataFrame, param: str, fmt: Callable) -> pd.DataFrame:
    both = t.against(runs, "final_test")
    parts = {}
    for name, d in _by_param(both["d"], runs, param, fmt).items():
        c = _by_param(both["c"], runs, param, fmt)[name]
        parts[name] = equivalence(d, _margins(t, c), t.s["confidence"], t.cells)
    return _add_note(_add_note(combine(parts), _resolution(t)), t.diverged_note(runs.index))


def baseline_accuracy(t: Tables) -> pd.DataFrame:
    return _equivalent_parts(t, t.points("baseline"), "strength", _s)


def baseline_shape(t: Tables) -> pd.DataFrame:
    return _paired_parts(t, t.points("baseline"), "half_ratio", +1, "strength", _s)


def baseline_walks(t: Tables) -> pd.DataFrame:
    controls = t.controls("baseline")
    parts = {
        f"control lr {lr:g}": t_test(v, t.s["plateau"], +1, t.s["confidence"], t.cells)
        for lr, v in _by_param(t.of(controls, "growth_ratio"), controls, "lr_init", lambda v: v).items()
    }
    return combine(parts) if parts else _blank(t.cells, "not run", "family 'baseline' has no control run")


def strength_drop(t: Tables) -> pd.DataFrame:
    points = t.points("strength")
    per_seed = slopes(t.of(points, "early_drop"), np.log10(points["strength"]))
    return t_test(per_seed, 0.0, +1, t.s["confidence"], t.cells, _slope_text("decade of s"))


def _largest(points: pd.DataFrame, col: str) -> pd.DataFrame:
    return points.loc[points.groupby(level=CELL)[col].idxmax()]


def direction_persists(t: Tables) -> pd.DataFrame:
    points = t.points("baseline")
    return _add_note(_paired_parts(t, points, "mean_step_cos", +1, "strength", _s), t.diverged_note(points.index))


def strength_outward(t: Tables) -> pd.DataFrame:
    largest = _largest(t.points("strength"), "strength")
    early = t.of(largest, "early_radial").droplevel("run")
    r = t_test(early, t.s["outward"], +1, t.s["confidence"], t.cells, _ratio_text("early radial_cos"))
    return _add_note(r, largest["strength"].droplevel("run").map(lambda s: f"s={s:g}"))


def strength_distance(t: Tables) -> pd.DataFrame:
    points = t.points("strength")
    grows = t_test(
        slopes(t.of(points, "final_dist"), np.log10(points["strength"])),
        0.0,
        +1,
        t.s["confidence"],
        t.cells,
        _slope_text("decade of s"),
    )
    largest = _largest(points, "strength")
    growth = t.of(largest, "growth_ratio").droplevel("run")
    plateau = t_test(growth, t.s["plateau"], -1, t.s["confidence"], t.cells)
    r = combine({"part 1": grows, "part 2, growth ratio at the largest s": plateau})
    return _add_note(r, t.diverged_note(points.index))


def strength_recovery(t: Tables) -> pd.DataFrame:
    largest = _largest(t.points("strength"), "strength")
    d = t.against(largest, "final_test")["d"].droplevel("run")
    r = t_test(d, 0.0, -1, t.s["confidence"], t.cells)
    st = t.stats.loc[t.stats.index.droplevel("seed").isin(largest.index)]
    by_cell = st.groupby(level=CELL)
    n, gone = by_cell.size(), by_cell["diverged"].sum()
    recovered = (st["final_val"] > st["early_min"]).groupby(level=CELL).sum()
    s = largest["strength"].droplevel("run")
    notes = (
        "s="
        + s.map("{:g}".format)
        + "; recovered above its early minimum in "
        + recovered.astype(int).astype(str)
        + "/"
        + n.astype(str)
        + " seeds"
    )
    diverged = (
        "; diverged in " + gone.astype(int).astype(str) + "/" + n.astype(str) + " seeds (left out, not counted as 0)"
    ).where(gone > 0, "")
    return _add_note(r, notes.reindex(n.index) + diverged)


def _wideness(t: Tables, points: pd.DataFrame) -> tuple[pd.Series, str, str]:
    """How wide each run's kernel is, its symbol and column: σ, or 1/γ where the family sweeps gamma."""
    if "gamma" in t.families["width"].get("varying", []):
        return 1 / points["gamma"], "γ", "gamma"
    return points["width"], "σ", "width"


def width_distance(t: Tables) -> pd.DataFrame:
    points = t.points("width")
    wide, _, _ = _wideness(t, points)
    per_seed = slopes(t.of(points, "final_dist"), np.log10(wide))
    r = t_test(per_seed, 0.0, +1, t.s["confidence"], t.cells, _slope_text("decade of wideness"))
    return _add_note(r, t.diverged_note(points.index))


def crossing_epochs(gap: pd.DataFrame) -> pd.Series:
    """Per (cell, seed): the epoch from which gap = wide − narrow stays ≥ 0 to the end, given it was
    < 0 before; NaN where it ends < 0 (not crossed yet: censored) or never was < 0."""
    neg = gap[gap["gap"] < 0]
    last_neg = neg.groupby(UNIT)["epoch"].max()
    end = gap.groupby(UNIT)["gap"].last()
    later = gap.join(last_neg.rename("last_neg"), on=UNIT)
    first_after = later[later["epoch"] > later["last_neg"]].groupby(UNIT)["epoch"].min()
    return first_after.where(end.reindex(first_after.index) >= 0)


def width_crossing(t: Tables) -> pd.DataFrame:
    points = t.points("width")
    wide, symbol, col = _wideness(t, points)
    order = wide.groupby(level="run").first().sort_values()
    if len(order) < 2:
        return _blank(t.cells, "inconclusive", "fewer than two widths: nothing to cross")
    s, conf = t.s, t.s["confidence"]
    curves = t.runs[t.runs["run"].isin(order.index)].set_index(RUN + ["seed", "epoch"])["dist"]
    parts, texts = {}, []
    for narrow, wider in zip(order.index[:-1], order.index[1:]):
        value = {r: points.xs(r, level="run")[col].iloc[0] for r in (narrow, wider)}
        name = f"{symbol} {value[narrow]:g}→{value[wider]:g}"
        gap = (curves.xs(wider, level="run") - curves.xs(narrow, level="run")).rename("gap").dropna().reset_index()
        gap = gap.sort_values(UNIT + ["epoch"])
        g = gap.groupby(UNIT)
        pos, n = g.cumcount(), g["epoch"].transform("size")
        early = gap[pos == 0].set_index(UNIT)["gap"]  # the first epoch: a crossing can come at the second
        late = gap[pos >= n - s["last_epochs"]].groupby(UNIT)["gap"].mean()
        span = np.maximum(1, np.round(s["last_fraction"] * n))
        widening = g["gap"].last() - gap[pos == n - 1 - span].groupby(UNIT)["gap"].first()
        led, ahead = t_test(early, 0.0, -1, conf, t.cells), t_test(late, 0.0, +1, conf, t.cells)
        pulls_away = t_test(widening, 0.0, -1, conf, t.cells)
        part = ahead.copy()
        # holds: the narrower led early and the wider is ahead at the end; against: the wider is still
        # behind at the end and the gap is widening (not a crossing that has not happened yet)
        part["p_holds"] = np.fmax(led["p_holds"], ahead["p_holds"])
        part["p_against"] = np.fmax(ahead["p_against"], pulls_away["p_holds"])
        crossed = crossing_epochs(gap).groupby(level=CELL).agg(["mean", "count"]).reindex(t.cells)
        total = g.size().groupby(level=CELL).size().reindex(t.cells).fillna(0).astype(int)
        epochs_run = g["epoch"].max().groupby(level=CELL).max().reindex(t.cells)
        k = crossed["count"].fillna(0).astype(int)
        when = (
            "epoch "
            + crossed["mean"].round(1).map("{:g}".format)
            + " ("
            + k.astype(str)
            + "/"
            + total.astype(str)
            + " seeds)"
        )
        never = "not crossed by epoch " + epochs_run.fillna(0).astype(int).astype(str)
        part["text"] = when.where(k > 0, never.where(total > 0, "")).to_numpy()
        texts.append([f"{name}: {w}" if w else "" for w in part["text"]])
        parts[name] = part
    r = combine(parts)
    r["text"] = ["; ".join(x for x in row if x) for row in zip(*texts)]
    r = _add_note(r, "the order of the crossing epochs is shown, not tested (a crossing not yet seen is censored)")
    return _add_note(r, t.diverged_note(points.index))


def width_accuracy(t: Tables) -> pd.DataFrame:
    points = t.points("width")
    _, symbol, col = _wideness(t, points)
    return _equivalent_parts(t, points, col, lambda v: f"{symbol} {v:g}")


def lr_penalty(t: Tables) -> pd.DataFrame:
    points = t.points("lr")
    r = _paired_parts(t, points, "final_dist", +1, "lr_init", lambda v: f"lr {v:g}")
    return _add_note(r, t.diverged_note(t.family_runs("lr").index))


def _reference(t: Tables, controls: pd.DataFrame) -> pd.Series:
    """Per cell: the run id of the control at the reference lr, the baseline's lr where the lr
    family has it, else its middle lr; only cells whose highest lr is above it."""
    lrs = controls["lr_init"].reset_index().drop_duplicates(CELL + ["lr_init"]).sort_values(CELL + ["lr_init"])
    g = lrs.groupby(CELL)
    rank, n = g.cumcount(), g["lr_init"].transform("size")
    middle = lrs[rank == (n - 1) // 2].set_index(CELL)["lr_init"]
    base = t.controls("baseline")["lr_init"].groupby(level=CELL).first()
    has_base = lrs.merge(base.rename("b").reset_index(), on=CELL)
    has_base = has_base[has_base["lr_init"] == has_base["b"]].set_index(CELL)["lr_init"]
    ref = middle.copy()
    ref.loc[has_base.index] = has_base
    top = g["lr_init"].max()
    ref = ref[(n.groupby([lrs[k] for k in CELL]).first() >= 2) & (top > ref)]
    chosen = lrs.merge(ref.rename("ref").reset_index(), on=CELL)
    chosen = chosen[chosen["lr_init"] == chosen["ref"]].drop_duplicates(CELL)
    return chosen.set_index(CELL)["run"]


def lr_extremes(t: Tables) -> pd.DataFrame:
    controls = t.controls("lr")
    ref = _reference(t, controls)
    r = _blank(t.cells, "inconclusive", "the lr family needs controls at two learning rates or more")
    if ref.empty:
        return r
    top = controls["lr_init"].groupby(level=CELL).transform("max")
    high = controls[(controls["lr_init"] == top) & controls.index.droplevel("run").isin(ref.index)]
    other = pd.Series(ref.reindex(high.index.droplevel("run")).to_numpy(), index=high.index)
    d = t.against(high, "final_test", other)["d"].droplevel("run")
    test = t_test(d, 0.0, -1, t.s["confidence"], t.cells)
    done = t.cells.isin(ref.index)
    r.loc[done] = test.loc[done]
    st = t.stats.loc[t.stats.index.droplevel("seed").isin(high.index), "diverged"].groupby(level=CELL)
    gone, total = st.sum(), st.size()
    everywhere = t.cells.isin(gone[(gone == total) & (total > 0)].index)
    r.loc[everywhere, ["fixed", "p_holds", "p_against", "text"]] = ["holds", math.nan, math.nan, "diverged"]
    ref_lr = t.info.loc[pd.MultiIndex.from_arrays([*zip(*ref.index), ref.to_numpy()], names=RUN), "lr_init"]
    names = (
        "lr "
        + high["lr_init"].droplevel("run").map("{:g}".format)
        + " − lr "
        + ref_lr.droplevel("run").map("{:g}".format).reindex(high.index.droplevel("run"))
    )
    diverged = (
        "; diverged in "
        + gone.astype(int).astype(str)
        + "/"
        + total.astype(str)
        + " seeds (unstable; left out of the mean)"
    ).where(gone > 0, "")
    r = _add_note(r, names + diverged.reindex(names.index).fillna(""))
    return _add_note(
        r,
        "part 1 (a too-low lr converges more slowly) is not testable from a converged checkpoint: "
        "lowering the lr lowers the training loss at once (annealing)",
    )


def single_hill(t: Tables, runs: pd.DataFrame) -> pd.Series:
    """run -> the run of the same cell trained the same way (every TRAINING column equal, NaN equal
    to NaN as pandas merges) with one hill (checkpoint_every 0 or none) and no merge."""
    match = [c for c in TRAINING if c in t.info]
    single = t.info[t.info["checkpoint_every"].fillna(0) == 0]
    if "merge" in single:
        single = single[~single["merge"].fillna(False).astype(bool)]
    mine = runs[match].reset_index().rename(columns={"run": "me"})
    found = mine.merge(single[match].reset_index(), on=CELL + match, how="inner").drop_duplicates(CELL + ["me"])
    return found.set_index(CELL + ["me"])["run"].rename_axis(RUN)


def multiple_farther(t: Tables) -> pd.DataFrame:
    conf = t.s["confidence"]
    multiple = t.points("multiple")
    every = multiple[multiple["checkpoint_every"].fillna(0) > 0]
    if every.empty:
        return _blank(t.cells, "not run", "family 'multiple' has no run with a new hill every K epochs")
    parts = {}
    d = t.against(every, "final_dist", single_hill(t, every))["d"]
    for name, v in _by_param(d, every, "checkpoint_every", lambda v: f"every {v:g} − single").items():
        parts[name] = t_test(v, 0.0, +1, conf, t.cells)
    merge = t.points("merge")
    merged = merge[merge["merge"].fillna(False).astype(bool)]
    unmerged = merge[~merge["merge"].fillna(False).astype(bool) & (merge["checkpoint_every"].fillna(0) > 0)]
    if len(merged) and len(unmerged):
        d = t.against(merged, "final_dist", single_hill(t, merged))["d"].droplevel("run")
        parts["merged − single"] = t_test(d, 0.0, +1, conf, t.cells)
        # the unmerged run of each cell against that cell's merged run
        other = merged.reset_index("run")["run"].groupby(level=CELL).first()
        pairs = pd.Series(other.reindex(unmerged.droplevel("run").index).to_numpy(), index=unmerged.index)
        d = t.against(unmerged, "final_dist", pairs)["d"].droplevel("run")
        parts["unmerged − merged"] = t_test(d.groupby(level=UNIT).first(), 0.0, +1, conf, t.cells)
    else:
        parts["merged between"] = _blank(t.cells, "not run", "family 'merge' has no merged and unmerged pair")
    r = combine(parts)
    return _add_note(r, t.diverged_note(multiple.index.union(merge.index)))


def kernel_farther(t: Tables) -> pd.DataFrame:
    points = t.points("kernel")
    r = _paired_parts(t, points, "final_dist", +1, "kernel", str)
    return _add_note(r, t.diverged_note(points.index))


def _scheduled(t: Tables) -> pd.DataFrame:
    points = t.points("schedule")
    return points[points["schedule"] != "constant"]


def schedule_escape(t: Tables) -> pd.DataFrame:
    points = _scheduled(t)
    r = _paired_parts(t, points, "final_test", +1, "schedule", str)
    return _add_note(r, t.diverged_note(t.family_runs("schedule").index))


def schedule_shrink(t: Tables) -> pd.DataFrame:
    points = _scheduled(t)
    parts = {
        name: t_test(v, 0.0, -1, t.s["confidence"], t.cells)
        for name, v in _by_param(t.of(points, "growth_ratio"), points, "schedule", str).items()
    }
    return combine(parts) if parts else _blank(t.cells, "not run", "family 'schedule' has only the constant lr")


def epochs_budget(t: Tables) -> pd.DataFrame:
    points = t.points("epochs")
    d = t.against(points, "final_test")["d"]
    per_seed = slopes(d, np.log2(points["epochs"]))
    return t_test(per_seed, 0.0, +1, t.s["confidence"], t.cells, _slope_text("doubling of the epochs"))


def _at_release(t: Tables, points: pd.DataFrame, read: pd.Series) -> pd.Series:
    """Per released point and seed: the distance of run `read[point]` (same cell and seed) after
    the point's release_after epochs, the epoch its penalty was switched off."""
    runs = t.runs.assign(k=t.runs.groupby(RUN + ["seed"], sort=False).cumcount())
    want = pd.DataFrame({"read": read, "k": (points["release_after"] - 1).astype(int)}).reset_index()
    have = runs[CELL + ["run", "seed", "k", "dist"]].rename(columns={"run": "read"})
    return want.merge(have, on=CELL + ["read", "k"]).set_index(RUN + ["seed"])["dist"]


def release_stays(t: Tables) -> pd.DataFrame:
    points = t.points("release")
    if "release_after" in points:
        points = points[points["release_after"].notna()]
    if points.empty:
        return _blank(t.cells, "not run", "family 'release' has no run with release_after")
    ratio = t.of(points, "final_dist") / _at_release(t, points, points.index.to_frame()["run"])
    # the control over the same epochs: its final distance / its distance at the point's release
    control = t.against(points, "final_dist")["c"] / _at_release(t, points, points["control"])
    named = points.assign(
        part=[f"s={s:g}, released after {k:g} ep" for s, k in points[["strength", "release_after"]].to_numpy()]
    )
    fmt = _ratio_text("final / at release")
    bound, conf = 1 - t.s["return_margin"], t.s["confidence"]
    parts = {name: t_test(v, bound, +1, conf, t.cells, fmt) for name, v in _by_param(ratio, named, "part", str).items()}
    shown = {
        name: v.groupby(level=CELL).mean().map(lambda m, name=name: f"{name}: its control's ratio {m:.3g}")
        for name, v in _by_param(control, named, "part", str).items()
    }
    notes = pd.concat(shown.values()).groupby(level=CELL).agg("; ".join) if shown else ""
    return _add_note(_add_note(combine(parts), notes), t.diverged_note(points.index))


def from_init_norm(t: Tables) -> pd.DataFrame:
    points = t.points("from_init")
    return _add_note(_paired_parts(t, points, "final_norm", +1, "strength", _s), t.diverged_note(points.index))


def from_init_accuracy(t: Tables) -> pd.DataFrame:
    points = t.points("from_init")
    return _add_note(_paired_parts(t, points, "final_test", +1, "strength", _s), t.diverged_note(points.index))


def _log_ratio(t: Tables, runs: pd.DataFrame, col: str) -> pd.Series:
    """Per (run, seed): log(stats[col] of the run / of its control); NaN where either is not > 0."""
    both = t.against(runs, col)
    mine, theirs = both["d"] + both["c"], both["c"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(mine / theirs).where((mine > 0) & (theirs > 0))


def function_vs_weights(t: Tables) -> pd.DataFrame:
    """log((disagree_run / disagree_control) / (dist_run / dist_control)) per seed, < 0: a run N times
    farther from θ_c in weights than its control is less than N times farther in function."""
    points = t.points("baseline")
    log_rr = _log_ratio(t, points, "final_disagree") - _log_ratio(t, points, "final_dist")
    # the interval is on the log scale, as the test: the text says both
    fmt = lambda v: "" if not np.isfinite(v) else f"log {v:+.3g} (ratio of ratios {math.exp(v):.3g})"  # noqa: E731
    parts = {
        name: t_test(v, 0.0, -1, t.s["confidence"], t.cells, fmt)
        for name, v in _by_param(log_rr.dropna(), points, "strength", _s).items()
    }
    if not parts:
        return _blank(t.cells, "not run", "family 'baseline' has no run with func_disagree > 0 and its control's")
    kl = (_log_ratio(t, points, "final_kl") - _log_ratio(t, points, "final_dist")).groupby(level=CELL).mean()
    notes = kl.map(lambda v: f"with func_kl instead: ratio of ratios {math.exp(v):.3g}" if np.isfinite(v) else "")
    return _add_note(_add_note(combine(parts), notes), t.diverged_note(points.index))


def _ratio_text(what: str) -> Callable[[float], str]:
    return lambda v: "" if not np.isfinite(v) else f"{what} {v:.3g}"


def landscape_left(t: Tables) -> pd.DataFrame:
    points = t.points("baseline")
    barrier = t.landscape.groupby(RUN + ["seed"])["barrier"].first()
    mine = barrier[barrier.index.droplevel("seed").isin(points.index)].rename("b").reset_index()
    mine = mine.join(points["control"], on=RUN)
    ctrl = barrier.rename("c").reset_index().rename(columns={"run": "control"})
    both = mine.merge(ctrl, on=CELL + ["control", "seed"], how="left")
    d = (both["b"] - both["c"]).set_axis(pd.MultiIndex.from_frame(both[UNIT]))
    return t_test(d.groupby(level=UNIT).first(), 0.0, +1, t.s["confidence"], t.cells)


# ensembles: a method's ensembles are its units (a snapshot method: one per seed)


def _units(table: pd.DataFrame, value: str) -> pd.Series:
    return table.set_index(CELL + ["method", "ensemble"])[value]


def _per_method(t: Tables, values: pd.Series, test: Callable[[pd.Series], pd.DataFrame]) -> pd.DataFrame:
    """A part per method that has ≥ 2 ensembles somewhere; a method with one ensemble is named in the note."""
    counts = values.groupby(level=CELL + ["method"]).size()
    tested = sorted(counts[counts >= 2].index.get_level_values("method").unique())
    parts = {m: test(values.xs(m, level="method")) for m in tested}
    one = counts[counts < 2].reset_index().groupby(CELL)["method"].agg(", ".join)
    note = one.map(lambda ms: f"not tested, 1 ensemble: {ms}")
    if not parts:
        return _add_note(_blank(t.cells, "inconclusive", "no method has 2 ensembles"), note)
    return _add_note(combine(parts), note)


def _largest_m(t: Tables) -> pd.DataFrame:
    e = t.ensembles
    return e[e["m"] == e.groupby(CELL + ["method", "ensemble"])["m"].transform("max")]


def ensemble_gain(t: Tables) -> pd.DataFrame:
    return _per_method(t, _units(_largest_m(t), "gain_best"), lambda v: t_test(v, 0.0, +1, t.s["confidence"], t.cells))


def _method_difference(values: pd.Series, method: str, other: str) -> pd.Series | None:
    """Per seed: a snapshot method's ensemble value − the other method's of the same seed
    (ensemble `seed<k>` of both), or None where the cells lack either method."""
    if not {method, other} <= set(values.index.get_level_values("method")):
        return None
    return (values.xs(method, level="method") - values.xs(other, level="method")).dropna()


def _mean_disagreement(t: Tables) -> pd.Series:
    return t.pairs.groupby(CELL + ["method", "ensemble"])["disagreement"].mean()


def distance_methods(values: pd.Series) -> dict[str, str]:
    """part name -> method, for the `distance` snapshots among the values' methods: `distance` itself
    with one strength, or `distance_s<s>` at each strength (parts "s=<s>", smallest first), as
    grid.strength_method names them; the plain name where there are none (its parts say "not run")."""
    from .grid import method_strength

    found = {}
    for method in values.index.get_level_values("method").unique():
        kind = method_strength(method)
        if kind is not None and kind[0] == "distance":
            found[method] = kind[1]
    if "distance" in found:  # one strength: the plain name
        return {"distance": "distance"}
    return {_s(v): m for m, v in sorted(found.items(), key=lambda kv: kv[1])} or {"distance": "distance"}


def _versus(
    t: Tables,
    values: pd.Series,
    other: str,
    test: Callable[[pd.Series], pd.DataFrame],
    difference: Callable | None = None,
) -> pd.DataFrame:
    """A part per strength: test(per-seed distance − other), or not run where either is missing.
    `difference`: how a method's values and the other's are compared (_method_difference)."""
    difference = difference or _method_difference
    parts = {}
    for name, method in distance_methods(values).items():
        d = difference(values, method, other)
        parts[name] = (
            _blank(t.cells, "not run", f"needs both the '{method}' and the '{other}' ensembles")
            if d is None
            else test(d)
        )
    return combine(parts)


def ensemble_diversity(t: Tables) -> pd.DataFrame:
    r = _versus(
        t, _mean_disagreement(t), "sgdr", lambda d: t_test(d, t.s["diversity_margin"], -1, t.s["confidence"], t.cells)
    )
    return _add_note(
        r,
        "confounded: distance members are taken at the constant peak lr, SGDR members at the "
        "annealed end of a cycle (ensemble.penalty_diversity compares with the matching control)",
    )


def ensemble_penalty_diversity(t: Tables) -> pd.DataFrame:
    return _versus(t, _mean_disagreement(t), "snapshots", lambda d: t_test(d, 0.0, +1, t.s["confidence"], t.cells))


def ensemble_penalty_accuracy(t: Tables) -> pd.DataFrame:
    accuracy = _units(_largest_m(t), "accuracy")
    return _versus(t, accuracy, "snapshots", lambda d: t_test(d, 0.0, +1, t.s["confidence"], t.cells))


def ensemble_strength(t: Tables) -> pd.DataFrame:
    """Parts: per seed, the least-squares slopes of the distance snapshots' mean disagreement and of
    their accuracy at the largest m against log10 s, over the strengths of `ensembles.strength`."""
    disagreement = _mean_disagreement(t)
    methods = distance_methods(disagreement)
    if len(methods) < 2:
        return _blank(t.cells, "not run", "ensembles.strength has fewer than two strengths: no trend to test")
    from .grid import method_strength

    def per_seed(values: pd.Series) -> pd.Series:  # (cell, method, ensemble) -> slope per (cell, seed)
        v = values[values.index.get_level_values("method").isin(list(methods.values()))]
        v = v.rename_axis(CELL + ["run", "seed"])  # a method plays a run, its ensemble (seed<k>) a seed
        x = v.index.droplevel("seed").to_frame(index=False).drop_duplicates()
        log_s = np.log10([method_strength(m)[1] for m in x["run"]])
        return slopes(v, pd.Series(log_s, index=pd.MultiIndex.from_frame(x)))

    fmt, conf = _slope_text("decade of s"), t.s["confidence"]
    accuracy = _units(_largest_m(t), "accuracy")
    return combine(
        {
            "diversity": t_test(per_seed(disagreement), 0.0, +1, conf, t.cells, fmt),
            "accuracy": t_test(per_seed(accuracy), 0.0, +1, conf, t.cells, fmt),
        }
    )


# distance modulo permutation symmetry (ensemble_pairs' aligned_distance, repel.align)


def symmetry_share(pairs: pd.DataFrame) -> pd.Series:
    """Per ensemble: the mean over its member pairs of 1 − aligned_distance / weight_distance, the
    share of the distance that weight matching removes. Pairs of one ensemble share members and
    are not independent: the ensemble is the unit. Pairs without an aligned distance (a model
    without a permutation spec) or at distance 0 are left out."""
    p = pairs.dropna(subset=["aligned_distance", "weight_distance"])
    p = p[p["weight_distance"] > 0]
    share = 1 - p["aligned_distance"] / p["weight_distance"]
    return share.groupby([p[k] for k in CELL + ["method", "ensemble"]]).mean()


def _symmetry(t: Tables, method: str, sign: int, unit: str) -> pd.DataFrame:
    """t-test of the method's ensembles' symmetry share against symmetry_share (sign +1: above)."""
    if "aligned_distance" not in t.pairs:
        return _blank(t.cells, "not run", "the pairs table has no aligned_distance (made before repel.align)")
    share = symmetry_share(t.pairs)
    aligned = t.pairs.groupby(CELL)["aligned_distance"].count().reindex(t.cells).fillna(0).to_numpy()
    why = pd.Series(np.where(aligned == 0, "not aligned: no permutation spec for this model", ""), index=t.cells)
    if method not in set(share.index.get_level_values("method")):
        return _add_note(_blank(t.cells, "not run", f"needs the '{method}' ensembles' aligned distances"), why)
    r = t_test(share.xs(method, level="method"), t.s["symmetry_share"], sign, t.s["confidence"], t.cells)
    return _add_note(_add_note(r, f"units: {unit}"), why)


def symmetry_independent(t: Tables) -> pd.DataFrame:
    r = _symmetry(t, "independent", +1, "the groups of independent seeds, one ensemble each")
    one = r["seeds"] == 1
    r.loc[one, "note"] = (
        "1 seed group of independent seeds: its pairs share members, so it is one unit and is not replicated; "
        "ensembles.seeds with 3 × members seeds or more makes 3 groups"
    )
    return r


def symmetry_continuation(t: Tables) -> pd.DataFrame:
    """A part per strength of the distance snapshots (distance_methods), each tested over the seeds."""
    methods = distance_methods(symmetry_share(t.pairs)) if "aligned_distance" in t.pairs else {"distance": "distance"}
    unit = "seeds, the distance snapshots' ensemble of each"
    return combine({name: _symmetry(t, m, -1, unit) for name, m in methods.items()})


# under dataset shift and out of distribution (tables shift.parquet and ood.parquet); units: seeds

ROBUSTNESS_TABLES = {"shift": "aggregate/shift.parquet", "ood": "aggregate/ood.parquet"}
SHIFT_OTHERS = ("sgdr", "snapshots")  # distance is compared with SGDR and with its matching control


def shift_change(shift: pd.DataFrame, metric: str) -> pd.Series:
    """Per ensemble: the metric at each corruption's highest severity − its clean value (severity
    0), averaged over the corruptions. Index: CELL + method, ensemble."""
    keys = CELL + ["method", "ensemble", "corruption"]
    top = shift[shift["severity"] == shift.groupby(CELL + ["corruption"])["severity"].transform("max")]
    shifted = top.groupby(keys)[metric].first()
    clean = shift[shift["severity"] == 0].groupby(keys)[metric].first().reindex(shifted.index)
    return (shifted - clean).groupby(level=CELL + ["method", "ensemble"]).mean()


def _shift_noninferior(t: Tables, metric: str, sign: int, margin: float) -> pd.DataFrame:
    """Parts: distance's change under shift (at each strength) against each other snapshot method's
    of the same seed, non-inferior within `margin` (sign −1: a drop, accuracy; +1: a rise, NLL)."""
    change = sign * shift_change(t.shift, metric)  # larger: worse
    methods = distance_methods(change)
    parts = {}
    for name, method in methods.items():
        for other in SHIFT_OTHERS:
            d = _method_difference(change, method, other)
            parts[f"vs {other}" if len(methods) == 1 else f"{name} vs {other}"] = (
                _blank(t.cells, "not run", f"needs both the '{method}' and the '{other}' ensembles")
                if d is None
                else t_test(d, margin, -1, t.s["confidence"], t.cells)
            )
    return combine(parts)


def shift_accuracy(t: Tables) -> pd.DataFrame:
    return _shift_noninferior(t, "accuracy", -1, t.s["shift_margin"])


def shift_nll(t: Tables) -> pd.DataFrame:
    return _shift_noninferior(t, "nll", +1, t.s["shift_nll_margin"])


def shift_independent(t: Tables) -> pd.DataFrame:
    """Exploratory: distance's accuracy drop − the independent seeds', a part per strength."""

    def versus(values: pd.Series, method: str, other: str) -> pd.Series | None:
        if not {method, other} <= set(values.index.get_level_values("method")):
            return None
        mine = values.xs(method, level="method")
        theirs = values.xs(other, level="method").groupby(level=CELL).mean()  # one ensemble: every seed's
        return (mine - theirs.reindex(mine.index.droplevel("ensemble")).to_numpy()).dropna()

    change = -shift_change(t.shift, "accuracy")
    return _versus(t, change, "independent", lambda d: t_test(d, 0.0, -1, t.s["confidence"], t.cells), versus)


def ood_mi(t: Tables) -> pd.DataFrame:
    """Per seed: AUROC of mutual information (distance − the matching control), mean over the OOD
    sets; a part per strength."""
    mi = t.ood[t.ood["score"] == "mi"].groupby(CELL + ["method", "ensemble"])["auroc"].mean()
    return _versus(t, mi, "snapshots", lambda d: t_test(d, 0.0, +1, t.s["confidence"], t.cells))


MIN_PAIRS = 6  # 4 members: with 3 pairs a rank correlation is little more than a sign (±0.5 or ±1)


def within_ensemble_rho(pairs: pd.DataFrame) -> pd.Series:
    """Spearman's ρ(weight distance, disagreement) over each ensemble's own member pairs (at least
    MIN_PAIRS, not constant): the Pearson correlation of their average ranks."""
    keys = CELL + ["method", "ensemble"]
    p = pairs.dropna(subset=["weight_distance", "disagreement"])
    gid = p.groupby(keys, sort=True).ngroup().to_numpy()
    index = p.groupby(keys, sort=True).size().index
    frame = pd.DataFrame({"g": gid, "x": p["weight_distance"].to_numpy(), "y": p["disagreement"].to_numpy()})
    g = frame.groupby("g")
    x, y = g["x"].rank(), g["y"].rank()
    x, y = x - x.groupby(frame["g"]).transform("mean"), y - y.groupby(frame["g"]).transform("mean")
    sums = pd.DataFrame({"xy": x * y, "xx": x * x, "yy": y * y, "g": frame["g"]}).groupby("g").sum()
    rho = pd.Series((sums["xy"] / np.sqrt(sums["xx"] * sums["yy"])).to_numpy(), index=index)
    ok = (g.size().to_numpy() >= MIN_PAIRS) & (sums["xx"].to_numpy() > 0) & (sums["yy"].to_numpy() > 0)
    return rho[ok]


def ensemble_weights_vs_predictions(t: Tables) -> pd.DataFrame:
    rho = within_ensemble_rho(t.pairs)
    r = _per_method(t, rho, lambda v: equivalence(v, t.s["weak_rho"], t.s["confidence"], t.cells))
    few = t.pairs.groupby(CELL + ["method", "ensemble"]).size().groupby(level=CELL + ["method"]).min()
    few = few[few < MIN_PAIRS].reset_index().groupby(CELL)["method"].agg(", ".join)
    return _add_note(r, few.map(lambda ms: f"not tested, fewer than {MIN_PAIRS} member pairs per ensemble: {ms}"))


# --- the table of claims ----------------------------------------------------------------------

SIDES = (
    "holds if the mean {what} is {side} with one-sided p < (1 − {confidence:g})/2 after the adjustment; "
    "does not hold if it is {other} the same way; otherwise, and with < 2 seeds, inconclusive"
)


def _rule(what: str, side: str, other: str) -> str:
    return SIDES.replace("{what}", what).replace("{side}", side).replace("{other}", other)


PAIRED_UP = _rule("per-seed difference", "> 0", "< 0")
PAIRED_DOWN = _rule("per-seed difference", "< 0", "> 0")
GROWS = _rule("per-seed slope", "> 0", "< 0")
SAME = (
    "holds if both one-sided tests put the mean per-seed difference inside ±margin (p < (1 − {confidence:g})/2 "
    "each, after the adjustment), margin = max({margin:g}, {relative_margin:g} × the control's error rate); "
    "does not hold if it is outside; otherwise, and with < 2 seeds, inconclusive"
)
PARTS = "Parts: holds if every part holds, does not hold if any part does not. "
EXPLORATORY = (
    "exploratory: the source states no result; the mean and its t-interval (confidence {confidence:g}) are "
    "shown, no verdict is drawn and the test is not in the adjusted family"
)


@dataclass(frozen=True)
class Claim:
    id: str
    family: str  # the family it needs; "ensembles": the ensemble tables; "landscape": its table
    text: str
    statistic: str
    rule: str  # formatted with the settings
    uses: tuple  # the settings keys it uses, shown as its thresholds
    figure: str
    test: Callable[[Tables], pd.DataFrame]
    exploratory: bool = False


def _family_figure(name: str) -> str:
    return f"plots/families/{name}.png"


FINAL = "final = the mean over the last last_epochs epochs"
CLAIMS = [
    Claim(
        "baseline.farther",
        "baseline",
        "With the penalty the run ends farther from the checkpoint than its control.",
        f"per seed: final dist (penalty) − final dist (its control); {FINAL}",
        PAIRED_UP,
        ("last_epochs", "confidence"),
        _family_figure("baseline"),
        baseline_farther,
    ),
    Claim(
        "baseline.accuracy",
        "baseline",
        "Final test accuracy with the penalty is about the same as the control's.",
        f"per seed: final test_acc (penalty) − final test_acc (its control); {FINAL}",
        SAME,
        ("margin", "relative_margin", "last_epochs", "confidence"),
        _family_figure("baseline"),
        baseline_accuracy,
    ),
    Claim(
        "baseline.shape",
        "baseline",
        "The penalized distance rises fast and then flattens (concave); the control's grows nearly linearly.",
        "per seed: half-ratio (penalty) − half-ratio (control); half-ratio = dist at the run's middle epoch / "
        "dist at its end (0.5 for a straight line from 0, more when concave)",
        PAIRED_UP,
        ("confidence",),
        _family_figure("baseline"),
        baseline_shape,
    ),
    Claim(
        "baseline.walks",
        "baseline",
        "Without the penalty SGD keeps moving: the control's distance has not plateaued over the last fifth.",
        "per seed: the control's dist growth over the last last_fraction of its epochs / its final dist",
        _rule("growth ratio", "> plateau", "< plateau"),
        ("last_fraction", "plateau", "confidence"),
        _family_figure("baseline"),
        baseline_walks,
    ),
    Claim(
        "strength.drop",
        "strength",
        "The early validation-accuracy drop after the checkpoint grows with s.",
        "per seed: the least-squares slope of drop against log10 s over the s > 0 runs; drop = checkpoint val_acc "
        "− min val_acc over the first early_epochs epochs (≥ 0)",
        GROWS,
        ("early_epochs", "confidence"),
        _family_figure("strength"),
        strength_drop,
    ),
    Claim(
        "strength.distance",
        "strength",
        "The final distance grows with s, and for the largest s it plateaus.",
        "part 1, per seed: the slope of final dist against log10 s; part 2, per seed at the largest s: dist growth "
        "over the last last_fraction / final dist",
        PARTS + "Part 1: " + GROWS + ". Part 2: " + _rule("growth ratio", "< plateau", "> plateau"),
        ("last_epochs", "last_fraction", "plateau", "confidence"),
        _family_figure("strength"),
        strength_distance,
    ),
    Claim(
        "strength.recovery",
        "strength",
        "After the drop the accuracy recovers, but for the largest s it stays below the control's.",
        "per seed: final test_acc (largest s) − final test_acc (its control); a diverged seed is left out",
        PAIRED_DOWN,
        ("last_epochs", "early_epochs", "confidence"),
        _family_figure("strength"),
        strength_recovery,
    ),
    Claim(
        "width.distance",
        "width",
        "A wider kernel ends farther from the checkpoint.",
        "per seed: the slope of final dist against log10 wideness over the s > 0 runs; wideness = σ, or 1/γ where "
        "the family sweeps gamma",
        GROWS,
        ("last_epochs", "confidence"),
        _family_figure("width"),
        width_distance,
    ),
    Claim(
        "width.crossing",
        "width",
        "Distance curves of neighbouring widths cross: the narrower leads early, the wider overtakes later, "
        "and the crossing comes later the wider the kernel.",
        "per neighbouring pair, per seed: gap = dist (wider) − dist (narrower) at the first epoch, its mean over "
        "the last last_epochs epochs, and its change over the last last_fraction; the crossing epoch (from which "
        "the gap stays ≥ 0) is shown",
        PARTS + "A pair holds if the first gap is < 0 and the late gap > 0 (each one-sided, p the larger); it does "
        "not hold only if the late gap is < 0 and still widening; a pair not crossed yet is inconclusive "
        "(censored, not disproved)",
        ("last_epochs", "last_fraction", "confidence"),
        _family_figure("width"),
        width_crossing,
    ),
    Claim(
        "width.accuracy",
        "width",
        "Final test accuracy is about the same at every width as without the penalty.",
        f"per width, per seed: final test_acc (that width) − final test_acc (its control); {FINAL}",
        PARTS + SAME,
        ("margin", "relative_margin", "last_epochs", "confidence"),
        _family_figure("width"),
        width_accuracy,
    ),
    Claim(
        "lr.penalty",
        "lr",
        "At every learning rate the penalty increases the distance over that lr's control.",
        "per lr, per seed: final dist (penalty) − final dist (control at the same lr)",
        PARTS + PAIRED_UP,
        ("last_epochs", "confidence"),
        _family_figure("lr"),
        lr_penalty,
    ),
    Claim(
        "lr.extremes",
        "lr",
        "Too high an lr ends lower or unstable (too low an lr converges more slowly: not testable from a checkpoint).",
        "controls (s = 0), per seed: final test_acc at the highest lr − at the reference lr (the baseline's, else "
        "the middle one); a diverged seed is left out and named; every seed diverged: holds (unstable)",
        PAIRED_DOWN,
        ("last_epochs", "confidence"),
        _family_figure("lr"),
        lr_extremes,
    ),
    Claim(
        "multiple.farther",
        "multiple",
        "A new hill every K epochs ends farther than a single hill; merged hills end between the two.",
        "per seed: final dist (a new hill every K) − final dist (the same training with one hill); with the merge "
        "family: merged − single, unmerged − merged",
        EXPLORATORY,
        ("last_epochs", "confidence"),
        _family_figure("multiple") + ", " + _family_figure("merge"),
        multiple_farther,
        exploratory=True,
    ),
    Claim(
        "kernel.farther",
        "kernel",
        "Every kernel pushes the run farther from the checkpoint than its control.",
        "per kernel, per seed: final dist (penalty) − final dist (its control)",
        PARTS + PAIRED_UP,
        ("last_epochs", "confidence"),
        _family_figure("kernel"),
        kernel_farther,
    ),
    Claim(
        "schedule.escape",
        "schedule",
        "With a learning-rate schedule the penalty helps escape an area of low accuracy: it ends above its control.",
        "per schedule other than constant, per seed: final test_acc (penalty) − final test_acc (its control)",
        PARTS + PAIRED_UP,
        ("last_epochs", "confidence"),
        _family_figure("schedule"),
        schedule_escape,
    ),
    Claim(
        "schedule.shrink",
        "schedule",
        "Lowering the learning rate lets the distance shrink again.",
        "per schedule other than constant, per seed of the s > 0 run: dist growth over the last last_fraction / "
        "final dist",
        PARTS + _rule("growth ratio", "< 0", "> 0"),
        ("last_fraction", "confidence"),
        _family_figure("schedule"),
        schedule_shrink,
    ),
    Claim(
        "epochs.budget",
        "epochs",
        "How the penalty's effect on test accuracy changes with the budget.",
        "per seed: the slope of final test_acc (penalty) − (its control) against log2 epochs",
        EXPLORATORY,
        ("last_epochs", "confidence"),
        _family_figure("epochs"),
        epochs_budget,
        exploratory=True,
    ),
    Claim(
        "landscape.left",
        "landscape",
        "The penalized run has left the checkpoint's area of low loss: a higher loss barrier than its control's.",
        "per seed: loss barrier on the line checkpoint → run (penalty) − the same for its control",
        PAIRED_UP,
        ("confidence",),
        "plots/landscape.png",
        landscape_left,
    ),
    Claim(
        "ensemble.gain",
        "ensembles",
        "Every method's ensemble beats its best member.",
        "per ensemble: gain_best (accuracy − best member's) at the largest m; a part per method with ≥ 2 ensembles",
        PARTS + _rule("gain_best over a method's ensembles", "> 0", "< 0"),
        ("confidence",),
        "plots/ensemble_accuracy.png",
        ensemble_gain,
    ),
    Claim(
        "ensemble.diversity",
        "ensembles",
        "Distance snapshots are not more diverse than SGDR snapshots.",
        "per seed: mean pairwise disagreement (distance snapshots) − (SGDR snapshots), non-inferiority",
        _rule("difference", "< diversity_margin", "> diversity_margin"),
        ("diversity_margin", "confidence"),
        "plots/ensemble_disagreement.png",
        ensemble_diversity,
    ),
    Claim(
        "direction.persists",
        "baseline",
        "With the penalty the run keeps its direction more than its control ('the direction should stay').",
        "per seed: mean step_cos (penalty) − mean step_cos (its control) over the continuation; step_cos = cos of "
        "an epoch's step with the previous epoch's step",
        PAIRED_UP,
        ("confidence",),
        _family_figure("baseline"),
        direction_persists,
    ),
    Claim(
        "strength.outward",
        "strength",
        "At the largest s the kernel pushes straight out: early steps point away from the checkpoint.",
        "per seed at the largest s: mean radial_cos over the first early_epochs epochs (the first has none); "
        "radial_cos = cos of an epoch's step with θ − θ_c before it",
        _rule("early radial_cos", "> outward", "< outward"),
        ("outward", "early_epochs", "confidence"),
        _family_figure("strength"),
        strength_outward,
    ),
    Claim(
        "release.stays",
        "release",
        "Once the penalty is released the run does not come back to the checkpoint (the source expects it "
        "both ways: 'if the hill is not large enough ... we would get back'; the data decide).",
        "per released run, per seed: final dist / dist at release (after release_after epochs); "
        f"{FINAL}; the note gives the control's ratio over the same epochs",
        PARTS + _rule("ratio", "> 1 − return_margin", "< 1 − return_margin (it came back)"),
        ("return_margin", "last_epochs", "confidence"),
        _family_figure("release"),
        release_stays,
    ),
    Claim(
        "symmetry.independent",
        "ensembles",
        "Independent seeds' members are much closer after aligning their hidden units: much of their distance "
        "is permutation symmetry ('weight space symmetry').",
        "per group of independent seeds (its ensemble): mean over its member pairs of the symmetry share "
        "1 − aligned_distance / weight_distance (weight matching, repel.align; MLP and CNN only)",
        _rule("symmetry share over the groups", "> symmetry_share", "< symmetry_share"),
        ("symmetry_share", "confidence"),
        "plots/ensemble_disagreement.png",
        symmetry_independent,
    ),
    Claim(
        "symmetry.continuation",
        "ensembles",
        "Members of one continuation run (distance snapshots) are not a permutation of each other: "
        "alignment removes little of their distance.",
        "per seed: mean over the distance snapshots' member pairs of the symmetry share "
        "1 − aligned_distance / weight_distance",
        _rule("per-seed symmetry share", "< symmetry_share", "> symmetry_share"),
        ("symmetry_share", "confidence"),
        "plots/ensemble_disagreement.png",
        symmetry_continuation,
    ),
    Claim(
        "function.vs_weights",
        "baseline",
        "Far in weights is near in function: a run N times farther from the checkpoint than its control is less "
        "than N times farther in function space (the source: networks far apart 'predict the same').",
        "per seed: log of the ratio of ratios (final func_disagree of the run / of its control) / (final dist of "
        f"the run / of its control), both to the checkpoint θ_c, on the validation split; {FINAL}; shown as the "
        "ratio of ratios (exp of the mean log); the note gives it with func_kl",
        _rule("mean log ratio of ratios", "< 0", "> 0"),
        ("last_epochs", "confidence"),
        "plots/function_vs_weights.png",
        function_vs_weights,
    ),
    Claim(
        "from_init.norm",
        "from_init",
        "With the penalty from initialization the weights end larger than without it (the source's to-do: "
        "'distance kernel for 0 epoch to show weight size').",
        f"per s, per seed: final weight_norm ‖θ‖₂ (penalty) − final weight_norm (its control, from the same "
        f"initial weights); {FINAL}",
        PARTS + PAIRED_UP,
        ("last_epochs", "confidence"),
        _family_figure("from_init"),
        from_init_norm,
    ),
    Claim(
        "from_init.accuracy",
        "from_init",
        "Trained from initialization with the penalty, the run reaches its control's test accuracy.",
        f"per s, per seed: final test_acc (penalty) − final test_acc (its control, from the same initial weights); "
        f"{FINAL}",
        EXPLORATORY,
        ("last_epochs", "confidence"),
        _family_figure("from_init"),
        from_init_accuracy,
        exploratory=True,
    ),
    Claim(
        "ensemble.penalty_diversity",
        "ensembles",
        "The penalty adds diversity: distance snapshots disagree more than the matching control, snapshots "
        "at the same constant lr without the penalty.",
        "per seed: mean pairwise disagreement (distance snapshots) − (constant-lr snapshots, no penalty)",
        PAIRED_UP,
        ("confidence",),
        "plots/ensemble_disagreement.png",
        ensemble_penalty_diversity,
    ),
    Claim(
        "ensemble.penalty_accuracy",
        "ensembles",
        "How the penalty changes an ensemble's test accuracy against the matching control.",
        "per seed: ensemble accuracy at the largest m, (distance snapshots) − (constant-lr snapshots, no penalty)",
        EXPLORATORY,
        ("confidence",),
        "plots/ensemble_accuracy.png",
        ensemble_penalty_accuracy,
        exploratory=True,
    ),
    Claim(
        "ensemble.strength",
        "ensembles",
        "Distance snapshots gain with the strength: their ensembles grow more diverse and more accurate as s "
        "grows (the source: ensembles 'should then work for high strength values').",
        "per seed: the least-squares slopes against log10 s, over the strengths of ensembles.strength, of the "
        "distance snapshots' mean pairwise disagreement (part diversity) and of their ensemble accuracy at the "
        "largest m (part accuracy); not run with one strength",
        PARTS + GROWS,
        ("confidence",),
        "plots/ensemble_disagreement.png, plots/ensemble_accuracy.png",
        ensemble_strength,
    ),
    Claim(
        "shift.accuracy",
        "shift",
        "Distance snapshots keep their accuracy under dataset shift at least as well as SGDR snapshots and as "
        "the matching control.",
        "per seed: accuracy drop (clean − each corruption's highest severity, mean over corruptions), "
        "(distance) − (SGDR), − (constant-lr snapshots); non-inferiority, a part each",
        PARTS + _rule("difference", "< shift_margin", "> shift_margin"),
        ("shift_margin", "confidence"),
        "plots/ensemble_shift.png",
        shift_accuracy,
    ),
    Claim(
        "shift.nll",
        "shift",
        "Distance snapshots keep their NLL under dataset shift at least as well as SGDR snapshots and as the "
        "matching control.",
        "per seed: NLL rise (each corruption's highest severity − clean, mean over corruptions), "
        "(distance) − (SGDR), − (constant-lr snapshots); non-inferiority, a part each",
        PARTS + _rule("difference", "< shift_nll_margin", "> shift_nll_margin"),
        ("shift_nll_margin", "confidence"),
        "plots/ensemble_shift.png",
        shift_nll,
    ),
    Claim(
        "shift.independent",
        "shift",
        "How distance snapshots' accuracy drop under shift compares with the independent seeds'.",
        "per seed: accuracy drop at the highest severities, (distance) − (independent seeds' ensemble)",
        EXPLORATORY,
        ("confidence",),
        "plots/ensemble_shift.png",
        shift_independent,
        exploratory=True,
    ),
    Claim(
        "ood.mi",
        "ood",
        "Mutual information separates OOD inputs better with distance snapshots than with the matching control.",
        "per seed: AUROC of the ensemble's mutual information (OOD the positives, mean over the OOD sets), "
        "(distance) − (constant-lr snapshots)",
        PAIRED_UP,
        ("confidence",),
        "plots/ensemble_ood.png",
        ood_mi,
    ),
    Claim(
        "ensemble.weights_vs_predictions",
        "ensembles",
        "Members far apart in weight space still predict alike: weight distance and disagreement are only "
        "weakly related.",
        "per ensemble: Spearman ρ(weight distance, disagreement) over its own member pairs (≥ 6, i.e. 4 members); "
        "a part per method with ≥ 2 such ensembles",
        PARTS + "Each: holds if both one-sided tests put the mean ρ inside ±weak_rho "
        "(p < (1 − {confidence:g})/2, after the adjustment); does not hold if it is outside; "
        "otherwise inconclusive",
        ("weak_rho", "confidence"),
        "plots/diversity_vs_distance.png",
        ensemble_weights_vs_predictions,
    ),
]


# --- evaluating them --------------------------------------------------------------------------


def _missing(claim: Claim, t: Tables) -> pd.Series:
    """Per cell: why the claim cannot run there, or ""."""
    none = pd.Series("", index=t.cells)
    if claim.family in ROBUSTNESS_TABLES:  # the ensembles under shift, their OOD detection
        table = getattr(t, claim.family)
        if table is None:
            return none + f"no {claim.family} table given"
        have = pd.MultiIndex.from_frame(table[CELL].drop_duplicates())
        return none.where(t.cells.isin(have), f"no {claim.family} rows for this dataset/model")
    if claim.family in ("ensembles", "landscape"):
        tables = (t.ensembles, t.pairs) if claim.family == "ensembles" else (t.landscape,)
        if any(x is None for x in tables):
            return none + f"no {claim.family} table given"
        have = pd.MultiIndex.from_frame(pd.concat([x[CELL] for x in tables]).drop_duplicates())
        why = none.where(t.cells.isin(have), f"no {claim.family} rows for this dataset/model")
        if claim.family == "ensembles":
            return why
        # the landscape claim compares the baseline family's runs with their controls
        return why.where(why != "", _missing(Claim("", "baseline", "", "", "", (), "", None), t))
    if claim.family not in t.families:
        return none + f"the config has no family '{claim.family}'"
    have = t.family_runs(claim.family).index.droplevel("run")
    return none.where(t.cells.isin(have), f"no rows of family '{claim.family}' for this dataset/model")


def _adjust(p: pd.Series, groups: pd.Series) -> pd.Series:
    """Benjamini–Hochberg within each group of the finite p-values; NaN stays NaN."""
    from scipy import stats

    out = np.full(len(p), math.nan)
    finite = np.flatnonzero(p.notna().to_numpy())
    codes = pd.factorize(groups.to_numpy()[finite])[0]
    order = finite[np.argsort(codes, kind="stable")]
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    values = p.to_numpy(float)
    for k in np.unique(sizes[sizes > 0]):  # groups of one size at once, one row each
        rows = order[starts[sizes == k, None] + np.arange(k)]
        out[rows] = stats.false_discovery_control(values[rows], axis=1, method="bh")
    return pd.Series(out, index=p.index)


def evaluate(
    metrics: pd.DataFrame,
    families: dict,
    ensembles: pd.DataFrame | None = None,
    pairs: pd.DataFrame | None = None,
    settings: dict | None = None,
    landscape: pd.DataFrame | None = None,
    adjust_by: list[str] | None = None,
    shift: pd.DataFrame | None = None,
    ood: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every claim for every dataset/model of `metrics`: one row each (COLUMNS). The decidable tests
    are adjusted together over the whole table, or within each group of `adjust_by` columns."""
    s = resolve_settings(settings)

    def keys_as_objects(table):  # grouping on object strings is several times faster than on Arrow's
        if table is None:
            return None
        cols = [c for c in ("dataset", "model", "run", "control", "method", "ensemble") if c in table]
        return table.astype({c: object for c in cols}).reset_index(drop=True)

    metrics, ensembles, pairs, landscape, shift, ood = map(
        keys_as_objects, (metrics, ensembles, pairs, landscape, shift, ood)
    )
    t = Tables(metrics, families, ensembles, pairs, landscape, s, shift, ood)
    frames = []
    for claim in CLAIMS:
        why = _missing(claim, t)
        r = claim.test(t) if (why == "").any() else _blank(t.cells)
        r = r.reindex(t.cells)
        off = why != ""
        if off.any():
            r.loc[off, ["fixed", "value", "ci_low", "ci_high", "p_holds", "p_against", "seeds", "text"]] = [
                "not run",
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                0,
                "",
            ]
            r.loc[off, "note"] = why[off]
        if claim.exploratory:
            r.loc[r["fixed"] == "", "fixed"] = "exploratory"
        frames.append(
            r.reset_index().rename(columns={"text": "value_text", "p_holds": "p_value"}).assign(claim=claim.id)
        )
    rows = pd.concat(frames, ignore_index=True)
    decidable = rows["fixed"] == ""
    groups = pd.Series("all", index=rows.index)
    for k, col in enumerate(adjust_by or []):
        groups = rows[col].astype(str) if k == 0 else groups + "/" + rows[col].astype(str)
    p_holds = rows["p_value"].where(decidable).astype(float)
    p_against = rows["p_against"].where(decidable).astype(float)
    rows["p_adjusted"], rows["p_against_adjusted"] = _adjust(p_holds, groups), _adjust(p_against, groups)
    level = (1 - s["confidence"]) / 2
    decided = np.where(
        rows["p_adjusted"] < level,
        "holds",
        np.where(rows["p_against_adjusted"] < level, "does not hold", "inconclusive"),
    )
    rows["verdict"] = np.where(decidable, decided, rows["fixed"])
    size = groups[decidable & p_holds.notna()].value_counts()
    where = "this table" if not adjust_by else f"its {'/'.join(adjust_by)}"
    rows["adjusted_with"] = [
        f"{ADJUSTMENT} over the {size.get(g, 0)} decided tests of {where}, each side apart" if d else ""
        for g, d in zip(groups, decidable)
    ]
    by_id = {c.id: c for c in CLAIMS}
    claim = rows["claim"].map(by_id)
    rows["text"] = claim.map(lambda c: c.text)
    rows["family"] = claim.map(lambda c: c.family)
    rows["statistic"] = claim.map(lambda c: c.statistic)
    rows["rule"] = claim.map(lambda c: c.rule.format(**s))
    rows["thresholds"] = claim.map(lambda c: "; ".join(f"{k} {s[k]:g}" for k in c.uses))
    rows["figure"] = claim.map(lambda c: c.figure)
    rows["seeds"] = rows["seeds"].astype(int)
    for col in ("value", "ci_low", "ci_high", "p_value", "p_against"):
        rows[col] = rows[col].astype(float)
    # cell by cell, the claims in CLAIMS order
    order = rows["claim"].map({c.id: k for k, c in enumerate(CLAIMS)})
    rows = rows.assign(_order=order).sort_values(CELL + ["_order"], kind="stable")
    return rows[COLUMNS].reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    """The verdicts as a readable Markdown table, then each claim's text, rule and thresholds."""

    def value(r) -> str:
        if r["verdict"] == "not run":
            return ""
        ci = f" [{r['ci_low']:.3g}, {r['ci_high']:.3g}]" if pd.notna(r["ci_low"]) else ""
        return f"{r['value_text']}{ci}"

    def p(r) -> str:
        if pd.isna(r["p_value"]) or r["verdict"] in ("not run",):
            return ""
        adjusted = f" → {r['p_adjusted']:.2g}" if pd.notna(r["p_adjusted"]) else ""
        against = f"; against {r['p_against']:.2g}" + (
            f" → {r['p_against_adjusted']:.2g}" if pd.notna(r["p_against_adjusted"]) else ""
        )
        return f"{r['p_value']:.2g}{adjusted}{against}"

    verdicts = pd.DataFrame(
        {
            "claim": table["claim"],
            "dataset / model": table["dataset"] + " / " + table["model"],
            "verdict": table["verdict"],
            "value": table.apply(value, axis=1),
            "p raw → adjusted": table.apply(p, axis=1),
            "seeds": table["seeds"],
            "note": table["note"].str.replace("|", "/", regex=False),
        }
    )
    family = next((a for a in table["adjusted_with"] if a), "no test was decided")
    lines = [
        "# The source study's claims: verdicts",
        "",
        (
            "value: the statistic (below) with its t-interval [low, high]. p: one-sided, for 'holds' and "
            f"against, raw → adjusted ({family})."
        ),
        "",
        verdicts.to_markdown(index=False),
        "",
        "## The claims, their statistics and rules",
        "",
    ]
    for _, c in table.drop_duplicates("claim").iterrows():
        lines += [
            f"- **{c['claim']}** ({c['figure']}): {c['text']}",
            f"  - statistic: {c['statistic']}",
            f"  - rule: {c['rule']}" + (f" (thresholds: {c['thresholds']})" if c["thresholds"] else ""),
        ]
    return "\n".join(lines) + "\n"
