"""Command line: one subcommand per pipeline stage, every input and setting an explicit argument.
The workflow's rules call it; by hand, write into scratch/, which the workflow never reads:

    python -m repel prepare    --dataset digits --out scratch/digits.pt
    python -m repel train-base --data scratch/digits.pt --model cnn --epochs 15 --out-dir scratch/base
    python -m repel continue   --data scratch/digits.pt --checkpoint scratch/base/checkpoint.pt \
                               --run s10-rbf-w1_lr0.01-const-e30 --strength 10 --width 1 --epochs 30 --out-dir scratch/s10
    python -m repel aggregate  --runs scratch/base/metrics.parquet scratch/s10/metrics.parquet --out-dir scratch/aggregate
    python -m repel plot       --metrics scratch/aggregate/metrics.parquet --family push --out-dir scratch/plots \
        --spec '{"runs": ["s10-rbf-w1_lr0.01-const-e30"], "varying": [], "figure": "curves", "panels": ["val_acc", "dist"], "x": null}'

(--run names the run in the tables: the workflow uses the grid's ids, which name the parameters.)

Every option has a help text: python -m repel COMMAND --help.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from . import data as data_mod
from . import models, storage
from .averaging import recompute_bn
from .grid import PENALTY_KEYS
from .penalty import DISTANCES, KERNELS, DistancePenalty
from .resume import ResumeState, fingerprint
from .tensorboard import EventLog, run_dir
from .train import AMP, CHANNELS_LAST, COMPILE, SCHEDULES, TrainConfig, fit


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"device '{name}' asked for, but no CUDA GPU is available (use 'auto' or 'cpu')")
    return torch.device(name)


def _setup(args) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device: {device}  threads: {torch.get_num_threads()}  torch {torch.__version__}", flush=True)
    return device


def _log(msg: str) -> None:
    print(msg, flush=True)


def cmd_prepare(args) -> None:
    prepared = data_mod.prepare(args.dataset, args.data_dir, args.val_fraction, args.test_fraction,
                                args.seed, download=not args.no_download)
    storage.save_torch(prepared, args.out)
    _log(f"{args.dataset}: train {len(prepared['train_y'])}, val {len(prepared['val_y'])}, "
         f"test {len(prepared['test_y'])} images of shape {tuple(prepared['train_x'].shape[1:])}, "
         f"{prepared['num_classes']} classes -> {args.out}")


def _resume_state(args, *inputs) -> ResumeState | None:
    """The job's resumable state in its output directory, keyed to its settings and inputs."""
    if not args.save_every:
        return None
    # how the job runs, not what it trains: a state saved under other values is still this run's
    how = ("func", "device", "threads", "save_every", "tensorboard")
    settings = {k: v for k, v in vars(args).items() if k not in how}
    return ResumeState(Path(args.out_dir) / "resume.pt", fingerprint(settings, *inputs), args.save_every, _log)


def _job_log(resume: ResumeState | None):
    """Where a training loop logs: through its resumable state, which keeps the lines, if it has one."""
    return resume.log if resume is not None else _log


def _event_log(args, log, dataset: str, model: str, run: str, seed: int) -> EventLog | None:
    """The job's TensorBoard run, under --tensorboard DIR (none without it)."""
    return EventLog(run_dir(args.tensorboard, dataset, model, run, seed), log) if args.tensorboard else None


def _train_config(args, **given) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in given}, **given)


def _frame(rows: list[dict], columns: dict):
    import pandas as pd  # here, not at the top: only the jobs that write a table pay for it

    df = pd.DataFrame(rows)
    for key, value in columns.items():
        df[key] = value
    return df


