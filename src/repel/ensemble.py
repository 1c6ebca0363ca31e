"""Ensemble metrics on stored predictions, and pairwise diversity of the members.

Pure functions in the manner of torch.optim.swa_utils: they take tensors and return tensors (or a
DataFrame for the tables), never touch a model's training, and raise ValueError on bad arguments.
`log_probs` is always (M, N, K): the log-softmax outputs of M members, in training order, on N
points with K classes; `y` is (N,) integer labels. Scalar metrics are 0-d tensors on the input's
device, so a table of them costs one host-device synchronisation, not one per number.

Log space: an ensemble's log-probabilities are logsumexp over its members − log m, in float64, so
its NLL is exact where a member's softmax underflows (no clamp). Brier and ECE are computed from
the probabilities exp(log p).

Ties: the classes whose log-probability is within TIE_TOL of a point's largest are its top-1
classes; a point with k of them counts as each chosen with probability 1/k. Accuracy (of an
ensemble and of each member), the correct share in ECE and pairwise disagreement all count a tie
this way, so a 0.5/0.5 point is half right whatever float rounding does to its two values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from .models import trainable_parameters

TIE_TOL = 1e-6  # in log-probability: float32 members put exact ties ~1e-7 apart after averaging


# --- argument checks -------------------------------------------------------------------------


def _check_log_probs(log_probs: torch.Tensor) -> int:
    if not isinstance(log_probs, torch.Tensor) or log_probs.ndim != 3:
        shape = tuple(log_probs.shape) if isinstance(log_probs, torch.Tensor) else type(log_probs).__name__
        raise ValueError(f"log_probs must be a tensor of shape (members M, points N, classes K), got {shape}")
    if log_probs.shape[0] == 0:
        raise ValueError("log_probs holds no members (M = 0)")
    return log_probs.shape[0]


def _check_pair(log_p: torch.Tensor, y: torch.Tensor) -> None:
    if log_p.ndim != 2:
        raise ValueError(f"log_p must have shape (points N, classes K), got {tuple(log_p.shape)}")
    if y.ndim != 1 or len(y) != len(log_p):
        raise ValueError(
            f"labels y must have shape ({len(log_p)},) to match log_p {tuple(log_p.shape)}, got {tuple(y.shape)}"
        )
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


def ensemble_log_probs(log_probs: torch.Tensor, m: int) -> torch.Tensor:
    """log of the mean softmax of the last m members, (N, K), in float64: logsumexp − log m.
    Members are in training order."""
    n_members = _check_log_probs(log_probs)
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n_members:
        raise ValueError(f"m must be an integer in 1..{n_members} (the number of members), got {m!r}")
    return torch.logsumexp(log_probs[-m:].double(), 0) - math.log(m)


def top1(log_p: torch.Tensor) -> torch.Tensor:
    """(..., K) weights of each class as the top-1 choice: 1/k for each of a point's k tied
    largest classes (within TIE_TOL), 0 for the others."""
    tied = (log_p >= log_p.max(-1, keepdim=True).values - TIE_TOL).to(torch.float64)
    return tied / tied.sum(-1, keepdim=True)


def _right(log_p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each point's share of a right answer (1, 0, or 1/k on a k-way tie that includes y)."""
    index = y.view(*([1] * (log_p.ndim - 2)), -1, 1).expand(*log_p.shape[:-1], 1)
    return top1(log_p).gather(-1, index).squeeze(-1)


