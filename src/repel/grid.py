"""The continuation grid: config families -> runs with stable, readable ids.

A family is one question of the study (strength, width, kernel, ...): a block of the config whose
`sweep` lists expand, in every combination, into grid points over the family's `fixed` settings
and the continuation defaults. A run id names every parameter that makes the run what it is, e.g.
`s1-rbf-w0.5_lr0.01-const-e30`: penalty part, then training part. Its control (the same training
with s = 0) is `s0_lr0.01-const-e30`; every grid point gets one, so the control is always run.
Points that two families share (the default s and sigma, say) are one run.
"""

from __future__ import annotations

import itertools

PENALTY_KEYS = ("strength", "kernel", "width", "gamma", "distance", "checkpoint_every", "merge")
TRAINING_KEYS = ("lr", "schedule", "epochs", "step_size", "step_gamma", "t0", "t_mult", "eta_min")
CONTROL_LABEL = "control"
ENSEMBLE_METHODS = {  # method -> how it gets its members, all at the same epoch budget
    "distance": "distance snapshots",    # a new hill every cycle; the model before each is a member
    "sgdr": "SGDR snapshots",            # cosine with warm restarts every cycle, no penalty
    "sgdr_distance": "SGDR + distance",  # both
    "independent": "independent seeds",  # one run per seed, no penalty: the deep-ensemble reference
    "fge": "fast geometric ensembles",   # short triangular lr cycles, a member at each one's lowest lr
    "swa": "SWA",                        # SWALR's constant lr; its members every cycle, its weights averaged every epoch
}
# schedule settings a config may leave out (units: epochs, except the factors)
SCHEDULE_DEFAULTS = {"step_size": 30, "step_gamma": 0.1, "t0": 10, "t_mult": 1, "eta_min": 0.0}
PENALTY_DEFAULTS = {"checkpoint_every": 0, "merge": False}  # one checkpoint, one hill


def _num(x) -> str:
    """Shortest readable form: 0.01, 1e6, 1e-5 (no '+' or padded exponents in file names)."""
    mantissa, _, exponent = format(x, "g").partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def penalty_part(p: dict) -> str:
    if p["strength"] == 0:
        return "s0"
    if p["kernel"] == "none":
        return f"s{_num(p['strength'])}-none"
    scale = f"w{_num(p['width'])}" if p.get("width") is not None else f"g{_num(p['gamma'])}"
    parts = [f"s{_num(p['strength'])}", p["kernel"], scale]
    if p["distance"] == "mean":
        parts.append("mean")
    if p["checkpoint_every"]:
        parts.append(f"every{p['checkpoint_every']}" + ("-merged" if p["merge"] else ""))
    return "-".join(parts)


def training_part(p: dict) -> str:
    schedule = {
        "constant": "const",
        "step": f"step{p['step_size']}x{_num(p['step_gamma'])}",
        "cosine": "cos" + (f"min{_num(p['eta_min'])}" if p["eta_min"] else ""),
        "cosine_restarts": f"sgdr{p['t0']}x{p['t_mult']}" + (f"min{_num(p['eta_min'])}" if p["eta_min"] else ""),
        "cyclic": f"cyc{p['t0']}min{_num(p['eta_min'])}",
        "swa": f"swa{_num(p['eta_min'])}",
    }[p["schedule"]]
    return f"lr{_num(p['lr'])}-{schedule}-e{p['epochs']}"


def run_id(p: dict) -> str:
    return f"{penalty_part(p)}_{training_part(p)}"


def control_id(rid: str) -> str:
    """The control's id for a run id: the same training part with s = 0."""
    return "s0_" + rid.split("_", 1)[1]


def control_of(p: dict) -> dict:
    """The same training without the penalty (kernel 'none', so no width enters the id)."""
    return {**p, "strength": 0, "kernel": "none", "width": None, "gamma": None, "distance": "sum", **PENALTY_DEFAULTS}


def resolve_variant(defaults: dict, variant: dict) -> dict:
    """Defaults overridden by the variant; a variant's gamma replaces the default width and vice versa."""
    merged = {**SCHEDULE_DEFAULTS, **PENALTY_DEFAULTS, **defaults, **variant}
    if "gamma" in variant and "width" not in variant:
        merged["width"] = None
    if "width" in variant and "gamma" not in variant:
        merged["gamma"] = None
    params = {k: merged.get(k) for k in PENALTY_KEYS + TRAINING_KEYS}
    params["merge"] = params["merge"] and params["checkpoint_every"] > 0  # one checkpoint: nothing to merge
    if params["strength"] == 0:
        params = control_of(params)
    return params