def cmd_train_base(args) -> None:
    device = _setup(args)
    prepared = data_mod.load(args.data)
    in_channels, image_size = prepared["train_x"].shape[1], prepared["train_x"].shape[-1]
    arch = {"model": args.model, "in_channels": int(in_channels), "num_classes": prepared["num_classes"],
            "image_size": int(image_size)}
    torch.manual_seed(args.seed)  # the model's initialisation
    model = models.from_arch(arch).to(device)
    cfg = _train_config(args)
    resume = _resume_state(args, args.data)
    log = _job_log(resume)
    events = _event_log(args, log, prepared["name"], args.model, "base", args.seed)
    rows, optimizer, generator = fit(model, prepared, cfg, device, log=log, resume=resume,
                                     on_row=events.row if events else None)
    out = Path(args.out_dir)
    columns = {"phase": "base", "dataset": prepared["name"], "model": args.model, "seed": args.seed, "run": "base"}
    storage.save_torch({
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": rows[-1]["epoch"],
        "rng": {"torch": torch.get_rng_state(), "data": generator.get_state()},
        "arch": arch, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
    }, out / "checkpoint.pt")
    storage.save_parquet(_frame(rows, columns), out / "metrics.parquet")
    if events is not None:
        events.finish(columns, rows[-1]["epoch"])
    if resume is not None:
        resume.clear()
    _log(f"base checkpoint at epoch {rows[-1]['epoch']} -> {out / 'checkpoint.pt'}")


def _from_checkpoint(ckpt: dict, device: torch.device) -> torch.nn.Module:
    model = models.from_arch(ckpt["arch"])
    model.load_state_dict(ckpt["model"])
    return model.to(device)


def _penalty(spec: dict, model) -> DistancePenalty:
    """A run's penalty (`spec` holds PENALTY_KEYS), its first hill on the model's current weights."""
    penalty = DistancePenalty(spec["strength"], spec["kernel"], spec["width"], spec["gamma"], spec["distance"],
                              merged=spec["merge"], every=spec["checkpoint_every"])
    penalty.add_checkpoint(models.trainable_parameters(model))
    return penalty


def _snapshot_saver(out: Path, checkpoint_epoch: int, every: int):
    def save(epochs_done, model):  # ensemble members: every `every` epochs
        if every and epochs_done % every == 0:
            storage.save_torch(model.state_dict(), out / "snapshots" / f"epoch{checkpoint_epoch + epochs_done}.pt")
    return save


def _finish_continuation(args, run: str, spec: dict, ckpt: dict, prepared: dict, model, rows: list[dict],
                         out: Path, events: EventLog | None) -> None:
    """Write a continuation run's weights and metrics (with its grid parameters as columns)."""
    columns = {"phase": "continue", "dataset": prepared["name"], "model": ckpt["arch"]["model"],
               "seed": ckpt["config"]["seed"], "run": run, "checkpoint_epoch": ckpt["epoch"],
               **{key: spec[key] for key in PENALTY_KEYS},
               "lr_init": args.lr, "schedule": args.schedule, "epochs": args.epochs}
    storage.save_torch(model.state_dict(), out / "final.pt")
    # n_params: what a mean distance divides by (the kernels figure draws it on ‖θ − θ_c‖)
    n_params = sum(p.numel() for p in models.trainable_parameters(model))
    storage.save_parquet(_frame(rows, {**columns, "n_params": n_params}), out / "metrics.parquet")
    if events is not None:  # the grid point's parameters, as its metrics.parquet names them
        events.finish(columns, rows[-1]["epoch"])
    _log(f"{run}: final val acc {rows[-1]['val_acc']:.4f}, distance {rows[-1]['dist']:.4g} -> {out}")


def cmd_continue(args) -> None:
    device = _setup(args)
    prepared = data_mod.load(args.data)
    ckpt = storage.load_torch(args.checkpoint, "checkpoint")
    model = _from_checkpoint(ckpt, device)
    spec = {key: getattr(args, key) for key in PENALTY_KEYS}
    penalty = _penalty(spec, model)
    seed = ckpt["config"]["seed"]
    cfg = _train_config(args, seed=seed)
    resume = _resume_state(args, args.data, args.checkpoint)
    log = _job_log(resume)
    events = _event_log(args, log, prepared["name"], ckpt["arch"]["model"], args.run, seed)
    # the continuation goes on with the base's optimizer state and data order: with s = 0 it is
    # exactly the base training, continued
    torch.set_rng_state(ckpt["rng"]["torch"])
    out = Path(args.out_dir)
    # SWA: the weights averaged after every epoch, beside the trajectory the run follows
    averaged = AveragedModel(model) if args.schedule == "swa" else None
    rows, _, _ = fit(model, prepared, cfg, device, penalty=penalty, first_epoch=ckpt["epoch"] + 1,
                     optimizer_state=ckpt["optimizer"], data_rng=ckpt["rng"]["data"], log=log, resume=resume,
                     on_epoch_end=_snapshot_saver(out, ckpt["epoch"], args.snapshot_every),
                     on_row=events.row if events else None, averaged=averaged)
    if averaged is not None:
        recompute_bn(averaged.module, data_mod.DeviceData(prepared, "train", device))
        storage.save_torch(averaged.module.state_dict(), out / "swa.pt")
        log(f"SWA: the average of {int(averaged.n_averaged)} epochs' weights -> {out / 'swa.pt'}")
    _finish_continuation(args, args.run, spec, ckpt, prepared, model, rows, out, events)
    if resume is not None:
        resume.clear()


