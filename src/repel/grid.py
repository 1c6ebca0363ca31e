"""The continuation grid: config families -> runs with stable, readable ids.

A family is one question of the study (strength, width, kernel, ...): a block of the config whose
`sweep` lists expand, in every combination, into grid points over the family's `fixed` settings
and the continuation defaults. A run id names every parameter that makes the run what it is, e.g.
`s1-rbf-w0.5_lr0.01-const-e30`: penalty part, then training part. Its control (the same training
with s = 0) is `s0_lr0.01-const-e30`; every grid point gets one, so the control is always run.
Points that two families share (the default s and sigma, say) are one run.
"""

from __future__ import annotations

import hashlib
import itertools

from .spec import Run, _num

CONTROL_LABEL = "control"
SNAPSHOT = (
    "snapshots/epoch{epoch}.pt"  # an ensemble member, in its run's seed directory; epoch counts from the base's start
)
# method -> how it gets its members, all at the same epoch budget: distance snapshots (a new hill
# every cycle; the model before each is a member), snapshots (the matching control of distance: the
# same constant lr and a member every cycle, no penalty), SGDR snapshots (cosine with warm restarts every
# cycle, no penalty), SGDR + distance, independent seeds (one run per seed, no penalty: the
# deep-ensemble reference), fast geometric ensembles (short triangular lr cycles, a member at each
# one's lowest lr), SWA (SWALR's constant lr; its members every cycle, its weights averaged every epoch)
ENSEMBLE_METHODS = ("distance", "snapshots", "sgdr", "sgdr_distance", "independent", "fge", "swa")
DISTANCE_METHODS = ("distance", "sgdr_distance")  # the methods with the penalty: one per strength


def strengths(ens: dict) -> list[float]:
    """`ensembles.strength` as a list: one number, or a list of them."""
    s = ens["strength"]
    return list(s) if isinstance(s, (list, tuple)) else [s]


def strength_method(kind: str, strength: float, several: bool) -> str:
    """A distance method's name: the kind itself with one strength (`distance`), else the kind and
    its strength (`distance_s10`), so that each strength is a method of its own in every table."""
    return f"{kind}_s{_num(strength)}" if several else kind


def method_strength(method: str) -> tuple[str, float | None] | None:
    """The inverse of strength_method: (kind, strength) of a distance method's name, strength None
    for the plain name; None for a method without the penalty."""
    if method in DISTANCE_METHODS:
        return method, None
    kind, sep, s = method.rpartition("_s")
    if sep and kind in DISTANCE_METHODS:
        try:
            return kind, float(s)
        except ValueError:
            return None
    return None


def resolve(defaults: dict, point: dict, where: str) -> Run:
    """A grid point over the defaults, as a checked run. A point's gamma replaces the default
    width and vice versa; a point that sets both is refused (one of them would be dropped)."""
    point = {k: v for k, v in point.items() if k != "seeds"}
    if "width" in point and "gamma" in point:
        raise ValueError(
            f"{where}: sets both width {point['width']} and gamma {point['gamma']}; a kernel takes one "
            "(width: exp(-d / (2 sigma^2)), gamma: exp(-gamma d))"
        )
    merged = {k: v for k, v in defaults.items() if k != "seeds"}
    for one, other in (("gamma", "width"), ("width", "gamma")):
        if one in point:
            merged.pop(other, None)
    merged.update(point)
    if merged.get("strength") is None:
        raise ValueError(
            f"{where}: a grid point has no strength; give one in the family's fixed, sweep or points, "
            "or in continuation.defaults"
        )
    return Run.of(merged, where)


def family_points(family: dict) -> list[dict]:
    """A family block -> its grid points (unresolved): each of its `points` (or one empty point)
    with every combination of the `sweep` lists, over the family's `fixed` settings."""
    sweep = family.get("sweep", {})
    combos = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]
    return [{**family.get("fixed", {}), **point, **combo} for point in family.get("points", [{}]) for combo in combos]


def families(continuation: dict) -> dict[str, dict]:
    """family -> {"runs": its run ids and their controls, "varying": the keys its points set
    (for legends), "figure", "panels", "x": the first swept key (the x axis of a 'final' figure)}."""
    out = {}
    for name, family in continuation["families"].items():
        runs = []
        for point in family_points(family):
            run = resolve(continuation["defaults"], point, f"continuation.families.{name}")
            for rid in (run.control().id, run.id):
                if rid not in runs:
                    runs.append(rid)
        keys = [*family.get("sweep", {}), *(k for p in family.get("points", []) for k in p)]
        varying = [k for k in dict.fromkeys(keys) if k != "seeds"]
        out[name] = {
            "runs": runs,
            "varying": varying,
            "figure": family.get("figure", "curves"),
            "panels": family.get("panels", ["val_acc", "dist"]),
            "x": (varying or [None])[0],
        }
    return out


