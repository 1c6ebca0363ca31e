"""OOD scores and detection, each against a computation by another route: AUROC against a hand
count of ordered pairs, FPR at 95 % TPR against a threshold found by hand, mutual information
against its formula on a two-member ensemble (scipy's entropy)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import entropy

from repel import ood


def test_auroc_is_the_share_of_ordered_pairs():
    score_in, score_out = [0.1, 0.4, 0.35, 0.8], [0.9, 0.35, 0.7]
    # pairs (OOD, test) with the OOD score above: 1, tied: 1/2; 12 pairs in all
    pairs = [1.0 if o > i else 0.5 if o == i else 0.0 for o in score_out for i in score_in]
    assert ood.detection(score_in, score_out)["auroc"] == pytest.approx(sum(pairs) / len(pairs))  # 8.5 / 12


def test_fpr_at_95_tpr_by_hand():
    score_out = np.arange(20, 40) / 40  # 20 OOD points: 0.5 .. 0.975
    score_in = np.array([0.0, 0.1, 0.52, 0.6, 0.99])
    # catching 19 of 20 (95 %) needs the threshold at the second-lowest OOD score 0.525:
    # test points at or above it are 0.6 and 0.99, 2 of 5
    assert ood.detection(score_in, score_out)["fpr95"] == pytest.approx(2 / 5)


def test_mutual_information_of_two_members_is_its_formula():
    p = np.array([[[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]], [[0.1, 0.9], [0.5, 0.5], [0.3, 0.7]]])  # (M 2, N 3, K 2)
    s = ood.scores(torch.tensor(np.log(p)))
    mean = p.mean(0)
    expected = entropy(mean, axis=-1) - (entropy(p[0], axis=-1) + entropy(p[1], axis=-1)) / 2
    np.testing.assert_allclose(s["mi"].numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(s["entropy"].numpy(), entropy(mean, axis=-1), atol=1e-12)
    np.testing.assert_allclose(s["msp"].numpy(), 1 - mean.max(-1), atol=1e-12)
    assert s["mi"][1] == pytest.approx(0.0, abs=1e-12)  # members that agree: no mutual information
    # one-hot members that disagree: all the entropy is the members', ln 2
    onehot = torch.log(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))
    assert ood.scores(onehot)["mi"].item() == pytest.approx(math.log(2))


def test_the_synthetic_sets_have_the_test_splits_shape(digits):
    noise = ood.images(digits, "uniform_noise", seed=0)
    assert noise.shape == digits["test_x"].shape and noise.dtype == torch.uint8
    assert torch.equal(noise, ood.images(digits, "uniform_noise", seed=0))
    assert torch.equal(ood.images(digits, "inverted").int(), 255 - digits["test_x"].int())
    with pytest.raises(ValueError, match="unknown OOD set 'svhn'"):
        ood.images(digits, "svhn")


def test_detection_table_has_a_row_per_ensemble_set_and_score():
    rng = np.random.default_rng(0)
    rows = []
    for ensemble in ("seed0", "seed1"):
        for name, shift in (("test", 0.0), ("uniform_noise", 1.0), ("inverted", 0.5)):
            scores = {k: rng.normal(shift, 1, 30) for k in ood.SCORES}
            rows.append(
                pd.DataFrame(
                    {"dataset": "d", "model": "m", "method": "distance", "ensemble": ensemble, "set": name, **scores}
                )
            )
    points = pd.concat(rows, ignore_index=True)
    table = ood.detection_table(points)
    assert len(table) == 2 * 2 * len(ood.SCORES)
    one = table[(table["ensemble"] == "seed1") & (table["ood"] == "inverted") & (table["score"] == "mi")].iloc[0]
    g = points[points["ensemble"] == "seed1"]
    inside, out = g[g["set"] == "test"]["mi"].to_numpy(), g[g["set"] == "inverted"]["mi"].to_numpy()
    assert one["auroc"] == pytest.approx((out[:, None] > inside[None, :]).mean())  # continuous: no ties


def test_an_ood_set_that_cannot_run_is_named_with_its_key():
    from repel import config_check

    config = {
        "datasets": ["mnist"],
        "ensembles": {"ood": {"mnist": ["fashion_mnist", "cifar10"], "digits": ["inverted"]}},
    }
    problems = config_check.ood_problems(config)
    assert len(problems) == 2
    assert "ensembles.ood.mnist: 'cifar10' has images of shape (3, 32, 32), mnist (1, 28, 28)" in problems[0]
    assert "['fashion_mnist']" in problems[0]
    assert problems[1].startswith("ensembles.ood.digits: 'digits' is not among the datasets ['mnist']")


def test_the_schema_lists_the_ood_sets_and_datasets():
    from pathlib import Path

    import yaml

    from repel import config_check, data

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    block = schema["properties"]["ensembles"]["properties"]["ood"]
    assert block["propertyNames"]["enum"] == list(data.DATASETS) == list(config_check.SHAPES)
    assert block["additionalProperties"]["items"]["enum"] == [*ood.SYNTHETIC, *data.TORCHVISION_SETS]