def family_points(family: dict) -> list[dict]:
    """A family block -> its grid points (unresolved): each of its `points` (or one empty point)
    with every combination of the `sweep` lists, over the family's `fixed` settings."""
    sweep = family.get("sweep", {})
    combos = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]
    return [{**family.get("fixed", {}), **point, **combo} for point in family.get("points", [{}]) for combo in combos]


def resolve_point(defaults: dict, point: dict, family: str) -> dict:
    """A family's point over the defaults; the schema cannot see that a strength comes from neither."""
    if "strength" not in point and "strength" not in defaults:
        raise ValueError(f"continuation.families.{family}: a grid point has no strength; give one in the "
                         "family's fixed, sweep or points, or in continuation.defaults")
    return resolve_variant(defaults, point)


def families(continuation: dict) -> dict[str, dict]:
    """family -> {"runs": its run ids and their controls, "varying": the keys its points set
    (for legends), "figure", "panels", "x": the first swept key (the x axis of a 'final' figure)}."""
    out = {}
    for name, family in continuation["families"].items():
        runs = []
        for point in family_points(family):
            params = resolve_point(continuation["defaults"], point, name)
            for rid in (control_id(run_id(params)), run_id(params)):
                if rid not in runs:
                    runs.append(rid)
        keys = [*family.get("sweep", {}), *(k for p in family.get("points", []) for k in p)]
        varying = [k for k in dict.fromkeys(keys) if k != "seeds"]
        out[name] = {"runs": runs, "varying": varying, "figure": family.get("figure", "curves"),
                     "panels": family.get("panels", ["val_acc", "dist"]), "x": (varying or [None])[0]}
    return out


def ensemble_variants(ens: dict, seeds: list[int]) -> dict[str, dict]:
    """method -> the grid variant whose run gives its members; each trains members x cycle epochs.
    The snapshot methods run on every seed of the study (`seeds`), one ensemble each; the
    independent seeds on `ensembles.seeds`. FGE and SWA run where the block has their settings."""
    cycle = ens["cycle"]
    common = {"epochs": ens["members"] * cycle, **{k: ens[k] for k in ("lr",) if k in ens}}
    hill = {"strength": ens["strength"], "checkpoint_every": cycle,
            **{k: ens[k] for k in ("kernel", "width", "gamma") if k in ens}}
    sgdr = {"schedule": "cosine_restarts", "t0": cycle, "t_mult": 1}
    variants = {
        "distance": {**common, **hill, "schedule": "constant", "seeds": seeds},
        "sgdr": {**common, **sgdr, "strength": 0, "seeds": seeds},
        "sgdr_distance": {**common, **sgdr, **hill, "seeds": seeds},
        "independent": {**common, "schedule": "constant", "strength": 0, "seeds": ens["seeds"]},
    }
    if "fge" in ens:  # the peak lr is every method's; the low one FGE's own
        variants["fge"] = {**common, "schedule": "cyclic", "t0": ens["fge"]["cycle"], "eta_min": ens["fge"]["lr_low"],
                           "strength": 0, "seeds": seeds}
    if "swa" in ens:
        variants["swa"] = {**common, "schedule": "swa", "eta_min": ens["swa"]["lr"], "strength": 0, "seeds": seeds}
    return variants


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
    return [list(seeds[i:i + members]) for i in range(0, len(seeds) - members + 1, members)]


def ensemble_plan(ens: dict, defaults: dict, seeds: list[int]) -> dict[str, dict[str, dict]]:
    """method -> ensemble name -> {"run": run id, "seeds": its members' seeds, "epochs": the epochs
    after the checkpoint at which a snapshot is a member, or None where each seed's final weights
    are the members}. A snapshot method has one ensemble per seed ("seed0", ...), from that seed's
    own run; the independent seeds one per group ("seeds0-1-2-3")."""
    plan = {}
    for method, variant in ensemble_variants(ens, seeds).items():
        run = run_id(resolve_variant(defaults, variant))
        if method == "independent":  # each seed's run's end is a member
            plan[method] = {"seeds" + "-".join(map(str, group)): {"run": run, "seeds": group, "epochs": None}
                            for group in independent_groups(variant["seeds"], ens["members"])}
        else:  # a member every cycle of one seed's run
            epochs = member_epochs(ens, method)
            plan[method] = {f"seed{seed}": {"run": run, "seeds": [seed], "epochs": epochs} for seed in variant["seeds"]}
    return plan