def cmd_continue_pack(args) -> None:
    """Several continuation runs that share their training, trained together (repel.pack)."""
    from .pack import fit_pack

    members = json.loads(args.members)
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        raise ValueError("--members must be a JSON list with one object per member")
    keys = ("run", "out_dir", "snapshot_every", *PENALTY_KEYS)
    for m in members:
        if missing := [key for key in keys if key not in m]:
            raise ValueError(f"--members: the member {m.get('run', m)} lacks {', '.join(missing)}")
    device = _setup(args)
    prepared = data_mod.load(args.data)
    ckpt = storage.load_torch(args.checkpoint, "checkpoint")
    nets = [_from_checkpoint(ckpt, device) for _ in members]
    penalties = [_penalty(member, net) for member, net in zip(members, nets)]
    seed = ckpt["config"]["seed"]
    cfg = _train_config(args, seed=seed)
    resume = _resume_state(args, args.data, args.checkpoint)  # the pack's one state, in --out-dir
    log = _job_log(resume)
    events = [_event_log(args, log, prepared["name"], ckpt["arch"]["model"], m["run"], seed) for m in members]
    savers = [_snapshot_saver(Path(m["out_dir"]), ckpt["epoch"], m["snapshot_every"]) for m in members]
    torch.set_rng_state(ckpt["rng"]["torch"])
    # conv nets on a CPU one after another: batching their convolutions gained nothing there
    # (benchmarks/pack_speed.py), and this way each run equals its job alone exactly
    conv_on_cpu = device.type == "cpu" and any(p.dim() == 4 for p in nets[0].parameters())
    rows = fit_pack(nets, prepared, cfg, device, penalties, first_epoch=ckpt["epoch"] + 1,
                    optimizer_states=[ckpt["optimizer"]] * len(members), data_rng=ckpt["rng"]["data"], log=log,
                    resume=resume, on_epoch_end=lambda i, done, model: savers[i](done, model),
                    on_row=lambda i, row: events[i].row(row) if events[i] else None,
                    batched=False if conv_on_cpu else None, names=[m["run"] for m in members])
    for member, net, member_rows, member_events in zip(members, nets, rows, events):
        _finish_continuation(args, member["run"], member, ckpt, prepared, net, member_rows, Path(member["out_dir"]),
                             member_events)
    if resume is not None:
        resume.clear()


def cmd_predict(args) -> None:
    from .predict import member_predictions

    device = _setup(args)
    prepared = data_mod.load(args.data)
    if len(args.checkpoints) != len(args.members):
        raise ValueError(f"give one --checkpoints file per member: {len(args.members)} members, "
                         f"{len(args.checkpoints)} checkpoints")
    # members of one run share its checkpoint: load each file once
    ckpts = {path: storage.load_torch(path, "checkpoint") for path in dict.fromkeys(args.checkpoints)}
    arch = ckpts[args.checkpoints[0]]["arch"]
    members = [storage.load_torch(path, "member") for path in args.members]
    swa = [storage.load_torch(path, "SWA model") for path in args.swa]
    out = member_predictions(arch, [ckpts[path]["model"] for path in args.checkpoints], members, prepared, device,
                             swa_states=swa)
    out.update(dataset=prepared["name"], model=arch["model"], method=args.method, ensemble=args.ensemble,
               members=[str(p) for p in args.members], checkpoints=[str(p) for p in args.checkpoints],
               swa=[str(p) for p in args.swa])
    storage.save_torch(out, args.out)
    acc = (out["probs"].argmax(-1) == out["labels"]).float().mean(1)
    _log(f"{args.method} {args.ensemble}: {len(members)} members, test accuracy {', '.join(f'{a:.4f}' for a in acc.tolist())} -> {args.out}")
    if args.member_landscape:  # in this process: its start-up would cost about what the landscape does
        states = dict(zip(args.members, members))
        _write_landscapes(prepared, ckpts[args.checkpoints[0]],
                          [(f"{args.method}/{args.ensemble}", args.member_landscape, list(args.members))],
                          states.__getitem__, device, args.steps, args.bn_batches)


