"""The jobs that run networks: read their inputs, train or predict, write their outputs.

A base training trains from scratch to the checkpoint epoch. A continuation job trains one run, or
a pack of runs that share their training and differ only in the penalty (repel.pack), from a base
checkpoint: each run is a spec.Run, and each writes its own directory (metrics.parquet with the
run's grid settings as columns, final.pt, run.json, its snapshots). The command line (cli.py)
parses the arguments and calls these.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from . import align, checkpoint, models, storage
from . import data as data_mod
from .averaging import swa_model
from .grid import SNAPSHOT
from .penalty import DistancePenalty
from .resume import ResumeState, fingerprint
from .spec import Run
from .tensorboard import EventLog, run_dir
from .train import TrainConfig, fit

# how a job runs, not what it trains: a resumable state saved under other values is still this job's
HOW = ("func", "device", "threads", "save_every", "tensorboard")


def log(msg: str) -> None:
    print(msg, flush=True)


def resolve_device(name: str | None) -> torch.device:
    """The config's `device`: auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"device '{name}' asked for, but no CUDA GPU is available (use 'auto' or 'cpu')")
    return torch.device(name)


def setup(args) -> torch.device:
    """The job's device and CPU threads (config keys device and threads), said in its log."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    log(f"device: {device}  threads: {torch.get_num_threads()}  torch {torch.__version__}")
    return device


def _resume_state(args, *inputs) -> ResumeState | None:
    """The job's resumable state in its output directory, keyed to its settings and inputs."""
    if not args.save_every:
        return None
    settings = {k: v for k, v in vars(args).items() if k not in HOW}
    return ResumeState(Path(args.out_dir) / "resume.pt", fingerprint(settings, *inputs), args.save_every, log)


def _event_log(args, job_log, dataset: str, model: str, run: str, seed: int) -> EventLog | None:
    """The job's TensorBoard run, under --tensorboard DIR (none without it)."""
    return EventLog(run_dir(args.tensorboard, dataset, model, run, seed), job_log) if args.tensorboard else None


def train_config(args, seed: int, spec: Run | None = None) -> TrainConfig:
    """The loop's settings: the base's optimizer (momentum, weight decay, batch), the run's training
    (the base's own lr and epochs without a spec), the seed, and how fast to run."""
    # the loop's settings are the training's but its start, which chose the checkpoint the loop begins at
    training = (
        {k: v for k, v in vars(spec.training).items() if k != "start"}
        if spec is not None
        else {"epochs": args.epochs, "lr": args.lr}
    )
    given = {
        key: getattr(args, key) for key in ("momentum", "weight_decay", "batch_size", "amp", "channels_last", "compile")
    }
    # an option not given takes TrainConfig's default (the base's, config/README.md)
    return TrainConfig(**{k: v for k, v in {**training, **given}.items() if v is not None}, seed=seed)


def _frame(rows: list[dict], columns: dict):
    import pandas as pd  # here, not at the top: only the jobs that write a table pay for it

    return pd.DataFrame(rows).assign(**columns)


def train_base(args) -> None:
    args.seed = args.seed or 0  # the default initialisation and data order
    if args.epochs < 0:
        raise ValueError(f"--epochs is {args.epochs}: expected >= 0 (0: the checkpoint is the initial weights)")
    device = setup(args)
    prepared = data_mod.load(args.data)
    in_channels, image_size = prepared["train_x"].shape[1], prepared["train_x"].shape[-1]
    arch = {
        "model": args.model,
        "in_channels": int(in_channels),
        "num_classes": prepared["num_classes"],
        "image_size": int(image_size),
    }
    torch.manual_seed(args.seed)  # the model's initialisation
    model = models.from_arch(arch).to(device)
    resume = _resume_state(args, args.data)
    job_log = resume.log if resume is not None else log
    # no epoch, no events: the initial weights' job (rule init_base) must not touch the base run's
    events = _event_log(args, job_log, prepared["name"], args.model, "base", args.seed) if args.epochs else None
    rows, optimizer, generator = fit(
        model,
        prepared,
        train_config(args, args.seed),
        device,
        log=job_log,
        resume=resume,
        on_row=events.row if events else None,
    )
    out = Path(args.out_dir)
    columns = {"phase": "base", "dataset": prepared["name"], "model": args.model, "seed": args.seed, "run": "base"}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    # --epochs 0: no epoch trained, the checkpoint is the initial weights with a fresh optimizer
    # and the seed's data order, the state a base training of any length starts from
    epoch = rows[-1]["epoch"] if rows else 0
    checkpoint.save_base(out / "checkpoint.pt", model, optimizer, epoch, generator, arch, settings)
    storage.save_parquet(_frame(rows, columns), out / "metrics.parquet")
    if events is not None:
        events.finish(columns, epoch)
    if resume is not None:
        resume.clear()
    log(f"base checkpoint at epoch {epoch} -> {out / 'checkpoint.pt'}")


