import math

import numpy as np
import pandas as pd
import pytest
import torch

from repel import ensemble

# Two members (training order: member 0 first), four points, three classes.
Y = torch.tensor([0, 1, 2, 2])
PROBS = torch.tensor(
    [
        [
            [0.50, 0.30, 0.20],  # member 0: top-1 0, 0, 2, 2 -> right, wrong, right, right
            [0.50, 0.40, 0.10],
            [0.10, 0.10, 0.80],
            [0.10, 0.20, 0.70],
        ],
        [
            [0.90, 0.05, 0.05],  # member 1 (the last): top-1 0, 1, 2, 0 -> right, right, right, wrong
            [0.30, 0.70, 0.00],
            [0.25, 0.25, 0.50],
            [0.52, 0.28, 0.20],
        ],
    ],
    dtype=torch.float64,
)
LOG_PROBS = PROBS.log()  # what predict stores (log 0 = -inf: a probability that underflowed)
# the ensemble of both, by hand: the mean of the two rows
#   x0 (.5+.9, .3+.05, .2+.05)/2 = (.70, .175, .125)  top-1 0, right
#   x1 (.5+.3, .4+.7,  .1+0)/2   = (.40, .55,  .05)   top-1 1, right
#   x2 (.1+.25, .1+.25, .8+.5)/2 = (.175, .175, .65)  top-1 2, right
#   x3 (.1+.52, .2+.28, .7+.2)/2 = (.31, .24,  .45)   top-1 2, right


def test_the_last_member_alone():
    p = ensemble.ensemble_log_probs(LOG_PROBS, 1)
    assert np.array_equal(p, LOG_PROBS[-1])
    assert float(ensemble.accuracy(p, Y)) == pytest.approx(0.75)  # 3 of 4 right
    # -(ln .9 + ln .7 + ln .5 + ln .2)/4 = (0.105361 + 0.356675 + 0.693147 + 1.609438)/4
    assert float(ensemble.nll(p, Y)) == pytest.approx(0.691155, abs=1e-6)
    # x0 .1^2+.05^2+.05^2 = .015; x1 .3^2+.3^2+0 = .18; x2 .25^2+.25^2+.5^2 = .375;
    # x3 .52^2+.28^2+.8^2 = .2704+.0784+.64 = .9888;  (.015+.18+.375+.9888)/4 = 1.5588/4
    assert float(ensemble.brier(p, Y)) == pytest.approx(0.3897)
    # 15 bins of width 1/15: conf .9 -> bin 13 (.867, .933], .7 -> bin 10 (.667, .733],
    # .5 and .52 -> bin 7 (.467, .533]
    # bin 13: 1/4 * |1 - .9| = .025; bin 10: 1/4 * |1 - .7| = .075;
    # bin 7: 2/4 * |acc 1/2 - conf (.5+.52)/2| = .5 * .01 = .005;  total .105
    assert float(ensemble.ece(p, Y)) == pytest.approx(0.105)


def test_the_two_member_ensemble():
    p = ensemble.ensemble_log_probs(LOG_PROBS, 2)
    assert np.allclose(
        np.exp(p),
        torch.tensor(
            [[0.70, 0.175, 0.125], [0.40, 0.55, 0.05], [0.175, 0.175, 0.65], [0.31, 0.24, 0.45]], dtype=torch.float64
        ),
    )
    assert float(ensemble.accuracy(p, Y)) == 1.0
    # -(ln .7 + ln .55 + ln .65 + ln .45)/4 = (0.356675 + 0.597837 + 0.430783 + 0.798508)/4
    assert float(ensemble.nll(p, Y)) == pytest.approx(0.545951, abs=1e-6)
    # x0 .3^2+.175^2+.125^2 = .09+.030625+.015625 = .13625; x1 .4^2+.45^2+.05^2 = .365;
    # x2 .175^2+.175^2+.35^2 = .18375; x3 .31^2+.24^2+.55^2 = .0961+.0576+.3025 = .4562
    # (.13625+.365+.18375+.4562)/4 = 1.1412/4
    assert float(ensemble.brier(p, Y)) == pytest.approx(0.2853)
    # all right, each alone in its bin (.7 -> 10, .55 -> 8, .65 -> 9, .45 -> 6):
    # (|1-.7| + |1-.55| + |1-.65| + |1-.45|)/4 = (.3+.45+.35+.55)/4 = 1.65/4
    assert float(ensemble.ece(p, Y)) == pytest.approx(0.4125)