def cmd_landscape(args) -> None:
    device = _setup(args)
    prepared = data_mod.load(args.data)
    ckpt = storage.load_torch(args.checkpoint, "checkpoint")
    # (--between) the line from each weights file to the next, as one table; else one line and
    # one table per weights file, from the checkpoint (the runs of a pack, in one process)
    if args.between:
        if len(args.weights) < 2 or len(args.run) != 1 or len(args.out) != 1:
            raise ValueError("--between takes at least two --weights files, one --run and one --out")
        lines = [(args.run[0], args.out[0], list(args.weights))]
    else:
        if not len(args.weights) == len(args.run) == len(args.out):
            raise ValueError(f"give one --run and one --out per --weights file: {len(args.weights)} weights, "
                             f"{len(args.run)} runs, {len(args.out)} outputs")
        lines = [(run, out, [args.checkpoint, weights]) for run, out, weights in zip(args.run, args.out, args.weights)]
    kind = "member" if args.between else "weights"

    def load(path):
        return ckpt["model"] if path == args.checkpoint else storage.load_torch(path, kind)

    _write_landscapes(prepared, ckpt, lines, load, device, args.steps, args.bn_batches)


def _write_landscapes(prepared: dict, ckpt: dict, lines, load, device, steps: int, bn_batches: int) -> None:
    """Write each line's table: lines are (run, out, [weights files]), the path through the files
    in order, `load` gives a file's state; `ckpt` the model's architecture and seed."""
    import pandas as pd

    from .landscape import alphas, barrier, interpolate

    model = models.from_arch(ckpt["arch"]).to(device)
    train, val = (data_mod.DeviceData(prepared, split, device) for split in ("train", "val"))
    bn_recomputed = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for run, out, ends in lines:
        states = [load(path) for path in ends]
        frames = []
        for pair, (start, end) in enumerate(zip(states, states[1:])):
            df = interpolate(model, start, end, alphas(steps), train, val, bn_batches=bn_batches)
            frames.append(df.assign(pair=pair, start=str(ends[pair]), end=str(ends[pair + 1]), barrier=barrier(df),
                                    bn_recomputed=bn_recomputed))
            _log(f"loss barrier from {ends[pair]} to {ends[pair + 1]}: {barrier(df):.4g}")
        df = pd.concat(frames, ignore_index=True).assign(
            split="val", dataset=prepared["name"], model=ckpt["arch"]["model"], run=run, seed=ckpt["config"]["seed"])
        storage.save_parquet(df, out)
        _log(f"-> {out}")


def cmd_ensembles(args) -> None:
    from .aggregate import aggregate_ensembles

    aggregate_ensembles(args.predictions, args.member_landscapes, Path(args.out_dir))
    _log(f"evaluated {len(args.predictions)} ensembles -> {args.out_dir}")


def cmd_aggregate_landscape(args) -> None:
    import pandas as pd

    df = pd.concat([storage.read_parquet(p, "landscape") for p in args.landscapes], ignore_index=True)
    storage.save_parquet(df, args.out)
    _log(f"aggregated {len(args.landscapes)} landscapes -> {args.out}")


def cmd_aggregate(args) -> None:
    from .aggregate import aggregate

    labels = json.loads(args.labels) if args.labels else {}
    aggregate(args.runs, labels, Path(args.out_dir))
    _log(f"aggregated {len(args.runs)} runs -> {args.out_dir}")


def cmd_claims(args) -> None:
    from . import claims

    def json_arg(text: str) -> dict:  # JSON text, or a file holding it
        return json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())

    if bool(args.ensembles) != bool(args.pairs):
        raise ValueError("give --ensembles and --pairs together (ensembles.parquet and ensemble_pairs.parquet)")
    table = claims.evaluate(
        storage.read_parquet(args.metrics, "aggregated metrics"), json_arg(args.families),
        storage.read_parquet(args.ensembles, "ensemble curves") if args.ensembles else None,
        storage.read_parquet(args.pairs, "ensemble pairs") if args.pairs else None,
        json_arg(args.settings) if args.settings else None)
    out = Path(args.out_dir)
    storage.save_parquet(table, out / "claims.parquet")
    storage.save_text(table.to_csv(index=False), out / "claims.csv")
    storage.save_text(claims.markdown(table), out / "claims.md")
    counts = table["verdict"].value_counts()
    _log(f"{len(table)} claim rows ({', '.join(f'{n} {v}' for v, n in counts.items())}) -> {out}")


