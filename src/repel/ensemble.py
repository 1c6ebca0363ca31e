"""Ensemble metrics on stored predictions, and pairwise diversity of the members.

Pure numpy functions: they read the predictions the predict job stored (predictions.npz) and never
run a network, so the ensemble tables need no torch. They accept numpy arrays (or CPU tensors,
which numpy reads as arrays) and raise ValueError on bad arguments. `log_probs` is always
(M, N, K): the log-softmax outputs of M members, in training order, on N points with K classes;
`y` is (N,) integer labels.

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

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

TIE_TOL = 1e-6  # in log-probability: float32 members put exact ties ~1e-7 apart after averaging


# --- argument checks -------------------------------------------------------------------------


def _check_log_probs(log_probs) -> tuple[np.ndarray, int]:
    log_probs = np.asarray(log_probs)
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must be an array of shape (members M, points N, classes K), got {log_probs.shape}")
    if log_probs.shape[0] == 0:
        raise ValueError("log_probs holds no members (M = 0)")
    return log_probs, log_probs.shape[0]


def _check_pair(log_p, y) -> tuple[np.ndarray, np.ndarray]:
    log_p, y = np.asarray(log_p), np.asarray(y)
    if log_p.ndim != 2:
        raise ValueError(f"log_p must have shape (points N, classes K), got {log_p.shape}")
    if y.ndim != 1 or len(y) != len(log_p):
        raise ValueError(f"labels y must have shape ({len(log_p)},) to match log_p {log_p.shape}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels y must be integer class indices, got dtype {y.dtype}")
    if len(y) == 0:
        raise ValueError("no points (N = 0): the metrics are undefined")
    return log_p, y


def _stack_weights(weights, name: str = "weights") -> np.ndarray:
    """(M, P) from M flat vectors, checking that every member has the same number of parameters."""
    if not isinstance(weights, (list, tuple)):
        weights = np.asarray(weights)
        if weights.ndim != 2:
            raise ValueError(f"{name} as an array must be (members M, parameters P), got {weights.shape}")
        return weights
    weights = [np.asarray(w) for w in weights]
    if not weights:
        raise ValueError(f"{name} holds no members")
    bad = [i for i, w in enumerate(weights) if w.ndim != 1]
    if bad:
        raise ValueError(f"{name} must be flat 1-D vectors (see models.flat_weights); member(s) {bad} are not")
    sizes = {w.size for w in weights}
    if len(sizes) > 1:
        raise ValueError(f"{name} have mismatched sizes {sorted(sizes)}: members of different models?")
    return np.stack(weights)


# --- one ensemble ------------------------------------------------------------------------------


def ensemble_log_probs(log_probs, m: int) -> np.ndarray:
    """log of the mean softmax of the last m members, (N, K), in float64: logsumexp − log m.
    Members are in training order."""
    log_probs, n_members = _check_log_probs(log_probs)
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n_members:
        raise ValueError(f"m must be an integer in 1..{n_members} (the number of members), got {m!r}")
    with np.errstate(divide="ignore"):  # a class every member gives probability 0: log 0 = -inf
        return logsumexp(log_probs[-m:].astype(np.float64), axis=0) - math.log(m)


def top1(log_p) -> np.ndarray:
    """(..., K) weights of each class as the top-1 choice: 1/k for each of a point's k tied
    largest classes (within TIE_TOL), 0 for the others."""
    log_p = np.asarray(log_p)
    tied = (log_p >= log_p.max(-1, keepdims=True) - TIE_TOL).astype(np.float64)
    return tied / tied.sum(-1, keepdims=True)


def _right(log_p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each point's share of a right answer (1, 0, or 1/k on a k-way tie that includes y)."""
    index = np.broadcast_to(y[:, None], (*log_p.shape[:-1], 1))
    return np.take_along_axis(top1(log_p), index, axis=-1)[..., 0]


def accuracy(log_p, y) -> float:
    """Fraction of points whose top-1 class is the label (a tie counted as above)."""
    log_p, y = _check_pair(log_p, y)
    return float(_right(log_p, y).mean())


def member_accuracy(log_probs, y) -> np.ndarray:
    """(M,) each member's accuracy, ties counted as in `accuracy`."""
    log_probs, _ = _check_log_probs(log_probs)
    _, y = _check_pair(log_probs[0], y)
    return _right(log_probs, y).mean(-1)


def nll(log_p, y) -> float:
    """-mean log p(y|x), from the log-probabilities as they are: no clamp."""
    log_p, y = _check_pair(log_p, y)
    return float(-log_p[np.arange(len(y)), y].mean())


def brier(log_p, y) -> float:
    """Mean over points of sum_k (p_k - 1[y = k])^2 (ranges over [0, 2]), p = exp(log_p)."""
    log_p, y = _check_pair(log_p, y)
    p = np.exp(log_p)
    p[np.arange(len(y)), y] -= 1.0  # p - onehot(y)
    return float(np.square(p).sum(1).mean())


