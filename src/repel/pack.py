"""Packed training: k grid points trained in one process, one batched forward and backward for all.

Grid points that continue from the same checkpoint with the same seed (so the same data order),
the same optimizer settings, lr schedule and epochs differ only in their distance penalty.
`fit_pack` trains them together. The members' trainable parameters are the rows of one (k, n)
tensor and their gradients the rows of another; each parameter is a (k, ...) view into them, and
BatchNorm buffers are stacked (torch.func.stack_module_state; each member keeps its own running
statistics). One vmap'd functional_call runs every member on the same batch, one
torch.optim.SGD steps the rows, which is each member's own SGD, since SGD with momentum and weight
decay is elementwise, and penalty.StackedPenalties adds every member's penalty gradient to its own
row at once. The loop is train.fit's own, train.train_members, given the stack (`_Batched`) in place
of one model: every member gets the metric rows `train.fit` would give it, equal up to the rounding
of batched matrix products and convolutions (tests/test_pack.py checks them against separate
`train.fit` runs).

What it gains (benchmarks/pack_speed.py, 2 CPU cores, digits, an rbf penalty per member): 8 MLPs
train 2.8-3.4x the total images/s of a pack of one (2.2x train.fit alone), where the matrix
products and the passes of SGD and the penalty over the rows are all that is left. The small CNN
gains nothing on a CPU (0.9-1.0x of train.fit alone): vmap's grouped convolutions and BatchNorm
batching rules cost about what they save, so the workflow trains conv nets on a CPU one after
another (batched=False). On a GPU, where one small run leaves most of the chip idle, the pack is
meant for the ResNets (`--device cuda` in the benchmark; not yet measured).

Members that vmap cannot batch (`batching_problem` says why) are trained one after another with
`train.fit` in the same process, which still saves the process start-ups. Either way the pack
saves and resumes as one state.
"""

from __future__ import annotations

import copy
import math
import warnings
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .data import DeviceData
from .models import parameter_names
from .penalty import DistancePenalty, StackedPenalties
from .resume import ResumeState, load_parts, state_of
from .train import Speed, TrainConfig, fit, resolve_speed, train_members

# A parameter that is a view with gaps (a member's slice of the rows) expects a dense gradient, and
# autograd says so once; ours is the same view into the gradient rows, which it adds into in place.
warnings.filterwarnings("ignore", "grad and param do not obey the gradient layout contract", UserWarning)


