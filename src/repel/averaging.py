"""Weight averages: SWA's model and the average of an ensemble's members, as one network each.

The parameters are averaged with torch.optim.swa_utils.AveragedModel (an equal-weight running
mean). BatchNorm running statistics of an average are not the average of the members' statistics,
so they are recomputed on the training split (update_bn: reset, then a cumulative average over
forward passes in train mode), in its stored order and without augmentation, so that the same
weights always get the same statistics. Models without BatchNorm are left as they are.
"""

from __future__ import annotations

import itertools

import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from .data import DeviceData


def recompute_bn(model: torch.nn.Module, data: DeviceData, batches: int | None = None, batch_size: int = 128) -> None:
    """Reset BatchNorm running statistics and re-estimate them on the first `batches` batches
    (None: the whole split)."""
    if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
        raise ValueError(f"batches must be None (the whole split) or an integer >= 1, got {batches!r}")
    update_bn(itertools.islice(data.batches(batch_size), batches), model)


def average_of(model: torch.nn.Module, states: list[dict], train: DeviceData) -> torch.nn.Module:
    """A copy of `model` holding the mean of the states' parameters, its BatchNorm statistics
    recomputed on `train`; `model` itself ends up holding the last state."""
    if not states:
        raise ValueError("no states to average")
    averaged = AveragedModel(model)
    for state in states:
        model.load_state_dict(state)
        averaged.update_parameters(model)
    recompute_bn(averaged.module, train)
    return averaged.module


def swa_model(averaged: AveragedModel, train: DeviceData) -> torch.nn.Module:
    """SWA's model at the end of its run: the running average of the epochs' weights, its
    BatchNorm statistics recomputed on the training split (they are not the average's own)."""
    recompute_bn(averaged.module, train)
    return averaged.module
