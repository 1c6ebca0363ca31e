"""The source study's claims as verdicts, computed from the aggregated tables.

Each claim is one row per dataset/model: the statistic that tests it across seeds, its value with
a t-interval or Spearman's p-value, the decision rule in words, the thresholds it used (keys of
the config's `claims:` block, `DEFAULTS` here) and the verdict — "holds", "does not hold",
"inconclusive" (always with fewer than 2 seeds) or "not run". Verdicts come from per-seed values,
never from a figure, and no threshold is tuned to make a claim hold.

Four kinds of test (scipy.stats for the t-distribution and Spearman's ρ):
- paired: per-seed differences d_k (a point minus its own control, same seed). Holds when every
  d_k has the claimed sign and the t-interval of their mean excludes 0 on that side; does not hold
  when the interval lies wholly on the other side of 0; else inconclusive.
- grows with: Spearman's ρ between the swept value and the statistic over all (value, seed)
  pairs. Holds when ρ > 0 with p < 1 − confidence; does not hold when ρ < 0 with p < 1 − confidence.
- about the same: holds when the whole t-interval lies within ±margin; does not hold when it lies
  wholly outside.
- parts: holds when every part holds, does not hold when any part does not hold.

Claims find their family by name — baseline, strength, width, lr, multiple, merge — the names the
shipped configs (config/config.yaml, reduced.yaml, study.yaml) give them. A family the config
lacks, or one with no rows for a dataset/model, gives its claims' rows the verdict "not run"; the
ensemble claims are "not run" without the ensemble tables. `figure` names the figure that shows
the claim, relative to the config's results directory.

A diverged run's final accuracy counts as 0 (its weights are NaN); its final distance is NaN, so
that seed drops out of distance statistics, and the note says so.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

DEFAULTS = {
    "margin": 0.01,        # accuracy, as a fraction (1 point): "about the same"
    "early_epochs": 5,     # "early": the first N epochs after the checkpoint
    "last_fraction": 0.2,  # "the last fifth" of a run's epochs
    "plateau": 0.05,       # plateaued: distance grew by less than this fraction of its final value over the last fifth
    "confidence": 0.95,    # of the t-intervals; p-values are compared with 1 - confidence
    "weak_rho": 0.3,       # |ρ| below it: "weakly related"
}
VERDICTS = ("holds", "does not hold", "inconclusive", "not run")
COLUMNS = ["claim", "text", "family", "dataset", "model", "seeds", "statistic", "value", "value_text", "ci_low",
           "ci_high", "p_value", "rule", "thresholds", "verdict", "note", "figure"]
ONE_SEED = "1 seed: the value is that seed's"


# --- outcomes and the four tests ---------------------------------------------------------------

@dataclass
class Outcome:
    """A test's result. `text` is the value as it reads in a table or a figure's cell."""
    verdict: str
    value: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan
    seeds: int = 0
    note: str = ""
    text: str = ""
    notes: list[str] = field(default_factory=list)  # extra remarks a claim adds


def not_run(why: str) -> Outcome:
    return Outcome("not run", note=why)


def t_interval(values, confidence: float) -> tuple[float, float, float, float]:
    """Mean, its two-sided t-interval and the two-sided p-value of mean = 0 (n ≥ 2 values).
    Equal values have no spread: the interval is the value itself."""
    values = np.asarray(values, dtype=float)
    mean, n = values.mean(), len(values)
    sem = values.std(ddof=1) / math.sqrt(n)
    if sem == 0:
        return mean, mean, mean, (0.0 if mean != 0 else 1.0)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return mean, low, high, 2 * stats.t.sf(abs(mean) / sem, n - 1)


def _few(values: pd.Series, fmt: Callable[[float], str]) -> Outcome | None:
    """The outcome when fewer than 2 seeds have a value; None otherwise."""
    if len(values) == 0:
        return Outcome("inconclusive", note="no seed has a value")
    if len(values) == 1:
        v = float(values.iloc[0])
        return Outcome("inconclusive", value=v, seeds=1, note=ONE_SEED, text=fmt(v))
    return None


def _signed(v: float) -> str:
    return f"{v:+.3g}"


def paired(d: pd.Series, sign: int, confidence: float) -> Outcome:
    """Per-seed differences whose claimed sign is `sign` (+1: > 0, -1: < 0)."""
    d = d.dropna()
    few = _few(d, _signed)
    if few:
        return few
    mean, low, high, p = t_interval(d, confidence)
    claimed_side = low > 0 if sign > 0 else high < 0
    other_side = high < 0 if sign > 0 else low > 0
    if claimed_side and (np.sign(d) == sign).all():
        verdict = "holds"
    elif other_side:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    return Outcome(verdict, mean, low, high, p, len(d), text=_signed(mean))


def within(d: pd.Series, low_bound: float, high_bound: float, confidence: float) -> Outcome:
    """Equivalence: the t-interval of the mean inside (low_bound, high_bound), or wholly outside."""
    d = d.dropna()
    few = _few(d, _signed)
    if few:
        return few
    mean, low, high, _ = t_interval(d, confidence)
    if low > low_bound and high < high_bound:
        verdict = "holds"
    elif low >= high_bound or high <= low_bound:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    return Outcome(verdict, mean, low, high, math.nan, len(d), text=_signed(mean))


def spearman(x, y) -> tuple[float, float]:
    """Spearman's ρ and its p-value; NaN for constant values (ρ is undefined there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input; NaN says it
        result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def grows_with(points: pd.DataFrame, confidence: float) -> Outcome:
    """ρ between columns x and y over all rows, one row per (swept value, seed)."""
    points = points.dropna(subset=["x", "y"])
    seeds = points["seed"].nunique()
    if len(points) < 3:
        return Outcome("inconclusive", seeds=seeds, note="fewer than 3 (value, seed) points")
    rho, p = spearman(points["x"], points["y"])
    out = Outcome("inconclusive", rho, p_value=p, seeds=seeds, text=f"ρ={rho:.2f}")
    if math.isnan(rho):
        out.note = "the values are constant: ρ is undefined"
    elif seeds < 2:
        out.note = "1 seed: ρ is over that seed's points"
    elif p < 1 - confidence:
        out.verdict = "holds" if rho > 0 else "does not hold"
    return out