class _Stack:
    """The members' parameters side by side, and their batched forward.

    The trainable parameters live in one (k, n) tensor `flat`, a row per member (n = one model's
    trainable parameter count), and so do their gradients in `flat.grad`: each parameter the
    forward sees is a (k, ...) view into it, its .grad the same view into the gradient. SGD and the
    penalties then work on whole rows in a few operations, however many parameters and members
    there are (the flat-buffer layout of DDP's gradient_as_bucket_view). Conv weights are views in
    channels_last within each row when the run asks for it, the layout train.fit gives a single
    model's weights. BatchNorm buffers are stacked along a new first dimension
    (torch.func.stack_module_state; each member keeps its own running statistics).

    Stacking copies: the members' own modules are left as they are until `copy_to` writes a
    member's current weights back into one of them.
    """

    def __init__(self, models: list[nn.Module], device: torch.device, channels_last: bool):
        params, buffers = stack_module_state(models)
        self.k = len(models)
        self.channels_last = channels_last
        # the order of train.trainable_parameters, which the optimizer states' indices follow
        self.names = parameter_names(models[0])
        self.shapes = {name: params[name].shape[1:] for name in self.names}
        self.flat = torch.zeros(self.k, sum(math.prod(s) for s in self.shapes.values()), device=device)
        self.flat.grad = torch.zeros_like(self.flat)
        views, grads = self.views_of(self.flat), self.views_of(self.flat.grad)
        with torch.no_grad():
            for name in self.names:
                views[name].copy_(params[name])
            self.params = {name: p.to(device) for name, p in params.items() if name not in views}
            for name in self.names:  # leaves that share the rows' memory; autograd adds into their .grad in place
                self.params[name] = views[name].detach().requires_grad_()
                self.params[name].grad = grads[name]
            self.buffers = {name: b.to(device) for name, b in buffers.items()}
        # member i's parameters as views into its row: what the penalties' checkpoints and distances take
        self.members = [[self.params[name].detach()[i] for name in self.names] for i in range(self.k)]
        # the module whose code runs; functional_call swaps the stacked slices in for each call
        self.base = copy.deepcopy(models[0]).to("meta")
        # randomness "same": one dropout mask for all members, as k runs started from one torch RNG state draw
        self._forward = vmap(self._call, in_dims=(0, 0, None), randomness="same")

    def views_of(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each trainable parameter's (k, ...) view into a (k, n) tensor laid out as `flat`."""
        views, start = {}, 0
        for name, shape in self.shapes.items():
            block = rows[:, start : start + math.prod(shape)]
            if self.channels_last and len(shape) == 4:  # (out, in, h, w) stored as (out, h, w, in)
                out, cin, h, w = shape
                views[name] = block.view(self.k, out, h, w, cin).permute(0, 1, 4, 2, 3)
            else:
                views[name] = block.view(self.k, *shape)
            start += math.prod(shape)
        return views

    def rows_of(self, members: list[list[torch.Tensor] | None]) -> torch.Tensor:
        """A (k, n) tensor laid out as `flat` from each member's list of tensors shaped as its
        parameters (a penalty's centre, say); zeros for a member given None."""
        rows = torch.zeros_like(self.flat)
        views = self.views_of(rows)
        for i, tensors in enumerate(members):
            if tensors is not None:
                for name, t in zip(self.names, tensors):
                    views[name][i].copy_(t)
        return rows

    def _call(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's outputs (k, B, classes), in the mode (train or eval) `base` is in."""
        return self._forward(self.params, self.buffers, x)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's mean cross-entropy (k,) and outputs (k, B, classes)."""
        out = self.forward(x)
        # outside vmap: under it, cross_entropy runs as a slower decomposition
        ce = F.cross_entropy(out.flatten(0, 1), y.repeat(self.k), reduction="none").view(self.k, -1).mean(1)
        return ce, out

    @torch.no_grad()
    def copy_to(self, i: int, model: nn.Module) -> None:
        """Write member i's current parameters and buffers into `model` (in the model's own layout)."""
        for name, p in model.named_parameters():
            p.copy_(self.params[name][i])
        for name, b in model.named_buffers():
            b.copy_(self.buffers[name][i])

    def state_dict(self) -> dict:
        frozen = {name: p for name, p in self.params.items() if name not in self.shapes}
        return {"flat": self.flat, "frozen": frozen, "buffers": self.buffers}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.flat.copy_(state["flat"])  # in place: the parameters' views and the optimizer keep pointing here
        for mine, saved in ((self.params, state["frozen"]), (self.buffers, state["buffers"])):
            for name, t in saved.items():
                mine[name].copy_(t)


class _Stopped:
    """The members that diverged, and the weights each stopped with, kept in its own model (as
    train.fit leaves a diverged run's). Its slice of the stack goes on being computed, unused."""

    def __init__(self, models: list[nn.Module]):
        self.models = models
        self.members: set[int] = set()

    def stop(self, i: int, stack: _Stack) -> None:
        stack.copy_to(i, self.models[i])
        self.members.add(i)

    def state_dict(self) -> dict:
        return {i: self.models[i].state_dict() for i in sorted(self.members)}

    def load_state_dict(self, state: dict) -> None:
        for i, weights in state.items():
            self.models[i].load_state_dict(weights)
            self.members.add(i)


def _stacked_optimizer_state(states: list[dict], stack: _Stack) -> dict:
    """One SGD state dict for the flat parameters: each member's momentum buffers in its row.

    A pack shares one optimizer, so the members' settings (momentum, weight decay, ...) must agree.
    """

    def settings(state):
        return [{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")} for g in state["param_groups"]]

    if any(settings(s) != settings(states[0]) for s in states):
        raise ValueError("the members' optimizer settings differ; a pack trains with one optimizer")
    if len(states[0]["param_groups"]) != 1:
        raise ValueError(f"a pack takes optimizer states of one parameter group, got {len(states[0]['param_groups'])}")
    buffers = [[s["state"].get(j, {}).get("momentum_buffer") for j in range(len(stack.names))] for s in states]
    kept = {b is not None for member in buffers for b in member}
    if kept == {True, False}:
        raise ValueError("some of the members' parameters have a momentum buffer in their optimizer state, others not")
    groups = copy.deepcopy(states[0]["param_groups"])
    groups[0]["params"] = [0]
    return {"state": {0: {"momentum_buffer": stack.rows_of(buffers)}} if kept == {True} else {}, "param_groups": groups}


def _train_pass(
    stack: _Stack, optimizer, scheduler, batches, penalties: StackedPenalties, speed: Speed
) -> tuple[torch.Tensor, list[float]]:
    """One epoch of training steps for every member at once.

    Returns, per member, (ce * n, correct, penalty * n, |grad penalty|, |grad CE|) summed over the
    steps on the device, and the lr each step used.
    """
    lr_steps, sums = [], torch.zeros(stack.k, 5, device=stack.flat.device)
    stack.base.train()
    for xb, yb in batches:
        with torch.autocast(xb.device.type, torch.bfloat16, enabled=speed.amp):
            ce, out = stack.loss(xb, yb)
        optimizer.zero_grad(set_to_none=False)  # keeps the gradient views in flat.grad
        ce.sum().backward()  # member i's row gets the gradient of its own CE only
        pens, grad_norms = penalties.add_grad_(stack.flat, stack.flat.grad)
        lr_steps.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        sums += torch.cat(
            [torch.stack([ce.detach() * len(yb), (out.argmax(-1) == yb).sum(1), pens * len(yb)], 1), grad_norms], 1
        )
    return sums, lr_steps


def batching_problem(models: list[nn.Module], train: DeviceData, speed: Speed) -> str | None:
    """Why these members cannot train batched under vmap, or None when they can.

    Tried, not guessed: one batched training step on a few images, on copies (the models, their
    BatchNorm statistics and the torch RNG are left as they were). vmap fails on code that reads a
    tensor's value in Python, e.g. BatchNorm with momentum=None (a cumulative average).
    """
    first = {name: t.shape for name, t in models[0].state_dict().items()}
    if any(type(m) is not type(models[0]) or {n: t.shape for n, t in m.state_dict().items()} != first for m in models):
        return "the members differ in architecture"
    xb, yb = next(train.batches(4, channels_last=speed.channels_last))
    cuda = [train.device] if train.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        try:
            stack = _Stack(models[:2], train.device, speed.channels_last)
            stack.base.train()
            with torch.autocast(train.device.type, torch.bfloat16, enabled=speed.amp):
                ce, _ = stack.loss(xb, yb)
            ce.sum().backward()
        except RuntimeError as err:  # vmap and its batching rules raise these (NotImplementedError too)
            first_line = str(err).strip().splitlines()[0]
            return f"vmap cannot batch {type(models[0]).__name__}: {type(err).__name__}: {first_line}"
    return None


def fit_pack(
    models: list[nn.Module],
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
    batched: bool | str | None = None,
    names: list[str] | None = None,
) -> list[list[dict]]:
    """Train k members together for `cfg.epochs` epochs; return each member's per-epoch metrics rows.

    train.fit's contract for k members that share the data order (`cfg.seed`, `data_rng`), the
    optimizer settings, lr schedule and epochs: member i is `models[i]` trained with
    `penalties[i]` (None: no penalty) from `optimizer_states[i]`, and at the end `models[i]` holds
    its trained weights and buffers. A member that diverges (repel.train's rule) stops alone: its
    last row has `diverged` set and its model keeps that epoch's weights; the others go on.
    `on_epoch_end(i, epochs_done, model_i)` and `on_row(i, row)` are fit's callbacks with the
    member's index. With `resume`, the whole pack saves and resumes as one state.

    `batched`: None decides by `batching_problem`; False, or the reason as a string, trains the
    members one after another with train.fit (the fallback); True insists on the batched path. The path taken is logged,
    each member's lines under its name in `names` (default "member i").
    """
    k = len(models)
    if not k or len(penalties) != k or (optimizer_states is not None and len(optimizer_states) != k):
        raise ValueError(
            f"a pack needs one penalty (or None) and one optimizer state (or none at all) per "
            f"member: {k} models, {len(penalties)} penalties, "
            f"{'no' if optimizer_states is None else len(optimizer_states)} optimizer states"
        )
    names = names or [f"member {i}" for i in range(k)]
    speed = resolve_speed(cfg, models[0], device)
    if batched is None:
        problem = batching_problem(models, DeviceData(prepared, "train", device), speed)
    else:
        problem = None if batched is True else batched or "asked to train the members one after another"
    if problem is None:
        log(f"pack of {k}: batched, one vmap'd forward and backward for all members")
        if speed.compile_mode:  # vmap'd functional calls under torch.compile are not measured yet
            log("pack: torch.compile is not used for packs; training eagerly")
        rows, _, _ = train_members(
            _Batched(models, penalties, device, speed),
            prepared,
            cfg,
            device,
            penalties,
            first_epoch,
            optimizer_states,
            data_rng,
            log,
            resume,
            on_epoch_end,
            on_row,
            names=names,
        )
        return rows
    log(f"pack of {k}: one member after another with train.fit ({problem})")
    return _fit_one_by_one(
        models,
        prepared,
        cfg,
        device,
        penalties,
        first_epoch,
        optimizer_states,
        data_rng,
        log,
        resume,
        on_epoch_end,
        on_row,
        names,
    )


class _Batched:
    """The members train.train_members trains as a pack: a _Stack, all members in one batched step
    (train.OneModel says what the loop asks of them)."""

    def __init__(
        self, models: list[nn.Module], penalties: list[DistancePenalty | None], device: torch.device, speed: Speed
    ):
        self.k, self.speed, self.models = len(models), speed, models
        self.stack = _Stack(models, device, speed.channels_last)
        self.penalties = StackedPenalties(penalties, self.stack.flat.shape[1], device)
        self._stopped = _Stopped(models)
        # train.fit's SGD over the rows: elementwise, so each row steps as its member's own SGD
        self.optimized = [self.stack.flat]

    @property
    def stopped(self) -> set[int]:
        return self._stopped.members

    def optimizer_state(self, states: list[dict]) -> dict:
        return _stacked_optimizer_state(states, self.stack)

    def params(self, i: int) -> list[torch.Tensor]:
        return self.stack.members[i]

    def train_pass(self, batches, optimizer, scheduler) -> tuple[torch.Tensor, list[float]]:
        # the centres change only between epochs: laid out as rows once per epoch
        self.penalties.update([i not in self.stopped for i in range(self.k)], self.stack.rows_of)
        return _train_pass(self.stack, optimizer, scheduler, batches, self.penalties, self.speed)

    def eval_forward(self):
        self.stack.base.eval()
        return self.stack.forward

    def weight_norms(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.stack.flat, dim=1)

    def model(self, i: int) -> nn.Module:
        self.stack.copy_to(i, self.models[i])
        return self.models[i]

    def stop(self, i: int) -> None:
        self._stopped.stop(i, self.stack)

    def parts(self) -> dict:
        return {"weights": self.stack, "stopped": self._stopped}

    def finish(self) -> None:
        for i, model in enumerate(self.models):
            if i not in self.stopped:
                self.stack.copy_to(i, model)


class _OneByOne:
    """The fallback's resumable state: each member's train.fit state as it last saved it, and the
    torch RNG state the pack started with, from which every member starts (as a separate run would)."""

    def __init__(self, k: int):
        self.members: list[dict | None] = [None] * k
        self.torch_rng = torch.get_rng_state()

    def state_dict(self) -> dict:
        return {"members": self.members, "torch_rng": self.torch_rng}

    def load_state_dict(self, state: dict) -> None:
        self.members, self.torch_rng = state["members"], state["torch_rng"]


class _MemberResume:
    """What train.fit takes for its ResumeState when it trains member i of a pack one after
    another: restores from, and saves into, the pack's one state."""

    def __init__(self, resume: ResumeState, saved: _OneByOne, i: int):
        self.resume, self.saved, self.i = resume, saved, i

    def restore(self, parts: dict) -> list[dict]:
        state = self.saved.members[self.i]
        if state is None:
            return []
        load_parts(parts, state)
        return list(state["rows"])

    def save_if_due(self, parts: dict, rows: list[dict]) -> None:
        # a copy: fit goes on changing these tensors and that list after a save
        self.saved.members[self.i] = copy.deepcopy({**state_of(parts), "rows": rows})
        self.resume.save_if_due({"one_by_one": self.saved}, rows)


def _fit_one_by_one(
    models,
    prepared,
    cfg,
    device,
    penalties,
    first_epoch,
    optimizer_states,
    data_rng,
    log,
    resume,
    on_epoch_end,
    on_row,
    names,
) -> list[list[dict]]:
    """The fallback: train.fit for each member in turn, each from the same data order and torch RNG state."""
    saved = _OneByOne(len(models))
    if resume is not None:
        resume.restore({"one_by_one": saved})
    results = []
    for i, model in enumerate(models):
        torch.set_rng_state(saved.torch_rng)

        def member_log(msg, i=i):
            log(f"{names[i]}: {msg}")

        rows, _, _ = fit(
            model,
            prepared,
            cfg,
            device,
            penalty=penalties[i],
            first_epoch=first_epoch,
            optimizer_state=optimizer_states[i] if optimizer_states is not None else None,
            data_rng=data_rng,
            log=member_log,
            resume=_MemberResume(resume, saved, i) if resume is not None else None,
            on_epoch_end=partial(on_epoch_end, i) if on_epoch_end is not None else None,
            on_row=partial(on_row, i) if on_row is not None else None,
        )
        results.append(rows)
    return results
