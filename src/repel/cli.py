"""Command line: one subcommand per pipeline stage, every input and setting an explicit argument.
The workflow's rules call it; by hand, write into scratch/, which the workflow never reads:

    python -m repel prepare    --dataset digits --out scratch/digits.pt
    python -m repel train-base --data scratch/digits.pt --model cnn --epochs 15 --out-dir scratch/base
    python -m repel continue   --data scratch/digits.pt --checkpoint scratch/base/checkpoint.pt \
                               --spec '{"strength": 10, "width": 1, "epochs": 30}' --out-dir scratch/s10
    python -m repel aggregate  --runs scratch/base/metrics.parquet scratch/s10/metrics.parquet \
                               --out-dir scratch/aggregate
    python -m repel plot       --metrics scratch/aggregate/metrics.parquet --family push --out-dir scratch/plots \
    --spec '{"runs": ["s10-rbf-w1_lr0.01-const-e30"], "varying": [], "figure": "curves", "panels": ["dist"], "x": null}'

A run's --spec holds the keys of src/repel/spec.py (the config's grid keys); the ones it leaves out
take their defaults. Every option has a help text: python -m repel COMMAND --help. Each command
imports what its stage needs when it runs, so a stage that trains nothing never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from . import spec
from .tables import json_arg


def cmd_prepare(args) -> None:
    from . import data, storage

    given = {k: getattr(args, k) for k in ("data_dir", "val_fraction", "test_fraction", "seed")}
    prepared = data.prepare(
        args.dataset, download=not args.no_download, **{k: v for k, v in given.items() if v is not None}
    )
    storage.save_torch(prepared, args.out)
    print(
        f"{args.dataset}: train {len(prepared['train_y'])}, val {len(prepared['val_y'])}, "
        f"test {len(prepared['test_y'])} images of shape {tuple(prepared['train_x'].shape[1:])}, "
        f"{prepared['num_classes']} classes -> {args.out}"
    )


def cmd_continue(args) -> None:
    from . import jobs

    jobs.continue_runs(args, [jobs.Member(spec.Run.from_json(args.spec), args.out_dir, args.snapshot_every)])


def cmd_continue_pack(args) -> None:
    from . import jobs

    members = json_arg(args.members)
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        raise ValueError("--members must be a JSON list with one object per member")
    for m in members:
        if missing := [key for key in ("spec", "out_dir", "snapshot_every") if key not in m]:
            raise ValueError(f"--members: the member {m.get('out_dir', m)} lacks {', '.join(missing)}")
    jobs.continue_runs(
        args,
        [
            jobs.Member(spec.Run.of(m["spec"], f"--members[{i}].spec"), m["out_dir"], m["snapshot_every"])
            for i, m in enumerate(members)
        ],
    )


def cmd_plot_method(args) -> None:
    from . import method_figures

    for path in method_figures.plot_method(Path(args.out_dir), args.metrics, args.hill, args.formats or ("png", "pdf")):
        print(f"wrote {path}")


def _add(p: argparse.ArgumentParser, options: str) -> None:
    """Options of one kind, written `--name=help` one per line; `--name*=` takes several values,
    `--name!=` is required, `--name:int=` an integer."""
    for line in filter(None, map(str.strip, options.splitlines())):
        flag, help_text = line.split("=", 1)
        many, required, kind = "*" in flag, "!" in flag, flag.partition(":")[2] or None
        name = flag.split(":")[0].rstrip("*!")
        p.add_argument(
            name,
            nargs=("+" if required else "*") if many else None,
            required=required,
            help=help_text,
            type={"int": int, "float": float, None: None}[kind],
        )


DEVICE = """--device=auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps, as the config's `device` takes
--threads:int=CPU threads for torch (default: torch's own)"""
TRAINING = f"""--data!=prepared dataset file (python -m repel prepare)
--momentum:float=SGD momentum (config base.momentum)
--weight-decay:float=L2 coefficient of SGD (config base.weight_decay)
--batch-size:int=images per step (config base.batch_size)
--amp=bf16 autocast of forward and loss: auto (on CUDA only), off, bf16 (config speed.amp)
--channels-last=NHWC layout for conv nets: auto (on), on, off (config speed.channels_last)
--compile=torch.compile of the model: auto (off), off, on or a mode (config speed.compile)
--save-every:int=save a resumable state to OUT_DIR/resume.pt every N epochs (0 or none: never)
--tensorboard=write TensorBoard event files to DIR/<dataset>/<model>/<run>/seed<k> ('base' for train-base)
--out-dir!=directory for the outputs (and the resumable state)
{DEVICE}"""
LANDSCAPE = """--steps:int=points on alpha in [-0.5, 1.5] (default: repel.landscape.STEPS)
--bn-batches:int=training batches (of 128) to recompute BatchNorm statistics at each alpha"""
COMMANDS = {  # name: (function, or "module:function" of the package imported when it runs; help)
    "prepare": (cmd_prepare, "read a dataset once into one compact tensor file"),
    "train-base": ("jobs:train_base", "train from scratch to the checkpoint epoch"),
    "continue": (cmd_continue, "continue one run from a checkpoint with the distance penalty"),
    "continue-pack": (cmd_continue_pack, "continue runs that share their training, together in one process"),
    "aggregate": ("tables:aggregate", "all runs' metrics -> one table and a summary"),
    "claims": ("tables:claims", "the source study's claims as verdicts, from the aggregated tables"),
    "predict": ("jobs:predict", "ensemble members' predictions on the test split, stored once"),
    "landscape": ("jobs:landscape", "loss and error along the line from the checkpoint to runs"),
    "ensembles": ("tables:ensembles", "ensemble metrics from stored predictions"),
    "aggregate-landscape": ("tables:aggregate_landscape", "every run's landscape -> one table"),
    "plot": ("plots:plot_tables", "figures from the aggregated tables"),
    "plot-method": (cmd_plot_method, "the method's figures: the kernels as the runs felt them, a 2-D hill"),
    "shift-data": ("shift:prepare_job", "the test split's corrupted copies (dataset shift), made once"),
    "shift-table": ("shift_tables:aggregate", "every ensemble's metrics under shift -> one table"),
    "ood-table": ("shift_tables:aggregate_ood", "every ensemble's OOD scores -> AUROC and FPR at 95 percent TPR"),
    "plot-shift": ("shift_tables:plot", "the ensembles' metrics against severity"),
}
OPTIONS = {  # name: its options, one a line
    "prepare": """--dataset!=which dataset to prepare
        --data-dir=where torchvision datasets are (or are downloaded to)
        --val-fraction:float=of the training set, held out for validation
        --test-fraction:float=test split for sets without one (digits)
        --seed:int=seed of the train/validation split
        --out!=the prepared file to write (.pt)""",
    "train-base": f"""{TRAINING}
        --epochs!:int=epochs to train: the checkpoint epoch
        --lr:float=learning rate (config base.lr)
        --seed:int=initialisation and data order (default 0)
        --model!=the network to train (models.MODELS)""",
    "continue": f"""{TRAINING}
        --checkpoint!=checkpoint.pt written by train-base (its seed and data order carry on)
        --spec!=the run as JSON: its keys of src/repel/spec.py ({", ".join(spec.KEYS)})
        --snapshot-every:int=save the weights to OUT_DIR/snapshots/epochE.pt every N epochs (ensemble members)""",
    "continue-pack": f"""{TRAINING}
        --checkpoint!=checkpoint.pt written by train-base (its seed and data order carry on)
        --members!=JSON list (or .json file), one object per run: spec (as continue's), out_dir, snapshot_every""",
    "aggregate": """--runs*!=metrics.parquet files
        --labels=JSON object (or .json file): run id -> label for plots and tables
        --out-dir!=directory for metrics.parquet and the summary tables""",
    "claims": """--metrics!=metrics.parquet
        --families!=every family as JSON (or a .json file), name -> its runs and settings (grid.families)
        --ensembles=ensembles.parquet (with --pairs); without them the ensemble claims are 'not run'
        --pairs=ensemble_pairs.parquet (with --ensembles)
        --landscape=landscape.parquet written by aggregate-landscape; without it landscape.left is 'not run'
        --shift=shift.parquet written by shift-table; without it the shift claims are 'not run'
        --ood=ood.parquet written by ood-table; without it the OOD claim is 'not run'
        --settings=the config's claims block as JSON (or a .json file): thresholds over their defaults
        --out-dir!=directory for claims.parquet, claims.csv and claims.md""",
    "predict": f"""--data!=prepared dataset
        --checkpoints*!=the base checkpoint each member started from, one per member (in --members' order)
        --members*!=members' weight files, oldest first
        --swa*=SWA models (swa.pt of a run with schedule swa) to evaluate beside the members' weight average
        --method!=ensemble method name, recorded
        --ensemble!=which of the method's ensembles: seed<k> or seeds<a-b-...>, recorded
        --member-landscape=also write the loss along the lines between consecutive members to this table
        --out!=the predictions file to write (.npz)
        --shift=the shifted test split and OOD sets (shift-data): the members predict on them too
        --shift-out=with --shift: their log-softmax outputs to write (.npz)
        --shift-table=with --shift: the ensemble's metrics per corruption and severity to write (.parquet)
        --ood-scores=with --shift: every test and OOD point's scores to write (.parquet)
        {LANDSCAPE}
        {DEVICE}""",
    "landscape": f"""--data!=prepared dataset
        --checkpoint!=theta_c: the base checkpoint
        --weights*!=theta: each run's final.pt
        --run*!=run id per --weights file, recorded
        --out*!=the landscape table to write (.parquet), one per --run
        --controls*=each run's control's final.pt, one per --weights: their function distance on the test split
        {LANDSCAPE}
        {DEVICE}""",
    "ensembles": """--predictions*!=files written by predict
        --member-landscapes*!=predict --member-landscape files: the lines between consecutive members
        --out-dir!=directory for the ensemble tables""",
    "aggregate-landscape": """--landscapes*!=tables
        --out!=the combined table to write (.parquet)""",
    "plot": """--metrics=metrics.parquet: one family's figure
        --family=the family's name: the figure's file name (with --metrics)
        --spec=the family as JSON: runs, varying keys, figure, panels, x (grid.families)
        --landscape=landscape.parquet: loss along the line from the checkpoint (with --summary and --families)
        --summary=summary.parquet: every run's grid settings, for the landscape's legends
        --families=every family as JSON, name -> its runs and settings (grid.families): the landscape's rows
        --ensembles=ensembles.parquet: ensemble metrics vs members (with --pairs)
        --pairs=ensemble_pairs.parquet: pairwise diversity
        --averages=weight_averages.parquet: each weight-averaged model beside its ensemble
        --claims=claims.parquet written by claims: the verdicts as one figure
        --function=metrics.parquet: function distance against weight distance (function_vs_weights.<format>)
        --out-dir!=directory for the figures
        --formats*=file formats to write (png, pdf)""",
    "plot-method": """
        --metrics=metrics.parquet: the kernels figure (kernels.<format>) of the settings that ran
        --out-dir!=directory for the figures
        --formats*=file formats to write (png, pdf)""",
    "shift-data": """--data!=prepared dataset
        --corruptions*=which corruptions (repel.shift.CORRUPTIONS)
        --severities*:int=which severities, 1..5
        --ood*=OOD sets (repel.ood): uniform_noise, inverted or another torchvision set of the same shape
        --data-dir=where torchvision datasets are (or are downloaded to), for an OOD set
        --seed:int=seed of the corruptions' and the noise's random numbers (default 0)
        --out!=the shifted test split and OOD sets to write (.pt)""",
    "shift-table": """--tables*!=predict --shift-table files
        --out!=the combined table to write (.parquet)""",
    "ood-table": """--scores*!=predict --ood-scores files
        --out!=the detection table to write (.parquet)""",
    "plot-shift": """--shift=shift.parquet written by shift-table: ensemble_shift.<format>
        --ood=ood.parquet written by ood-table: ensemble_ood.<format>
        --out-dir!=directory for the figures
        --formats*=file formats to write (png, pdf)""",
}
FLAGS = {  # options that take no value
    "prepare": [("--no-download", "fail instead of downloading missing files")],
    "plot-method": [("--hill", "the 2-D demonstration (hill_2d.<format>); needs no data")],
    "shift-data": [("--no-download", "fail instead of downloading a missing OOD set")],
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="repel", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(required=True, metavar="COMMAND")
    for name, (func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add(p, OPTIONS[name])
        for flag, flag_help in FLAGS.get(name, []):
            p.add_argument(flag, action="store_true", help=flag_help)
        p.set_defaults(func=func)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    func = args.func
    if isinstance(func, str):  # "module:function": the stage's own module, imported only now
        module, name = func.split(":")
        func = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    try:
        func(args)
    except ValueError as err:  # a bad input, named by the stage (a missing dataset, file or key)
        print(f"repel: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # an output that could not be written (storage.WriteError says which and why)
        from .storage import WriteError  # loaded already by the stage that wrote

        if not isinstance(err, WriteError):
            raise
        print(f"repel: error: {err}", file=sys.stderr)
        return 1
    return 0
