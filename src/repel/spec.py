"""A run, declared once: every grid key with its default, unit, label and check.

A continuation run is its penalty (what pushes it away from the checkpoint) and its training (how
it moves). Each key is one field below, with its default, its meaning and unit, how its value reads
in a legend, and what values it takes. Everything else reads these declarations: the grid's
expansion (grid.py), the run id (written, never parsed back), a job's command line (the spec as
JSON), the columns of metrics.parquet and the summary, TensorBoard's HParams and the figures'
labels. The config schema's grid-point block and config/README.md's key table are checked against
them by tests/test_spec.py. Nothing here imports torch: every snakemake call reads it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

KERNELS = ("rbf", "laplacian", "imq", "hinge", "none")
DISTANCES = ("sum", "mean")
SCHEDULES = ("constant", "step", "cosine", "cosine_restarts", "cyclic", "swa")
STARTS = ("checkpoint", "init")
REQUIRED = None  # the default of a key the config must give (REQUIRED_KEYS)
REQUIRED_KEYS = ("strength", "epochs")


def key(
    default,
    doc: str,
    label: str,
    *,
    choices=(),
    minimum=None,
    positive=False,
    column=None,
    used_by=(),
    named=None,
    quiet=False,
):
    """One grid key: its default, meaning (with its unit), legend label ('{}' is the value; `named`:
    the label of particular values), the values it takes, its metrics column where the name differs,
    and the schedules it acts in (schedule settings only: elsewhere it is reset to its default, so it
    changes no run). `quiet`: a key added after runs were made; at its default it is left out of a
    job's spec and its table's columns, so those runs keep their commands (nothing re-runs) and
    their tables (aggregate reads a missing value as the default)."""
    meta = dict(
        quiet=quiet,
        doc=doc,
        label=label,
        choices=choices,
        minimum=minimum,
        positive=positive,
        column=column,
        used_by=used_by,
        named=named or {},
    )
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Penalty:
    """What pushes the run: s * sum_c k(d(theta, theta_c)) over its checkpoints (penalty.py)."""

    strength: float = key(REQUIRED, "s, the hill's height; 0 is the control", "s={:g}", minimum=0)
    kernel: str = key("rbf", "the hill's shape (penalty.py lists the formulas)", "{}", choices=KERNELS)
    width: float | None = key(
        None, "sigma of exp(-d / (2 sigma^2)), the source text's formula (give width or gamma)", "σ={:g}", positive=True
    )
    gamma: float | None = key(
        None, "gamma of exp(-gamma d), the source's figures (give width or gamma)", "γ={:g}", positive=True
    )
    distance: str = key("sum", "d summed over the parameters, or their mean", "{} distance", choices=DISTANCES)
    checkpoint_every: int = key(
        0,
        "epochs between new checkpoints, each another hill (0: only the first)",
        "new checkpoint every {} ep",
        minimum=0,
        named={0: "one checkpoint"},
    )
    merge: bool = key(
        False,
        "one hill at the mean of the checkpoints instead of one each",
        "merged: {}",
        named={True: "merged into their mean", False: "one hill each"},
    )
    release_after: int | None = key(
        None,
        "epochs after the checkpoint the penalty acts for; then it is off and SGD goes on alone (none: never)",
        "released after {} ep",
        minimum=1,
        named={None: "never released"},
    )


@dataclass(frozen=True)
class Training:
    """How the run moves: SGD (the base's momentum, weight decay and batch) at this lr schedule."""

    start: str = key(
        "checkpoint",
        "the weights the run starts from, its θ_c: the base checkpoint, or the seed's initial weights (the "
        "base's epoch 0, trained from scratch)",
        "from {}",
        choices=STARTS,
        named={"checkpoint": "from the checkpoint", "init": "from initialization"},
        quiet=True,
    )
    lr: float = key(0.01, "learning rate (the peak, for cyclic schedules)", "lr={:g}", positive=True, column="lr_init")
    schedule: str = key("constant", "lr schedule, stepped every batch (train.make_scheduler)", "{}", choices=SCHEDULES)
    epochs: int = key(REQUIRED, "epochs after the checkpoint", "{} ep", minimum=1)
    step_size: int = key(30, "epochs between decays (step)", "step every {} ep", minimum=1, used_by=("step",))
    step_gamma: float = key(0.1, "decay factor (step)", "×{:g} per step", positive=True, used_by=("step",))
    t0: int = key(
        10,
        "epochs of the first cycle (cosine_restarts, cyclic)",
        "t0={}",
        minimum=1,
        used_by=("cosine_restarts", "cyclic"),
    )
    t_mult: int = key(
        1, "cycle length multiplier (cosine_restarts)", "t_mult={}", minimum=1, used_by=("cosine_restarts",)
    )
    eta_min: float = key(
        0.0,
        "lowest lr (cosine schedules); swa: its constant lr",
        "lr_min={:g}",
        minimum=0,
        used_by=("cosine", "cosine_restarts", "cyclic", "swa"),
    )


PARTS = {"penalty": Penalty, "training": Training}
FIELDS = {f.name: f for part in PARTS.values() for f in dataclasses.fields(part)}
PENALTY_KEYS = tuple(f.name for f in dataclasses.fields(Penalty))
TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(Training))
KEYS = PENALTY_KEYS + TRAINING_KEYS
DEFAULTS = {name: f.default for name, f in FIELDS.items()}
QUIET = tuple(name for name, f in FIELDS.items() if f.metadata["quiet"])
TYPES = {name: hint for part in PARTS.values() for name, hint in typing.get_type_hints(part).items()}