def test_ece_bins_are_right_closed():
    # 2 bins [0, .5] and (.5, 1]: conf .5 (right) goes in the first, .75 (wrong) in the second
    # 1/2 * |1 - .5| + 1/2 * |0 - .75| = .25 + .375 = .625 (left-closed bins would give .125)
    p = torch.tensor([[0.5, 0.3, 0.2], [0.75, 0.25, 0.0]]).log()
    assert float(ensemble.ece(p, torch.tensor([0, 1]), bins=2)) == pytest.approx(0.625)
    # a confidence of exactly 1 is in the last bin, a perfectly calibrated one: ECE 0
    assert float(ensemble.ece(torch.tensor([[1.0, 0.0]]).log(), torch.tensor([0]))) == 0.0


def test_nll_of_a_member_whose_softmax_underflows_is_exact():
    # logits (0, -200, -100): in float32 softmax gives the true class (1) probability exactly 0;
    # log-softmax gives -200 - log(1 + e^-200 + e^-100) = -200 (to 1e-43)
    logits = torch.tensor([[0.0, -200.0, -100.0]])
    assert torch.softmax(logits, 1)[0, 1] == 0.0  # what a stored probability would lose
    member = torch.log_softmax(logits, 1)
    assert float(ensemble.nll(member.double(), torch.tensor([1]))) == pytest.approx(200.0, abs=1e-6)
    # with a second member giving class 1 probability e^-10 / (1 + e^-10): the ensemble's
    # p(1) = (e^-200 + e^-10/(1 + e^-10)) / 2, so NLL = -log of it, computed here in closed form
    other = torch.log_softmax(torch.tensor([[0.0, -10.0, -300.0]]), 1)
    both = torch.stack([other, member])  # the underflowing member last: m = 1 is it alone
    exact = -math.log((math.exp(-200) + math.exp(-10) / (1 + math.exp(-10) + math.exp(-300))) / 2)
    ensemble_nll = ensemble.nll(ensemble.ensemble_log_probs(both, 2), torch.tensor([1]))
    assert float(ensemble_nll) == pytest.approx(exact, abs=1e-6)
    assert ensemble.ensemble_curve(both, torch.tensor([1]))["nll"].tolist() == pytest.approx([200.0, exact], abs=1e-6)


def test_a_tie_counts_as_half_right_everywhere():
    # each member 0.5/0.5 on x0 (label 0): half right; in float32 the averaged values may differ by
    # rounding, which TIE_TOL absorbs; x1 is a plain right answer
    y = torch.tensor([0, 0])
    member = torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log()
    nudged = member + torch.tensor([[0.0, 1e-7], [0.0, 0.0]])  # a tie moved by float rounding
    both = torch.stack([member, nudged])
    assert float(ensemble.accuracy(member, y)) == pytest.approx(0.75)
    assert float(ensemble.accuracy(nudged, y)) == pytest.approx(0.75)
    assert ensemble.member_accuracy(both, y).tolist() == pytest.approx([0.75, 0.75])
    assert ensemble.ensemble_curve(both, y)["accuracy"].tolist() == pytest.approx([0.75, 0.75])
    # disagreement: on x0 each picks class 0 or 1 with chance 1/2: they differ with chance 1/2
    assert ensemble.disagreement(both)[0].tolist() == pytest.approx([0.0, 0.25])
    # ECE, 2 bins: x0 conf .5 in [0, .5] with correct 1/2 (gap 0); x1 conf .9, right: gap .1; /2
    assert float(ensemble.ece(member, y, bins=2)) == pytest.approx(0.05)


def test_the_curve_over_the_last_m_members():
    curve = ensemble.ensemble_curve(LOG_PROBS, Y)
    assert list(curve.columns) == ["m", "accuracy", "nll", "brier", "ece", "mean_member_accuracy", "gain", "gain_best"]
    assert curve["m"].tolist() == [1, 2]
    assert curve["accuracy"].tolist() == pytest.approx([0.75, 1.0])
    assert curve["nll"].tolist() == pytest.approx([0.691155, 0.545951], abs=1e-6)
    assert curve["brier"].tolist() == pytest.approx([0.3897, 0.2853])
    assert curve["ece"].tolist() == pytest.approx([0.105, 0.4125])
    assert curve["mean_member_accuracy"].tolist() == pytest.approx([0.75, 0.75])  # both members 3/4
    assert curve["gain"].tolist() == pytest.approx([0.0, 0.25])  # 1 - .75
    assert curve["gain_best"].tolist() == pytest.approx([0.0, 0.25])  # both members are the best, 3/4