def _penalty(spec: Run, model) -> DistancePenalty:
    """A run's penalty, its first hill on the model's current weights."""
    p = spec.penalty
    penalty = DistancePenalty(
        p.strength,
        p.kernel,
        p.width,
        p.gamma,
        p.distance,
        merged=p.merge,
        every=p.checkpoint_every,
        release_after=p.release_after,
    )
    penalty.add_checkpoint(models.trainable_parameters(model))
    return penalty


def _snapshot_saver(out: Path, checkpoint_epoch: int, every: int):
    def save(epochs_done, model):  # ensemble members: every `every` epochs
        if every and epochs_done % every == 0:
            checkpoint.save_weights(model, out / SNAPSHOT.format(epoch=checkpoint_epoch + epochs_done))

    return save


class Member:
    """One continuation run of a job: its spec, where it writes, and every how many epochs it
    keeps a snapshot (0: none)."""

    def __init__(self, spec: Run, out_dir, snapshot_every: int = 0):
        self.spec, self.out, self.snapshot_every = spec, Path(out_dir), snapshot_every


def _finish(args, member: Member, ckpt: dict, prepared: dict, model, rows: list[dict], events) -> None:
    """Write a run's weights, metrics (its grid settings as columns) and run.json."""
    columns = {
        "phase": "continue",
        "dataset": prepared["name"],
        "model": ckpt["arch"]["model"],
        "seed": ckpt["config"]["seed"],
        "checkpoint_epoch": ckpt["epoch"],
        **member.spec.columns(),
    }
    checkpoint.save_weights(model, member.out / "final.pt")
    # the distance to θ_c modulo permutation symmetry, once, at the end (repel.align; NaN without a spec)
    final = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    names = models.parameter_names(model)
    rows[-1]["aligned_dist"] = align.aligned_distance(ckpt["model"], final, ckpt["arch"]["model"], names)
    # n_params: what a mean distance divides by (the kernels figure draws it on ‖θ − θ_c‖)
    n_params = sum(p.numel() for p in models.trainable_parameters(model))
    storage.save_parquet(_frame(rows, {**columns, "n_params": n_params}), member.out / "metrics.parquet")
    checkpoint.write_run_record(
        member.out, member.spec.given(), args.checkpoint, {"seed": ckpt["config"]["seed"], "data": str(args.data)}
    )
    if events is not None:  # the grid point's parameters, as its metrics.parquet names them
        events.finish(columns, rows[-1]["epoch"])
    log(f"{member.spec.id}: final val acc {rows[-1]['val_acc']:.4f}, distance {rows[-1]['dist']:.4g} -> {member.out}")


