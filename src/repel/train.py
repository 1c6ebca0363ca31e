"""The training loop, used for base training and for distance-regularized continuation.

SGD with momentum over data resident on the device; the penalty (if any) adds its closed-form
gradient after the cross-entropy backward. Per-step quantities are accumulated on the device and
read once per epoch, so the loop never waits for the GPU inside an epoch. Speed options (bf16
autocast, channels_last layout, torch.compile) are TrainConfig fields; benchmarks/ measures them.

One loop, `train_members`, trains k >= 1 members that share the data order, optimizer settings and
lr schedule: `fit` gives it one model (`OneModel`), repel.pack a stack of k trained in one batched
step. Whatever trains them, every member gets its rows, its divergence check, its penalty's new
checkpoints, its callbacks and its place in the one resumable state from the same code.

Divergence: an epoch marks its run (or a pack's member) diverged, and stops it after that epoch's
row, when its training loss (cross-entropy plus penalty) is not finite, or when its mean training
cross-entropy is above DIVERGENCE_FACTOR * ln C, C the number of classes. ln C is the cross-entropy
of a uniform guess: a mean of 100 ln C (230 nats with 10 classes) means logits that have blown up,
confidently wrong, a state SGD does not bring back to a working model. Measured on digits: the
small CNN at lr 50 has 7.9e5 after its first epoch (5.7e12 after its third), the MLP at lr 5
2.4e11 (and accuracy 0.1 from then on), while the roughest run that recovered, the MLP at lr 1,
peaked at 56 (24 ln C); healthy runs stay near or below ln C. The rule is on the cross-entropy
alone and needs no earlier epoch: a run can explode within its first epoch, and the penalty adds
at most its strength per centre (every kernel is <= 1), so a strong penalty is no explosion; one
that overflows makes the loss inf.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import SWALR

from .data import DeviceData
from .models import trainable_parameters
from .penalty import DistancePenalty
from .resume import PerMember, ResumeState
from .spec import DEFAULTS, SCHEDULES

EVAL_BATCH = 1024  # images per evaluation batch (no gradients: as large as memory comfortably allows)
DIVERGENCE_FACTOR = 100.0  # diverged: mean training CE above this multiple of ln(classes); see above
# speed options: each changes how fast a run goes, not what it trains (bf16 and compile change rounding)
AMP = ("auto", "off", "bf16")
CHANNELS_LAST = ("auto", "on", "off")
COMPILE = ("auto", "off", "on", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    epochs: int  # epochs run by this call
    lr: float = 1e-2  # learning rate at the call's first step
    momentum: float = 0.9
    weight_decay: float = 1e-3  # L2, applied by SGD
    batch_size: int = 128
    schedule: str = "constant"  # constant | step | cosine | cosine_restarts | cyclic | swa, stepped every batch
    step_size: int = DEFAULTS["step_size"]  # epochs between decays (step)
    step_gamma: float = DEFAULTS["step_gamma"]  # decay factor (step)
    t0: int = DEFAULTS["t0"]  # epochs in the first cycle (cosine_restarts, cyclic)
    t_mult: int = DEFAULTS["t_mult"]  # cycle length multiplier (cosine_restarts)
    eta_min: float = DEFAULTS["eta_min"]  # lowest lr (cosine, cosine_restarts, cyclic); swa: its lr
    seed: int = 0  # data order and augmentation
    amp: str = "auto"  # bf16 autocast of forward and loss: auto = on CUDA only | off | bf16
    channels_last: str = "auto"  # NHWC layout for conv nets: auto = on (measured faster on CPU) | on | off
    compile: str = "auto"  # torch.compile: auto = off (not yet measured on a GPU) | off | on | a mode


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
        return sched.CyclicLR(
            optimizer, cfg.eta_min, cfg.lr, step_size_up=cfg.t0 * steps_per_epoch / 2, cycle_momentum=False
        )
    if cfg.schedule == "swa":  # SWA (Izmailov et al. 2018): cosine from lr to the SWA lr over epoch 1, then constant
        return SWALR(optimizer, cfg.eta_min, anneal_epochs=steps_per_epoch, anneal_strategy="cos")
    raise ValueError(f"unknown schedule '{cfg.schedule}'; expected one of {', '.join(SCHEDULES)}")


@torch.inference_mode()
def _outputs(forward, data: DeviceData, speed: Speed | None, batch_size: int = EVAL_BATCH):
    """Each batch of a split in order: the members' float outputs (k, B, classes), the labels, and
    the batch's first index. `forward` runs the members in eval mode (OneModel.eval_forward)."""
    amp, channels_last = (speed.amp, speed.channels_last) if speed is not None else (False, False)
    start = 0
    for xb, yb in data.batches(batch_size, channels_last=channels_last):
        with torch.autocast(data.device.type, torch.bfloat16, enabled=amp):
            out = forward(xb)
        yield out.float(), yb, start
        start += len(yb)