def expand(continuation: dict, seeds: list[int], ensembles: dict | None = None) -> dict[str, dict]:
    """run id -> {"params", "seeds", "member_seeds", "labels", "control"} for every family's grid
    points and their controls, and for the runs the ensemble methods take their members from.

    `seeds` are the seeds a run is compared over (its families'); `member_seeds` those it is
    trained for as an ensemble's members: they are reported under the ensemble, never as extra
    seeds of a control. A run's labels are the families it belongs to ("control" for s = 0);
    a run that only gives ensemble members has none and no seeds.
    """
    runs: dict[str, dict] = {}

    def add(params: dict, label: str | None, run_seeds=(), member_seeds=()) -> None:
        rid = run_id(params)
        run = runs.setdefault(rid, {"params": params, "seeds": [], "member_seeds": [], "labels": [],
                                    "control": control_id(rid)})
        run["seeds"] = sorted(set(run["seeds"]) | set(run_seeds))
        run["member_seeds"] = sorted(set(run["member_seeds"]) | set(member_seeds))
        if label is not None and label not in run["labels"]:
            run["labels"].append(label)

    default_seeds = continuation["defaults"].get("seeds", seeds)
    for name, family in continuation["families"].items():
        for point in family_points(family):
            params = resolve_point(continuation["defaults"], point, name)
            run_seeds = point.get("seeds", default_seeds)
            add(control_of(params), CONTROL_LABEL, run_seeds)
            if params["strength"] != 0:
                add(params, name, run_seeds)
    if ensembles:
        for variant in ensemble_variants(ensembles, default_seeds).values():
            add(resolve_variant(continuation["defaults"], variant), None, member_seeds=variant["seeds"])
    return runs


AUTO_PACK = 8  # members a pack may have with `pack: auto` (benchmarks/pack_speed.py measures the gain)


def pack_size(setting) -> int:
    """The most members a pack may have, for the config's `pack` (auto, off or false, or N)."""
    return {"auto": AUTO_PACK, "off": 1, False: 1}.get(setting, setting)


def packs(runs: dict[str, dict], max_members: int) -> dict[str, dict]:
    """pack name -> {"runs": its members' run ids, "seed": the seed they train}.

    Runs that train the same seed with the same training part (lr, schedule, epochs, ...) start from
    one checkpoint with one data order and differ only in the penalty: they can train together
    (repel.pack). Each such group is cut, in run-id order, into the fewest packs of at most
    `max_members`, as even as possible. Only packs of two or more are made; SWA's runs train alone
    (their running average is not batched).
    """
    groups: dict[tuple[str, int], list[str]] = {}
    for rid in sorted(runs):
        if runs[rid]["params"]["schedule"] == "swa":
            continue
        for seed in training_seeds(runs[rid]):
            groups.setdefault((training_part(runs[rid]["params"]), seed), []).append(rid)
    out = {}
    for (training, seed), members in groups.items():
        n = -(-len(members) // max_members)  # the fewest packs
        for k in range(n):
            part = members[k * len(members) // n:(k + 1) * len(members) // n]
            if len(part) > 1:
                out[f"{training}_seed{seed}" + (f"_{k + 1}of{n}" if n > 1 else "")] = {"runs": part, "seed": seed}
    return out


def training_seeds(run: dict) -> list[int]:
    """Every seed a run is trained for: its own and its ensemble members'."""
    return sorted(set(run["seeds"]) | set(run["member_seeds"]))


def cli_args(params: dict, keys=PENALTY_KEYS + TRAINING_KEYS) -> str:
    """The run's parameters as `python -m repel continue` flags (values are schema-checked numbers/enums);
    `keys=TRAINING_KEYS` gives the flags that a pack's members share (`continue-pack`)."""
    flags = []
    for key in keys:
        value, flag = params[key], f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            flags += [flag] if value else []
        elif value is not None:
            flags.append(f"{flag} {value}")
    return " ".join(flags)