def cmd_plot(args) -> None:
    from . import plots

    out, written = Path(args.out_dir), []
    if args.metrics:
        if not (args.family and args.spec):
            raise ValueError("--metrics needs --family and --spec: the figures are drawn one family at a time")
        written += plots.plot_family(storage.read_parquet(args.metrics, "aggregated metrics"), args.family,
                                     json.loads(args.spec), out, args.formats)
    if args.landscape:
        if not (args.summary and args.families):
            raise ValueError("--landscape needs --summary and --families: its lines are labelled as the families'")
        written += plots.plot_landscape(storage.read_parquet(args.landscape, "aggregated landscape"),
                                        storage.read_parquet(args.summary, "summary"),
                                        json.loads(args.families), out, args.formats)
    if args.ensembles:
        if not args.pairs:
            raise ValueError("--ensembles needs --pairs (ensemble_pairs.parquet) too")
        averages = storage.read_parquet(args.averages, "weight averages") if args.averages else None
        written += plots.plot_ensembles(storage.read_parquet(args.ensembles, "ensemble curves"),
                                        storage.read_parquet(args.pairs, "ensemble pairs"), out, args.formats,
                                        averages)
    if args.claims:
        written += plots.plot_claims(storage.read_parquet(args.claims, "claims"), out, args.formats)
    if not written:
        raise ValueError("nothing to plot: give --metrics, --landscape, --ensembles or --claims")
    for path in written:
        _log(f"wrote {path}")


def cmd_plot_method(args) -> None:
    from . import method_figures

    for path in method_figures.plot_method(Path(args.out_dir), args.metrics, args.hill, args.formats):
        _log(f"wrote {path}")


def _add_landscape_args(p) -> None:
    p.add_argument("--steps", type=int, default=21, help="points on alpha in [-0.5, 1.5] (default %(default)s)")
    p.add_argument("--bn-batches", type=int, default=50,
                   help="training batches (of 128) to recompute BatchNorm statistics at each alpha")


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps, as the config's `device` takes")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")


def _add_speed_args(p: argparse.ArgumentParser) -> None:
    """Training speed options (TrainConfig fields of the same names); see benchmarks/README.md."""
    p.add_argument("--amp", choices=AMP, default=TrainConfig.amp,
                   help="bf16 autocast of forward and loss (auto: on CUDA only; bf16 on CPU pays only with AMX)")
    p.add_argument("--channels-last", choices=CHANNELS_LAST, default=TrainConfig.channels_last,
                   help="NHWC memory layout for conv nets (auto: on)")
    p.add_argument("--compile", choices=COMPILE, default=TrainConfig.compile,
                   help="torch.compile of the model, 'on' or a mode (auto: off, not yet measured on a GPU)")


