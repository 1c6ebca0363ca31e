# Helpers for the workflow: config validation, the run grid, input and params functions.
import copy
import json
import os
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The workflow imports the package from this checkout, and its jobs run it from here too
# (installed or not, and inside conda environments).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(SRC)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")
from repel import config_check, grid  # noqa: E402

for path in workflow.configfiles:  # PyYAML keeps the last of a key given twice, silently
    if problem := config_check.repeated_keys(path):
        raise WorkflowError(f"config: {problem}")
SCHEMA_FILE = Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"
GIVEN = copy.deepcopy(config)  # before the schema fills in its defaults
validate(config, schema=str(SCHEMA_FILE))
ENSEMBLES = config.get("ensembles")
try:  # what the schema cannot check: NaN, integral floats, settings that never act, empty splits, ...
    config_check.check(config, yaml.safe_load(SCHEMA_FILE.read_text()), GIVEN)
    RUNS = grid.expand(config["continuation"], config["seeds"], ENSEMBLES)
    FAMILIES = grid.families(config["continuation"])
except ValueError as error:
    raise WorkflowError(f"config: {error}") from None
DEFAULTS = config["continuation"]["defaults"]
# method -> ensemble name (one per seed, or per group of independent seeds) -> its run and members
ENSEMBLE_PLAN = grid.ensemble_plan(ENSEMBLES, DEFAULTS, DEFAULTS.get("seeds", config["seeds"])) if ENSEMBLES else {}
# named in the report's captions, relative to the work directory where they lie in it: a rule's
# params re-run it when they change, and an absolute path would change whenever the checkout moves
CONFIG_FILES = ", ".join(
    os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    for path in workflow.configfiles
)
ENSEMBLE_FIGURES = ["ensemble_accuracy", "ensemble_disagreement", "diversity_vs_distance", "weight_averages"]
# the seeds every comparison is made over; seeds that only ensemble members use are not among them
SEEDS = sorted({s for run in RUNS.values() for s in run["seeds"]})
# runs whose snapshots are ensemble members -> the member epochs after the checkpoint. Their training
# jobs declare the snapshot files, one rule per set of epochs (FGE's cycles are shorter); SWA's
# declare its averaged model too.
MEMBER_EPOCHS = {e["run"]: e["epochs"] for method in ENSEMBLE_PLAN.values() for e in method.values() if e["epochs"]}
FGE_RUNS = sorted(run for run in MEMBER_EPOCHS if RUNS[run]["spec"].training.schedule == "cyclic")
SWA_RUNS = sorted(run for run in MEMBER_EPOCHS if RUNS[run]["spec"].training.schedule == "swa")
SNAPSHOT_RUNS = sorted(set(MEMBER_EPOCHS) - set(FGE_RUNS) - set(SWA_RUNS))
PLAIN_RUNS = sorted(set(RUNS) - set(MEMBER_EPOCHS))
# runs that train the same seed the same way, differing only in the penalty, train together:
# pack name -> {"runs", "seed"} (config key `pack`; a run in no pack trains alone)
PACKS = grid.packs(RUNS, grid.pack_size(config["pack"]))
RESULTS = config["results"]


def res(path):
    """A path under this config's results root (config key `results`)."""
    return f"{RESULTS}/{path}"


# How jobs run, not what they compute (device, checkpointing, speed, TensorBoard): environment
# variables this file sets, which every job's shell inherits (on a cluster too, where the job's own
# snakemake reads this file again). Neither params nor input, so changing one re-runs nothing, and
# no rule's shell command reads a global. The schema constrains each value to plain characters
# (device, results, the speed enums), so they split into words without quoting. bf16 and compile
# change rounding only. YAML reads a bare on/off as true/false; they are written back as on/off.
# TensorBoard events are a side channel, never a declared output: the job puts its own run under
# the root, as <dataset>/<model>/<run>/seed<k>.
RUN_OPTIONS = [
    f"--device {config['device']} --save-every {config['save_every']}",
    *(
        f"--{key.replace('_', '-')} {({True: 'on', False: 'off'}.get(value, value))}"
        for key, value in config["speed"].items()
    ),
    *([f"--tensorboard {res('tensorboard')}"] if config["tensorboard"] else []),
]
# REPEL_DEVICE: for the jobs that run a network without training it
os.environ.update(REPEL_DEVICE=config["device"], REPEL_RUN_OPTIONS=" ".join(RUN_OPTIONS))


envvars:
    "REPEL_DEVICE",
    "REPEL_RUN_OPTIONS",


def start_checkpoint(dataset, model, seed, run):
    """The checkpoint a run starts from, its θ_c: the base's, or with `start: init` the seed's initial
    weights (rule init_base). Wildcards may be given as "{dataset}", ... for a rule's own."""
    name = "init/checkpoint.pt" if RUNS[run]["spec"].training.start == "init" else "checkpoint.pt"
    return res(f"base/{dataset}/{model}/seed{seed}/{name}")


def get_start_checkpoint(wildcards):
    return start_checkpoint(wildcards.dataset, wildcards.model, wildcards.seed, wildcards.run)