def test_gain_over_the_best_member_by_hand():
    # member 0 right on both points (acc 1), member 1 wrong on both (acc 0); their mean (.55, .45)
    # is right on both: 1 above the mean member's 0.5, nothing above the best member
    probs = torch.tensor([[[0.9, 0.1], [0.9, 0.1]], [[0.2, 0.8], [0.2, 0.8]]])
    curve = ensemble.ensemble_curve(probs.log(), torch.tensor([0, 0]))
    assert curve["gain"].tolist() == pytest.approx([0.0, 0.5])
    assert curve["gain_best"].tolist() == pytest.approx([0.0, 0.0])


def test_disagreement_by_hand():
    # top-1: member 0 (0, 0, 2, 2), member 1 (0, 1, 2, 0): they differ on x1 and x3, 2 of 4
    assert np.array_equal(ensemble.disagreement(LOG_PROBS), torch.tensor([[0.0, 0.5], [0.5, 0.0]]))


def test_correlation_by_hand():
    a = torch.tensor([0.4, 0.3, 0.2, 0.1])
    b = 0.5 - a  # (.1, .2, .3, .4): a linear function of a with slope -1, so correlation -1
    probs = torch.stack([a, b, a]).view(3, 1, 4).log()
    expected = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]], dtype=torch.float64)
    assert np.allclose(ensemble.prediction_correlation(probs), expected, atol=1e-6)


WEIGHTS = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])]
THETA_C = torch.tensor([0.5, 0.5])  # displacements (.5, -.5), (-.5, .5), (.5, .5)
R = 1 / math.sqrt(2)


def test_weight_geometry_by_hand():
    # cos: w0.w1 = 0; w0.w2 = 1 / (1 * sqrt 2); w1.w2 = 1 / sqrt 2
    assert np.allclose(ensemble.weight_cosine(WEIGHTS), torch.tensor([[1, 0, R], [0, 1, R], [R, R, 1]]))
    # displacements: d0 = -d1 (cos -1); d2 is orthogonal to both (cos 0)
    assert np.allclose(
        ensemble.displacement_cosine(WEIGHTS, THETA_C), torch.tensor([[1.0, -1, 0], [-1, 1, 0], [0, 0, 1]]), atol=1e-7
    )
    # |w0 - w1| = |(1, -1)| = sqrt 2; |w0 - w2| = |(0, -1)| = 1; |w1 - w2| = |(-1, 0)| = 1
    s = math.sqrt(2)
    assert np.allclose(ensemble.weight_distance(WEIGHTS), torch.tensor([[0, s, 1], [s, 0, 1], [1, 1, 0]]))


def test_each_member_measured_from_its_own_checkpoint():
    # independent seeds: member i started from its own theta_c,i. Displacements by hand:
    # (1, 0) - (0, 0) = (1, 0); (0, 1) - (0, 2) = (0, -1); (1, 1) - (2, 1) = (-1, 0)
    own = torch.tensor([[0.0, 0.0], [0.0, 2.0], [2.0, 1.0]])
    assert np.allclose(
        ensemble.displacement_cosine(WEIGHTS, own), torch.tensor([[1.0, 0, -1], [0, 1, 0], [-1, 0, 1]]), atol=1e-7
    )


def test_pairwise_table_has_one_row_per_pair():
    probs = torch.stack([LOG_PROBS[0], LOG_PROBS[1], LOG_PROBS[1]])
    table = ensemble.pairwise_table(probs, WEIGHTS, THETA_C)
    assert list(table.columns) == [
        "i",
        "j",
        "disagreement",
        "correlation",
        "weight_cosine",
        "displacement_cosine",
        "weight_distance",
        "aligned_distance",
    ]
    assert table["aligned_distance"].isna().all()  # none stored: not aligned
    assert list(zip(table["i"], table["j"])) == [(0, 1), (0, 2), (1, 2)]
    assert table["disagreement"].tolist() == [0.5, 0.5, 0.0]
    assert table["weight_cosine"].tolist() == pytest.approx([0.0, R, R])
    assert table["displacement_cosine"].tolist() == pytest.approx([-1.0, 0.0, 0.0], abs=1e-7)
    assert table["weight_distance"].tolist() == pytest.approx([math.sqrt(2), 1.0, 1.0])
    assert table["correlation"].iloc[2] == pytest.approx(1.0)


def test_pairwise_table_reads_the_stored_aligned_distances_pair_by_pair():
    probs = torch.stack([LOG_PROBS[0], LOG_PROBS[1], LOG_PROBS[1]])
    aligned = torch.tensor([[0.0, 0.5, 0.25], [0.5, 0.0, 0.75], [0.25, 0.75, 0.0]])
    table = ensemble.pairwise_table(probs, WEIGHTS, THETA_C, aligned)
    assert table["aligned_distance"].tolist() == [0.5, 0.25, 0.75]  # (0, 1), (0, 2), (1, 2)
    with pytest.raises(ValueError, match="aligned must be"):
        ensemble.pairwise_table(probs, WEIGHTS, THETA_C, aligned[:2, :2])