def all_parts(parts: dict[str, Outcome], main: str) -> Outcome:
    """A claim made of parts: holds when every part holds, does not hold when any part does not.
    A part not run counts as inconclusive, unless no part ran. Value and interval: the main part's."""
    verdicts = [p.verdict for p in parts.values()]
    if all(v == "not run" for v in verdicts):
        verdict = "not run"
    elif "does not hold" in verdicts:
        verdict = "does not hold"
    elif all(v == "holds" for v in verdicts):
        verdict = "holds"
    else:
        verdict = "inconclusive"
    m = parts[main]
    note = "; ".join(f"{name}: {_describe(p)}" for name, p in parts.items())
    return Outcome(verdict, m.value, m.ci_low, m.ci_high, m.p_value, m.seeds, note=note, text=m.text)


def _weakest(parts: dict[str, Outcome]) -> str:
    """The part with the smallest value (a part without one comes last): the claim's main statistic
    where it must hold for every part."""
    return min(parts, key=lambda name: math.inf if math.isnan(parts[name].value) else parts[name].value)


def _describe(o: Outcome) -> str:
    """One part in a note: its value, interval or p-value, verdict and seeds."""
    if o.verdict == "not run":
        return f"not run ({o.note})"
    bits = [o.text or "no value"]
    if not math.isnan(o.ci_low):
        bits.append(f"[{o.ci_low:.3g}, {o.ci_high:.3g}]")
    elif not math.isnan(o.p_value):
        bits.append(f"(p={o.p_value:.2g})")
    extra = f", {o.note}" if o.note and not o.note.startswith("1 seed") else ""  # "(1 seed" says it
    return f"{' '.join(bits)} {o.verdict} ({o.seeds} seed{'' if o.seeds == 1 else 's'}{extra})"


# --- one dataset/model's tables ---------------------------------------------------------------

@dataclass
class Cell:
    """One dataset/model: its continuation runs, base training, ensembles, and the settings."""
    dataset: str
    model: str
    metrics: pd.DataFrame
    families: dict
    ensembles: pd.DataFrame | None
    pairs: pd.DataFrame | None
    settings: dict

    def __post_init__(self):
        self.runs = self.metrics[self.metrics["phase"] == "continue"].sort_values(["run", "seed", "epoch"])
        self.info = self.runs.groupby("run").first()  # each run's grid settings

    def family_runs(self, name: str) -> list[str]:
        return [r for r in self.families.get(name, {}).get("runs", []) if r in self.info.index]

    def points(self, name: str) -> list[str]:
        """The family's runs with the penalty on (s > 0)."""
        return [r for r in self.family_runs(name) if self.info.loc[r, "strength"] > 0]

    def controls(self, name: str) -> list[str]:
        return [r for r in self.family_runs(name) if self.info.loc[r, "strength"] == 0]

    def per_seed(self, run: str, fn: Callable[[pd.DataFrame], float]) -> pd.Series:
        """fn of each seed's rows (sorted by epoch) -> a Series indexed by seed."""
        rows = self.runs[self.runs["run"] == run]
        return pd.Series({seed: fn(g) for seed, g in rows.groupby("seed")}, dtype=float).rename_axis("seed")

    def checkpoint_acc(self) -> pd.Series:
        """Each seed's validation accuracy at the checkpoint: its base training's last epoch."""
        base = self.metrics[self.metrics["phase"] == "base"].sort_values("epoch")
        return base.groupby("seed")["val_acc"].last()

    def diverged(self, runs) -> int:
        """How many (run, seed) of these runs diverged."""
        rows = self.runs[self.runs["run"].isin(list(runs))]
        return int(rows.groupby(["run", "seed"])["diverged"].any().sum())