def control_weights(dataset, model, seed, run):
    """The final weights of a run's control (the same training and seed, s = 0; a control's own)."""
    return res(f"continue/{dataset}/{model}/{RUNS[run]['spec'].control().id}/seed{seed}/final.pt")


def get_control_weights(wildcards):
    return control_weights(wildcards.dataset, wildcards.model, wildcards.seed, wildcards.run)


def get_pack_controls(runs, seed):
    """For a landscape pack's `--controls`: each run's control's weights, in the runs' order (an input
    list may drop repeats, so they go as a parameter and the files as input)."""

    def controls(wildcards):
        return " ".join(control_weights(wildcards.dataset, wildcards.model, seed, run) for run in runs)

    return controls


def get_optimizer_args():
    """The base's SGD settings, shared by base training and its continuations."""
    b = config["base"]
    return f"--momentum {b['momentum']} --weight-decay {b['weight_decay']} --batch-size {b['batch_size']}"


def get_base_args():
    b = config["base"]
    return f"--epochs {b['epochs']} --lr {b['lr']} {get_optimizer_args()}"


def get_run_spec(wildcards):
    """The run's spec as JSON, for `repel continue --spec` (a params: changing it re-runs the run)."""
    return RUNS[wildcards.run]["spec"].to_json()


def get_gres():
    """A training job's GPU request in SLURM's gres syntax ("gpu:1", "gpu:a100:1"), "" for none.

    A string, not the plugin's integer `gpu`: Snakemake does not add strings up, so training jobs
    grouped into one SLURM job (profiles/slurm, group-components) share its one GPU.
    """
    r = config["resources"]
    return f"gpu:{r['gpu_model'] + ':' if r['gpu_model'] else ''}{r['gpu']}" if r["gpu"] else ""


def get_run_pattern(runs):
    """A wildcard constraint that matches exactly these run ids (nothing, for none)."""
    return "|".join(map(re.escape, runs)) or "$^"


def get_member_snapshots(seed_dir, epochs):
    """A run's snapshot files (in its seed's directory) at these member epochs after the checkpoint."""
    return [f"{seed_dir}/{grid.SNAPSHOT.format(epoch=config['base']['epochs'] + epoch)}" for epoch in epochs]


def get_snapshots(runs):
    """The member files that a training job of these runs writes (they share their member epochs)."""
    epochs = {tuple(MEMBER_EPOCHS[run]) for run in runs}
    return get_member_snapshots(res("continue/{dataset}/{model}/{run}/seed{seed}"), epochs.pop() if epochs else ())


def snapshot_every(run):
    """Epochs between a run's snapshots: its first member's epoch (0: it keeps none)."""
    return MEMBER_EPOCHS[run][0] if run in MEMBER_EPOCHS else 0


def get_snapshot_every(wildcards):
    return snapshot_every(wildcards.run)


def get_pack_outputs(pack):
    """Every file a pack's job writes: each member's metrics and weights, and its snapshots."""
    outputs = []
    for run in pack["runs"]:
        seed_dir = res(f"continue/{{dataset}}/{{model}}/{run}/seed{pack['seed']}")
        outputs += [f"{seed_dir}/metrics.parquet", f"{seed_dir}/final.pt"]
        outputs += get_member_snapshots(seed_dir, MEMBER_EPOCHS.get(run, ()))
    return outputs


def get_pack_members(pack):
    """The pack's members for `repel continue-pack --members`: JSON, one object per run."""

    def members(wildcards):
        return json.dumps(
            [
                {
                    "out_dir": res(f"continue/{wildcards.dataset}/{wildcards.model}/{run}/seed{pack['seed']}"),
                    "snapshot_every": snapshot_every(run),
                    "spec": RUNS[run]["spec"].given(),  # as --spec: a quiet key's default left out
                }
                for run in pack["runs"]
            ],
            sort_keys=True,
        )

    return members


def get_run_dir(wildcards, run):
    return res(f"continue/{wildcards.dataset}/{wildcards.model}/{run}")


def get_ensemble_inputs(wildcards):
    """Every member's weights, oldest first (snapshots of one run, or each seed's final weights for
    independent seeds), and the base checkpoint each member started from, one per member."""
    plan = ENSEMBLE_PLAN[wildcards.method][wildcards.ensemble]
    run_dir = get_run_dir(wildcards, plan["run"])
    base = res(f"base/{wildcards.dataset}/{wildcards.model}")
    if plan["epochs"] is None:
        members = [(seed, f"{run_dir}/seed{seed}/final.pt") for seed in plan["seeds"]]
    else:
        members = [
            (seed, path)
            for seed in plan["seeds"]
            for path in get_member_snapshots(f"{run_dir}/seed{seed}", plan["epochs"])
        ]
    inputs = {
        "members": [path for _, path in members],
        "checkpoints": [f"{base}/seed{seed}/checkpoint.pt" for seed, _ in members],
        "swa": [f"{run_dir}/seed{seed}/swa.pt" for seed in plan["seeds"]] if plan["run"] in SWA_RUNS else [],
    }
    if ROBUSTNESS:  # the corrupted test splits and OOD sets the members predict on too
        inputs["shift"] = res(f"shift/{wildcards.dataset}.pt")
    return inputs


