"""The loss along the straight line theta(alpha) = (1 - alpha) theta_c + alpha theta.

Only parameters are interpolated. BatchNorm running statistics of a blend of two networks are not
the blend of their statistics, so at every alpha they are recomputed from training batches
(torch.optim.swa_utils.update_bn: reset, then a cumulative average over forward passes in train
mode). A barrier > 0 means that the path from the checkpoint leaves its basin.
"""

from __future__ import annotations

import pandas as pd
import torch

from .averaging import recompute_bn
from .data import DeviceData
from .models import parameter_names
from .train import evaluate

STEPS = 21  # points on alpha
BN_BATCHES = 50  # training batches (of 128) that recompute BatchNorm statistics at each alpha


def alphas(n: int = STEPS, lo: float = -0.5, hi: float = 1.5) -> list[float]:
    """n evenly spaced alphas over [lo, hi], plus exactly 0.0 and 1.0 (the two endpoints)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not lo <= 0.0 < 1.0 <= hi:
        raise ValueError(f"[lo, hi] must contain the endpoints 0 and 1, got [{lo}, {hi}]")
    # rounding snaps -0.5 + 5 * 0.1 = 5.6e-17 to 0.0; + 0.0 turns -0.0 into 0.0
    grid = {round(lo + (hi - lo) * i / (n - 1), 12) + 0.0 for i in range(n)}
    return sorted(grid | {0.0, 1.0})


def _endpoint_states(model, theta_c_state: dict, theta_state: dict) -> tuple[dict, list[str]]:
    """Both states on the model's devices and dtypes, and the keys to interpolate."""
    target = model.state_dict()
    for name, state in (("theta_c_state", theta_c_state), ("theta_state", theta_state)):
        missing, extra = target.keys() - state.keys(), state.keys() - target.keys()
        if missing or extra:
            raise ValueError(
                f"{name} does not match the model: missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}"
            )
        for key, ref in target.items():
            if state[key].shape != ref.shape:
                raise ValueError(f"{name}['{key}'] has shape {tuple(state[key].shape)}, the model {tuple(ref.shape)}")
    # copies: a caller may pass model.state_dict() itself, whose tensors loading theta(alpha) overwrites
    moved = [
        {k: s[k].to(v.device, v.dtype, copy=True) for k, v in target.items()} for s in (theta_c_state, theta_state)
    ]
    params = [name for name, p in model.named_parameters() if p.is_floating_point()]
    return moved, params


def interpolate(
    model: torch.nn.Module,
    theta_c_state: dict,
    theta_state: dict,
    alphas,
    train_data: DeviceData,
    eval_data: DeviceData,
    bn_batches: int | None = None,
    batch_size: int = 128,
) -> pd.DataFrame:
    """Loss and error of theta(alpha) on eval_data, one row per alpha: columns alpha, loss, error.

    Parameters are interpolated (alpha outside [0, 1] extrapolates); BatchNorm statistics are
    recomputed on `bn_batches` training batches of `batch_size` (None: the whole split); other
    buffers are theta's. The model is returned to its own state and mode afterwards.
    """
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("alphas is empty")
    (start, end), params = _endpoint_states(model, theta_c_state, theta_state)
    saved, was_training = {k: v.clone() for k, v in model.state_dict().items()}, model.training
    results = []
    try:
        for alpha in alphas:
            state = dict(end)
            # lerp returns each endpoint exactly at alpha = 0 and 1
            state.update({k: torch.lerp(start[k], end[k], alpha) for k in params})
            model.load_state_dict(state)
            recompute_bn(model, train_data, bn_batches, batch_size)
            results.append(evaluate(model, eval_data))  # (loss, accuracy) on the device
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    loss, acc = torch.stack(results).double().cpu().T.numpy()  # one synchronisation for the curve
    return pd.DataFrame({"alpha": alphas, "loss": loss, "error": 1.0 - acc})


def barrier(df: pd.DataFrame, column: str = "loss") -> float:
    """max over alpha in [0, 1] of L(theta(alpha)) - ((1 - alpha) L(theta_c) + alpha L(theta)).

    The endpoints are the rows at alpha = 0 and 1; the maximum includes them, so it is >= 0.
    """
    for key in ("alpha", column):
        if key not in df.columns:
            raise ValueError(f"the table needs an '{key}' column; it has {list(df.columns)}")
    ends = []
    for a in (0.0, 1.0):
        rows = df.loc[df["alpha"] == a, column]
        if len(rows) != 1:
            raise ValueError(f"barrier needs exactly one row at alpha = {a:g} (an endpoint), found {len(rows)}")
        ends.append(float(rows.iloc[0]))
    l0, l1 = ends
    inside = df[(df["alpha"] >= 0.0) & (df["alpha"] <= 1.0)]
    # l0 + alpha (l1 - l0): exactly l0 everywhere when the endpoints are equal
    excess = inside[column] - (l0 + inside["alpha"] * (l1 - l0))
    return float(excess.max())


def write_lines(
    prepared: dict,
    ckpt: dict,
    lines,
    load,
    model: torch.nn.Module,
    splits: dict[str, DeviceData],
    steps: int | None = None,
    bn_batches: int | None = None,
    log=print,
    align_model: str | None = None,
) -> None:
    """Write each line's table. `lines` are (columns, out, [weights files]): the path through the
    files in order, its table's identifying columns (run, or method and ensemble) and where it goes;
    `load(path)` gives a file's state; `ckpt` (a base checkpoint) the seed; `model` the network
    and `splits` the data on its device (train and val), made once by the job.

    With `align_model` (a repel.models name with a permutation spec), each pair also gets the line
    to the end's weights aligned to the start's (repel.align), its rows marked `aligned`: the
    barrier left once permutation symmetry is taken out."""
    from . import align, storage

    steps, bn_batches = steps or STEPS, bn_batches or BN_BATCHES
    train, val = splits["train"], splits["val"]
    bn_recomputed = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for columns, out, ends in lines:
        states = [load(path) for path in ends]
        frames = []
        spec = align.spec_for(align_model) if align_model else None
        names = parameter_names(model)
        for pair, (start, end) in enumerate(zip(states, states[1:])):
            ends_of = [(False, end)]
            if spec is not None:
                cpu = [{k: v.detach().cpu() for k, v in state.items()} for state in (start, end)]
                ends_of.append((True, align.align(cpu[0], cpu[1], spec, names)))
            for aligned, target in ends_of:
                df = interpolate(model, start, target, alphas(steps), train, val, bn_batches=bn_batches)
                frames.append(
                    df.assign(
                        pair=pair,
                        start=str(ends[pair]),
                        end=str(ends[pair + 1]),
                        barrier=barrier(df),
                        bn_recomputed=bn_recomputed,
                        aligned=aligned,
                    )
                )
                what = " (aligned)" if aligned else ""
                log(f"loss barrier from {ends[pair]} to {ends[pair + 1]}{what}: {barrier(df):.4g}")
        df = pd.concat(frames, ignore_index=True).assign(
            split="val", dataset=prepared["name"], model=ckpt["arch"]["model"], **columns, seed=ckpt["config"]["seed"]
        )
        storage.save_parquet(df, out)
        log(f"-> {out}")