def continue_runs(args, members: list[Member]) -> None:
    """Continue one run, or a pack of runs that share their training, from the base checkpoint."""
    if len({m.spec.training for m in members}) != 1:
        raise ValueError(
            "the members of a pack must share their training (lr, schedule, epochs, ...): got "
            + ", ".join(m.spec.training_part() for m in members)
        )
    device = setup(args)
    prepared = data_mod.load(args.data)
    ckpt = checkpoint.load_base(args.checkpoint)
    if ckpt["epoch"] != 0 and (init := [m.spec.id for m in members if m.spec.training.start == "init"]):
        raise ValueError(
            f"{', '.join(init)}: start is init, but --checkpoint {args.checkpoint} is at epoch {ckpt['epoch']}; "
            "expected the initial weights (train-base --epochs 0)"
        )
    nets = [checkpoint.model_from(ckpt, device) for _ in members]
    penalties = [_penalty(m.spec, net) for m, net in zip(members, nets)]
    seed = ckpt["config"]["seed"]
    cfg = train_config(args, seed, members[0].spec)
    resume = _resume_state(args, args.data, args.checkpoint)  # one state for the job, in --out-dir
    job_log = resume.log if resume is not None else log
    events = [_event_log(args, job_log, prepared["name"], ckpt["arch"]["model"], m.spec.id, seed) for m in members]
    savers = [_snapshot_saver(m.out, ckpt["epoch"], m.snapshot_every) for m in members]
    # the continuation goes on with the base's optimizer state and data order: with s = 0 it is
    # exactly the base training, continued
    torch.set_rng_state(ckpt["rng"]["torch"])
    common = dict(first_epoch=ckpt["epoch"] + 1, data_rng=ckpt["rng"]["data"], resume=resume)
    if len(members) == 1:
        # SWA: the weights averaged after every epoch, beside the trajectory the run follows
        averaged = AveragedModel(nets[0]) if cfg.schedule == "swa" else None
        rows, _, _ = fit(
            nets[0],
            prepared,
            cfg,
            device,
            penalty=penalties[0],
            optimizer_state=ckpt["optimizer"],
            log=job_log,
            on_epoch_end=savers[0],
            on_row=events[0].row if events[0] else None,
            averaged=averaged,
            **common,
        )
        rows = [rows]
        if averaged is not None:
            _finish_swa(averaged, prepared, device, members[0].out / "swa.pt", job_log)
    else:
        from .pack import fit_pack

        conv_on_cpu = device.type == "cpu" and any(p.dim() == 4 for p in nets[0].parameters())
        sequential = (
            "a conv net on a CPU: batching its convolutions gained nothing there (benchmarks/pack_speed.py), "
            "and one after another each run equals its job alone exactly"
        )
        rows = fit_pack(
            nets,
            prepared,
            cfg,
            device,
            penalties,
            optimizer_states=[ckpt["optimizer"]] * len(members),
            log=job_log,
            on_epoch_end=lambda i, done, model: savers[i](done, model),
            on_row=lambda i, row: events[i].row(row) if events[i] else None,
            batched=sequential if conv_on_cpu else None,
            names=[m.spec.id for m in members],
            **common,
        )
    for member, net, member_rows, member_events in zip(members, nets, rows, events):
        _finish(args, member, ckpt, prepared, net, member_rows, member_events)
    if resume is not None:
        resume.clear()


def _finish_swa(averaged: AveragedModel, prepared: dict, device, path: Path, job_log) -> None:
    """Write SWA's model (averaging.swa_model)."""
    checkpoint.save_weights(swa_model(averaged, data_mod.DeviceData(prepared, "train", device)), path)
    job_log(f"SWA: the average of {int(averaged.n_averaged)} epochs' weights -> {path}")


