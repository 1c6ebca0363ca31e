"""The training loop, used for base training and for distance-regularized continuation.

SGD with momentum over data resident on the device; the penalty (if any) adds its closed-form
gradient after the cross-entropy backward. Per-step quantities are accumulated on the device and
read once per epoch, so the loop never waits for the GPU inside an epoch. Speed options (bf16
autocast, channels_last layout, torch.compile) are TrainConfig fields; benchmarks/ measures them.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import SWALR

from .data import DeviceData
from .spec import DEFAULTS, SCHEDULES
from .models import trainable_parameters
from .penalty import DistancePenalty

if TYPE_CHECKING:  # a type only
    from .resume import ResumeState

# speed options: each changes how fast a run goes, not what it trains (bf16 and compile change rounding)
AMP = ("auto", "off", "bf16")
CHANNELS_LAST = ("auto", "on", "off")
COMPILE = ("auto", "off", "on", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    epochs: int                  # epochs run by this call
    lr: float = 1e-2             # learning rate at the call's first step
    momentum: float = 0.9
    weight_decay: float = 1e-3   # L2, applied by SGD
    batch_size: int = 128
    schedule: str = "constant"   # constant | step | cosine | cosine_restarts | cyclic | swa, stepped every batch
    step_size: int = DEFAULTS["step_size"]     # epochs between decays (step)
    step_gamma: float = DEFAULTS["step_gamma"]  # decay factor (step)
    t0: int = DEFAULTS["t0"]                   # epochs in the first cycle (cosine_restarts, cyclic)
    t_mult: int = DEFAULTS["t_mult"]           # cycle length multiplier (cosine_restarts)
    eta_min: float = DEFAULTS["eta_min"]       # lowest lr (cosine, cosine_restarts, cyclic); swa: its lr
    seed: int = 0                # data order and augmentation
    amp: str = "auto"            # bf16 autocast of forward and loss: auto = on CUDA only | off | bf16
    channels_last: str = "auto"  # NHWC layout for conv nets: auto = on (measured faster on CPU) | on | off
    compile: str = "auto"        # torch.compile: auto = off (not yet measured on a GPU) | off | on | a mode


@dataclass(frozen=True)
class Speed:
    """The speed options resolved for one model on one device."""
    amp: bool
    channels_last: bool
    compile_mode: str | None  # None: eager


def resolve_speed(cfg: TrainConfig, model: torch.nn.Module, device: torch.device) -> Speed:
    """What the `auto` values mean for this model and device (see benchmarks/README.md for the figures)."""
    for name, choices in (("amp", AMP), ("channels_last", CHANNELS_LAST), ("compile", COMPILE)):
        if getattr(cfg, name) not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got '{getattr(cfg, name)}'")
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    has_conv = any(p.dim() == 4 for p in model.parameters())  # an MLP gains nothing from NHWC
    channels_last = has_conv and cfg.channels_last != "off"
    compile_mode = {"auto": None, "off": None, "on": "default"}.get(cfg.compile, cfg.compile)
    return Speed(amp, channels_last, compile_mode)


def make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A torch.optim.lr_scheduler stepped once per batch; epoch-valued settings become steps."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "constant":
        return sched.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.schedule == "step":
        return sched.StepLR(optimizer, cfg.step_size * steps_per_epoch, cfg.step_gamma)
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, cfg.epochs * steps_per_epoch, cfg.eta_min)
    if cfg.schedule == "cosine_restarts":
        return sched.CosineAnnealingWarmRestarts(optimizer, cfg.t0 * steps_per_epoch, cfg.t_mult, cfg.eta_min)
    if cfg.schedule == "cyclic":  # FGE (Garipov et al. 2018): linear from eta_min up to lr and back every t0 epochs.
        # CyclicLR starts at its low end, so each cycle ends at its lowest lr, where FGE takes a member
        # (the paper's cycle shifted by half a cycle). Momentum stays the optimizer's own.
        return sched.CyclicLR(optimizer, cfg.eta_min, cfg.lr, step_size_up=cfg.t0 * steps_per_epoch / 2,
                              cycle_momentum=False)
    if cfg.schedule == "swa":  # SWA (Izmailov et al. 2018): cosine from lr to the SWA lr over the first epoch, then constant
        return SWALR(optimizer, cfg.eta_min, anneal_epochs=steps_per_epoch, anneal_strategy="cos")
    raise ValueError(f"unknown schedule '{cfg.schedule}'; expected one of {', '.join(SCHEDULES)}")


@torch.inference_mode()
def evaluate(model, data: DeviceData, batch_size: int = 1024, speed: Speed | None = None) -> torch.Tensor:
    """(mean cross-entropy, accuracy) on a split, as one device tensor."""
    model.eval()
    amp, channels_last = (speed.amp, speed.channels_last) if speed is not None else (False, False)
    sums = torch.zeros(2, device=data.device)
    for xb, yb in data.batches(batch_size, channels_last=channels_last):
        with torch.autocast(data.device.type, torch.bfloat16, enabled=amp):
            out = model(xb)
        sums += torch.stack([F.cross_entropy(out.float(), yb, reduction="sum"), (out.argmax(1) == yb).sum()])
    return sums / len(data)


def flat_norm(tensors) -> torch.Tensor:
    return torch.stack(torch._foreach_norm(list(tensors))).norm()


def checkpoint_distances(penalty: DistancePenalty, params: list[torch.Tensor]) -> torch.Tensor:
    """The distances an epoch's row reports: to the first checkpoint, to the nearest active centre,
    to every checkpoint."""
    to_each = penalty.sq_distances(params, penalty.checkpoints).sqrt()  # [0]: the first
    # the active centres are the checkpoints themselves unless they are merged
    nearest = penalty.sq_distances(params).min().sqrt() if penalty.merged else to_each.min()
    return torch.cat([to_each[:1], nearest.view(1), to_each])


def epoch_row(epoch: int, lr: float, lr_steps: list[float], values: list[float], n_train: int, has_penalty: bool,
              origin_norm: float | None, seconds: float, train_seconds: float) -> dict:
    """An epoch's metrics from its measured values (the training sums, val and test loss and
    accuracy, weight norm, then with a penalty the distances: to the first checkpoint, to the
    nearest centre, to every checkpoint)."""
    ce_sum, correct, pen_sum, pen_grad_sum, ce_grad_sum, val_loss, val_acc, test_loss, test_acc, weight_norm = values[:10]
    train_ce = ce_sum / n_train
    train_loss = train_ce + pen_sum / n_train
    row = {
        "epoch": epoch, "lr": lr, "lr_steps": list(lr_steps), "train_loss": train_loss, "train_ce": train_ce,
        "train_acc": correct / n_train, "penalty": pen_sum / n_train,
        "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
        "dist": math.nan, "dist_rel": math.nan, "dist_min": math.nan,
        "weight_norm": weight_norm,
        # the ratio of the epoch's mean gradient norms (docs/DESIGN.md)
        "grad_ratio": pen_grad_sum / ce_grad_sum if has_penalty and ce_grad_sum > 0 else math.nan,
        "epoch_seconds": seconds, "train_seconds": train_seconds,
        "images_per_second": n_train / train_seconds,  # of this model (a pack trains k times as many)
        "diverged": not math.isfinite(train_loss),
    }
    if origin_norm is not None:
        row["dist"], row["dist_min"] = values[10], values[11]
        row["dist_checkpoints"] = values[12:]
        row["dist_rel"] = values[10] / origin_norm  # relative to the checkpoint's norm
    return row


def epoch_line(row: dict, last_epoch: int) -> str:
    """An epoch's line in the job's log."""
    return (f"epoch {row['epoch']:4d}/{last_epoch}  lr {row['lr']:.3g}  loss {row['train_loss']:.4f}  "
            f"train {row['train_acc']:.3f}  val {row['val_acc']:.3f}  dist {row['dist']:.4g}  "
            f"{row['epoch_seconds']:.2f}s")


def fit(model, prepared: dict, cfg: TrainConfig, device: torch.device, penalty: DistancePenalty | None = None,
        first_epoch: int = 1, optimizer_state: dict | None = None, data_rng: torch.Tensor | None = None,
        log=print, resume: ResumeState | None = None, on_epoch_end=None, on_row=None, averaged=None):
    """Train `cfg.epochs` epochs; return (one metrics dict per epoch, optimizer, data generator).

    With a penalty, the distances are measured to its first centre (the checkpoint the run starts
    from) and to the nearest active centre. A loss that becomes NaN or inf stops the run early;
    its last row has `diverged` set. `data_rng` (a checkpoint's data generator state) continues
    that run's data order instead of starting one from `cfg.seed`. With `resume`, the run
    continues from a saved state if there is one, and saves its own as it goes.
    `on_epoch_end(epochs_done, model)` is called after every epoch (to save snapshots).
    `on_row(row)` is called with every epoch's metrics as soon as they are known (a diverged
    epoch's too), before the resumable state is saved (TensorBoard events).
    With `averaged` (a torch.optim.swa_utils.AveragedModel of `model`), the weights are averaged
    into it after every epoch (SWA); it is part of the resumable state.
    The speed options (`cfg.amp`, `channels_last`, `compile`) leave `model` itself as it was:
    a compiled wrapper is used only inside, and the layout is back to the usual one at the end.
    """
    speed = resolve_speed(cfg, model, device)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
        if penalty is not None:
            penalty.match_layout(trainable_parameters(model))
    # the wrapper shares the model's parameters; state dicts are taken from `model`, so keep their keys
    net = torch.compile(model, mode=speed.compile_mode) if speed.compile_mode else model
    params = trainable_parameters(model)
    train, val, test = (DeviceData(prepared, split, device) for split in ("train", "val", "test"))
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:  # keep the momentum buffers; the lr is this call's
        # a copy: load_state_dict would share the caller's buffers and this loop would change them
        optimizer.load_state_dict(copy.deepcopy(optimizer_state))
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = cfg.lr
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg.seed)
    if data_rng is not None:
        generator.set_state(data_rng)
    origin = penalty.centers[0] if penalty is not None and penalty.centers else None
    origin_norm = flat_norm(origin).item() if origin is not None else None

    # everything that decides the rest of the run, for a resumable state
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "data_rng": generator,
             "penalty": penalty, "averaged": averaged}
    rows = resume.restore(parts) if resume is not None else []

    for epoch in range(first_epoch + len(rows), first_epoch + cfg.epochs):
        net.train()
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        # ce * n, correct, penalty * n, |grad penalty|, |grad CE|: summed on the device, read once per epoch
        sums = torch.zeros(5, device=device)
        zero, zeros = torch.zeros((), device=device), torch.zeros(2, device=device)
        lr_steps = []  # the lr each step used: schedules like cosine change it inside an epoch
        for xb, yb in train.batches(cfg.batch_size, generator, channels_last=speed.channels_last):
            with torch.autocast(device.type, torch.bfloat16, enabled=speed.amp):
                out = net(xb)
                ce = F.cross_entropy(out, yb)
            optimizer.zero_grad(set_to_none=False)
            ce.backward()
            pen, grad_norms = penalty.add_grad_(params) if penalty is not None else (zero, zeros)
            lr_steps.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            sums += torch.cat([torch.stack([ce.detach() * len(yb), (out.argmax(1) == yb).sum(), pen * len(yb)]),
                               grad_norms])
        if device.type == "cuda":  # the training pass's time, apart from evaluation
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - start
        evals = torch.cat([sums, evaluate(net, val, speed=speed), evaluate(net, test, speed=speed),
                           flat_norm(params).view(1)])
        if origin is not None:
            evals = torch.cat([evals, checkpoint_distances(penalty, params)])
        values = evals.tolist()  # the epoch's one synchronisation
        row = epoch_row(epoch, lr, lr_steps, values, len(train), penalty is not None, origin_norm,
                        time.perf_counter() - start, train_seconds)
        rows.append(row)
        log(epoch_line(row, first_epoch + cfg.epochs - 1))
        if on_row is not None:
            on_row(row)
        if row["diverged"]:
            log(f"diverged at epoch {epoch}: the training loss is {row['train_loss']}; stopping this run")
            break
        if penalty is not None:
            penalty.end_of_epoch(len(rows), params)
        if averaged is not None:
            averaged.update_parameters(model)
        if on_epoch_end is not None:
            on_epoch_end(len(rows), model)
        if resume is not None:
            resume.save_if_due(parts, rows)
    model.to(memory_format=torch.contiguous_format)
    return rows, optimizer, generator
