"""A bad config stops before any job, with a message that names the key and its value; and the
config's keys are the same in the schema, in config/README.md and on the command line."""

import copy
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from workflow_run import ROOT, TINY, snakemake

from repel import config_check, data, grid

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def refused(workdir: Path, change) -> str:
    """Snakemake's output for TINY changed by `change`, which must stop before any job."""
    config = copy.deepcopy(TINY)
    change(config)
    result = snakemake(workdir, config, "--cores", "1")
    assert result.returncode != 0
    assert not (workdir / "results").exists()
    return result.stdout + result.stderr


def families(**blocks):
    """A change of TINY: these families instead of its own."""
    return lambda config: config["continuation"].update(families=blocks)


def validated(config: dict) -> dict:
    config = copy.deepcopy(config)
    validate(config, str(SCHEMA))  # fills in the schema's defaults, as the workflow does
    return config


# the schema's own checks name the exact key path of the bad value


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c["continuation"]["families"]["width"].update(fixed={"kernel": "gauss"}),
            "On instance['continuation']['families']['width']['fixed']['kernel']:\n    'gauss'",
        ),
        (
            lambda c: c["continuation"]["families"]["width"]["sweep"].update(width=[-1]),
            "On instance['continuation']['families']['width']['sweep']['width'][0]:\n    -1",
        ),
        (
            lambda c: c["continuation"]["families"]["width"]["sweep"].update(colour=[1]),
            "('colour' was unexpected)\n\nFailed validating 'additionalProperties'",
        ),
        (
            lambda c: c["continuation"]["defaults"].pop("strength"),
            "config: continuation.families.width, point {width: 1.0}: a grid point has no strength",
        ),
        (lambda c: c.pop("datasets"), "'datasets' is a required property"),
        (lambda c: c["base"].update(epoch=3), "On instance['base']:\n    {'epoch': 3,"),
    ],
    ids=["kernel", "width", "sweep_key", "no_strength", "datasets", "base_key"],
)
def test_a_bad_value_or_key_is_named_by_its_path(tmp_path, change, message):
    assert message in refused(tmp_path, change)


# 1. patterns: Python's `$` matches before a final newline; `\Z` does not


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(device="cpu\n"), "On instance['device']:\n    'cpu\\n'"),
        (
            lambda c: c.update(resources={"gpu": 1, "gpu_model": "a100\n"}),
            "On instance['resources']['gpu_model']:\n    'a100\\n'",
        ),
        (
            lambda c: c["continuation"]["families"].update({"nl\n": {"sweep": {"width": [2.0]}}}),
            "On instance['continuation']['families']:\n    'nl\\n'",
        ),
    ],
    ids=["device", "gpu_model", "family"],
)
def test_a_value_with_a_trailing_newline_is_refused(tmp_path, change, message):
    assert message in refused(tmp_path, change)


def test_every_schema_pattern_ends_at_the_very_end_of_the_string():
    def patterns(node):
        if isinstance(node, dict):
            yield from ([node["pattern"]] if isinstance(node.get("pattern"), str) else [])
            yield from (p for value in node.values() for p in patterns(value))
        elif isinstance(node, list):
            yield from (p for value in node for p in patterns(value))

    found = list(patterns(yaml.safe_load(SCHEMA.read_text())))
    assert len(found) >= 4 and all(p.endswith(r"\Z") for p in found), found


# 2. values the schema lets through that would make broken or no-op runs


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c["continuation"]["families"]["width"]["sweep"].update(lr=[0.1, math.nan]),
            "config: continuation.families.width.sweep.lr[1] is nan: every number must be finite",
        ),
        (
            lambda c: c["continuation"]["defaults"].update(strength=math.inf),
            "config: continuation.defaults.strength is inf: every number must be finite",
        ),
    ],
    ids=["nan", "inf"],
)
def test_a_number_that_is_not_finite_is_refused(tmp_path, change, message):
    assert message in refused(tmp_path, change)


def test_minus_infinity_is_refused_by_the_schema_or_the_check():
    config = validated(TINY)
    config["split"]["seed"] = -math.inf  # not through validate: its own minimums stop -inf
    with pytest.raises(ValueError, match=r"^split\.seed is -inf: every number must be finite$"):
        config_check.check(config, yaml.safe_load(SCHEMA.read_text()))


