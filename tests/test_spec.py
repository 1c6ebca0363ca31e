"""The run specification is the one declaration of a grid key: the schema's grid-point block and
config/README.md's key table agree with it, a run is checked and normalised as declared, and no
code recovers a parameter from a run id."""

import json
import re
from pathlib import Path

import pytest
import yaml

from repel import spec

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
JSON_TYPES = {float: "number", int: "integer", bool: "boolean"}


def _resolved(node: dict) -> dict:
    """A schema node with its $ref followed, without its description."""
    while "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return {k: v for k, v in node.items() if k != "description"}


def _declared(name: str) -> dict:
    """What the schema should say of a key, read from its declaration."""
    meta, kind = spec.FIELDS[name].metadata, spec._base(name)
    node = {"enum": list(meta["choices"])} if meta["choices"] else {"type": JSON_TYPES[kind]}
    if meta["minimum"] is not None:
        node["minimum"] = meta["minimum"]
    if meta["positive"]:
        node["exclusiveMinimum"] = 0
    return node


def test_the_schemas_grid_point_block_is_the_declaration():
    training = SCHEMA["$defs"]["training"]["properties"]
    assert set(training) == {*spec.KEYS, "seeds"}
    for name in spec.KEYS:
        assert _resolved(training[name]) == _declared(name), name
    sweep = SCHEMA["$defs"]["family"]["properties"]["sweep"]["properties"]
    assert set(sweep) == set(spec.KEYS)
    for name in spec.KEYS:  # a swept key: a non-empty list of what the key takes
        assert _resolved(sweep[name]) == {
            "type": "array",
            "minItems": 1,
            "items": {"$ref": f"#/$defs/training/properties/{name}"},
        }, name


def _readme_defaults() -> dict[str, str]:
    """key -> its default cell in config/README.md's table of grid keys."""
    text = (ROOT / "config/README.md").read_text()
    table = text.split("check); `tests/test_spec.py` checks this table")[1].split("\n\n")[1]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    return {re.fullmatch(r"\s*`(\w+)`\s*", key).group(1): default.strip() for key, default in rows}


