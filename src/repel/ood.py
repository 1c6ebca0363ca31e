"""Out of distribution: inputs from elsewhere, and how well an ensemble's uncertainty flags them.

The OOD sets of a dataset (config `ensembles.ood`, per dataset): synthetic ones that need nothing,
`uniform_noise` (every pixel uniform in 0..255, seeded) and `inverted` (the test images, 255 − x),
or the test split of another torchvision set of the same image shape (mnist ↔ fashion_mnist,
cifar10 ↔ cifar100), read or downloaded with torchvision's checksums like the dataset itself.

Scores, each larger where an input looks less like the training data: 1 − maximum softmax
probability of the ensemble, predictive entropy H(p̄) of its mean softmax p̄, and mutual
information H(p̄) − (1/M) Σ_m H(p_m), the part of the entropy that comes from the members
disagreeing. Detection treats OOD inputs as the positives: AUROC (sklearn.metrics.roc_auc_score)
and the false-positive rate at 95 % true-positive rate (the share of in-distribution test images
flagged when the threshold catches 95 % of the OOD ones; sklearn.metrics.roc_curve).
"""

from __future__ import annotations

import math

SYNTHETIC = ("uniform_noise", "inverted")
SCORES = {"msp": "1 − max softmax probability", "entropy": "predictive entropy", "mi": "mutual information"}
TPR = 0.95


def images(prepared: dict, name: str, seed: int = 0, data_dir: str = "data", download: bool = True):
    """An OOD set as uint8 (N, C, H, W) images of the prepared dataset's shape."""
    import torch

    x = prepared["test_x"]
    if name == "uniform_noise":
        return torch.randint(0, 256, tuple(x.shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    if name == "inverted":
        return 255 - x
    from . import data

    if name not in data.TORCHVISION_SETS or name == prepared["name"]:
        others = [n for n in data.TORCHVISION_SETS if n != prepared["name"]]
        raise ValueError(
            f"ensembles.ood.{prepared['name']}: unknown OOD set '{name}'; expected one of "
            f"{', '.join(SYNTHETIC + tuple(others))}"
        )
    other = data.prepare(name, data_dir, download=download)["test_x"]
    if other.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"ensembles.ood.{prepared['name']}: '{name}' has images of shape {tuple(other.shape[1:])}, "
            f"{prepared['name']} {tuple(x.shape[1:])}: a network cannot read them"
        )
    return other


def scores(log_probs):
    """(M, N, K) members' log-softmax outputs -> {score: (N,) float64 tensor} (SCORES)."""
    import torch

    lp = log_probs.double()
    mean_lp = torch.logsumexp(lp, 0) - math.log(len(lp))  # log p̄

    def entropy(logp):  # 0 log 0 = 0
        return -(logp.exp() * torch.where(logp.isinf(), 0.0, logp)).sum(-1)

    h = entropy(mean_lp)
    return {"msp": 1 - mean_lp.max(-1).values.exp(), "entropy": h, "mi": h - entropy(lp).mean(0)}


def detection(score_in, score_out) -> dict[str, float]:
    """AUROC and FPR at 95 % TPR of a score (larger: more OOD), OOD the positives."""
    import numpy as np
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.zeros(len(score_in)), np.ones(len(score_out))]
    s = np.r_[score_in, score_out]
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": float(roc_auc_score(y, s)), "fpr95": float(fpr[np.searchsorted(tpr, TPR, side="left")])}


def detection_table(points):
    """Per-point scores (columns dataset, model, method, ensemble, set — "test" for the
    in-distribution split —, and the SCORES) -> one row per ensemble, OOD set and score."""
    import pandas as pd

    keys = ["dataset", "model", "method", "ensemble"]
    rows = []
    for key, g in points.groupby(keys, sort=True):
        test = g[g["set"] == "test"]
        for name, out in g[g["set"] != "test"].groupby("set", sort=True):
            for score in SCORES:
                rows.append({**dict(zip(keys, key)), "ood": name, "score": score, **detection(test[score], out[score])})
    return pd.DataFrame(rows, columns=[*keys, "ood", "score", "auroc", "fpr95"])