def accuracy(log_p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of points whose top-1 class is the label (a tie counted as above)."""
    _check_pair(log_p, y)
    return _right(log_p, y).mean()


def member_accuracy(log_probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(M,) each member's accuracy, ties counted as in `accuracy`."""
    _check_log_probs(log_probs)
    _check_pair(log_probs[0], y)
    return _right(log_probs, y).mean(-1)


def nll(log_p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-mean log p(y|x), from the log-probabilities as they are: no clamp."""
    _check_pair(log_p, y)
    return -log_p.gather(1, y.view(-1, 1)).mean()


def brier(log_p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over points of sum_k (p_k - 1[y = k])^2 (ranges over [0, 2]), p = exp(log_p)."""
    _check_pair(log_p, y)
    p = log_p.exp()
    onehot = torch.zeros_like(p).scatter_(1, y.view(-1, 1), 1.0)
    return (p - onehot).square().sum(1).mean()


def ece(log_p: torch.Tensor, y: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """Expected calibration error: sum_b |B_b|/N |acc(B_b) - conf(B_b)| over equal-width bins.

    Confidence is the top probability; bins are right-closed, (b/B, (b+1)/B], the first also holds 0.
    """
    _check_pair(log_p, y)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    conf = log_p.max(1).values.exp()
    inner = torch.linspace(0, 1, bins + 1, dtype=conf.dtype, device=conf.device)[1:-1]
    idx = torch.bucketize(conf, inner)  # right=False: edge values fall in the lower bin
    correct = _right(log_p, y).to(conf.dtype)
    # |B|/N * |acc - conf| = |sum(correct) - sum(conf)| / N: no division by empty bins
    gap = torch.zeros(bins, dtype=conf.dtype, device=conf.device).index_add_(0, idx, correct - conf)
    return gap.abs().sum() / len(y)


def model_metrics(log_p: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL, Brier and ECE of one model's (or one ensemble's) log-softmax outputs (N, K)."""
    log_p = log_p.double()
    values = torch.stack([accuracy(log_p, y), nll(log_p, y), brier(log_p, y), ece(log_p, y, bins)]).cpu().tolist()
    return dict(zip(["accuracy", "nll", "brier", "ece"], values))


def ensemble_curve(log_probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> pd.DataFrame:
    """One row per ensemble of the last m members, m = 1..M: its metrics and its gains.

    gain = ensemble accuracy - mean accuracy of the same m members; gain_best = ensemble accuracy -
    the best of those members' accuracies (what choosing an ensemble over one model buys).
    """
    n_members = _check_log_probs(log_probs)
    _check_pair(log_probs[0], y)
    member_acc = member_accuracy(log_probs, y)
    rows = []
    for m in range(1, n_members + 1):
        log_p = ensemble_log_probs(log_probs, m)
        acc, mean_member, best_member = accuracy(log_p, y), member_acc[-m:].mean(), member_acc[-m:].max()
        rows.append(
            torch.stack(
                [
                    acc,
                    nll(log_p, y),
                    brier(log_p, y),
                    ece(log_p, y, bins),
                    mean_member,
                    acc - mean_member,
                    acc - best_member,
                ]
            )
        )
    values = torch.stack(rows).cpu().numpy()  # one synchronisation for the whole table
    frame = pd.DataFrame(
        values, columns=["accuracy", "nll", "brier", "ece", "mean_member_accuracy", "gain", "gain_best"]
    )
    frame.insert(0, "m", range(1, n_members + 1))
    return frame


# --- pairwise diversity, (M, M) matrices ---------------------------------------------------------


def disagreement(log_probs: torch.Tensor) -> torch.Tensor:
    """Fraction of points on which members i and j predict different top-1 classes; with ties,
    the chance that their tie-broken choices differ (1 − sum_k top1_i[k] top1_j[k])."""
    _check_log_probs(log_probs)
    top = top1(log_probs)  # (M, N, K)
    out = 1 - torch.einsum("ink,jnk->ij", top, top) / top.shape[1]
    return out.fill_diagonal_(0.0)  # a member is its own choice, ties included


def prediction_correlation(log_probs: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the members' flattened softmax outputs (N * K values each)."""
    _check_log_probs(log_probs)
    return torch.corrcoef(log_probs.double().exp().reshape(log_probs.shape[0], -1))


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
        raise ValueError(
            f"theta_c must be ({w.shape[1]},) or {tuple(w.shape)} like the members, got {tuple(theta_c.shape)}"
        )
    return _cosine(w - theta_c)


def weight_distance(weights) -> torch.Tensor:
    """L2 distance between the members' flat weight vectors."""
    w = _stack_weights(weights)
    # direct differences, not the |a|^2 + |b|^2 - 2ab shortcut, so identical members are exactly 0
    return torch.cdist(w[None], w[None], compute_mode="donot_use_mm_for_euclid_dist")[0]


def pairwise_table(log_probs: torch.Tensor, weights, theta_c: torch.Tensor) -> pd.DataFrame:
    """One row per pair i < j: disagreement, correlation, weight and displacement cosine, distance."""
    n_members = _check_log_probs(log_probs)
    w = _stack_weights(weights)
    if len(w) != n_members:
        raise ValueError(f"mismatched members: log_probs has {n_members}, weights has {len(w)}")
    i, j = torch.triu_indices(n_members, n_members, 1)
    columns = {
        "disagreement": disagreement(log_probs),
        "correlation": prediction_correlation(log_probs),
        "weight_cosine": weight_cosine(w),
        "displacement_cosine": displacement_cosine(w, theta_c),
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
