"""Ensemble members' predictions, computed once and stored, so that every ensemble metric (and
every m) is evaluated from the stored log-softmax outputs without running a network again.
Log-probabilities, not probabilities: a saturated member's probability of the true class can
underflow to 0 in float32, its log-probability does not, so the ensemble's NLL stays exact. Beside
them, the predictions of the members' weight average (and of SWA's own average, for its runs):
is an average of distanced members still a good model?"""

from __future__ import annotations

import torch

from . import align
from .averaging import average_of
from .data import DeviceData
from .models import flat_weights, parameter_names
from .train import log_probs


def log_softmax_outputs(model, data: DeviceData) -> torch.Tensor:
    """(N, K) log-softmax outputs of `model` in evaluation mode on a split, in the split's order
    (train.log_probs, the training loop's own, for one model)."""
    model.eval()
    return log_probs(lambda x: model(x).unsqueeze(0), data)[0]


def member_predictions(
    model: torch.nn.Module,
    checkpoint_states: list[dict],
    member_states: list[dict],
    splits: dict[str, DeviceData],
    split: str = "test",
    swa_states: list[dict] = (),
    model_name: str | None = None,
) -> dict:
    """Log-softmax outputs and flat weights of every member, and the flat weights of the checkpoint
    each member started from (members of independent seeds start from different ones); the
    log-softmax outputs of the members' weight average (BatchNorm recomputed on the training split),
    and of each given SWA model. `model` is the members' network, `splits` the data on its device
    (the training split and `split`); the job makes both once, for the landscape too.

    With `model_name` (a repel.models name), the members' pairwise distances after weight matching
    (repel.align, j aligned to i; NaN for a model without a permutation spec): `aligned_distance`."""
    if len(checkpoint_states) != len(member_states):
        raise ValueError(
            f"one checkpoint per member: {len(member_states)} members, {len(checkpoint_states)} checkpoints"
        )
    data = splits[split]
    log_probs, weights, theta_c = [], [], []
    for checkpoint, state in zip(checkpoint_states, member_states):
        model.load_state_dict(checkpoint)
        theta_c.append(flat_weights(model).cpu())
        model.load_state_dict(state)
        log_probs.append(log_softmax_outputs(model, data).cpu())
        weights.append(flat_weights(model).cpu())
    average = average_of(model, member_states, splits["train"])
    swa = []
    for state in swa_states:  # saved by its training job with its statistics recomputed
        model.load_state_dict(state)
        swa.append(log_softmax_outputs(model, data).cpu())
    names = parameter_names(model)
    cpu_states = [{k: v.cpu() for k, v in state.items()} for state in member_states]
    aligned = align.aligned_distances(cpu_states, model_name, names) if model_name else None
    return {
        "aligned_distance": aligned,
        "log_probs": torch.stack(log_probs),
        "labels": data.y.cpu(),
        "weights": torch.stack(weights),
        "theta_c": torch.stack(theta_c),
        "split": split,
        "average_log_probs": log_softmax_outputs(average, data).cpu(),
        "swa_log_probs": torch.stack(swa) if swa else None,
    }