def predict(args) -> None:
    """An ensemble's members' predictions on the test split, stored once (with --member-landscape,
    the loss along the lines between consecutive members; with --shift, their predictions and the
    ensemble's metrics on the corrupted test splits and the OOD sets)."""
    from . import landscape
    from .ensemble import member_accuracy
    from .predict import member_predictions

    if args.shift and not (args.shift_out and args.shift_table and args.ood_scores):
        raise ValueError("--shift needs --shift-out, --shift-table and --ood-scores: the files to write")
    device = setup(args)
    prepared = data_mod.load(args.data)
    if len(args.checkpoints) != len(args.members):
        raise ValueError(
            f"give one --checkpoints file per member: {len(args.members)} members, {len(args.checkpoints)} checkpoints"
        )
    # members of one run share its checkpoint: load each file once
    ckpts = {path: checkpoint.load_base(path) for path in dict.fromkeys(args.checkpoints)}
    arch = ckpts[args.checkpoints[0]]["arch"]
    members = [checkpoint.load_weights(path, arch, "member") for path in args.members]
    swa = [checkpoint.load_weights(path, arch, "SWA model") for path in args.swa or []]
    # the network and the data on the device once, for the predictions and the member landscape
    model = models.from_arch(arch).to(device)
    splits = {split: data_mod.DeviceData(prepared, split, device) for split in ("train", "val", "test")}
    out = member_predictions(
        model,
        [ckpts[path]["model"] for path in args.checkpoints],
        members,
        splits,
        swa_states=swa,
        model_name=arch["model"],
    )
    out.update(
        dataset=prepared["name"],
        model=arch["model"],
        method=args.method,
        ensemble=args.ensemble,
        members=[str(p) for p in args.members],
        checkpoints=[str(p) for p in args.checkpoints],
        swa=[str(p) for p in args.swa or []],
    )
    storage.save_arrays(out, args.out)
    acc = member_accuracy(out["log_probs"], out["labels"])
    log(
        f"{args.method} {args.ensemble}: {len(members)} members, test accuracy "
        f"{', '.join(f'{a:.4f}' for a in acc.tolist())} -> {args.out}"
    )
    if args.shift:  # in this process too: the network, the members and the device are set up already
        from .shift import predict_under_shift

        shifted = storage.load_torch(args.shift, "shifted test split")
        cell = {key: out[key] for key in ("dataset", "model", "method", "ensemble")}
        stored, table, scores = predict_under_shift(model, members, prepared, shifted, device, cell, out["log_probs"])
        storage.save_arrays({**stored, "labels": out["labels"], "members": out["members"]}, args.shift_out)
        storage.save_parquet(table, args.shift_table)
        storage.save_parquet(scores, args.ood_scores)
        log(
            f"under shift: corrupted test splits {len(table) - 1} -> {args.shift_table}; "
            f"OOD sets {', '.join(shifted['ood']) or 'none'} -> {args.ood_scores}"
        )
    if args.member_landscape:  # in this process: its start-up would cost about what the landscape does
        states = dict(zip(args.members, members))
        lines = [({"method": args.method, "ensemble": args.ensemble}, args.member_landscape, list(args.members))]
        landscape.write_lines(
            prepared,
            ckpts[args.checkpoints[0]],
            lines,
            states.__getitem__,
            model,
            splits,
            args.steps,
            args.bn_batches,
            log,
            # the aligned line where members are separate networks (independent seeds); a snapshot
            # run's members are no permutation of each other (symmetry.continuation): it would double the cost
            align_model=arch["model"] if args.method == "independent" else None,
        )


def landscape(args) -> None:
    """The loss along the line from the checkpoint to each run's weights, a table each (the runs
    of a pack in one process)."""
    from . import landscape as lines_of

    device = setup(args)
    prepared = data_mod.load(args.data)
    ckpt = checkpoint.load_base(args.checkpoint)
    if not len(args.weights) == len(args.run) == len(args.out):
        raise ValueError(
            f"give one --run and one --out per --weights file: {len(args.weights)} weights, "
            f"{len(args.run)} runs, {len(args.out)} outputs"
        )
    if args.controls and len(args.controls) != len(args.weights):
        raise ValueError(f"give one --controls file per --weights file: {len(args.weights)} and {len(args.controls)}")

    # each file read once: a run's weights serve its function distance and its line, and a pack's
    # runs share one control (a pack's states are a few models, held until the job ends)
    @functools.cache
    def load(path):
        return ckpt["model"] if path == args.checkpoint else checkpoint.load_weights(path, ckpt["arch"])

    model = models.from_arch(ckpt["arch"]).to(device)
    splits = {split: data_mod.DeviceData(prepared, split, device) for split in ("train", "val", "test")}
    columns = [{"run": run} for run in args.run]
    if args.controls:  # here, where the network and the data are loaded anyway: no job of its own
        for row, weights, control in zip(columns, args.weights, args.controls):
            row.update(function_distance(model, load(weights), load(control), splits["test"]))
    lines = [(row, out, [args.checkpoint, weights]) for row, out, weights in zip(columns, args.out, args.weights)]
    lines_of.write_lines(prepared, ckpt, lines, load, model, splits, args.steps, args.bn_batches, log)


def function_distance(model, state: dict, control: dict, data) -> dict:
    """A run's distance in function space to its control on a split (docs/DESIGN.md): the share of
    images whose top-1 labels differ, and the mean KL(p_control || p_run), each model in eval mode
    with its own weights and BatchNorm statistics, in float64 (the shares exact)."""
    from .predict import log_softmax_outputs

    outs = []
    for weights in (control, state):
        model.load_state_dict(weights)
        outs.append(log_softmax_outputs(model, data).double())
    ref, log_p = outs
    return {
        "func_disagree_control": (ref.argmax(-1) != log_p.argmax(-1)).double().mean().item(),
        "func_kl_control": (ref.exp() * (ref - log_p)).sum(-1).mean().item(),
    }