def ensemble_points(ens: dict, seeds: list[int]) -> dict[str, dict]:
    """method -> the grid point whose run gives its members; each trains members x cycle epochs.
    The snapshot methods run on every seed of the study (`seeds`), one ensemble each; the
    independent seeds on `ensembles.seeds`. FGE and SWA run where the block has their settings.
    The distance methods run at every strength of `ensembles.strength` (strength_method names them)."""
    cycle = ens["cycle"]
    common = {"epochs": ens["members"] * cycle, **{k: ens[k] for k in ("lr",) if k in ens}}
    kernel = {"checkpoint_every": cycle, **{k: ens[k] for k in ("kernel", "width", "gamma") if k in ens}}
    sgdr = {"schedule": "cosine_restarts", "t0": cycle, "t_mult": 1}
    each = strengths(ens)  # the schema refuses a strength listed twice (one method under two names)
    several = len(each) > 1

    def hill(kind: str, schedule: dict) -> dict:  # the kind's method at every strength
        return {
            strength_method(kind, s, several): {**common, **kernel, **schedule, "strength": s, "seeds": seeds}
            for s in each
        }

    points = {
        **hill("distance", {"schedule": "constant"}),
        # the independent seeds' run (on other seeds, maybe), its snapshots kept
        "snapshots": {**common, "schedule": "constant", "strength": 0, "seeds": seeds},
        "sgdr": {**common, **sgdr, "strength": 0, "seeds": seeds},
        **hill("sgdr_distance", sgdr),
        "independent": {**common, "schedule": "constant", "strength": 0, "seeds": ens["seeds"]},
    }
    if "fge" in ens:  # the peak lr is every method's; the low one FGE's own
        points["fge"] = {
            **common,
            "schedule": "cyclic",
            "t0": ens["fge"]["cycle"],
            "eta_min": ens["fge"]["lr_low"],
            "strength": 0,
            "seeds": seeds,
        }
    if "swa" in ens:
        points["swa"] = {**common, "schedule": "swa", "eta_min": ens["swa"]["lr"], "strength": 0, "seeds": seeds}
    return points


def member_epochs(ens: dict, method: str) -> list[int] | None:
    """The epochs after the checkpoint at which a method's run gives a member: every cycle (FGE:
    every one of its own shorter cycles) up to the budget; None for the independent seeds, whose
    members are each seed's final weights."""
    if method == "independent":
        return None
    every = ens["fge"]["cycle"] if method == "fge" else ens["cycle"]
    return list(range(every, ens["members"] * ens["cycle"] + 1, every))


def independent_groups(seeds: list[int], members: int) -> list[list[int]]:
    """The independent-seeds ensembles: disjoint groups of `members` seeds where the list holds
    at least two such groups (seeds left over join none), else one ensemble of all the seeds."""
    if len(seeds) < 2 * members:
        return [list(seeds)]
    return [list(seeds[i : i + members]) for i in range(0, len(seeds) - members + 1, members)]


def ensemble_plan(ens: dict, defaults: dict, seeds: list[int]) -> dict[str, dict[str, dict]]:
    """method -> ensemble name -> {"run": run id, "seeds": its members' seeds, "epochs": the epochs
    after the checkpoint at which a snapshot is a member, or None where each seed's final weights
    are the members}. A snapshot method has one ensemble per seed ("seed0", ...), from that seed's
    own run; the independent seeds one per group ("seeds0-1-2-3")."""
    plan = {}
    for method, point in ensemble_points(ens, seeds).items():
        run = resolve(defaults, point, f"ensembles, method {method}").id
        if method == "independent":  # each seed's run's end is a member
            plan[method] = {
                "seeds" + "-".join(map(str, group)): {"run": run, "seeds": group, "epochs": None}
                for group in independent_groups(point["seeds"], ens["members"])
            }
        else:  # a member every cycle of one seed's run
            epochs = member_epochs(ens, method)
            plan[method] = {f"seed{seed}": {"run": run, "seeds": [seed], "epochs": epochs} for seed in point["seeds"]}
    return plan