@torch.inference_mode()
def evaluate_members(forward, data: DeviceData, speed: Speed | None = None, reference=None) -> torch.Tensor:
    """Each member's (mean cross-entropy, accuracy) on a split, as one (k, 2) device tensor; with
    `reference` (the (k, N, classes) log-softmax of the models the distances are to, on this split:
    `log_probs`), (k, 4) with func_disagree and func_kl (docs/DESIGN.md) after them."""
    sums = 0
    for out, yb, start in _outputs(forward, data, speed):
        columns = [
            F.cross_entropy(out.flatten(0, 1), yb.repeat(len(out)), reduction="none").view(len(out), -1).sum(1),
            (out.argmax(-1) == yb).sum(1),
        ]
        if reference is not None:
            ref, log_p = reference[:, start : start + len(yb)], out.log_softmax(-1)
            columns.append((log_p.argmax(-1) != ref.argmax(-1)).sum(1))  # top-1 labels that differ
            columns.append((ref.exp() * (ref - log_p)).sum((1, 2)))  # KL(p_c || p_theta), summed over images
        sums = sums + torch.stack(columns, 1)
    return sums / len(data)


@torch.inference_mode()
def log_probs(forward, data: DeviceData, speed: Speed | None = None) -> torch.Tensor:
    """The members' log-softmax on a split, (k, N, classes)."""
    return torch.cat([out.log_softmax(-1) for out, _, _ in _outputs(forward, data, speed)], 1)


def evaluate(model, data: DeviceData, speed: Speed | None = None) -> torch.Tensor:
    """(mean cross-entropy, accuracy) of one model on a split, as one device tensor."""
    model.eval()
    return evaluate_members(lambda x: model(x).unsqueeze(0), data, speed)[0]


def flat_norm(tensors) -> torch.Tensor:
    return torch.stack(torch._foreach_norm(list(tensors))).norm()


