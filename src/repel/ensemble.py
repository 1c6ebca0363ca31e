"""Ensemble metrics on stored predictions, and pairwise diversity of the members.

Pure functions in the manner of torch.optim.swa_utils: they take tensors and return tensors (or a
DataFrame for the tables), never touch a model's training, and raise ValueError on bad arguments.
`probs` is always (M, N, K): the softmax outputs of M members, in training order, on N points with
K classes; `y` is (N,) integer labels. Scalar metrics are 0-d tensors on the input's device, so a
table of them costs one host-device synchronisation, not one per number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from .models import trainable_parameters

EPS = 1e-12  # log clamp: a member that gives the true class probability 0 costs -log(1e-12), not inf


# --- argument checks -------------------------------------------------------------------------

def _check_probs(probs: torch.Tensor) -> int:
    if not isinstance(probs, torch.Tensor) or probs.ndim != 3:
        shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a tensor of shape (members M, points N, classes K), got {shape}")
    if probs.shape[0] == 0:
        raise ValueError("probs holds no members (M = 0)")
    return probs.shape[0]


def _check_pair(p: torch.Tensor, y: torch.Tensor) -> None:
    if p.ndim != 2:
        raise ValueError(f"p must have shape (points N, classes K), got {tuple(p.shape)}")
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"labels y must have shape ({len(p)},) to match p {tuple(p.shape)}, got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels y must be integer class indices, got dtype {y.dtype}")
    if len(y) == 0:
        raise ValueError("no points (N = 0): the metrics are undefined")


def _stack_weights(weights, name: str = "weights") -> torch.Tensor:
    """(M, P) from M flat tensors, checking that every member has the same number of parameters."""
    if isinstance(weights, torch.Tensor):
        if weights.ndim != 2:
            raise ValueError(f"{name} as a tensor must be (members M, parameters P), got {tuple(weights.shape)}")
        return weights
    weights = list(weights)
    if not weights:
        raise ValueError(f"{name} holds no members")
    bad = [i for i, w in enumerate(weights) if w.ndim != 1]
    if bad:
        raise ValueError(f"{name} must be flat 1-D tensors (see flat_weights); member(s) {bad} are not")
    sizes = {w.numel() for w in weights}
    if len(sizes) > 1:
        raise ValueError(f"{name} have mismatched sizes {sorted(sizes)}: members of different models?")
    return torch.stack(weights)


# --- one ensemble ------------------------------------------------------------------------------

def ensemble_probs(probs: torch.Tensor, m: int) -> torch.Tensor:
    """Mean softmax of the last m members, (N, K): members are in training order."""
    n_members = _check_probs(probs)
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n_members:
        raise ValueError(f"m must be an integer in 1..{n_members} (the number of members), got {m!r}")
    return probs[-m:].mean(0)


def accuracy(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of points whose top-1 class is the label."""
    _check_pair(p, y)
    return (p.argmax(1) == y).float().mean()