def _add_training_args(p: argparse.ArgumentParser, epochs_help: str) -> None:
    d = TrainConfig(epochs=0)
    p.add_argument("--data", required=True, help="prepared dataset file (python -m repel prepare)")
    p.add_argument("--epochs", type=int, required=True, help=epochs_help)
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default %(default)s)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 coefficient of SGD")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step (default %(default)s)")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="lr schedule, stepped every batch")
    p.add_argument("--step-size", type=int, default=d.step_size, help="epochs between decays (step)")
    p.add_argument("--step-gamma", type=float, default=d.step_gamma, help="decay factor (step)")
    p.add_argument("--t0", type=int, default=d.t0, help="epochs of the first cycle (cosine_restarts)")
    p.add_argument("--t-mult", type=int, default=d.t_mult, help="cycle length multiplier (cosine_restarts)")
    p.add_argument("--eta-min", type=float, default=d.eta_min, help="lowest lr (cosine schedules)")
    _add_device_args(p)
    _add_speed_args(p)
    p.add_argument("--save-every", type=int, default=0,
                   help="save a resumable state to OUT_DIR/resume.pt every N epochs (0: never)")
    p.add_argument("--tensorboard", default="", metavar="DIR",
                   help="write TensorBoard event files (every epoch's metrics, the run's parameters as HParams) "
                        "to DIR/<dataset>/<model>/<run>/seed<k> (run 'base' for train-base); empty: none")
    p.add_argument("--out-dir", required=True, help="directory for the outputs (and the resumable state)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="repel", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="read a dataset once into one compact tensor file")
    p.add_argument("--dataset", required=True, choices=data_mod.DATASETS, help="which dataset to prepare")
    p.add_argument("--data-dir", default="data", help="where torchvision datasets are (or are downloaded to)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="of the training set, held out for validation")
    p.add_argument("--test-fraction", type=float, default=0.2, help="test split for sets without one (digits)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/validation split")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing files")
    p.add_argument("--out", required=True, help="the prepared file to write (.pt)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train-base", help="train from scratch to the checkpoint epoch")
    _add_training_args(p, "epochs to train: the checkpoint epoch")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    p.add_argument("--model", required=True, choices=models.MODELS, help="the network to train")
    p.set_defaults(func=cmd_train_base)

    p = sub.add_parser("continue", help="continue from a checkpoint with the distance penalty")
    _add_training_args(p, "epochs to continue after the checkpoint")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint.pt written by train-base (its seed and data order carry on)")
    p.add_argument("--run", required=True, help="run id written into the metrics")
    p.add_argument("--strength", type=float, required=True, help="s; 0 is the control")
    p.add_argument("--kernel", choices=KERNELS, default="rbf", help="the hill's shape (penalty.py lists the formulas)")
    p.add_argument("--width", type=float, help="sigma of exp(-d / (2 sigma^2)) (give width or gamma)")
    p.add_argument("--gamma", type=float, help="gamma of exp(-gamma d) (give width or gamma)")
    p.add_argument("--distance", choices=DISTANCES, default="sum", help="d summed over parameters, or their mean")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="take a new checkpoint (another hill) every N epochs (0: only the first)")
    p.add_argument("--merge", action="store_true", help="one hill at the mean of the checkpoints, not one each")
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="save the weights to OUT_DIR/snapshots/epochE.pt every N epochs (ensemble members)")
    p.set_defaults(func=cmd_continue)

    p = sub.add_parser("continue-pack", help="continue several runs that differ only in the penalty together, "
                       "batched in one process (the training options are theirs in common)")
    _add_training_args(p, "epochs to continue after the checkpoint")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint.pt written by train-base (its seed and data order carry on)")
    p.add_argument("--members", required=True,
                   help="JSON list, one object per run: run (its id), out_dir (its outputs), snapshot_every, and "
                        "its penalty: " + ", ".join(PENALTY_KEYS) + " (as continue's options of the same names)")
    p.set_defaults(func=cmd_continue_pack)

    p = sub.add_parser("aggregate", help="all runs' metrics -> one table and a summary")
    p.add_argument("--runs", nargs="+", required=True, help="metrics.parquet files (base and continuation)")
    p.add_argument("--labels", help="JSON object: run id -> label for plots and tables")
    p.add_argument("--out-dir", required=True, help="directory for metrics.parquet and the summary tables")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("claims", help="the source study's claims as verdicts, from the aggregated tables")
    p.add_argument("--metrics", required=True, help="metrics.parquet written by aggregate (every run's epochs)")
    p.add_argument("--families", required=True,
                   help="every family as JSON, name -> spec (grid.families), or a .json file holding it")
    p.add_argument("--ensembles", help="ensembles.parquet written by ensembles (with --pairs); "
                   "without them the ensemble claims are 'not run'")
    p.add_argument("--pairs", help="ensemble_pairs.parquet written by ensembles (with --ensembles)")
    p.add_argument("--settings", help="the config's claims block as JSON (or a .json file): thresholds over "
                   "claims.DEFAULTS (margin, early_epochs, last_fraction, plateau, confidence, weak_rho)")
    p.add_argument("--out-dir", required=True, help="directory for claims.parquet, claims.csv and claims.md")
    p.set_defaults(func=cmd_claims)

    p = sub.add_parser("predict", help="ensemble members' softmax outputs on the test split, stored once")
    p.add_argument("--data", required=True, help="prepared dataset file (python -m repel prepare)")
    p.add_argument("--checkpoints", nargs="+", required=True,
                   help="the base checkpoint each member started from, one per member (in --members' order)")
    p.add_argument("--members", nargs="+", required=True, help="members' weight files, oldest first")
    p.add_argument("--swa", nargs="*", default=[], help="SWA models (swa.pt of a run with --schedule swa) to "
                   "evaluate beside the members' weight average")
    p.add_argument("--method", required=True, help="ensemble method name, recorded")
    p.add_argument("--ensemble", default="seed0",
                   help="which of the method's ensembles: seed<k> (a snapshot method's, from seed k) or seeds<a-b-...>")
    p.add_argument("--member-landscape", help="also write the loss along the lines between consecutive members "
                   "to this table (.parquet), as landscape --between does")
    _add_landscape_args(p)
    _add_device_args(p)
    p.add_argument("--out", required=True, help="the predictions file to write (.pt)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("landscape", help="loss and error along the line from the checkpoint to a run")
    p.add_argument("--data", required=True, help="prepared dataset file (python -m repel prepare)")
    p.add_argument("--checkpoint", required=True, help="theta_c: the base checkpoint")
    p.add_argument("--weights", nargs="+", required=True, help="theta: the run's final.pt")
    p.add_argument("--between", action="store_true",
                   help="lines between consecutive --weights files (ensemble members) instead")
    p.add_argument("--run", nargs="+", required=True, help="run id per --weights file (with --between: one, "
                   "the ensemble as method/ensemble), recorded")
    _add_landscape_args(p)
    _add_device_args(p)
    p.add_argument("--out", nargs="+", required=True, help="the landscape table to write (.parquet), one per --run")
    p.set_defaults(func=cmd_landscape)

    p = sub.add_parser("ensembles", help="ensemble metrics from stored predictions")
    p.add_argument("--predictions", nargs="+", required=True, help="files written by predict")
    p.add_argument("--member-landscapes", nargs="+", required=True,
                   help="landscape --between files: the lines between consecutive members")
    p.add_argument("--out-dir", required=True, help="directory for the ensemble tables")
    p.set_defaults(func=cmd_ensembles)

    p = sub.add_parser("aggregate-landscape", help="every run's landscape -> one table")
    p.add_argument("--landscapes", nargs="+", required=True, help="landscape.parquet files written by landscape")
    p.add_argument("--out", required=True, help="the combined table to write (.parquet)")
    p.set_defaults(func=cmd_aggregate_landscape)

    p = sub.add_parser("plot", help="figures from the aggregated tables")
    p.add_argument("--metrics", help="metrics.parquet: one family's figure (with --family and --spec)")
    p.add_argument("--family", help="the family's name: the figure's file name")
    p.add_argument("--spec", help="the family as JSON: runs, varying keys, figure, panels, x (grid.families)")
    p.add_argument("--landscape", help="landscape.parquet: loss along the line from the checkpoint "
                   "(with --summary and --families)")
    p.add_argument("--summary", help="summary.parquet: every run's grid settings, for the landscape's legends")
    p.add_argument("--families", help="every family as JSON, name -> spec (grid.families): the landscape's rows")
    p.add_argument("--ensembles", help="ensembles.parquet: ensemble metrics vs members")
    p.add_argument("--pairs", help="ensemble_pairs.parquet: pairwise diversity")
    p.add_argument("--averages", help="weight_averages.parquet: each weight-averaged model beside its ensemble "
                   "(with --ensembles)")
    p.add_argument("--claims", help="claims.parquet written by claims: the verdicts as one figure (claims.<format>)")
    p.add_argument("--out-dir", required=True, help="directory for the figures")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"], help="file formats to write (default %(default)s)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("plot-method", help="the method's figures: the kernels as the runs felt them, a 2-D hill")
    p.add_argument("--metrics", help="metrics.parquet: the kernels figure (kernels.<format>) of the settings that ran")
    p.add_argument("--hill", action="store_true", help="the 2-D demonstration (hill_2d.<format>); needs no data")
    p.add_argument("--out-dir", required=True, help="directory for the figures")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"], help="file formats to write (default %(default)s)")
    p.set_defaults(func=cmd_plot_method)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, data_mod.DatasetMissingError) as err:
        print(f"repel: error: {err}", file=sys.stderr)
        return 1
    return 0