def expand(continuation: dict, seeds: list[int], ensembles: dict | None = None) -> dict[str, dict]:
    """run id -> {"spec" (a spec.Run), "seeds", "member_seeds", "labels"} for every family's grid
    points and their controls, and for the runs the ensemble methods take their members from.

    `seeds` are the seeds a run is compared over (its families'); `member_seeds` those it is
    trained for as an ensemble's members: they are reported under the ensemble, never as extra
    seeds of a control. A run's labels are the families it belongs to ("control" for s = 0);
    a run that only gives ensemble members has none and no seeds.
    """
    runs: dict[str, dict] = {}

    def add(spec: Run, label: str | None, run_seeds=(), member_seeds=()) -> None:
        run = runs.setdefault(spec.id, {"spec": spec, "seeds": [], "member_seeds": [], "labels": []})
        run["seeds"] = sorted(set(run["seeds"]) | set(run_seeds))
        run["member_seeds"] = sorted(set(run["member_seeds"]) | set(member_seeds))
        if label is not None and label not in run["labels"]:
            run["labels"].append(label)

    default_seeds = continuation["defaults"].get("seeds", seeds)
    for name, family in continuation["families"].items():
        for point in family_points(family):
            spec = resolve(continuation["defaults"], point, f"continuation.families.{name}")
            run_seeds = point.get("seeds", default_seeds)
            add(spec.control(), CONTROL_LABEL, run_seeds)
            if spec.penalty.strength != 0:
                add(spec, name, run_seeds)
    if ensembles:
        for method, point in ensemble_points(ensembles, default_seeds).items():
            spec = resolve(continuation["defaults"], point, f"ensembles, method {method}")
            add(spec, None, member_seeds=point["seeds"])
    return runs


AUTO_PACK = 8  # members a pack may have with `pack: auto` (benchmarks/pack_speed.py measures the gain)


def pack_size(setting) -> int:
    """The most members a pack may have, for the config's `pack` (auto, off or false, or N)."""
    return {"auto": AUTO_PACK, "off": 1, False: 1}.get(setting, setting)


def packs(runs: dict[str, dict], max_members: int) -> dict[str, dict]:
    """pack name -> {"runs": its members' run ids, "seed": the seed they train}.

    Runs that train the same seed with the same training part (lr, schedule, epochs, ...) start from
    one checkpoint with one data order and differ only in the penalty: they can train together
    (repel.pack). Each such group is split by a stable hash of each run's id, so that a new point
    never moves the others: the group is one pack if it has at most `max_members` runs, else it
    splits in two by the next bit of the hash, and so on (`hash_split`). Adding a run changes only
    the pack it falls into (which splits in two if it now holds too many); removing one changes only
    its pack, and its sibling if the two then fit in one. Only packs of two or more are made; SWA's
    runs train alone (their running average is not batched).
    """
    groups: dict[tuple[str, int], list[str]] = {}
    for rid in sorted(runs):
        spec = runs[rid]["spec"]
        if spec.training.schedule == "swa":
            continue
        for seed in training_seeds(runs[rid]):
            groups.setdefault((spec.training_part(), seed), []).append(rid)
    out = {}
    for (training, seed), members in groups.items():
        for prefix, part in hash_split(members, max_members).items():
            if len(part) > 1:
                out[f"{training}_seed{seed}" + (f"_h{prefix}" if prefix else "")] = {"runs": part, "seed": seed}
    return out


def hash_split(rids: list[str], max_members: int, prefix: str = "") -> dict[str, list[str]]:
    """Split run ids into parts of at most `max_members`: bit string -> the ids whose hash starts with
    it, halving by the hash's next bit only where a part is too large. Which part a run is in depends
    only on its own id and on the ids that share its part, never on the rest of the group."""
    if len(rids) <= max_members or len(prefix) == HASH_BITS:
        return {prefix: sorted(rids)} if rids else {}
    halves = {bit: [r for r in rids if _hash_bits(r)[len(prefix)] == bit] for bit in "01"}
    return {key: part for bit in "01" for key, part in hash_split(halves[bit], max_members, prefix + bit).items()}


HASH_BITS = 256  # sha256: two run ids share every bit only if they are equal


def _hash_bits(rid: str) -> str:
    """The run id's sha256 as a string of bits: the same on every machine and Python (unlike hash())."""
    return format(int.from_bytes(hashlib.sha256(rid.encode()).digest(), "big"), f"0{HASH_BITS}b")


def training_seeds(run: dict) -> list[int]:
    """Every seed a run is trained for: its own and its ensemble members'."""
    return sorted(set(run["seeds"]) | set(run["member_seeds"]))