def test_identical_members_gain_nothing_and_never_disagree():
    probs = LOG_PROBS[1].expand(3, -1, -1)
    curve = ensemble.ensemble_curve(probs, Y)
    assert curve["gain"].tolist() == [0.0, 0.0, 0.0]
    assert curve["accuracy"].tolist() == pytest.approx([0.75] * 3)
    assert np.array_equal(ensemble.disagreement(probs), torch.zeros(3, 3))
    assert np.allclose(ensemble.prediction_correlation(probs), torch.ones(3, 3, dtype=torch.float64))
    weights = [torch.tensor([0.3, -1.2, 2.0])] * 3
    assert np.array_equal(ensemble.weight_distance(weights), torch.zeros(3, 3))
    assert np.allclose(ensemble.weight_cosine(weights), torch.ones(3, 3))


@pytest.mark.parametrize("m", [0, 3, -1, 1.0])
def test_m_out_of_range(m):
    with pytest.raises(ValueError, match=r"m must be an integer in 1\.\.2"):
        ensemble.ensemble_log_probs(LOG_PROBS, m)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="log_probs must be an array of shape"):
        ensemble.ensemble_log_probs(LOG_PROBS[0], 1)
    with pytest.raises(ValueError, match="labels y must have shape"):
        ensemble.accuracy(LOG_PROBS[0], Y[:3])
    with pytest.raises(ValueError, match="labels y must have shape"):
        ensemble.ensemble_curve(LOG_PROBS, Y[:3])
    with pytest.raises(ValueError, match="integer class indices"):
        ensemble.nll(LOG_PROBS[0], Y.double())
    with pytest.raises(ValueError, match="bins"):
        ensemble.ece(LOG_PROBS[0], Y, bins=0)


def test_mismatched_members_are_named():
    with pytest.raises(ValueError, match="mismatched sizes"):
        ensemble.weight_distance([torch.zeros(2), torch.zeros(3)])
    with pytest.raises(ValueError, match="flat 1-D"):
        ensemble.weight_cosine([torch.zeros(2, 2), torch.zeros(4)])
    with pytest.raises(ValueError, match=r"theta_c must be \(2,\) or \(3, 2\)"):
        ensemble.displacement_cosine(WEIGHTS, torch.zeros(3))
    with pytest.raises(ValueError, match="mismatched members: log_probs has 2, weights has 3"):
        ensemble.pairwise_table(LOG_PROBS, WEIGHTS, THETA_C)


def test_a_member_at_the_checkpoint_has_no_displacement_direction():
    # theta_0 = theta_c: its displacement is the zero vector, whose cosine is undefined (NaN), not 0
    cos = ensemble.displacement_cosine(WEIGHTS, WEIGHTS[0])
    assert np.isnan(cos[0]).all() and np.isnan(cos[:, 0]).all()
    assert cos[1, 2] == pytest.approx(R)  # d1 = (-1, 1), d2 = (0, 1): 1 / sqrt 2