GRID_CASES = {
    "checkpoint_every": (
        families(multiple={"fixed": {"checkpoint_every": 2}, "sweep": {"merge": [False]}}),
        "config: continuation.families.multiple, point {checkpoint_every: 2, merge: false}: "
        "checkpoint_every 2 >= epochs 2 (from continuation.defaults): the new checkpoint would come after the last "
        "epoch",
    ),
    "release_after": (
        families(release={"sweep": {"release_after": [2]}}),
        "config: continuation.families.release, point {release_after: 2}: release_after 2 >= epochs 2 (from "
        "continuation.defaults): the penalty would be released after the last epoch",
    ),
    "step_size": (
        families(step={"sweep": {"schedule": ["step"]}}),
        "config: continuation.families.step, point {schedule: step}: step_size 30 (the default) >= epochs 2 "
        "(from continuation.defaults): the step schedule would never lower the lr",
    ),
    "t0": (
        families(sgdr={"sweep": {"schedule": ["cosine_restarts"], "epochs": [20, 5]}, "fixed": {"t0": 5}}),
        "config: continuation.families.sgdr, point {t0: 5, epochs: 5, schedule: cosine_restarts}: t0 5 >= epochs 5: "
        "cosine_restarts would never complete a cycle",
    ),
    "eta_min": (
        families(cos={"sweep": {"schedule": ["cosine"], "eta_min": [0.001, 0.01]}}),
        "config: continuation.families.cos, point {eta_min: 0.01, schedule: cosine}: eta_min 0.01 >= lr 0.01 "
        "(from continuation.defaults): the cosine schedule would never lower the lr",
    ),
    "ensemble": (
        lambda c: (
            c["continuation"]["defaults"].update(eta_min=0.05),
            c.update(ensembles={"members": 2, "cycle": 1, "strength": 10, "seeds": [0, 1]}),
        ),
        "ensembles, method sgdr: eta_min 0.05 (from continuation.defaults) >= lr 0.01 (from continuation.defaults): "
        "the cosine_restarts schedule would never lower the lr",
    ),
    "ensemble_from_init": (
        lambda c: (
            c["continuation"]["defaults"].update(start="init"),
            c.update(ensembles={"members": 2, "cycle": 1, "strength": 10, "seeds": [0, 1]}),
        ),
        "ensembles, method distance: start is init (from continuation.defaults): the ensemble methods start from "
        "the base checkpoint",
    ),
    "fge_divides": (  # a budget of 3 x 2 = 6 epochs, cycles of 4
        lambda c: (
            c["continuation"]["defaults"].update(epochs=8),
            c.update(
                ensembles={
                    "members": 3,
                    "cycle": 2,
                    "strength": 10,
                    "seeds": [0, 1],
                    "fge": {"cycle": 4, "lr_low": 0.001},
                }
            ),
        ),
        "config: ensembles.fge.cycle 4 does not divide the budget members x cycle = 6 epochs: FGE would end mid-cycle",
    ),
    "fge_members": (
        lambda c: c.update(
            ensembles={"members": 2, "cycle": 1, "strength": 10, "seeds": [0, 1], "fge": {"cycle": 2, "lr_low": 0.001}}
        ),
        "ensembles, method fge: ensembles.fge.cycle 2 >= the budget 2: cyclic would never complete a cycle",
    ),
    "fge_lr": (
        lambda c: c.update(
            ensembles={"members": 2, "cycle": 1, "strength": 10, "seeds": [0, 1], "fge": {"cycle": 1, "lr_low": 0.5}}
        ),
        "ensembles, method fge: ensembles.fge.lr_low 0.5 >= lr 0.01 (from continuation.defaults): the cyclic schedule "
        "would never lower the lr",
    ),
    "swa_lr": (
        families(swa={"sweep": {"schedule": ["swa"]}}),
        "config: continuation.families.swa, point {schedule: swa}: eta_min 0.0 (the default): swa's lr is eta_min, "
        "and at lr 0 the weights never move",
    ),
}


def check_error(change) -> str:
    """The error of TINY changed by `change`, as the workflow checks a config before any job (the
    schema, config_check, the grid), in this process; the workflow's own path is tested above."""
    given = copy.deepcopy(TINY)
    change(given)
    config = validated(given)
    with pytest.raises(ValueError) as error:
        config_check.check(config, yaml.safe_load(SCHEMA.read_text()), given)
        grid.expand(config["continuation"], config["seeds"], config.get("ensembles"))
    return str(error.value)