def nll(p: torch.Tensor, y: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """-mean log p(y|x), with p clamped at eps."""
    _check_pair(p, y)
    return -p.gather(1, y.view(-1, 1)).clamp_min(eps).log().mean()


def brier(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over points of sum_k (p_k - 1[y = k])^2 (ranges over [0, 2])."""
    _check_pair(p, y)
    onehot = torch.zeros_like(p).scatter_(1, y.view(-1, 1), 1.0)
    return (p - onehot).square().sum(1).mean()


def ece(p: torch.Tensor, y: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """Expected calibration error: sum_b |B_b|/N |acc(B_b) - conf(B_b)| over equal-width bins.

    Confidence is the top probability; bins are right-closed, (b/B, (b+1)/B], the first also holds 0.
    """
    _check_pair(p, y)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    conf, pred = p.max(1)
    inner = torch.linspace(0, 1, bins + 1, dtype=conf.dtype, device=conf.device)[1:-1]
    idx = torch.bucketize(conf, inner)  # right=False: edge values fall in the lower bin
    correct = (pred == y).to(conf.dtype)
    # |B|/N * |acc - conf| = |sum(correct) - sum(conf)| / N: no division by empty bins
    gap = torch.zeros(bins, dtype=conf.dtype, device=conf.device).index_add_(0, idx, correct - conf)
    return gap.abs().sum() / len(y)


def model_metrics(p: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL, Brier and ECE of one model's (or one ensemble's) softmax outputs (N, K)."""
    values = torch.stack([accuracy(p, y), nll(p, y), brier(p, y), ece(p, y, bins)]).double().cpu().tolist()
    return dict(zip(["accuracy", "nll", "brier", "ece"], values))


def ensemble_curve(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> pd.DataFrame:
    """One row per ensemble of the last m members, m = 1..M: its metrics and its gains.

    gain = ensemble accuracy - mean accuracy of the same m members; gain_best = ensemble accuracy -
    the best of those members' accuracies (what choosing an ensemble over one model buys).
    """
    n_members = _check_probs(probs)
    _check_pair(probs[0], y)
    member_acc = (probs.argmax(2) == y).float().mean(1)  # (M,)
    rows = []
    for m in range(1, n_members + 1):
        p = ensemble_probs(probs, m)
        acc, mean_member, best_member = accuracy(p, y), member_acc[-m:].mean(), member_acc[-m:].max()
        rows.append(torch.stack([acc, nll(p, y), brier(p, y), ece(p, y, bins), mean_member, acc - mean_member,
                                 acc - best_member]))
    values = torch.stack(rows).double().cpu().numpy()  # one synchronisation for the whole table
    frame = pd.DataFrame(values, columns=["accuracy", "nll", "brier", "ece", "mean_member_accuracy", "gain",
                                          "gain_best"])
    frame.insert(0, "m", range(1, n_members + 1))
    return frame


# --- pairwise diversity, (M, M) matrices ---------------------------------------------------------

def disagreement(probs: torch.Tensor) -> torch.Tensor:
    """Fraction of points on which members i and j predict different top-1 classes."""
    _check_probs(probs)
    top = probs.argmax(2)  # (M, N)
    return (top[:, None, :] != top[None, :, :]).float().mean(2)


def prediction_correlation(probs: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the members' flattened softmax outputs (N * K values each)."""
    _check_probs(probs)
    return torch.corrcoef(probs.reshape(probs.shape[0], -1))


def _cosine(w: torch.Tensor) -> torch.Tensor:
    # no eps: a zero vector has no direction, and NaN says so instead of a made-up 0
    norms = w.norm(dim=1)
    # rounding can step just past +-1, as in torch.corrcoef, which clips the same way
    return ((w @ w.T) / (norms[:, None] * norms[None, :])).clamp(-1.0, 1.0)


def weight_cosine(weights) -> torch.Tensor:
    """Cosine similarity of the members' flat weight vectors."""
    return _cosine(_stack_weights(weights))


def displacement_cosine(weights, theta_c: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the displacements theta_i - theta_c from the checkpoint: one flat
    theta_c for all members, or (M, P), each member's own (independent seeds start apart)."""
    w = _stack_weights(weights)
    if theta_c.shape not in {(w.shape[1],), tuple(w.shape)}:
        raise ValueError(f"theta_c must be ({w.shape[1]},) or {tuple(w.shape)} like the members, got {tuple(theta_c.shape)}")
    return _cosine(w - theta_c)


def weight_distance(weights) -> torch.Tensor:
    """L2 distance between the members' flat weight vectors."""
    w = _stack_weights(weights)
    # direct differences, not the |a|^2 + |b|^2 - 2ab shortcut, so identical members are exactly 0
    return torch.cdist(w[None], w[None], compute_mode="donot_use_mm_for_euclid_dist")[0]


def pairwise_table(probs: torch.Tensor, weights, theta_c: torch.Tensor) -> pd.DataFrame:
    """One row per pair i < j: disagreement, correlation, weight and displacement cosine, distance."""
    n_members = _check_probs(probs)
    w = _stack_weights(weights)
    if len(w) != n_members:
        raise ValueError(f"mismatched members: probs has {n_members}, weights has {len(w)}")
    i, j = torch.triu_indices(n_members, n_members, 1)
    columns = {
        "disagreement": disagreement(probs), "correlation": prediction_correlation(probs),
        "weight_cosine": weight_cosine(w), "displacement_cosine": displacement_cosine(w, theta_c),
        "weight_distance": weight_distance(w),
    }
    values = {k: v.double().cpu()[i, j].numpy() for k, v in columns.items()}
    return pd.DataFrame({"i": i.numpy(), "j": j.numpy(), **values})


# --- weights -------------------------------------------------------------------------------------

def parameter_names(model: nn.Module) -> list[str]:
    """State-dict keys of the trainable parameters, in the order trainable_parameters gives them."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def flat_weights(source, names: Sequence[str] | None = None) -> torch.Tensor:
    """One flat tensor of trainable parameters, from a model, a list of tensors or a state dict.

    A state dict also holds buffers (BatchNorm running statistics), which are not weights: pass
    names=parameter_names(model) to pick the parameters out of it.
    """
    if isinstance(source, nn.Module):
        tensors = trainable_parameters(source)
    elif isinstance(source, Mapping):
        if names is None:
            raise ValueError("a state dict holds buffers too: pass names=parameter_names(model)")
        missing = [n for n in names if n not in source]
        if missing:
            raise ValueError(f"state dict lacks parameter(s) {missing[:5]}: a different model?")
        tensors = [source[n] for n in names]
    else:
        tensors = list(source)
    if not tensors:
        raise ValueError("no parameters to flatten")
    if not all(t.is_floating_point() for t in tensors):
        raise ValueError("weights must be floating-point tensors")
    return torch.cat([t.detach().reshape(-1) for t in tensors])