def column(name: str) -> str:
    """A key's column in metrics.parquet (lr's is lr_init: `lr` is each epoch's own)."""
    return FIELDS[name].metadata["column"] or name


def label(name: str, value) -> str:
    """How a value of a key reads in a legend: 's=10', 'σ=0.5', 'cosine_restarts'."""
    meta, base = FIELDS[name].metadata, _base(name)
    if value is None or value != value:  # None, or a table's NaN for it
        value = None
    elif base in (int, bool):  # a table's 5.0 or numpy bool is the key's 5 or True
        value = base(value)
    return meta["named"].get(value, meta["label"].format(value))


def _num(x) -> str:
    """Shortest readable form: 0.01, 1e6, 1e-5 (no '+' or padded exponents in file names)."""
    mantissa, _, exponent = format(x, "g").partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def _base(name: str) -> type:
    """A key's type, without its None."""
    return next(t for t in typing.get_args(TYPES[name]) or (TYPES[name],) if t is not type(None))


def check_value(name: str, value, where: str) -> None:
    """Raise ValueError, naming `where.name`, unless `value` is what the key takes."""
    meta, base = FIELDS[name].metadata, _base(name)
    if value is None and type(None) in typing.get_args(TYPES[name]):
        return
    path = f"{where}.{name}" if where else name
    # YAML's 2.0 is a float; an integer key takes only integers (2.0 would name another run)
    accepted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[base]
    ok = isinstance(value, accepted) and (base is bool or not isinstance(value, bool))  # True is an int too
    if not ok:
        raise ValueError(f"{path} is {value!r}: expected {'an integer' if base is int else f'a {base.__name__}'}")
    if meta["choices"] and value not in meta["choices"]:
        raise ValueError(f"{path} is {value!r}: expected one of {', '.join(meta['choices'])}")
    if meta["minimum"] is not None and not value >= meta["minimum"]:
        raise ValueError(f"{path} is {value}: expected >= {meta['minimum']}")
    if meta["positive"] and not value > 0:
        raise ValueError(f"{path} is {value}: expected > 0")


