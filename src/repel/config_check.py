"""What the config schema cannot check, checked before any job runs.

The workflow calls `check` right after validating the config against its schema (which has then
filled in the schema's defaults). It stops on numbers that are not finite, on grid points whose
settings do nothing (a new checkpoint, an lr decay or a restart that would come after the last
epoch; a cosine that cannot lower the lr), and on splits that would leave a split without images.
Each message names the key, by its path in the config or by the family and the grid point, and
its value.
"""

from __future__ import annotations

import math

from . import grid

# name -> (training images, official test images); digits has no test split of its own. Kept here,
# not in data.py, so that checking a config imports no torch (every snakemake call checks it).
SIZES = {"digits": (1797, 0), "mnist": (60000, 10000), "fashion_mnist": (60000, 10000),
         "cifar10": (50000, 10000), "cifar100": (50000, 10000)}


def check(config: dict) -> None:
    """Raise ValueError with one line per problem of a schema-validated config."""
    problems = non_finite(config)
    if not problems:  # the other checks compare numbers, which NaN would make meaningless
        problems = grid_problems(config) + split_problems(config)
    if problems:
        raise ValueError("\n".join(problems))


def non_finite(value, path: str = "") -> list[str]:
    """Every NaN or infinite number in the config, by its key path (`a.b[0]`)."""
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in non_finite(item, f"{path}.{key}" if path else str(key))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in non_finite(item, f"{path}[{i}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path} is {value}: every number must be finite"]
    return []


def grid_problems(config: dict) -> list[str]:
    """Settings that do nothing, for every grid point of every family and every ensemble run,
    resolved as grid.py resolves them."""
    defaults = config["continuation"]["defaults"]
    problems = []
    for name, family in config["continuation"]["families"].items():
        for point in grid.family_points(family):
            params = grid.resolve_point(defaults, point, name)
            where = f"continuation.families.{name}, point {describe(point)}"
            problems += [f"{where}: {problem}" for problem in point_problems(params, point, defaults)]
    if config.get("ensembles"):
        for method, variant in grid.ensemble_variants(config["ensembles"], config["seeds"]).items():
            params = grid.resolve_variant(defaults, variant)
            where = f"ensembles, method {method}"
            problems += [f"{where}: {problem}" for problem in point_problems(params, variant, defaults)]
        problems += fge_problems(config["ensembles"])
    return list(dict.fromkeys(problems))


def point_problems(params: dict, point: dict, defaults: dict) -> list[str]:
    """One resolved grid point's settings that would change nothing in its training."""

    def show(key):  # "step_size 30 (the default)"
        return f"{key} {params[key]}{source(key, point, defaults)}"

    epochs, schedule = params["epochs"], params["schedule"]
    problems = []
    if params["checkpoint_every"] and params["checkpoint_every"] >= epochs:
        problems.append(f"{show('checkpoint_every')} >= {show('epochs')}: the new checkpoint would come after the "
                        "last epoch, so this is the same training as without it, under another run id")
    if schedule == "step" and params["step_size"] >= epochs:
        problems.append(f"{show('step_size')} >= {show('epochs')}: the step schedule would never lower the lr")
    if schedule in ("cosine_restarts", "cyclic") and params["t0"] >= epochs:
        problems.append(f"{show('t0')} >= {show('epochs')}: {schedule} would never complete a cycle")
    if schedule in ("cosine", "cosine_restarts", "cyclic") and params["eta_min"] >= params["lr"]:
        problems.append(f"{show('eta_min')} >= {show('lr')}: the {schedule} schedule would never lower the lr")
    if schedule == "swa" and params["eta_min"] == 0:
        problems.append(f"{show('eta_min')}: swa's lr is eta_min, and at lr 0 the weights never move")
    return problems


def fge_problems(ens: dict) -> list[str]:
    """FGE's cycles must tile the budget that every method gets, and give at least two members."""
    if "fge" not in ens:
        return []
    cycle, budget = ens["fge"]["cycle"], ens["members"] * ens["cycle"]
    where = f"ensembles.fge.cycle {cycle}"
    if budget % cycle:
        return [f"{where} does not divide the budget members x cycle = {budget} epochs: FGE would end mid-cycle"]
    if budget // cycle < 2:
        return [f"{where} gives {budget // cycle} member in the budget of {budget} epochs: an ensemble needs two"]
    return []


def source(key: str, point: dict, defaults: dict) -> str:
    """Where a grid point's value comes from, when the point does not set it itself."""
    if key in point:
        return ""
    return " (from continuation.defaults)" if key in defaults else " (the default)"


def describe(point: dict) -> str:
    """A grid point as the keys its family sets: `{schedule: step, strength: 10}`."""
    keys = [f"{key}: {str(value).lower() if isinstance(value, bool) else value}"
            for key, value in point.items() if key != "seeds"]
    return "{" + ", ".join(keys) + "}"


def split_sizes(dataset: str, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Images in each split of a dataset, counted as data.prepare splits it."""
    train, test = SIZES[dataset]
    if not test:  # no official test split: it comes out of the training images
        test = round(test_fraction * train)
        train -= test
    val = round(val_fraction * train)
    return {"training": train - val, "validation": val, "test": test}


def split_problems(config: dict) -> list[str]:
    """Datasets that the configured split fractions would leave with an empty split."""
    split = config["split"]
    problems = []
    for dataset in config["datasets"]:
        sizes = split_sizes(dataset, split["val_fraction"], split["test_fraction"])
        if min(sizes.values()) < 1:
            keys = f"split.val_fraction {split['val_fraction']}"
            if not SIZES[dataset][1]:  # test_fraction counts only without an official test split
                keys += f", split.test_fraction {split['test_fraction']}"
            problems.append(f"{keys}: {dataset} would have {sizes['training']} training, {sizes['validation']} "
                            f"validation and {sizes['test']} test images; every split needs at least one image")
    return problems