def get_predictions():
    return [
        res(f"ensembles/{dataset}/{model}/{method}/{ensemble}/predictions.npz")
        for dataset in config["datasets"]
        for model in config["models"]
        for method, ensembles in ENSEMBLE_PLAN.items()
        for ensemble in ensembles
    ]


def get_member_landscapes():
    return [path.replace("predictions.npz", "member_landscape.parquet") for path in get_predictions()]


def get_landscapes():
    return [path.replace("metrics.parquet", "landscape.parquet") for path in get_run_metrics()]


def get_base_metrics():
    return expand(
        res("base/{dataset}/{model}/seed{seed}/metrics.parquet"),
        dataset=config["datasets"],
        model=config["models"],
        seed=SEEDS,
    )


def get_run_metrics():
    return [
        res(f"continue/{dataset}/{model}/{rid}/seed{seed}/metrics.parquet")
        for dataset in config["datasets"]
        for model in config["models"]
        for rid, run in RUNS.items()
        for seed in run["seeds"]
    ]


def get_labels():
    """run id -> label (its families, or "control") as JSON, for plots and tables."""
    return json.dumps({rid: " / ".join(run["labels"]) for rid, run in RUNS.items()})


def get_claims_inputs(wildcards):
    """The tables the claims are computed from: the metrics, the landscape's and the ensembles' when
    the config has them."""
    inputs = {"metrics": res("aggregate/metrics.parquet")}
    if config["landscape"]:
        inputs["landscape"] = res("aggregate/landscape.parquet")
    if ENSEMBLES:
        inputs.update(ensembles=res("aggregate/ensembles.parquet"), pairs=res("aggregate/ensemble_pairs.parquet"))
    inputs.update(get_robustness_tables())
    return inputs


def get_final_outputs():
    """Every table and figure, so that snakemake checks (and makes) each of them, not only the
    ones a later rule reads."""
    outputs = expand(
        res("aggregate/{table}"), table=["metrics.parquet", "summary.md", "summary.csv", "summary.parquet"]
    )
    outputs += expand(res("plots/families/{family}.{ext}"), family=FAMILIES, ext=["png", "pdf"])
    outputs += expand(res("aggregate/claims.{ext}"), ext=["md", "csv", "parquet"])
    outputs += expand(res("plots/claims.{ext}"), ext=["png", "pdf"])
    outputs += METHOD_FIGURES  # workflow/rules/plots.smk
    if config["landscape"]:
        outputs += [res("aggregate/landscape.parquet")]
        outputs += expand(res("plots/landscape.{ext}"), ext=["png", "pdf"])
    if ENSEMBLES:
        tables = [
            "ensembles.parquet",
            "ensemble_pairs.parquet",
            "member_landscape.parquet",
            "weight_averages.parquet",
            "ensemble_summary.csv",
            "ensemble_summary.md",
        ]
        outputs += expand(res("aggregate/{table}"), table=tables)
        outputs += expand(res("plots/{figure}.{ext}"), figure=ENSEMBLE_FIGURES, ext=["png", "pdf"])
    outputs += get_shift_outputs()
    return outputs


# Dataset shift and OOD sets (config ensembles.shift, ensembles.ood): the members of every ensemble
# predict on both in the ensemble's predict job, from one file per dataset
SHIFT = {"corruptions": [], "severities": [], "seed": 0, **(ENSEMBLES or {}).get("shift", {})}
OOD = (ENSEMBLES or {}).get("ood", {})  # dataset -> its OOD sets
ROBUSTNESS = bool(ENSEMBLES) and ("shift" in ENSEMBLES or "ood" in ENSEMBLES)
ENSEMBLE_DIR = "ensembles/{dataset}/{model}/{method}/{ensemble}"
SHIFT_OUTPUTS = (
    {
        "shift_predictions": res(f"{ENSEMBLE_DIR}/shift_predictions.npz"),
        "shift_table": res(f"{ENSEMBLE_DIR}/shift.parquet"),
        "ood_scores": res(f"{ENSEMBLE_DIR}/ood_scores.parquet"),
    }
    if ROBUSTNESS
    else {}
)


def get_shift_tables():
    return [path.replace("predictions.npz", "shift.parquet") for path in get_predictions()]


def get_ood_scores():
    return [path.replace("predictions.npz", "ood_scores.parquet") for path in get_predictions()]


def get_robustness_tables():
    """The shift and OOD tables the config asks for, by plot_shift's options."""
    tables = {}
    if "shift" in (ENSEMBLES or {}):
        tables["shift"] = res("aggregate/shift.parquet")
    if OOD:
        tables["ood"] = res("aggregate/ood.parquet")
    return tables


def get_shift_outputs():
    """The shift and OOD tables and their figures, where the config asks for them."""
    tables = get_robustness_tables()
    figures = {"shift": "ensemble_shift", "ood": "ensemble_ood"}
    return [*tables.values(), *(res(f"plots/{figures[k]}.{ext}") for k in tables for ext in ("png", "pdf"))]