def _flat(tensors) -> torch.Tensor:
    """Tensors as one vector, each in its logical (not memory) order, so layouts agree."""
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b); NaN where either is 0 (it has no direction)."""
    return (a @ b) / (a.norm() * b.norm())


class Directions:
    """Each measured member's weights after its last epoch and its last epoch's step: what the next
    epoch's step_cos and radial_cos compare its step with (docs/DESIGN.md). Part of the resumable
    state, so a resumed run's first step_cos is the uninterrupted run's."""

    def __init__(self, members, measured: list[DistancePenalty | None]):
        self.last = [_flat(members.params(i)) if p is not None else None for i, p in enumerate(measured)]
        self.steps: list[torch.Tensor | None] = [None] * len(measured)

    def measure(self, i: int, params: list[torch.Tensor], center: list[torch.Tensor]) -> torch.Tensor:
        """(step_cos, radial_cos) of member i's epoch that just ended, on the device; keeps its step.
        The first epoch has no earlier step (step_cos NaN) and starts at the centre (radial_cos NaN)."""
        now = _flat(params)
        step, previous = now - self.last[i], self.steps[i]
        step_cos = _cos(step, previous) if previous is not None else torch.full((), math.nan, device=now.device)
        radial_cos = _cos(step, self.last[i] - _flat(center))
        self.last[i], self.steps[i] = now, step
        return torch.stack([step_cos, radial_cos])

    def state_dict(self) -> dict:
        return {"last": self.last, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.last, self.steps = list(state["last"]), list(state["steps"])


def checkpoint_distances(penalty: DistancePenalty, params: list[torch.Tensor]) -> torch.Tensor:
    """The distances an epoch's row reports: to the first checkpoint, to the nearest active centre,
    to every checkpoint."""
    to_each = penalty.sq_distances(params, penalty.checkpoints).sqrt()  # [0]: the first
    # the active centres are the checkpoints themselves unless they are merged
    nearest = penalty.sq_distances(params).min().sqrt() if penalty.merged else to_each.min()
    return torch.cat([to_each[:1], nearest.view(1), to_each])


def divergence(row: dict, ce_limit: float) -> str | None:
    """Why an epoch's row marks its run diverged (the module's rule), or None."""
    if not math.isfinite(row["train_loss"]):
        return f"the training loss is {row['train_loss']}"
    if row["train_ce"] > ce_limit:
        return f"the training cross-entropy {row['train_ce']:.4g} is above {DIVERGENCE_FACTOR:g} ln C = {ce_limit:.4g}"
    return None


def epoch_row(
    epoch: int,
    lr: float,
    lr_steps: list[float],
    values: list[float],
    n_train: int,
    has_penalty: bool,
    origin_norm: float | None,
    seconds: float,
    train_seconds: float,
    ce_limit: float = math.inf,
) -> dict:
    """An epoch's metrics from its measured values (the training sums, val and test loss and
    accuracy, weight norm, then with a penalty func_disagree, func_kl, step_cos, radial_cos and the
    distances: to the first checkpoint, to the nearest centre, to every checkpoint). `ce_limit`:
    the training cross-entropy above which it diverged."""
    ce_sum, correct, pen_sum, pen_grad_sum, ce_grad_sum = values[:5]
    val_loss, val_acc, test_loss, test_acc, weight_norm = values[5:10]
    train_ce = ce_sum / n_train
    train_loss = train_ce + pen_sum / n_train
    row = {
        "epoch": epoch,
        "lr": lr,
        "lr_steps": list(lr_steps),
        "train_loss": train_loss,
        "train_ce": train_ce,
        "train_acc": correct / n_train,
        "penalty": pen_sum / n_train,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "dist": math.nan,
        "dist_rel": math.nan,
        "dist_min": math.nan,
        "weight_norm": weight_norm,
        # to the first checkpoint in function space and the direction of travel (docs/DESIGN.md)
        "func_disagree": math.nan,
        "func_kl": math.nan,
        "step_cos": math.nan,
        "radial_cos": math.nan,
        # the ratio of the epoch's mean gradient norms (docs/DESIGN.md)
        "grad_ratio": pen_grad_sum / ce_grad_sum if has_penalty and ce_grad_sum > 0 else math.nan,
        "epoch_seconds": seconds,
        "train_seconds": train_seconds,
        "images_per_second": n_train / train_seconds,  # of this model (a pack trains k times as many)
        "diverged": False,  # the rule's verdict, set below once the row is complete
    }
    if origin_norm is not None:
        row["func_disagree"], row["func_kl"], row["step_cos"], row["radial_cos"] = values[10:14]
        row["dist"], row["dist_min"] = values[14], values[15]
        row["dist_checkpoints"] = values[16:]
        row["dist_rel"] = values[14] / origin_norm  # relative to the checkpoint's norm
    row["diverged"] = divergence(row, ce_limit) is not None
    return row


def epoch_line(row: dict, last_epoch: int) -> str:
    """An epoch's line in the job's log."""
    return (
        f"epoch {row['epoch']:4d}/{last_epoch}  lr {row['lr']:.3g}  loss {row['train_loss']:.4f}  "
        f"train {row['train_acc']:.3f}  val {row['val_acc']:.3f}  dist {row['dist']:.4g}  "
        f"{row['epoch_seconds']:.2f}s"
    )


class OneModel:
    """What `train_members` trains when it trains one model: the model itself, stepped as it is.

    The members `train_members` takes (this, or repel.pack's batched stack of k) offer: `k`,
    `speed`, `optimized` (the tensors SGD steps), `optimizer_state(states)` (the members' SGD
    states as one for `optimized`), `params(i)` (member i's trainable parameters, in the layout
    training uses), `train_pass(batches, optimizer, scheduler)` (an epoch's steps; per member
    (ce * n, correct, penalty * n, |grad penalty|, |grad CE|) summed on the device, and the lr of
    each step), `eval_forward()` (the members in eval mode: images -> (k, B, classes) outputs, for
    `evaluate_members`), `weight_norms()` ((k,)), `model(i)`
    (a module holding member i's current weights and buffers), `stop(i)` and `stopped`, `parts()`
    (their resumable state) and `finish()` (the models hold the trained weights, in their usual layout).
    """

    k = 1

    def __init__(self, model: torch.nn.Module, penalty: DistancePenalty | None, speed: Speed):
        self.module, self.penalty, self.speed = model, penalty, speed
        if speed.channels_last:
            model.to(memory_format=torch.channels_last)
        # the wrapper shares the model's parameters; state dicts are taken from `model`, so keep their keys
        self.net = torch.compile(model, mode=speed.compile_mode) if speed.compile_mode else model
        self.optimized = trainable_parameters(model)
        self.stopped: set[int] = set()

    def optimizer_state(self, states: list[dict]) -> dict:
        # a copy: load_state_dict would share the caller's buffers and the loop would change them
        return copy.deepcopy(states[0])

    def params(self, i: int) -> list[torch.Tensor]:
        return self.optimized

    def train_pass(self, batches, optimizer, scheduler) -> tuple[torch.Tensor, list[float]]:
        device, params, penalty, amp = self.optimized[0].device, self.optimized, self.penalty, self.speed.amp
        sums = torch.zeros(5, device=device)
        zero, zeros = torch.zeros((), device=device), torch.zeros(2, device=device)
        lr_steps = []  # the lr each step used: schedules like cosine change it inside an epoch
        self.net.train()
        for xb, yb in batches:
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                out = self.net(xb)
                ce = F.cross_entropy(out, yb)
            optimizer.zero_grad(set_to_none=False)
            ce.backward()
            pen, grad_norms = penalty.add_grad_(params) if penalty is not None else (zero, zeros)
            lr_steps.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            sums += torch.cat(
                [torch.stack([ce.detach() * len(yb), (out.argmax(1) == yb).sum(), pen * len(yb)]), grad_norms]
            )
        return sums.view(1, 5), lr_steps

    def eval_forward(self):
        self.net.eval()
        return lambda x: self.net(x).unsqueeze(0)

    def weight_norms(self) -> torch.Tensor:
        return flat_norm(self.optimized).view(1)

    def model(self, i: int) -> torch.nn.Module:
        return self.module

    def stop(self, i: int) -> None:
        self.stopped.add(i)  # the model keeps the weights it diverged with

    def parts(self) -> dict:
        return {"model": self.module}

    def finish(self) -> None:
        self.module.to(memory_format=torch.contiguous_format)


def _measure(
    members,
    sums: torch.Tensor,
    val: DeviceData,
    test: DeviceData,
    measured: list[DistancePenalty | None],
    reference: torch.Tensor | None,
    directions: Directions,
) -> list[list[float]]:
    """Every member's epoch values in epoch_row's order: the training sums, val and test loss and
    accuracy, weight norm, and with a penalty in `measured` its function distances to `reference`,
    its directions (taking its step into `directions`) and its distances; one synchronisation."""
    forward = members.eval_forward()
    on_val = evaluate_members(forward, val, members.speed, reference)
    on_test = evaluate_members(forward, test, members.speed)
    evals = torch.cat([sums, on_val[:, :2], on_test, members.weight_norms().view(-1, 1)], 1)
    per_member = [
        evals[i]
        if penalty is None
        else torch.cat(
            [
                evals[i],
                on_val[i, 2:],
                directions.measure(i, members.params(i), penalty.checkpoints[0]),
                checkpoint_distances(penalty, members.params(i)),
            ]
        )
        for i, penalty in enumerate(measured)
    ]
    values = torch.cat(per_member).tolist()  # the epoch's one synchronisation
    out, start = [], 0
    for tensor in per_member:
        out.append(values[start : start + len(tensor)])
        start += len(tensor)
    return out


def train_members(
    members,
    prepared: dict,
    cfg: TrainConfig,
    device: torch.device,
    penalties: list[DistancePenalty | None],
    first_epoch: int = 1,
    optimizer_states: list[dict] | None = None,
    data_rng: torch.Tensor | None = None,
    log=print,
    resume: ResumeState | None = None,
    on_epoch_end=None,
    on_row=None,
    averaged: list | None = None,
    names: list[str] | None = None,
):
    """The training loop: `members` (OneModel, or repel.pack's stack) for `cfg.epochs` epochs.

    Returns (each member's metrics rows, the optimizer, the data generator). Member i trains with
    `penalties[i]` (None: none) from `optimizer_states[i]`, with `averaged[i]` (an AveragedModel, or
    None) averaging its weights after every epoch (SWA), and logs under `names[i]` (None: no name).
    A member that diverges (the module's rule) stops alone after its row; the loop ends when every
    member has stopped or the epochs are done. `on_row(i, row)` gets each row as soon as it is
    known, `on_epoch_end(i, epochs_done, model)` each member's model after each of its epochs.
    With `resume`, the whole loop saves and resumes as one state.
    """
    k, speed = members.k, members.speed
    if speed.channels_last:  # the checkpoints in the parameters' layout, for the fused foreach kernels
        for i, penalty in enumerate(penalties):
            if penalty is not None:
                penalty.match_layout(members.params(i))
    train, val, test = (DeviceData(prepared, split, device) for split in ("train", "val", "test"))
    optimizer = torch.optim.SGD(members.optimized, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if optimizer_states is not None:  # keep the momentum buffers; the lr is this call's
        optimizer.load_state_dict(members.optimizer_state(optimizer_states))
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = cfg.lr
    scheduler = make_scheduler(optimizer, cfg, math.ceil(len(train) / cfg.batch_size))
    generator = torch.Generator().manual_seed(cfg.seed)
    if data_rng is not None:
        generator.set_state(data_rng)
    # distances are measured to each penalty's first centre, the checkpoint it starts from
    measured = [p if p is not None and p.centers else None for p in penalties]
    origin_norms = [flat_norm(p.centers[0]).item() if p is not None else None for p in measured]
    averaged = averaged if averaged is not None else [None] * k
    # the direction of travel, and the checkpoint's predictions on the validation split, taken once
    # before any step (or restored state): what the function distances compare with
    directions = Directions(members, measured)
    reference = log_probs(members.eval_forward(), val, speed) if any(p is not None for p in measured) else None
    ce_limit = DIVERGENCE_FACTOR * math.log(prepared["num_classes"])  # the divergence rule (module docstring)
    last_epoch = first_epoch + cfg.epochs - 1

    # everything that decides the rest of the run, for one resumable state; its "rows" are one record
    # per epoch, {"epoch", "members": each member's row, None once it has stopped}
    parts = {
        **members.parts(),
        "optimizer": optimizer,
        "scheduler": scheduler,
        "data_rng": generator,
        "penalties": PerMember(penalties),
        "averaged": PerMember(averaged),
        "directions": directions,
    }
    records = resume.restore(parts) if resume is not None else []

    for epoch in range(first_epoch + len(records), last_epoch + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        batches = train.batches(cfg.batch_size, generator, channels_last=speed.channels_last)
        sums, lr_steps = members.train_pass(batches, optimizer, scheduler)
        if device.type == "cuda":  # the training pass's time, apart from evaluation
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - start
        values = _measure(members, sums, val, test, measured, reference, directions)
        seconds = time.perf_counter() - start

        records.append({"epoch": epoch, "members": [None] * k})
        for i, penalty in enumerate(penalties):
            if i in members.stopped:
                continue
            row = epoch_row(
                epoch,
                lr,
                lr_steps,
                values[i],
                len(train),
                penalty is not None,
                origin_norms[i],
                seconds,
                train_seconds,
                ce_limit,
            )
            records[-1]["members"][i] = row
            say = log if names is None else partial(_named, log, names[i])
            say(epoch_line(row, last_epoch))
            if on_row is not None:
                on_row(i, row)
            if row["diverged"]:
                say(
                    f"diverged at epoch {epoch}: {divergence(row, ce_limit)}; "
                    + ("stopping this run" if k == 1 else "stopping this member, the others go on")
                )
                members.stop(i)
                continue
            if penalty is not None:
                penalty.end_of_epoch(len(records), members.params(i))
            if averaged[i] is not None or on_epoch_end is not None:
                model = members.model(i)
                if averaged[i] is not None:
                    averaged[i].update_parameters(model)
                if on_epoch_end is not None:
                    on_epoch_end(i, len(records), model)
        if len(members.stopped) == k:  # nothing left to train or save
            break
        if resume is not None:
            resume.save_if_due(parts, records)
    members.finish()
    rows = [[record["members"][i] for record in records if record["members"][i] is not None] for i in range(k)]
    return rows, optimizer, generator


def _named(log, name: str, msg: str) -> None:
    log(f"{name}: {msg}")


def fit(
    model,
    prepared: dict,
    cfg: TrainConfig,
    device: torch.device,
    penalty: DistancePenalty | None = None,
    first_epoch: int = 1,
    optimizer_state: dict | None = None,
    data_rng: torch.Tensor | None = None,
    log=print,
    resume: ResumeState | None = None,
    on_epoch_end=None,
    on_row=None,
    averaged=None,
):
    """Train `cfg.epochs` epochs; return (one metrics dict per epoch, optimizer, data generator).

    `train_members` with one member. With a penalty, the distances are measured to its first
    centre (the checkpoint the run starts from) and to the nearest active centre. A run that
    diverges (the module's rule: a non-finite loss, or a cross-entropy far above chance's) stops
    early; its last row has `diverged` set. `data_rng` (a checkpoint's data generator state)
    continues that run's data order instead of starting one from `cfg.seed`. With `resume`, the
    run continues from a saved state if there is one, and saves its own as it goes.
    `on_epoch_end(epochs_done, model)` is called after every epoch (to save snapshots).
    `on_row(row)` is called with every epoch's metrics as soon as they are known (a diverged
    epoch's too), before the resumable state is saved (TensorBoard events).
    With `averaged` (a torch.optim.swa_utils.AveragedModel of `model`), the weights are averaged
    into it after every epoch (SWA); it is part of the resumable state.
    The speed options (`cfg.amp`, `channels_last`, `compile`) leave `model` itself as it was:
    a compiled wrapper is used only inside, and the layout is back to the usual one at the end.
    """
    members = OneModel(model, penalty, resolve_speed(cfg, model, device))
    rows, optimizer, generator = train_members(
        members,
        prepared,
        cfg,
        device,
        [penalty],
        first_epoch=first_epoch,
        optimizer_states=[optimizer_state] if optimizer_state is not None else None,
        data_rng=data_rng,
        log=log,
        resume=resume,
        on_epoch_end=(lambda i, done, m: on_epoch_end(done, m)) if on_epoch_end is not None else None,
        on_row=(lambda i, row: on_row(row)) if on_row is not None else None,
        averaged=[averaged],
    )
    return rows[0], optimizer, generator
