"""Ensemble members' predictions, computed once and stored, so that every ensemble metric (and
every m) is evaluated from the stored softmax outputs without running a network again. Beside
them, the predictions of the members' weight average (and of SWA's own average, for its runs):
is an average of distanced members still a good model?"""

from __future__ import annotations

import torch

from . import models
from .averaging import average_of
from .data import DeviceData
from .ensemble import flat_weights


@torch.no_grad()
def softmax_outputs(model, data: DeviceData, batch_size: int = 1024) -> torch.Tensor:
    """(N, K) softmax outputs of `model` in evaluation mode on a split, in the split's order."""
    model.eval()
    return torch.cat([torch.softmax(model(xb).float(), dim=1) for xb, _ in data.batches(batch_size)])


def member_predictions(arch: dict, checkpoint_states: list[dict], member_states: list[dict], prepared: dict,
                       device: torch.device, split: str = "test", swa_states: list[dict] = ()) -> dict:
    """Softmax outputs and flat weights of every member, and the flat weights of the checkpoint
    each member started from (members of independent seeds start from different ones); the
    softmax outputs of the members' weight average (BatchNorm recomputed on the training split),
    and of each given SWA model."""
    if len(checkpoint_states) != len(member_states):
        raise ValueError(f"one checkpoint per member: {len(member_states)} members, {len(checkpoint_states)} checkpoints")
    model = models.from_arch(arch).to(device)
    data = DeviceData(prepared, split, device)
    probs, weights, theta_c = [], [], []
    for checkpoint, state in zip(checkpoint_states, member_states):
        model.load_state_dict(checkpoint)
        theta_c.append(flat_weights(model).cpu())
        model.load_state_dict(state)
        probs.append(softmax_outputs(model, data).cpu())
        weights.append(flat_weights(model).cpu())
    train = DeviceData(prepared, "train", device)
    average = average_of(model, member_states, train)
    swa = []
    for state in swa_states:  # saved by its training job with its statistics recomputed
        model.load_state_dict(state)
        swa.append(softmax_outputs(model, data).cpu())
    return {"probs": torch.stack(probs), "labels": data.y.cpu(), "weights": torch.stack(weights),
            "theta_c": torch.stack(theta_c), "split": split, "average_probs": softmax_outputs(average, data).cpu(),
            "swa_probs": torch.stack(swa) if swa else None}