def ece(log_p, y, bins: int = 15) -> float:
    """Expected calibration error: sum_b |B_b|/N |acc(B_b) - conf(B_b)| over equal-width bins.

    Confidence is the top probability; bins are right-closed, (b/B, (b+1)/B], the first also holds 0.
    """
    log_p, y = _check_pair(log_p, y)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    conf = np.exp(log_p.max(1))
    inner = np.linspace(0, 1, bins + 1)[1:-1]
    idx = np.searchsorted(inner, conf, side="left")  # an edge value falls in the lower bin
    correct = _right(log_p, y)
    # |B|/N * |acc - conf| = |sum(correct) - sum(conf)| / N: no division by empty bins
    gap = np.bincount(idx, weights=correct - conf, minlength=bins)
    return float(np.abs(gap).sum() / len(y))


def model_metrics(log_p, y, bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL, Brier and ECE of one model's (or one ensemble's) log-softmax outputs (N, K)."""
    log_p = np.asarray(log_p, dtype=np.float64)
    return {"accuracy": accuracy(log_p, y), "nll": nll(log_p, y), "brier": brier(log_p, y), "ece": ece(log_p, y, bins)}


def ensemble_curve(log_probs, y, bins: int = 15) -> pd.DataFrame:
    """One row per ensemble of the last m members, m = 1..M: its metrics and its gains.

    gain = ensemble accuracy - mean accuracy of the same m members; gain_best = ensemble accuracy -
    the best of those members' accuracies (what choosing an ensemble over one model buys).
    """
    log_probs, n_members = _check_log_probs(log_probs)
    member_acc = member_accuracy(log_probs, y)
    rows = []
    for m in range(1, n_members + 1):
        metrics = model_metrics(ensemble_log_probs(log_probs, m), y, bins)
        mean_member, best_member = member_acc[-m:].mean(), member_acc[-m:].max()
        rows.append(
            {
                "m": m,
                **metrics,
                "mean_member_accuracy": mean_member,
                "gain": metrics["accuracy"] - mean_member,
                "gain_best": metrics["accuracy"] - best_member,
            }
        )
    return pd.DataFrame(rows)


# --- pairwise diversity, (M, M) matrices ---------------------------------------------------------


def disagreement(log_probs) -> np.ndarray:
    """Fraction of points on which members i and j predict different top-1 classes; with ties,
    the chance that their tie-broken choices differ (1 − sum_k top1_i[k] top1_j[k])."""
    log_probs, _ = _check_log_probs(log_probs)
    top = top1(log_probs)  # (M, N, K)
    out = 1 - np.einsum("ink,jnk->ij", top, top) / top.shape[1]
    np.fill_diagonal(out, 0.0)  # a member is its own choice, ties included
    return out


def prediction_correlation(log_probs) -> np.ndarray:
    """Pearson correlation of the members' flattened softmax outputs (N * K values each)."""
    log_probs, n_members = _check_log_probs(log_probs)
    return np.corrcoef(np.exp(log_probs.astype(np.float64)).reshape(n_members, -1))


def _cosine(w: np.ndarray) -> np.ndarray:
    w = w.astype(np.float64)
    norms = np.linalg.norm(w, axis=1)
    # no eps: a zero vector has no direction, and NaN says so instead of a made-up 0
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = (w @ w.T) / (norms[:, None] * norms[None, :])
    return np.clip(cos, -1.0, 1.0)  # rounding can step just past +-1 (np.corrcoef clips the same way)


def weight_cosine(weights) -> np.ndarray:
    """Cosine similarity of the members' flat weight vectors."""
    return _cosine(_stack_weights(weights))


def displacement_cosine(weights, theta_c) -> np.ndarray:
    """Cosine similarity of the displacements theta_i - theta_c from the checkpoint: one flat
    theta_c for all members, or (M, P), each member's own (independent seeds start apart)."""
    w, theta_c = _stack_weights(weights), np.asarray(theta_c)
    if theta_c.shape not in {(w.shape[1],), w.shape}:
        raise ValueError(f"theta_c must be ({w.shape[1]},) or {w.shape} like the members, got {theta_c.shape}")
    return _cosine(w - theta_c)


def weight_distance(weights) -> np.ndarray:
    """L2 distance between the members' flat weight vectors (in float64)."""
    w = _stack_weights(weights).astype(np.float64)
    # scipy sums the squared differences directly, so identical members are exactly 0
    return cdist(w, w, "euclidean")


def pairwise_table(log_probs, weights, theta_c, aligned=None) -> pd.DataFrame:
    """One row per pair i < j: disagreement, correlation, weight and displacement cosine, distance,
    and `aligned_distance`, the distance after weight matching (repel.align), from the (M, M)
    `aligned` the predict job stored (NaN where it stored none: a model without a spec)."""
    log_probs, n_members = _check_log_probs(log_probs)
    w = _stack_weights(weights)
    if len(w) != n_members:
        raise ValueError(f"mismatched members: log_probs has {n_members}, weights has {len(w)}")
    i, j = np.triu_indices(n_members, 1)
    aligned = np.full((n_members, n_members), np.nan) if aligned is None else np.asarray(aligned)
    if aligned.shape != (n_members, n_members):
        raise ValueError(f"aligned must be ({n_members}, {n_members}) like the members, got {aligned.shape}")
    columns = {
        "disagreement": disagreement(log_probs),
        "correlation": prediction_correlation(log_probs),
        "weight_cosine": weight_cosine(w),
        "displacement_cosine": displacement_cosine(w, theta_c),
        "weight_distance": weight_distance(w),
        "aligned_distance": aligned,
    }
    return pd.DataFrame({"i": i, "j": j, **{k: v.astype(np.float64)[i, j] for k, v in columns.items()}})