def final_dist(rows: pd.DataFrame) -> float:
    return rows["dist"].iloc[-1]  # NaN for a diverged run


def final_acc(rows: pd.DataFrame) -> float:
    return 0.0 if rows["diverged"].iloc[-1] else rows["val_acc"].iloc[-1]


def dist_curve(rows: pd.DataFrame) -> pd.Series:
    """Distance by epoch, starting at 0 at the checkpoint epoch."""
    start = pd.Series([0.0], index=[int(rows["checkpoint_epoch"].iloc[0])])
    return pd.concat([start, rows.set_index("epoch")["dist"]])


def last_fifth_growth(rows: pd.DataFrame, fraction: float) -> float:
    """How much the distance grew over the last `fraction` of the run's epochs."""
    curve = dist_curve(rows)
    span = max(1, round(fraction * (len(curve) - 1)))
    return curve.iloc[-1] - curve.iloc[-1 - span]


def half_ratio(rows: pd.DataFrame) -> float:
    """Distance at the run's middle epoch over its final distance: 0.5 for a straight line from
    0, more when the curve rises fast and flattens (concave)."""
    curve = dist_curve(rows)
    return curve.iloc[(len(curve) - 1) // 2] / curve.iloc[-1]


def early_drop(rows: pd.DataFrame, checkpoint_acc: float, early_epochs: int) -> float:
    """How far validation accuracy fell below the checkpoint's in the first epochs (0 if never)."""
    return float(np.maximum(0.0, checkpoint_acc - rows["val_acc"].iloc[:early_epochs].min()))  # NaN stays NaN


def _against_control(cell: Cell, run: str, fn) -> pd.Series:
    """Per seed: fn(the run) − fn(its control)."""
    return cell.per_seed(run, fn) - cell.per_seed(cell.info.loc[run, "control"], fn)


def _over_points(cell: Cell, family: str, test: Callable[[str], Outcome]) -> Outcome:
    """One test per s > 0 point of the family: the test itself if it has one point, else parts."""
    points = cell.points(family)
    if not points:
        return not_run(f"family '{family}' has no run with s > 0 for this dataset/model")
    if len(points) == 1:
        return test(points[0])
    return all_parts({p: test(p) for p in points}, main=points[0])


def _diverged_note(out: Outcome, cell: Cell, runs) -> Outcome:
    n = cell.diverged(runs)
    if n:
        out.notes.append(f"{n} diverged run(s): final accuracy 0, no final distance")
    return out


# --- the claims, one function each ------------------------------------------------------------

def baseline_farther(cell: Cell) -> Outcome:
    conf = cell.settings["confidence"]
    out = _over_points(cell, "baseline", lambda r: paired(_against_control(cell, r, final_dist), +1, conf))
    return _diverged_note(out, cell, cell.family_runs("baseline"))


def baseline_accuracy(cell: Cell) -> Outcome:
    s = cell.settings
    out = _over_points(cell, "baseline", lambda r: within(_against_control(cell, r, final_acc), -s["margin"],
                                                          s["margin"], s["confidence"]))
    return _diverged_note(out, cell, cell.family_runs("baseline"))


def baseline_shape(cell: Cell) -> Outcome:
    conf = cell.settings["confidence"]
    return _over_points(cell, "baseline", lambda r: paired(_against_control(cell, r, half_ratio), +1, conf))


def baseline_walks(cell: Cell) -> Outcome:
    s = cell.settings
    controls = cell.controls("baseline")
    if not controls:
        return not_run("family 'baseline' has no control run for this dataset/model")
    tests = {c: paired(cell.per_seed(c, lambda rows: last_fifth_growth(rows, s["last_fraction"])), +1,
                       s["confidence"]) for c in controls}
    return tests[controls[0]] if len(tests) == 1 else all_parts(tests, main=controls[0])


def _swept(cell: Cell, family: str, x: Callable[[pd.Series], float], y: Callable[[pd.DataFrame], float]) -> pd.DataFrame:
    """(x of the run's settings, y of a seed's rows, seed) for every s > 0 run and seed of a family."""
    frames = [cell.per_seed(r, y).rename("y").reset_index().assign(x=x(cell.info.loc[r]), run=r)
              for r in cell.points(family)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["x", "y", "seed", "run"])


def strength_drop(cell: Cell) -> Outcome:
    s = cell.settings
    acc = cell.checkpoint_acc()
    points = _swept(cell, "strength", lambda run: run["strength"],
                    lambda rows: early_drop(rows, acc.get(rows["seed"].iloc[0], math.nan), s["early_epochs"]))
    return grows_with(points, s["confidence"])


def _largest_strength(cell: Cell) -> str:
    return max(cell.points("strength"), key=lambda r: cell.info.loc[r, "strength"])


def strength_distance(cell: Cell) -> Outcome:
    s = cell.settings
    if not cell.points("strength"):
        return not_run("family 'strength' has no run with s > 0 for this dataset/model")
    grows = grows_with(_swept(cell, "strength", lambda run: run["strength"], final_dist), s["confidence"])
    largest = _largest_strength(cell)
    growth = cell.per_seed(largest, lambda rows: last_fifth_growth(rows, s["last_fraction"]) / final_dist(rows))
    plateau = paired(s["plateau"] - growth, +1, s["confidence"])
    out = all_parts({"ρ(s, final dist)": grows,
                     f"plateau at s={cell.info.loc[largest, 'strength']:g} (plateau − growth/final)": plateau},
                    main="ρ(s, final dist)")
    return _diverged_note(out, cell, cell.points("strength"))


def strength_recovery(cell: Cell) -> Outcome:
    s = cell.settings
    if not cell.points("strength"):
        return not_run("family 'strength' has no run with s > 0 for this dataset/model")
    largest = _largest_strength(cell)
    out = paired(_against_control(cell, largest, final_acc), -1, s["confidence"])
    # "after the drop the accuracy recovers": its final accuracy above its early minimum
    early_min = cell.per_seed(largest, lambda rows: rows["val_acc"].iloc[:s["early_epochs"]].min())
    recovered = (cell.per_seed(largest, final_acc) > early_min).sum()
    out.notes.append(f"s={cell.info.loc[largest, 'strength']:g}; recovered above its early minimum in "
                     f"{recovered}/{len(early_min)} seeds")
    return _diverged_note(out, cell, [largest, cell.info.loc[largest, "control"]])


def _wideness(cell: Cell) -> tuple[Callable[[pd.Series], float], str]:
    """How wide a run's kernel is, and its symbol: σ, or 1/γ where the family sweeps gamma."""
    if "gamma" in cell.families["width"].get("varying", []):
        return (lambda run: 1 / run["gamma"]), "γ"
    return (lambda run: run["width"]), "σ"


def width_distance(cell: Cell) -> Outcome:
    wideness, _ = _wideness(cell)
    out = grows_with(_swept(cell, "width", wideness, final_dist), cell.settings["confidence"])
    return _diverged_note(out, cell, cell.points("width"))


def crossing_epoch(narrow: pd.Series, wide: pd.Series) -> int | None:
    """The first epoch from which the wider kernel's distance is ≥ the narrower's at every later
    epoch, given the narrower led at some earlier epoch; None when the wider never overtakes for
    good within the run (or never trailed). Both Series are indexed by epoch."""
    both = pd.concat({"narrow": narrow, "wide": wide}, axis=1).dropna().sort_index()
    ahead = both["wide"] >= both["narrow"]
    if ahead.all() or not ahead.iloc[-1]:
        return None
    last_behind = ahead[~ahead].index[-1]
    return int(ahead.index[ahead.index > last_behind][0])


def width_crossing(cell: Cell) -> Outcome:
    wideness, symbol = _wideness(cell)
    runs = sorted(cell.points("width"), key=lambda r: wideness(cell.info.loc[r]))
    if len(runs) < 2:
        return Outcome("inconclusive", note="fewer than two widths: nothing to cross")
    key = "gamma" if symbol == "γ" else "width"
    names = [f"{symbol} {cell.info.loc[a, key]:g}→{cell.info.loc[b, key]:g}" for a, b in itertools.pairwise(runs)]
    curves = {r: cell.runs[cell.runs["run"] == r].pivot(index="epoch", columns="seed", values="dist") for r in runs}
    seeds = sorted(set.intersection(*(set(c.columns) for c in curves.values())))
    # crossings[seed] = the crossing epoch of each neighbouring pair, narrowest first (None: none)
    crossings = {seed: [crossing_epoch(curves[a][seed], curves[b][seed]) for a, b in itertools.pairwise(runs)]
                 for seed in seeds}
    parts = []
    for k, name in enumerate(names):
        epochs = [c[k] for c in crossings.values() if c[k] is not None]
        if not epochs:
            parts.append(f"{name}: no crossing within the budget")
        else:
            some = "" if len(epochs) == len(seeds) else f" ({len(epochs)}/{len(seeds)} seeds)"
            parts.append(f"{name}: epoch {round(float(np.mean(epochs)), 1):g}{some}")
    text = "; ".join(parts)
    in_order = [None not in c and all(a <= b for a, b in itertools.pairwise(c)) for c in crossings.values()]
    some_never = [None in c for c in crossings.values()]
    if len(seeds) < 2:
        return Outcome("inconclusive", seeds=len(seeds), note=ONE_SEED if seeds else "no seed has a value", text=text)
    verdict = "holds" if all(in_order) else "does not hold" if all(some_never) else "inconclusive"
    return Outcome(verdict, seeds=len(seeds), text=text)


def width_accuracy(cell: Cell) -> Outcome:
    s = cell.settings
    finals = pd.DataFrame({r: cell.per_seed(r, final_acc) for r in cell.points("width")}).dropna()
    spread = finals.max(axis=1) - finals.min(axis=1)
    out = within(spread, -math.inf, s["margin"], s["confidence"])
    return _diverged_note(out, cell, cell.points("width"))


def lr_penalty(cell: Cell) -> Outcome:
    conf = cell.settings["confidence"]
    points = sorted(cell.points("lr"), key=lambda r: cell.info.loc[r, "lr_init"])
    if not points:
        return not_run("family 'lr' has no run with s > 0 for this dataset/model")
    parts = {}
    for r in points:
        name = f"lr {cell.info.loc[r, 'lr_init']:g}"
        parts[name if name not in parts else f"{name} ({r})"] = paired(_against_control(cell, r, final_dist), +1, conf)
    return _diverged_note(all_parts(parts, main=_weakest(parts)), cell, cell.family_runs("lr"))


def _reference_lr(cell: Cell, lrs: list[float]) -> float:
    """The lr the extremes are compared with: the baseline's (the default) if the lr family has it,
    else the middle of the family's learning rates."""
    baseline = cell.controls("baseline")
    if baseline and cell.info.loc[baseline[0], "lr_init"] in lrs:
        return cell.info.loc[baseline[0], "lr_init"]
    return lrs[(len(lrs) - 1) // 2]


def _train_ce_after(rows: pd.DataFrame, epochs: int) -> float:
    return rows["train_ce"].iloc[:epochs].iloc[-1]


def lr_extremes(cell: Cell) -> Outcome:
    s = cell.settings
    controls = {cell.info.loc[r, "lr_init"]: r for r in cell.controls("lr")}
    if len(controls) < 2:
        return Outcome("inconclusive", note="the lr family needs controls at two learning rates or more")
    lrs = sorted(controls)
    ref = _reference_lr(cell, lrs)

    def diff(a: float, fn) -> pd.Series:
        return cell.per_seed(controls[a], fn) - cell.per_seed(controls[ref], fn)

    low, high = lrs[0], lrs[-1]
    slow_name = f"train_ce lr {low:g} − lr {ref:g}" if low < ref else "too low an lr"
    unstable_name = f"final val_acc lr {high:g} − lr {ref:g}" if high > ref else "too high an lr"
    slow = (paired(diff(low, lambda rows: _train_ce_after(rows, s["early_epochs"])), +1, s["confidence"])
            if low < ref else not_run(f"no lr below {ref:g}"))
    unstable = (paired(diff(high, final_acc), -1, s["confidence"]) if high > ref else not_run(f"no lr above {ref:g}"))
    main = slow_name if slow.verdict != "not run" else unstable_name
    out = all_parts({slow_name: slow, unstable_name: unstable}, main=main)
    return _diverged_note(out, cell, controls.values())


def single_hill(cell: Cell, run: str) -> str | None:
    """The run with the same settings as `run` but one hill (checkpoint_every 0): the same
    penalty columns and the same training part of the run id (which names every training setting)."""
    me = cell.info.loc[run]
    same = pd.Series(True, index=cell.info.index)
    for col in ("strength", "kernel", "width", "gamma", "distance"):
        same &= (cell.info[col] == me[col]) | (cell.info[col].isna() & pd.isna(me[col]))
    same &= cell.info["checkpoint_every"].fillna(0) == 0
    same &= cell.info.index.str.split("_", n=1).str[-1] == run.split("_", 1)[-1]
    return next(iter(cell.info.index[same]), None)


def _farther_than(cell: Cell, run: str, other: str | None, conf: float) -> Outcome:
    if other is None:
        return not_run(f"no single-hill run with the settings of {run}")
    return paired(cell.per_seed(run, final_dist) - cell.per_seed(other, final_dist), +1, conf)


def multiple_farther(cell: Cell) -> Outcome:
    conf = cell.settings["confidence"]
    every = [r for r in cell.points("multiple") if cell.info.loc[r, "checkpoint_every"] > 0]
    if not every:
        return not_run("family 'multiple' has no run with a new hill every K epochs")
    parts = {f"every {cell.info.loc[r, 'checkpoint_every']:g} − single": _farther_than(cell, r, single_hill(cell, r), conf)
             for r in every}
    merge = cell.points("merge")
    merged = [r for r in merge if cell.info.loc[r, "merge"]]
    unmerged = [r for r in merge if not cell.info.loc[r, "merge"] and cell.info.loc[r, "checkpoint_every"] > 0]
    if merged and unmerged:
        parts["merged − single"] = _farther_than(cell, merged[0], single_hill(cell, merged[0]), conf)
        parts["unmerged − merged"] = _farther_than(cell, unmerged[0], merged[0], conf)
    else:
        parts["merged between"] = not_run("family 'merge' has no merged and unmerged pair for this dataset/model")
    out = all_parts(parts, main=next(iter(parts)))
    out.notes.append("exploratory: the source has no result")
    return _diverged_note(out, cell, cell.family_runs("multiple") + cell.family_runs("merge"))


def _named_ensembles(table: pd.DataFrame) -> pd.DataFrame:
    """Tables written before ensembles had names hold one ensemble per method."""
    return table if "ensemble" in table else table.assign(ensemble="all")


def ensemble_gain(cell: Cell) -> Outcome:
    conf = cell.settings["confidence"]
    curves = _named_ensembles(cell.ensembles)
    largest = curves[curves["m"] == curves.groupby(["method", "ensemble"])["m"].transform("max")]
    parts = {method: paired(g.set_index("ensemble")["gain_best"], +1, conf)
             for method, g in largest.groupby("method", sort=True)}
    if len(parts) == 1:
        return next(iter(parts.values()))
    return all_parts(parts, main=_weakest(parts))


def ensemble_diversity(cell: Cell) -> Outcome:
    pairs = _named_ensembles(cell.pairs)
    mean = pairs.groupby(["method", "ensemble"])["disagreement"].mean()
    methods = set(mean.index.get_level_values("method"))
    if not {"distance", "sgdr"} <= methods:
        return not_run("needs both the 'distance' and the 'sgdr' ensembles")
    return paired(mean.loc["distance"] - mean.loc["sgdr"], -1, cell.settings["confidence"])


def ensemble_weights_vs_predictions(cell: Cell) -> Outcome:
    s = cell.settings
    pairs = _named_ensembles(cell.pairs).dropna(subset=["weight_distance", "disagreement"])
    seeds = int(pairs.groupby("method")["ensemble"].nunique().max()) if len(pairs) else 0  # ensembles per method
    if len(pairs) < 3:
        return Outcome("inconclusive", seeds=seeds, note="fewer than 3 member pairs")
    rho, p = spearman(pairs["weight_distance"], pairs["disagreement"])
    out = Outcome("inconclusive", rho, p_value=p, seeds=seeds, text=f"ρ={rho:.2f}",
                  notes=[f"{len(pairs)} member pairs"])
    if math.isnan(rho):
        out.note = "the values are constant: ρ is undefined"
    elif seeds < 2:
        out.note = ONE_SEED.replace("the value is that seed's", "ρ is over that seed's ensembles")
    elif abs(rho) < s["weak_rho"]:
        out.verdict = "holds"
    elif p < 1 - s["confidence"]:
        out.verdict = "does not hold"
    return out


# --- the table of claims ----------------------------------------------------------------------

PAIRED_UP = ("holds if every seed's {what} is > 0 and the t-interval of its mean (confidence {confidence:g}) "
             "lies above 0; does not hold if the interval lies below 0; otherwise, and with < 2 seeds, inconclusive")
PAIRED_DOWN = ("holds if every seed's {what} is < 0 and the t-interval of its mean (confidence {confidence:g}) "
               "lies below 0; does not hold if the interval lies above 0; otherwise, and with < 2 seeds, inconclusive")
GROWS = ("holds if Spearman's ρ > 0 with p < 1 − {confidence:g}; does not hold if ρ < 0 with p < 1 − {confidence:g}; "
         "otherwise, and with < 2 seeds, inconclusive")
PARTS = "holds if every part holds; does not hold if any part does not hold; else inconclusive. "


@dataclass(frozen=True)
class Claim:
    id: str
    family: str       # the family it needs; "ensembles": the ensemble tables
    text: str
    statistic: str
    rule: str         # formatted with the settings
    uses: tuple       # the settings keys it uses, shown as its thresholds
    figure: str
    test: Callable[[Cell], Outcome]


def _family_figure(name: str) -> str:
    return f"plots/families/{name}.png"


CLAIMS = [
    Claim("baseline.farther", "baseline",
          "With the penalty the run ends farther from the checkpoint than its control.",
          "mean over seeds of final dist (penalty) − final dist (its control)",
          PAIRED_UP.replace("{what}", "difference"), ("confidence",), _family_figure("baseline"), baseline_farther),
    Claim("baseline.accuracy", "baseline",
          "Final validation accuracy with the penalty is within ±margin of the control's.",
          "mean over seeds of final val_acc (penalty) − final val_acc (its control)",
          "holds if the t-interval of the mean difference (confidence {confidence:g}) lies within ±{margin:g}; "
          "does not hold if it lies wholly outside; otherwise, and with < 2 seeds, inconclusive",
          ("margin", "confidence"), _family_figure("baseline"), baseline_accuracy),
    Claim("baseline.shape", "baseline",
          "The penalized distance rises fast and then flattens (concave); the control's grows nearly linearly.",
          "mean over seeds of half-ratio (penalty) − half-ratio (control); half-ratio = dist at the run's "
          "middle epoch / final dist (0.5 for a straight line, more when concave)",
          PAIRED_UP.replace("{what}", "difference"), ("confidence",), _family_figure("baseline"), baseline_shape),
    Claim("baseline.walks", "baseline",
          "Without the penalty SGD keeps moving: the control's distance still increases over the last fifth.",
          "mean over seeds of the control's dist(end) − dist(start of the last fifth)",
          PAIRED_UP.replace("{what}", "growth"), ("last_fraction", "confidence"), _family_figure("baseline"),
          baseline_walks),
    Claim("strength.drop", "strength",
          "The early validation-accuracy drop after the checkpoint grows with s.",
          "Spearman ρ(s, drop) over the s > 0 runs and seeds; drop = checkpoint val_acc − min val_acc over the "
          "first early_epochs epochs (≥ 0)",
          GROWS, ("early_epochs", "confidence"), _family_figure("strength"), strength_drop),
    Claim("strength.distance", "strength",
          "The final distance grows with s, and for the largest s it plateaus.",
          "Spearman ρ(s, final dist); part 2, per seed at the largest s: plateau − dist growth over the last "
          "fifth / final dist",
          PARTS + "Part 1: " + GROWS + ". Part 2: " + PAIRED_UP.replace("{what}", "plateau − growth ratio"),
          ("last_fraction", "plateau", "confidence"), _family_figure("strength"), strength_distance),
    Claim("strength.recovery", "strength",
          "After the drop the accuracy recovers, but for the largest s it stays below the control's.",
          "mean over seeds of final val_acc (largest s) − final val_acc (its control)",
          PAIRED_DOWN.replace("{what}", "difference"), ("early_epochs", "confidence"), _family_figure("strength"),
          strength_recovery),
    Claim("width.distance", "width",
          "A wider kernel ends farther from the checkpoint.",
          "Spearman ρ(wideness, final dist) over the s > 0 runs and seeds; wideness = σ, or 1/γ when the family "
          "sweeps gamma",
          GROWS, ("confidence",), _family_figure("width"), width_distance),
    Claim("width.crossing", "width",
          "Distance curves of neighbouring widths cross: the narrower leads early, the wider overtakes later, "
          "and the crossing comes later the wider the kernel.",
          "per neighbouring pair of widths, the epoch from which the wider's dist stays ≥ the narrower's "
          "(mean over the seeds where it crosses)",
          "holds if in every seed every pair crosses and the crossing epochs do not decrease with wideness; "
          "does not hold if in every seed some pair never crosses; otherwise, and with < 2 seeds, inconclusive",
          (), _family_figure("width"), width_crossing),
    Claim("width.accuracy", "width",
          "Final validation accuracy is about the same for every width.",
          "mean over seeds of the spread (max − min) of final val_acc over the s > 0 widths",
          "holds if the t-interval of the mean spread (confidence {confidence:g}) lies below {margin:g}; "
          "does not hold if its lower bound is above {margin:g}; otherwise, and with < 2 seeds, inconclusive",
          ("margin", "confidence"), _family_figure("width"), width_accuracy),
    Claim("lr.penalty", "lr",
          "At every learning rate the penalty increases the distance over that lr's control.",
          "mean over seeds of final dist (penalty) − final dist (control at the same lr), at the lr where it "
          "is smallest",
          PARTS + "One part per lr: " + PAIRED_UP.replace("{what}", "difference"), ("confidence",),
          _family_figure("lr"), lr_penalty),
    Claim("lr.extremes", "lr",
          "Too low an lr converges more slowly; too high an lr ends lower or unstable.",
          "controls (s = 0): mean over seeds of train_ce after early_epochs at the lowest lr − at the reference "
          "lr (the baseline's, else the middle one); part 2: final val_acc at the highest lr − at the reference "
          "(a diverged run counts as 0)",
          PARTS + "Part 1: " + PAIRED_UP.replace("{what}", "difference") + ". Part 2: "
          + PAIRED_DOWN.replace("{what}", "difference"),
          ("early_epochs", "confidence"), _family_figure("lr"), lr_extremes),
    Claim("multiple.farther", "multiple",
          "A new hill every K epochs ends farther than a single hill; merged hills end between the two "
          "(exploratory: the source has no result).",
          "mean over seeds of final dist (a new hill every K) − final dist (the same point with one hill); "
          "parts with the merge family: merged − single, unmerged − merged",
          PARTS + "Every part: " + PAIRED_UP.replace("{what}", "difference"), ("confidence",),
          _family_figure("multiple") + ", " + _family_figure("merge"), multiple_farther),
    Claim("ensemble.gain", "ensembles",
          "Every method's ensemble beats its best member.",
          "mean over a method's ensembles of gain_best (accuracy − best member's) at the largest m, for the "
          "method where it is smallest",
          PARTS + "One part per method: " + PAIRED_UP.replace("{what}", "gain_best"), ("confidence",),
          "plots/ensemble_accuracy.png", ensemble_gain),
    Claim("ensemble.diversity", "ensembles",
          "Distance snapshots are not more diverse than SGDR snapshots.",
          "mean over seeds of the mean pairwise disagreement (distance snapshots) − (SGDR snapshots)",
          PAIRED_DOWN.replace("{what}", "difference"), ("confidence",), "plots/ensemble_disagreement.png",
          ensemble_diversity),
    Claim("ensemble.weights_vs_predictions", "ensembles",
          "Members far apart in weight space still predict alike: weight distance and disagreement are only "
          "weakly related.",
          "Spearman ρ(weight distance, disagreement) over all member pairs of every method and ensemble",
          "holds if |ρ| < {weak_rho:g}; does not hold if |ρ| ≥ {weak_rho:g} with p < 1 − {confidence:g}; "
          "otherwise, and with < 2 seeds (ensembles per method), inconclusive",
          ("weak_rho", "confidence"), "plots/diversity_vs_distance.png", ensemble_weights_vs_predictions),
]


# --- evaluating them --------------------------------------------------------------------------

def resolve_settings(settings: dict | None) -> dict:
    """The config's `claims:` block over DEFAULTS; a key or value that makes no sense stops here."""
    settings = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"claims: unknown setting(s) {', '.join(unknown)}; the settings are {', '.join(DEFAULTS)}")
    checks = {"margin": settings["margin"] > 0, "plateau": settings["plateau"] > 0,
              "weak_rho": 0 < settings["weak_rho"] <= 1, "confidence": 0 < settings["confidence"] < 1,
              "last_fraction": 0 < settings["last_fraction"] <= 1,
              "early_epochs": float(settings["early_epochs"]).is_integer() and settings["early_epochs"] >= 1}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ValueError("claims: " + "; ".join(f"{k} = {settings[k]!r} is out of range" for k in bad))
    settings["early_epochs"] = int(settings["early_epochs"])
    return settings


def _missing(claim: Claim, cell: Cell) -> str | None:
    """Why the claim cannot run for this cell, or None."""
    if claim.family == "ensembles":  # the ensemble claims read both tables, which come together
        if cell.ensembles is None or cell.pairs is None:
            return "no ensemble tables given (the config has no ensembles block)"
        return None if len(cell.ensembles) and len(cell.pairs) else "no ensemble rows for this dataset/model"
    if claim.family not in cell.families:
        return f"the config has no family '{claim.family}'"
    return None if cell.family_runs(claim.family) else f"no rows of family '{claim.family}' for this dataset/model"


def _row(claim: Claim, cell: Cell, out: Outcome) -> dict:
    settings = cell.settings
    return {
        "claim": claim.id, "text": claim.text, "family": claim.family, "dataset": cell.dataset,
        "model": cell.model, "seeds": out.seeds, "statistic": claim.statistic, "value": float(out.value),
        "value_text": out.text, "ci_low": float(out.ci_low), "ci_high": float(out.ci_high),
        "p_value": float(out.p_value), "rule": claim.rule.format(**settings),
        "thresholds": "; ".join(f"{k} {settings[k]:g}" for k in claim.uses),
        "verdict": out.verdict, "note": "; ".join(n for n in [out.note, *out.notes] if n), "figure": claim.figure,
    }


def _for_cell(table: pd.DataFrame | None, dataset: str, model: str) -> pd.DataFrame | None:
    if table is None:
        return None
    return table[(table["dataset"] == dataset) & (table["model"] == model)]


def evaluate(metrics: pd.DataFrame, families: dict, ensembles: pd.DataFrame | None = None,
             pairs: pd.DataFrame | None = None, settings: dict | None = None) -> pd.DataFrame:
    """Every claim for every dataset/model of `metrics`: one row each (COLUMNS)."""
    settings = resolve_settings(settings)
    rows = []
    for (dataset, model), cell_metrics in metrics.groupby(["dataset", "model"], sort=True):
        cell = Cell(dataset, model, cell_metrics, families, _for_cell(ensembles, dataset, model),
                    _for_cell(pairs, dataset, model), settings)
        for claim in CLAIMS:
            why = _missing(claim, cell)
            rows.append(_row(claim, cell, not_run(why) if why else claim.test(cell)))
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(table: pd.DataFrame) -> str:
    """The verdicts as a readable Markdown table, then each claim's text, rule and thresholds."""
    def value(r) -> str:
        if r["verdict"] == "not run":
            return ""
        ci = f" [{r['ci_low']:.3g}, {r['ci_high']:.3g}]" if pd.notna(r["ci_low"]) else ""
        p = f" (p={r['p_value']:.2g})" if pd.notna(r["p_value"]) and not ci else ""
        return f"{r['value_text']}{ci}{p}"

    verdicts = pd.DataFrame({
        "claim": table["claim"], "dataset / model": table["dataset"] + " / " + table["model"],
        "verdict": table["verdict"], "value": table.apply(value, axis=1), "seeds": table["seeds"],
        "note": table["note"].str.replace("|", "/", regex=False),
    })
    lines = ["# The source study's claims: verdicts", "",
             "value: the statistic (below) with its t-interval [low, high] or Spearman's p-value.", "",
             verdicts.to_markdown(index=False), "", "## The claims, their statistics and rules", ""]
    for _, c in table.drop_duplicates("claim").iterrows():
        lines += [f"- **{c['claim']}** ({c['figure']}): {c['text']}",
                  f"  - statistic: {c['statistic']}",
                  f"  - rule: {c['rule']}" + (f" (thresholds: {c['thresholds']})" if c["thresholds"] else "")]
    return "\n".join(lines) + "\n"