def _shown(name: str) -> str:
    default = spec.FIELDS[name].default
    if name in spec.REQUIRED_KEYS:
        return "required"
    if default is None:
        return "none"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{format(default, 'g') if isinstance(default, float) else default}`"


def test_config_readme_lists_every_grid_key_with_its_declared_default():
    documented = _readme_defaults()
    assert set(documented) == {*spec.KEYS, "seeds"}
    assert {name: documented[name] for name in spec.KEYS} == {name: _shown(name) for name in spec.KEYS}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"strength": 1, "width": 1, "epochs": 2.0}, r"^p\.epochs is 2\.0: expected an integer$"),
        ({"strength": 1, "width": 1, "epochs": 3, "checkpoint_every": 1.0}, r"checkpoint_every is 1\.0: expected an"),
        ({"strength": 1, "width": 1, "epochs": 3, "merge": 1}, r"merge is 1: expected a bool"),
        ({"strength": 1, "width": 1, "epochs": 3, "release_after": 0}, r"^p\.release_after is 0: expected >= 1$"),
        ({"strength": -1, "width": 1, "epochs": 3}, r"strength is -1: expected >= 0"),
        ({"strength": 1, "width": 0, "epochs": 3}, r"width is 0: expected > 0"),
        ({"strength": 1, "kernel": "gauss", "width": 1, "epochs": 3}, r"kernel is 'gauss': expected one of rbf"),
        ({"strength": 1, "epochs": 3}, r"p: kernel rbf needs exactly one of width \(sigma\) or gamma"),
        ({"strength": 1, "width": 1, "gamma": 1, "epochs": 3}, r"p: kernel rbf needs exactly one of width"),
        ({"strength": 1, "width": 1, "epochs": 3, "merge": True}, r"p: merge is true but checkpoint_every is 0"),
        ({"width": 1, "epochs": 3}, r"^p: no strength; give one$"),
        ({"strength": 1, "width": 1, "epochs": 3, "colour": 1}, r"^p: unknown key colour"),
    ],
)
def test_a_bad_run_is_refused_with_its_key(values, message):
    with pytest.raises(ValueError, match=message):
        spec.Run.of(values, "p")


def test_a_control_and_an_unused_schedule_setting_are_normalised_away():
    control = spec.Run.of(
        {"strength": 0, "kernel": "imq", "gamma": 0.1, "checkpoint_every": 2, "merge": True, "epochs": 5, "t0": 3}
    )
    # s = 0 has no hill: none of its settings; a constant schedule has no cycles: t0 is its default
    assert control == spec.Run.of({"strength": 0, "epochs": 5})
    assert control.penalty.kernel == "none" and control.training.t0 == 10
    assert control.id == "s0_lr0.01-const-e5"
    run = spec.Run.of({"strength": 10, "width": 1, "epochs": 5, "schedule": "cosine_restarts", "t0": 2})
    assert run.training.t0 == 2 and run.control().training.t0 == 2
    assert run.control().id == "s0_lr0.01-sgdr2x1-e5"
    # 10 and 10.0 are one run, in one column type
    assert spec.Run.of({"strength": 10, "width": 1, "epochs": 5}).columns()["strength"] == 10.0
    assert isinstance(spec.Run.of({"strength": 10, "width": 1, "epochs": 5}).columns()["strength"], float)


def test_the_single_hill_twin_and_the_columns_come_from_the_spec():
    run = spec.Run.of({"strength": 3, "gamma": 0.01, "epochs": 9, "checkpoint_every": 3, "merge": True, "lr": 0.1})
    assert run.id == "s3-rbf-g0.01-every3-merged_lr0.1-const-e9"
    assert run.single_hill().id == "s3-rbf-g0.01_lr0.1-const-e9"
    released = spec.Run.of({"strength": 3, "gamma": 0.01, "epochs": 9, "release_after": 4})
    assert released.id == "s3-rbf-g0.01-release4_lr0.01-const-e9"
    assert released.control().id == "s0_lr0.01-const-e9"  # the control has nothing to release
    columns = run.columns()
    assert columns["run"] == run.id and columns["control"] == "s0_lr0.1-const-e9"
    assert columns["lr_init"] == 0.1 and "lr" not in columns  # `lr` is each epoch's own
    # a quiet key (start) at its default is no column: the tables of runs made before it stay as they were
    assert set(columns) == {"run", "control", *spec.GRID_COLUMNS} - {"start"}
    assert spec.Run.from_json(run.to_json()) == run


def test_a_run_from_initialization_is_another_run_and_the_default_start_changes_no_run():
    values = {"strength": 3, "gamma": 0.01, "epochs": 9}
    run, init = spec.Run.of(values), spec.Run.of({**values, "start": "init"})
    assert spec.Run.of({**values, "start": "checkpoint"}) == run
    # the id, the job's spec and the columns of a default run are those of a run made before `start` existed
    assert run.id == "s3-rbf-g0.01_lr0.01-const-e9" and "start" not in json.loads(run.to_json())
    assert "start" not in run.columns()
    assert init.id == "s3-rbf-g0.01_init-lr0.01-const-e9"
    assert init.control().id == "s0_init-lr0.01-const-e9"  # its control starts where it starts
    assert init.training_part() != run.training_part()  # another checkpoint: never one pack
    assert json.loads(init.to_json())["start"] == "init" and init.columns()["start"] == "init"
    assert spec.Run.from_json(init.to_json()) == init
    assert spec.label("start", "init") == "from initialization"


def test_labels_read_as_the_legends_do():
    assert spec.label("strength", 10.0) == "s=10"
    assert spec.label("gamma", 0.001) == "γ=0.001"
    assert spec.label("checkpoint_every", 0.0) == "one checkpoint"
    assert spec.label("checkpoint_every", 5.0) == "new checkpoint every 5 ep"
    assert spec.label("merge", True) == "merged into their mean"
    assert spec.label("lr", 0.1) == "lr=0.1"
    assert spec.label("release_after", 5.0) == "released after 5 ep"
    assert spec.label("release_after", float("nan")) == "never released"  # a table's None


# a run id is written, never read back: no splitting, matching or prefix tests on one to get a setting
RUN_ID_PARSING = re.compile(
    r"""(run|rid|\bid)\w*(\[[^]]*\])?\.(split|rsplit|partition|startswith|endswith)\("""
    r"""|\.split\(["']_["']|re\.(match|search|fullmatch)\([^)]*run"""
)


def test_no_code_recovers_a_setting_from_a_run_id():
    found = []
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "workflow").rglob("*.smk"), ROOT / "Snakefile"]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if RUN_ID_PARSING.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_the_run_id_parsing_pattern_finds_what_it_should():
    assert RUN_ID_PARSING.search('return "s0_" + rid.split("_", 1)[1]')
    assert RUN_ID_PARSING.search("f\"{key} ({run.name.split('_', 1)[1]})\"")
    assert not RUN_ID_PARSING.search('name.split(":")[0]')
