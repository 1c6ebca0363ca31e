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

import yaml

from . import grid

# name -> (training images, official test images); digits has no test split of its own. Kept here,
# not in data.py, so that checking a config imports no torch (every snakemake call checks it).
SIZES = {
    "digits": (1797, 0),
    "mnist": (60000, 10000),
    "fashion_mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
}


# name -> image shape (C, H, W): an OOD set from another dataset must have its dataset's
SHAPES = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
}


def check(config: dict, schema: dict, given: dict | None = None) -> None:
    """Raise ValueError with one line per problem of a config validated against `schema` (which
    filled in its defaults; `given`: the config as the user wrote it, before that)."""
    # each later check reads numbers that the earlier ones vouch for (finite, integers where integers belong)
    problems = non_finite(config) or integral_floats(config, schema)
    if not problems:
        problems = grid_problems(config) + split_problems(config) + claims_problems(given or config)
        problems += ood_problems(config)
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
            where = f"continuation.families.{name}, point {describe(point)}"
            params = grid.resolve(defaults, point, where).values()
            problems += [f"{where}: {problem}" for problem in point_problems(params, point, defaults)]
    if ens := config.get("ensembles"):
        for method, point in grid.ensemble_points(ens, config["seeds"]).items():
            where = f"ensembles, method {method}"
            params = grid.resolve(defaults, point, where).values()
            if params["start"] == "init":  # their members are numbered and compared after the base's checkpoint
                problems.append(
                    f"{where}: start is init (from continuation.defaults): the ensemble methods start from the base "
                    "checkpoint; set start: init in a family's fixed instead"
                )
            problems += [
                f"{where}: {problem}"
                for problem in point_problems(params, point, defaults, ENSEMBLE_NAMES.get(method, {}))
            ]
        problems += fge_problems(ens) + ensemble_lr_problems(ens, defaults)
    return list(dict.fromkeys(problems))


# the ensemble block's own names for the grid keys its methods set
ENSEMBLE_NAMES = {
    "fge": {"eta_min": "ensembles.fge.lr_low", "t0": "ensembles.fge.cycle", "epochs": "the budget"},
    "swa": {"eta_min": "ensembles.swa.lr"},
}


def point_problems(params: dict, point: dict, defaults: dict, names: dict | None = None) -> list[str]:
    """One resolved grid point's settings that would change nothing in its training (`names`:
    what the config calls a key, where it is not the key itself)."""

    def show(key):  # "step_size 30 (the default)"
        if names and key in names:
            return f"{names[key]} {params[key]}"
        return f"{key} {params[key]}{source(key, point, defaults)}"

    epochs, schedule = params["epochs"], params["schedule"]
    problems = []
    if params["checkpoint_every"] and params["checkpoint_every"] >= epochs:
        problems.append(
            f"{show('checkpoint_every')} >= {show('epochs')}: the new checkpoint would come after the "
            "last epoch, so this is the same training as without it, under another run id"
        )
    if params["release_after"] is not None and params["release_after"] >= epochs:
        problems.append(
            f"{show('release_after')} >= {show('epochs')}: the penalty would be released after the last "
            "epoch, so this is the same training as without release, under another run id"
        )
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


def ensemble_lr_problems(ens: dict, defaults: dict) -> list[str]:
    """SWALR anneals down to its lr: one above the ensembles' lr would anneal up."""
    lr = ens.get("lr", defaults.get("lr"))
    if "swa" in ens and ens["swa"]["lr"] > lr:
        return [
            f"ensembles.swa.lr {ens['swa']['lr']} > ensembles.lr {lr}: SWALR anneals down from the ensembles' "
            "lr to the SWA lr; give one at most ensembles.lr"
        ]
    return []


def claims_problems(config: dict) -> list[str]:
    """A claims.early_epochs given in the config must fit in some run, else every 'early' claim has
    nothing to read (the default is the claims' own, and they clip it to the runs)."""
    early, defaults = config.get("claims", {}).get("early_epochs"), config["continuation"]["defaults"]
    if early is None:
        return []
    epochs = [
        grid.resolve(defaults, point, name).training.epochs
        for name, family in config["continuation"]["families"].items()
        for point in grid.family_points(family)
    ]
    if epochs and early > max(epochs):
        return [
            f"claims.early_epochs {early} > the longest run's {max(epochs)} epochs: 'early' would be longer "
            "than every run"
        ]
    return []


def integral_floats(value, schema: dict, path: str = "", root: dict | None = None) -> list[str]:
    """Every float where the schema wants an integer, by its key path. JSON Schema counts 2.0 as
    an integer, but YAML reads it as a float, which then names another run (`every2.0`) or fails
    inside a job."""
    root = root or schema
    while "$ref" in schema:  # "#/$defs/a/b"
        node = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    if schema.get("type") == "integer" and isinstance(value, float):
        return [f"{path} is {value}: expected an integer (write {int(value)}, without the point)"]
    found = []
    for sub in schema.get("allOf", []) + schema.get("anyOf", []):
        found += integral_floats(value, sub, path, root)
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                found += integral_floats(item, sub, f"{path}.{key}" if path else str(key), root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += integral_floats(item, schema["items"], f"{path}[{i}]", root)
    return list(dict.fromkeys(found))


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        first = {}  # key -> the line it was first given on
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (first on line {first[key] + 1})", key_node.start_mark
                )
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def repeated_keys(path) -> str | None:
    """Where a YAML file gives a key twice in one mapping (file, line and the keys), or None."""
    try:
        with open(path) as f:
            yaml.load(f, Loader=UniqueKeyLoader)
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        return f"{path}, line {mark.line + 1}: {err.problem}; the last would silently win, give each key once"
    except (yaml.YAMLError, OSError):
        return None  # not ours to report: snakemake's own reading of the file says what is wrong
    return None


def source(key: str, point: dict, defaults: dict) -> str:
    """Where a grid point's value comes from, when the point does not set it itself."""
    if key in point:
        return ""
    return " (from continuation.defaults)" if key in defaults else " (the default)"


def describe(point: dict) -> str:
    """A grid point as the keys its family sets: `{schedule: step, strength: 10}`."""
    keys = [
        f"{key}: {str(value).lower() if isinstance(value, bool) else value}"
        for key, value in point.items()
        if key != "seeds"
    ]
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
            problems.append(
                f"{keys}: {dataset} would have {sizes['training']} training, {sizes['validation']} "
                f"validation and {sizes['test']} test images; every split needs at least one image"
            )
    return problems


def ood_problems(config: dict) -> list[str]:
    """ensembles.ood: each dataset one the config runs, each OOD set from another dataset of its
    image shape (the synthetic sets fit any)."""
    problems = []
    for dataset, sets in ((config.get("ensembles") or {}).get("ood") or {}).items():
        where = f"ensembles.ood.{dataset}"
        if dataset not in config["datasets"]:
            problems.append(
                f"{where}: '{dataset}' is not among the datasets {config['datasets']}: its OOD sets would never run"
            )
        for name in sets:
            if name not in SHAPES:
                continue  # a synthetic set
            if name == dataset or SHAPES[name] != SHAPES[dataset]:
                fits = [n for n, shape in SHAPES.items() if shape == SHAPES[dataset] and n != dataset]
                problems.append(
                    f"{where}: '{name}' has images of shape {SHAPES[name]}, {dataset} {SHAPES[dataset]}"
                    + (" (it is the dataset itself)" if name == dataset else "")
                    + f"; an OOD set from another dataset must be one of {fits or 'none'} or synthetic"
                )
    return problems