@dataclass(frozen=True)
class Run:
    """One continuation run: its penalty and its training. Built by `Run.of`, which checks it."""

    penalty: Penalty
    training: Training

    @classmethod
    def of(cls, values: dict, where: str = "") -> Run:
        """A checked run from a flat dict of keys (missing ones take their defaults), normalised:
        a control (s = 0) has no penalty settings, a schedule setting its schedule does not use
        is its default, so settings that change nothing never make another run."""
        if unknown := sorted(set(values) - set(KEYS)):
            raise ValueError(f"{where or 'run'}: unknown key {', '.join(unknown)}; expected {', '.join(KEYS)}")
        for name in REQUIRED_KEYS:
            if values.get(name) is None:
                raise ValueError(f"{where or 'run'}: no {name}; give one")
        for name, value in values.items():
            check_value(name, value, where)
        # a float key keeps a float, whichever way YAML or JSON wrote it (10 and 10.0 are one run)
        values = {n: float(x) if x is not None and _base(n) is float else x for n, x in values.items()}
        v = {**{n: f.default for n, f in FIELDS.items()}, **values}
        if v["strength"] == 0:  # the control: no hill, so none of the hill's settings
            v.update({n: FIELDS[n].default for n in PENALTY_KEYS if n != "strength"}, kernel="none")
        elif v["kernel"] != "none" and (v["width"] is None) == (v["gamma"] is None):
            raise ValueError(
                f"{where or 'run'}: kernel {v['kernel']} needs exactly one of width (sigma) or gamma, "
                f"got width {v['width']}, gamma {v['gamma']}"
            )
        if v["merge"] and not v["checkpoint_every"]:
            raise ValueError(
                f"{where or 'run'}: merge is true but checkpoint_every is 0: one checkpoint has "
                "nothing to merge with; set checkpoint_every"
            )
        for name in TRAINING_KEYS:
            if FIELDS[name].metadata["used_by"] and v["schedule"] not in FIELDS[name].metadata["used_by"]:
                v[name] = FIELDS[name].default
        return cls(Penalty(**{n: v[n] for n in PENALTY_KEYS}), Training(**{n: v[n] for n in TRAINING_KEYS}))

    @classmethod
    def from_json(cls, text: str, where: str = "--spec") -> Run:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not JSON ({err})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{where}: expected a JSON object of the run's keys, got {type(values).__name__}")
        return cls.of(values, where)

    def values(self) -> dict:
        """Every key's value, flat."""
        return {**dataclasses.asdict(self.penalty), **dataclasses.asdict(self.training)}

    def given(self) -> dict:
        """Every key's value but a quiet key's default (`key`): what a job is given and writes."""
        return {n: v for n, v in self.values().items() if not (n in QUIET and v == FIELDS[n].default)}

    def to_json(self) -> str:
        return json.dumps(self.given(), sort_keys=True)

    def control(self) -> Run:
        """The same training without the penalty."""
        return Run.of({**dataclasses.asdict(self.training), "strength": 0})

    def single_hill(self) -> Run:
        """The same run with one checkpoint only (what a run with several hills is compared with)."""
        return Run(dataclasses.replace(self.penalty, checkpoint_every=0, merge=False), self.training)

    @property
    def id(self) -> str:
        """The run's directory name, which names every setting that makes it what it is:
        `s1-rbf-w0.5_lr0.01-const-e30` (penalty part _ training part). Written, never parsed."""
        return f"{self.penalty_part()}_{self.training_part()}"

    def penalty_part(self) -> str:
        p = self.penalty
        if p.strength == 0:
            return "s0"
        if p.kernel == "none":
            return f"s{_num(p.strength)}-none"
        scale = f"w{_num(p.width)}" if p.width is not None else f"g{_num(p.gamma)}"
        parts = [f"s{_num(p.strength)}", p.kernel, scale] + (["mean"] if p.distance == "mean" else [])
        if p.checkpoint_every:
            parts.append(f"every{p.checkpoint_every}" + ("-merged" if p.merge else ""))
        if p.release_after is not None:
            parts.append(f"release{p.release_after}")
        return "-".join(parts)

    def training_part(self) -> str:
        """What runs that may train together (a pack) share: everything but the penalty."""
        t = self.training
        low = f"min{_num(t.eta_min)}" if t.eta_min else ""
        schedule = {
            "constant": "const",
            "step": f"step{t.step_size}x{_num(t.step_gamma)}",
            "cosine": f"cos{low}",
            "cosine_restarts": f"sgdr{t.t0}x{t.t_mult}{low}",
            "cyclic": f"cyc{t.t0}min{_num(t.eta_min)}",
            "swa": f"swa{_num(t.eta_min)}",
        }[t.schedule]
        # from the initial weights: another start, so another pack; the default adds nothing to the id
        return ("init-" if t.start == "init" else "") + f"lr{_num(t.lr)}-{schedule}-e{t.epochs}"

    def columns(self) -> dict:
        """The run's columns in metrics.parquet (and TensorBoard's HParams): its id, its control's
        id, and every key under its column name (a quiet key only where it is not its default)."""
        return {
            "run": self.id,
            "control": self.control().id,
            **{column(name): value for name, value in self.given().items()},
        }


GRID_COLUMNS = [column(name) for name in KEYS]  # every run's grid settings, as metrics.parquet names them