def test_a_method_s_ensembles_are_kept_apart_and_summarised_as_mean_and_std(tmp_path):
    """Two ensembles of one method (seeds 0 and 1), written as predict and landscape --between
    write them; the summary's mean and std over the two are computed by hand."""
    from repel import storage
    from repel.aggregate import aggregate_ensembles

    y = torch.tensor([0, 0])
    right, wrong = [[0.9, 0.1], [0.9, 0.1]], [[0.2, 0.8], [0.2, 0.8]]
    # seed0: both members right, accuracy 1; seed1: mean probabilities (.4, .6) and (.2, .8), accuracy 0
    members = {"seed0": [right, right], "seed1": [wrong, [[0.6, 0.4], [0.2, 0.8]]]}
    paths, landscapes = [], []
    for k, (name, probs) in enumerate(members.items()):
        pred = {
            "log_probs": torch.tensor(probs).log(),
            "labels": y,
            "weights": torch.eye(2),
            "theta_c": torch.zeros(2),
            "dataset": "d",
            "model": "m",
            "method": "distance",
            "ensemble": name,
            "average_log_probs": torch.tensor(right).log(),
            "swa_log_probs": None,
        }
        paths.append(tmp_path / f"{name}.npz")
        storage.save_arrays(pred, paths[-1])
        landscapes.append(tmp_path / f"{name}.parquet")
        barrier = 0.2 * (k + 1)  # 0.2 and 0.4
        storage.save_parquet(
            pd.DataFrame(
                {
                    "alpha": [0.0, 1.0],
                    "loss": [1.0, 1.0],
                    "pair": 0,
                    "barrier": barrier,
                    "dataset": "d",
                    "model": "m",
                    "method": "distance",
                    "ensemble": name,
                }
            ),
            landscapes[-1],
        )
    aggregate_ensembles(paths, landscapes, tmp_path)
    curves = pd.read_parquet(tmp_path / "ensembles.parquet")
    assert sorted(curves["ensemble"].unique()) == ["seed0", "seed1"] and len(curves) == 4  # m = 1, 2 each
    summary = pd.read_csv(tmp_path / "ensemble_summary.csv").iloc[0]
    assert summary["ensembles"] == "seed0 seed1" and summary["members"] == 2
    assert summary["accuracy"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert summary["accuracy_std"] == pytest.approx(math.sqrt(0.5))  # sample std of 1 and 0
    assert summary["mean_member_barrier"] == pytest.approx(0.3)
    assert math.isnan(summary["mean_aligned_barrier"])  # no aligned member lines among the inputs
    assert "0.5000 ± 0.7071" in (tmp_path / "ensemble_summary.md").read_text()
    pairs = pd.read_parquet(tmp_path / "ensemble_pairs.parquet")  # stored without aligned distances
    assert pairs["aligned_distance"].isna().all() and pairs["alignment"].str.startswith("not aligned").all()


def test_weight_averages_sit_beside_their_ensembles(tmp_path):
    """An SWA ensemble's predictions with its members' average and SWA's own model: one row each,
    with the ensemble's accuracy and its best member's beside them, all by hand."""
    from repel import storage
    from repel.aggregate import aggregate_ensembles

    y = torch.tensor([0, 1])
    # members: right on x0 only, right on both; the ensemble (.75, .25), (.3, .7): right on both
    probs = torch.tensor([[[0.6, 0.4], [0.6, 0.4]], [[0.9, 0.1], [0.0, 1.0]]])
    average, swa = torch.tensor([[0.5, 0.5], [0.25, 0.75]]), torch.tensor([[[0.2, 0.8], [0.2, 0.8]]])
    pred = {
        "log_probs": probs.log(),
        "labels": y,
        "weights": torch.eye(2),
        "theta_c": torch.zeros(2),
        "dataset": "d",
        "model": "m",
        "method": "swa",
        "ensemble": "seed0",
        "average_log_probs": average.log(),
        "swa_log_probs": swa.log(),
    }
    storage.save_arrays(pred, tmp_path / "p.npz")
    storage.save_parquet(
        pd.DataFrame(
            {
                "alpha": [0.0, 1.0],
                "loss": [1.0, 1.0],
                "pair": 0,
                "barrier": 0.0,
                "dataset": "d",
                "model": "m",
                "method": "swa",
                "ensemble": "seed0",
            }
        ),
        tmp_path / "l.parquet",
    )
    aggregate_ensembles([tmp_path / "p.npz"], [tmp_path / "l.parquet"], tmp_path)
    rows = pd.read_parquet(tmp_path / "weight_averages.parquet").set_index("averaged")
    assert sorted(rows.index) == ["members", "swa"]
    # the average: a 0.5/0.5 tie on x0 counts half right, x1 right -> 0.75; SWA: class 1 twice -> 0.5
    assert rows.loc["members", "accuracy"] == 0.75 and rows.loc["swa", "accuracy"] == 0.5
    assert rows.loc["members", "nll"] == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
    assert rows.loc["swa", "brier"] == pytest.approx((2 * 0.8**2 + 2 * 0.2**2) / 2)
    assert (rows["ensemble_accuracy"] == 1.0).all() and (rows["best_member_accuracy"] == 1.0).all()
    text = (tmp_path / "ensemble_summary.md").read_text()
    assert "SWA: the average over every epoch of the run" in text and "the members' weight average" in text


def test_predictions_without_a_key_are_named(tmp_path):
    # probabilities instead of log-probabilities, as repel once stored them
    from repel import storage
    from repel.aggregate import aggregate_ensembles

    pred = {
        "probs": PROBS,
        "labels": Y,
        "weights": torch.eye(2),
        "theta_c": torch.zeros(2),
        "dataset": "d",
        "model": "m",
        "method": "sgdr",
        "ensemble": "seed3",
    }
    storage.save_arrays(pred, tmp_path / "p.npz")
    with pytest.raises(
        ValueError, match=r"p\.npz: its predictions lack average_log_probs, log_probs.*--forcerun predict"
    ):
        aggregate_ensembles([tmp_path / "p.npz"], [], tmp_path)