ENSEMBLES = {"members": 2, "cycle": 1, "strength": 10, "seeds": [0, 1]}
PROBES = {  # bad configs that once got past every check (issue 19's probe), each named by its key
    "base_epochs_float": (
        lambda c: c["base"].update(epochs=2.0),
        "base.epochs is 2.0: expected an integer (write 2, without the point)",
    ),
    "defaults_epochs_float": (
        lambda c: c["continuation"]["defaults"].update(epochs=3.0),
        "continuation.defaults.epochs is 3.0: expected an integer",
    ),
    "swept_float": (
        families(m={"sweep": {"checkpoint_every": [1.0]}}),
        "continuation.families.m.sweep.checkpoint_every[0] is 1.0: expected an integer",
    ),
    "pack_float": (lambda c: c.update(pack=2.0), "pack is 2.0: expected an integer"),
    "members_float": (
        lambda c: c.update(ensembles={**ENSEMBLES, "members": 4.0}),
        "ensembles.members is 4.0: expected an integer",
    ),
    "seed_float": (lambda c: c.update(seeds=[0.0]), "seeds[0] is 0.0: expected an integer"),
    "width_and_gamma": (
        families(w={"fixed": {"width": 2.0}, "sweep": {"gamma": [0.1]}}),
        "continuation.families.w, point {width: 2.0, gamma: 0.1}: sets both width 2.0 and gamma 0.1",
    ),
    "both_swept": (families(w={"sweep": {"width": [1.0], "gamma": [0.1]}}), "sets both width 1.0 and gamma 0.1"),
    "merge_alone": (
        families(m={"sweep": {"merge": [False, True]}}),
        "continuation.families.m, point {merge: true}: merge is true but checkpoint_every is 0",
    ),
    "swa_lr": (
        lambda c: c.update(ensembles={**ENSEMBLES, "lr": 0.01, "swa": {"lr": 0.05}}),
        "ensembles.swa.lr 0.05 > ensembles.lr 0.01: SWALR anneals down",
    ),
    "early_epochs": (
        lambda c: c.update(claims={"early_epochs": 3}),
        "claims.early_epochs 3 > the longest run's 2 epochs",
    ),
}


@pytest.mark.parametrize("case", PROBES)
def test_a_probe_that_got_through_is_refused_with_its_key(case):
    change, message = PROBES[case]
    assert message in check_error(change)


def test_an_integral_float_stops_the_workflow_before_any_job(tmp_path):
    assert "config: base.epochs is 2.0: expected an integer" in refused(
        tmp_path, lambda c: c["base"].update(epochs=2.0)
    )


def test_a_key_given_twice_in_a_users_config_stops_the_workflow(tmp_path):
    path = tmp_path / "given.yaml"
    path.write_text(yaml.safe_dump(TINY) + "base:\n  epochs: 3\n")  # `base` a second time
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "-d",
            str(tmp_path),
            "--configfile",
            str(path),
            "-n",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{path}, line" in output and "the key 'base' is given twice (first on line" in output


@pytest.mark.parametrize("case", GRID_CASES)
def test_a_grid_point_whose_setting_changes_nothing_is_refused(tmp_path, case):
    change, message = GRID_CASES[case]
    assert message in refused(tmp_path, change)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c.update(split={"test_fraction": 0.999}),
            "config: split.val_fraction 0.1, split.test_fraction 0.999: digits would have 2 training, 0 validation and "
            "1795 test images; every split needs at least one image",
        ),
        (
            lambda c: c.update(datasets=["mnist"], split={"val_fraction": 5e-6}),
            "config: split.val_fraction 5e-06: mnist would have 60000 training, 0 validation and 10000 test images",
        ),
    ],
    ids=["digits_test_fraction", "mnist_val_fraction"],
)
def test_a_split_without_images_is_refused(tmp_path, change, message):
    assert message in refused(tmp_path, change)


def test_the_split_sizes_the_check_computes_are_those_prepare_makes(digits):
    sizes = config_check.split_sizes("digits", val_fraction=0.1, test_fraction=0.2)
    assert sizes == {
        "training": len(digits["train_y"]),
        "validation": len(digits["val_y"]),
        "test": len(digits["test_y"]),
    }


def test_prepare_refuses_an_empty_split():
    with pytest.raises(
        ValueError,
        match=r"^digits would be split into 2 training, 0 validation and 1795 test images "
        r"\(val_fraction 0\.1, test_fraction 0\.999\); every split needs",
    ):
        data.prepare("digits", "unused", val_fraction=0.1, test_fraction=0.999, seed=0)


@pytest.mark.parametrize("name", ["config.yaml", "reduced.yaml", "study.yaml"])
def test_the_shipped_configs_pass_the_check(name):
    config_check.check(
        validated(yaml.safe_load((ROOT / "config" / name).read_text())), yaml.safe_load(SCHEMA.read_text())
    )


# 3. a YAML syntax error names the file and the line

BROKEN_YAML = "datasets: [digits]\nmodels: cnn: x\n"  # line 2: a colon inside a plain value


