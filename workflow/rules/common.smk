# Helpers for the workflow: config validation, the run grid, input and params functions.
import json
import math
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

# The workflow imports the package from this checkout, and its jobs run it from here too
# (installed or not, and inside conda environments).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(SRC)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")
from repel import grid  # noqa: E402

ENSEMBLES = config.get("ensembles")
try:
    RUNS = grid.expand(config["continuation"], config["seeds"], ENSEMBLES)
    FAMILIES = grid.families(config["continuation"])
except ValueError as error:  # a grid the schema cannot check (a point without a strength)
    raise WorkflowError(f"config: {error}") from None
ENSEMBLE_PLAN = grid.ensemble_plan(ENSEMBLES, config["continuation"]["defaults"]) if ENSEMBLES else {}
CONFIG_FILES = ", ".join(map(str, workflow.configfiles))  # named in the report's captions
ENSEMBLE_FIGURES = ["ensemble_accuracy", "ensemble_disagreement", "diversity_vs_distance"]
SEEDS = sorted({s for run in RUNS.values() for s in run["seeds"]} | set(config["seeds"]))


def get_optimizer_args():
    """The base's SGD settings, shared by base training and its continuations."""
    b = config["base"]
    return f"--momentum {b['momentum']} --weight-decay {b['weight_decay']} --batch-size {b['batch_size']}"


def get_speed_args():
    """How training jobs run (bf16, memory layout, torch.compile). YAML reads a bare on/off as
    true/false, so the schema takes both spellings and they are written back as on/off here."""
    words = {True: "on", False: "off"}
    speed = {key: words.get(value, value) for key, value in config["speed"].items()}
    return f"--amp {speed['amp']} --channels-last {speed['channels_last']} --compile {speed['compile']}"


def get_base_args():
    b = config["base"]
    return f"--epochs {b['epochs']} --lr {b['lr']} {get_optimizer_args()} {get_speed_args()}"


def get_run_args(wildcards):
    return f"{grid.cli_args(RUNS[wildcards.run]['params'])} {get_optimizer_args()} {get_speed_args()}"


def get_gres():
    """A training job's GPU request in SLURM's gres syntax ("gpu:1", "gpu:a100:1"), "" for none.

    A string, not the plugin's integer `gpu`: Snakemake does not add strings up, so training jobs
    grouped into one SLURM job (profiles/slurm, group-components) share its one GPU.
    """
    r = config["resources"]
    return f"gpu:{r['gpu_model'] + ':' if r['gpu_model'] else ''}{r['gpu']}" if r["gpu"] else ""


def get_snapshot_every(wildcards):
    """Epochs between saved members, for runs an ensemble method takes members from (else 0)."""
    every = [plan["snapshot_every"] for plan in ENSEMBLE_PLAN.values() if plan["run"] == wildcards.run]
    return math.gcd(*every) if every else 0


def get_ensemble_run_dir(wildcards):
    """The directory of the run an ensemble method takes its members from."""
    return f"results/continue/{wildcards.dataset}/{wildcards.model}/{ENSEMBLE_PLAN[wildcards.method]['run']}"


def get_ensemble_inputs(wildcards):
    """The member runs' metrics (they finish after their snapshots) and the first seed's base."""
    plan = ENSEMBLE_PLAN[wildcards.method]
    run_dir = get_ensemble_run_dir(wildcards)
    return {
        "checkpoint": f"results/base/{wildcards.dataset}/{wildcards.model}/seed{plan['seeds'][0]}/checkpoint.pt",
        "runs": [f"{run_dir}/seed{seed}/metrics.parquet" for seed in plan["seeds"]],
    }


def get_ensemble_members(wildcards):
    """Members' weight files, oldest first: snapshots of the method's run (one per seed for independent)."""
    plan = ENSEMBLE_PLAN[wildcards.method]
    base_epochs = config["base"]["epochs"]
    run_dir = get_ensemble_run_dir(wildcards)
    return [
        f"{run_dir}/seed{seed}/snapshots/epoch{base_epochs + epoch}.pt"
        for seed in plan["seeds"]
        for epoch in plan["epochs"]
    ]


def get_predictions():
    return expand(
        "results/ensembles/{dataset}/{model}/{method}/predictions.pt",
        dataset=config["datasets"],
        model=config["models"],
        method=ENSEMBLE_PLAN,
    )


def get_member_landscapes():
    return [path.replace("predictions.pt", "member_landscape.parquet") for path in get_predictions()]


def get_landscapes():
    return [path.replace("metrics.parquet", "landscape.parquet") for path in get_run_metrics()]


def get_base_metrics():
    return expand(
        "results/base/{dataset}/{model}/seed{seed}/metrics.parquet",
        dataset=config["datasets"],
        model=config["models"],
        seed=SEEDS,
    )


def get_run_metrics():
    return [
        f"results/continue/{dataset}/{model}/{rid}/seed{seed}/metrics.parquet"
        for dataset in config["datasets"]
        for model in config["models"]
        for rid, run in RUNS.items()
        for seed in run["seeds"]
    ]


def get_labels():
    """run id -> label (its families, or "control") as JSON, for plots and tables."""
    return json.dumps({rid: " / ".join(run["labels"]) for rid, run in RUNS.items()})


def get_final_outputs():
    """Every table and figure, so that snakemake checks (and makes) each of them, not only the
    ones a later rule reads."""
    outputs = expand("results/aggregate/{table}", table=["metrics.parquet", "summary.md", "summary.csv", "summary.parquet"])
    outputs += expand("results/plots/families/{family}.{ext}", family=FAMILIES, ext=["png", "pdf"])
    if config["landscape"]:
        outputs += ["results/aggregate/landscape.parquet"]
        outputs += expand("results/plots/landscape.{ext}", ext=["png", "pdf"])
    if ENSEMBLES:
        tables = ["ensembles.parquet", "ensemble_pairs.parquet", "member_landscape.parquet", "ensemble_summary.csv",
                  "ensemble_summary.md"]
        outputs += expand("results/aggregate/{table}", table=tables)
        outputs += expand("results/plots/{figure}.{ext}", figure=ENSEMBLE_FIGURES, ext=["png", "pdf"])
    return outputs
