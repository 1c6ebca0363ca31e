"""Distance modulo permutation symmetry: align network B's hidden units to network A's by weight
matching (Ainsworth et al. 2022, "Git Re-Basin", algorithm 1), then measure the L2 distance.

Permuting a hidden layer's units (the rows of the layer that makes them, its BatchNorm's
parameters and running statistics, and the columns of the layer that reads them) leaves the
network's function unchanged. Weight matching picks, one hidden layer at a time, the permutation
P_l that maximizes Σ_k <A_k, π(B)_k> over the trainable parameters that P_l touches, with the
other layers' permutations held fixed (a linear assignment problem,
scipy.optimize.linear_sum_assignment), and sweeps the layers until no permutation changes. Since
‖A − π(B)‖² = ‖A‖² + ‖B‖² − 2 <A, π(B)>, each step lowers the distance, starting from the
identity: the aligned distance is never above the plain one.

Only the trainable parameters are matched (they are what the distance is taken over; BatchNorm
running statistics are buffers): the buffers are permuted with their units. Specs exist for the
small CNN and the MLP of repel.models; for the ResNets (whose residual stream shares one
permutation across blocks) and MobileNetV2 there is none, and `spec_for` says so (None).

State dicts in, state dicts out: CPU tensors, no model is run.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

MAX_SWEEPS = 100  # sweeps over the layers; weight matching converges in a handful


def _chain(layers: list[tuple[list[str], list[str]]]) -> dict[str, list[tuple[str, int]]]:
    """Permutation name -> the (state-dict key, axis) pairs it permutes, for a chain of hidden
    layers: each entry is (keys whose axis 0 are the units, keys whose axis 1 reads them)."""
    return {f"P{i}": [(k, 0) for k in out] + [(k, 1) for k in read] for i, (out, read) in enumerate(layers)}


def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var")]


# SmallCNN: conv (no bias) -> BN -> ReLU, three times, global average pooling, then the linear head
CNN_SPEC = _chain(
    [
        (["features.0.weight", *_bn("features.1")], ["features.3.weight"]),
        (["features.3.weight", *_bn("features.4")], ["features.6.weight"]),
        (["features.6.weight", *_bn("features.7")], ["head.weight"]),
    ]
)
# MLP: Linear -> ReLU -> Linear -> ReLU -> Linear
MLP_SPEC = _chain(
    [
        (["net.1.weight", "net.1.bias"], ["net.3.weight"]),
        (["net.3.weight", "net.3.bias"], ["net.5.weight"]),
    ]
)
SPECS = {"cnn": CNN_SPEC, "mlp": MLP_SPEC}
NOT_ALIGNED = "no permutation spec (residual blocks share permutations): not aligned"


def spec_for(model: str) -> dict | None:
    """The permutation spec of a repel.models name, or None where there is none (ResNets, MobileNetV2)."""
    return SPECS.get(model)


def permute(state: Mapping[str, torch.Tensor], spec: dict, perms: dict[str, np.ndarray]) -> dict:
    """A copy of `state` with each permutation applied along its axes (index i of the result is
    unit perms[p][i] of the input); keys the spec does not name are copied as they are."""
    out = {k: v.clone() for k, v in state.items()}
    for p, axes in spec.items():
        index = torch.as_tensor(perms[p], dtype=torch.long)
        for key, axis in axes:
            out[key] = out[key].index_select(axis, index.to(out[key].device))
    return out


def _check(a: Mapping, b: Mapping, spec: dict) -> None:
    for name, state in (("A", a), ("B", b)):
        missing = sorted({k for axes in spec.values() for k, _ in axes} - state.keys())
        if missing:
            raise ValueError(f"state dict {name} lacks {missing[:5]}: not the network this spec describes")
    for p, axes in spec.items():
        sizes = {a[k].shape[axis] for k, axis in axes} | {b[k].shape[axis] for k, axis in axes}
        if len(sizes) != 1:
            raise ValueError(f"permutation {p}: its axes have sizes {sorted(sizes)}, expected one unit count")
    for k in a.keys() & b.keys():
        if a[k].shape != b[k].shape:
            raise ValueError(f"'{k}' has shape {tuple(a[k].shape)} in A and {tuple(b[k].shape)} in B")


def weight_matching(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], spec: dict, params: list[str]
) -> dict[str, np.ndarray]:
    """The permutations that align B to A: per hidden layer a linear assignment on the inner
    products of the `params` (the trainable parameters' keys) it touches, the others fixed, swept
    in the spec's order until none changes (a change is kept only if it raises the total, so the
    sweeps end). No permutation where a weight is not finite (a diverged run): linear_sum_assignment
    cannot match on NaN, and every distance and loss from such weights is NaN anyway."""
    from scipy.optimize import linear_sum_assignment

    _check(a, b, spec)
    matched = set(params)
    wa = {k: a[k].detach().double().cpu().numpy() for k in params}
    wb = {k: b[k].detach().double().cpu().numpy() for k in params}
    n = {p: a[axes[0][0]].shape[axes[0][1]] for p, axes in spec.items()}
    perms = {p: np.arange(n[p]) for p in spec}
    if not all(np.isfinite(w).all() for w in (*wa.values(), *wb.values())):
        return perms
    axes_of = {}  # key -> [(perm, axis)]: every permutation that acts on a parameter
    for p, axes in spec.items():
        for key, axis in axes:
            axes_of.setdefault(key, []).append((p, axis))
    for _ in range(MAX_SWEEPS):
        changed = False
        for p, axes in spec.items():
            cost = np.zeros((n[p], n[p]))
            for key, axis in axes:
                if key not in matched:
                    continue
                w = wb[key]
                for other, other_axis in axes_of[key]:  # B with the other permutations applied
                    if other != p:
                        w = np.take(w, perms[other], axis=other_axis)
                # cost[i, j] = <A's unit i, B's unit j> over this parameter
                cost += np.moveaxis(wa[key], axis, 0).reshape(n[p], -1) @ np.moveaxis(w, axis, 0).reshape(n[p], -1).T
            _, new = linear_sum_assignment(cost, maximize=True)
            rows = np.arange(n[p])
            gain = cost[rows, new].sum() - cost[rows, perms[p]].sum()
            if gain > 1e-12 * max(1.0, abs(cost[rows, perms[p]].sum())):
                perms[p], changed = new, True
        if not changed:
            break
    return perms


def align(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], spec: dict, params: list[str]) -> dict:
    """B's state dict permuted to match A's (weight matching on the `params` keys)."""
    return permute(b, spec, weight_matching(a, b, spec, params))


def aligned_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], model: str, params: list[str]):
    """‖θ_A − π(θ_B)‖₂ over the `params` after weight matching; NaN for a model without a spec, or
    for weights that are not finite (weight_matching leaves them as they are)."""
    spec = spec_for(model)
    if spec is None:
        return float("nan")
    from .ensemble import weight_distance
    from .models import flat_weights

    aligned = align(a, b, spec, params)
    # the plain distance's own function: with no permutation the two are bit-equal
    return float(weight_distance([flat_weights(state, params).cpu().numpy() for state in (a, aligned)])[0, 1])


def aligned_distances(states: list[Mapping[str, torch.Tensor]], model: str, params: list[str]) -> torch.Tensor:
    """(M, M) aligned distances between members (j aligned to i, for i < j; symmetric, 0 on the
    diagonal); all NaN for a model without a spec."""
    m = len(states)
    out = torch.full((m, m), float("nan"), dtype=torch.float64)
    if spec_for(model) is None:
        return out
    out.fill_diagonal_(0.0)
    for i in range(m):
        for j in range(i + 1, m):
            out[i, j] = out[j, i] = aligned_distance(states[i], states[j], model, params)
    return out