def test_a_yaml_error_in_the_embedded_default_names_the_file_and_line(tmp_path):
    shutil.copy(ROOT / "Snakefile", tmp_path)  # the workflow as it is, with a broken default config
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow")
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(BROKEN_YAML)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "-d", str(tmp_path), "-n"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert 'in "config/config.yaml", line 2, column 12' in result.stdout + result.stderr


def test_a_yaml_error_in_a_configfile_is_located_by_verbose(tmp_path):
    # snakemake 9 reads --configfile before the workflow and words the error itself, without the
    # file or line; with --verbose it shows the parser's message (config/README.md says so)
    path = tmp_path / "bad.yaml"
    path.write_text(BROKEN_YAML)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(tmp_path),
        "--configfile",
        str(path),
        "-n",
        "--verbose",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert f'in "{path}", line 2, column 12' in result.stdout + result.stderr


# 4. one set of keys: the schema, config/README.md's key tables, the command line

# config/README.md section (its heading up to a colon) -> the schema blocks its key tables document
# ("" is the top level; "family" and "training" are the schema's $defs)
README_SECTIONS = {
    "Top level": [""],
    "`speed`": ["speed"],
    "`resources`": ["resources"],
    "`landscape`, `ensembles`": ["", "ensembles"],
    "`claims`": ["claims"],
    "`split`": ["split"],
    "`base`": ["base"],
    "`continuation`": ["continuation", "family", "training"],
}


def schema_blocks() -> dict[str, set[str]]:
    """block -> its keys: the top level, every block of it that has keys, and the $defs a grid uses."""
    schema = yaml.safe_load(SCHEMA.read_text())
    top = schema["properties"]
    blocks = {"": set(top)}
    blocks.update({name: set(prop["properties"]) for name, prop in top.items() if "properties" in prop})
    blocks.update({name: set(schema["$defs"][name]["properties"]) for name in ("family", "training")})
    return blocks


def readme_keys() -> dict[str, list[str]]:
    """section -> the backticked words in the first column of its key tables ("| key | ...")."""
    keys, section, in_table = {}, None, False
    for line in (ROOT / "config/README.md").read_text().splitlines():
        if line.startswith("## "):
            section, in_table = line[3:].split(":")[0], False
        elif line.startswith("| key |"):
            in_table = True
            keys.setdefault(section, [])
        elif in_table and line.startswith("|") and not line.startswith("|---"):
            keys[section] += re.findall(r"`([^`]+)`", line.split("|")[1])
        elif not line.startswith("|"):
            in_table = False
    return keys


def test_every_schema_key_is_in_a_config_readme_table_and_every_table_key_is_in_the_schema():
    blocks, documented = schema_blocks(), readme_keys()
    assert set(documented) == set(README_SECTIONS), "a section of key tables that the test does not map, or lost"
    for section, words in documented.items():
        names = set().union(*(blocks[b] for b in README_SECTIONS[section]))
        for word in words:  # `key`, or `block.key`
            block, _, key = word.rpartition(".")
            known = blocks.get(block, set()) if block else names
            assert key in known, f"config/README.md, {section}: `{word}` is not in the schema"
    for block, block_keys in blocks.items():
        words = [w for s, ws in documented.items() if block in README_SECTIONS[s] for w in ws]
        for key in block_keys:
            where = f"{block}.{key}" if block else key
            assert key in words or where in words, f"schema key `{where}` is not in config/README.md's key tables"


@pytest.mark.parametrize(
    "path",
    [SCHEMA, *sorted((ROOT / "config").glob("*.yaml")), *sorted((ROOT / "profiles").rglob("*.yaml"))],
    ids=lambda p: p.name,
)
def test_no_yaml_file_gives_a_key_twice(path):
    assert config_check.repeated_keys(path) is None


def test_a_key_given_twice_is_found_with_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pack:\n  description: a\n  default: auto\n  description: b\n")
    assert config_check.repeated_keys(path) == (
        f"{path}, line 4: the key 'description' is given twice (first on line 2); the last would silently win, "
        "give each key once"
    )


@pytest.mark.parametrize("strength", [[10, 10], [10, -1], [], 0, "10"])
def test_a_bad_ensembles_strength_is_refused_by_its_path(strength):
    config = copy.deepcopy(TINY)
    config["ensembles"] = {**ENSEMBLES, "strength": strength}
    with pytest.raises(Exception, match=r"On instance\['ensembles'\]\['strength'\]"):
        validated(config)
    config["ensembles"]["strength"] = [3, 10]  # a list of distinct positive strengths is fine
    assert validated(config)["ensembles"]["strength"] == [3, 10]
