"""Weight matching (repel.align): the oracle is a permuted copy of a network, whose function is
the same and whose aligned distance must be 0, and the plain distance it can only lower."""

import math

import numpy as np
import pytest
import torch

from repel import align, ensemble, models
from repel.models import flat_weights, parameter_names

SHAPE = {"in_channels": 1, "num_classes": 10, "image_size": 8}


def network(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = models.build(name, SHAPE["in_channels"], SHAPE["num_classes"], SHAPE["image_size"])
    with torch.no_grad():  # BatchNorm statistics and affine parameters off their defaults, so permuting them matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    return model.eval()


def predict(name: str, state: dict, x: torch.Tensor) -> torch.Tensor:
    model = network(name, 99)
    model.load_state_dict(state)
    with torch.no_grad():
        return model(x)


def plain_distance(a: dict, b: dict, names: list[str]) -> float:
    """‖θ_A − θ_B‖₂ in float64, by torch (not scipy's cdist, which both distances of the tables use)."""
    return float((flat_weights(a, names).double() - flat_weights(b, names).double()).norm())


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_permuted_copy_predicts_the_same_and_aligns_to_distance_zero(name):
    model = network(name, 0)
    state, names, spec = model.state_dict(), parameter_names(model), align.spec_for(name)
    rng = np.random.default_rng(1)
    perms = {p: rng.permutation(state[axes[0][0]].shape[axes[0][1]]) for p, axes in spec.items()}
    copy = align.permute(state, spec, perms)
    assert plain_distance(state, copy, names) > 1.0  # the copy is far in weight space ...
    x = torch.randn(32, SHAPE["in_channels"], SHAPE["image_size"], SHAPE["image_size"])
    # ... and the same function: the permutation is a symmetry (the spec permutes every axis it must)
    assert torch.allclose(predict(name, copy, x), predict(name, state, x), atol=1e-5)
    aligned = align.align(state, copy, spec, names)
    assert align.aligned_distance(state, copy, name, names) == pytest.approx(0.0, abs=1e-6)
    for key in state:  # buffers too: the running statistics follow their units back
        assert torch.equal(aligned[key], state[key]), key
    assert torch.allclose(predict(name, aligned, x), predict(name, state, x), atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_two_independent_inits_are_closer_after_alignment_and_never_farther(name):
    a, b = network(name, 0), network(name, 1)
    names = parameter_names(a)
    plain = plain_distance(a.state_dict(), b.state_dict(), names)
    aligned = align.aligned_distance(a.state_dict(), b.state_dict(), name, names)
    assert aligned < plain
    # the aligned state is a permutation of B: same multiset of values per parameter, same norm
    permuted = align.align(a.state_dict(), b.state_dict(), align.spec_for(name), names)
    assert flat_weights(permuted, names).norm() == pytest.approx(float(flat_weights(b, names).norm()), rel=1e-6)
    assert aligned == pytest.approx(plain_distance(a.state_dict(), permuted, names), rel=1e-9)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_network_and_itself_slightly_moved_are_left_unpermuted(name):
    """A continuation-like pair (B = A + small noise) is no permutation: the identity is kept and
    the aligned distance equals the plain one."""
    a = network(name, 0)
    names = parameter_names(a)
    torch.manual_seed(5)
    b = {k: v + 1e-3 * torch.randn_like(v) if k in names else v.clone() for k, v in a.state_dict().items()}
    plain = ensemble.weight_distance([flat_weights(a.state_dict(), names), flat_weights(b, names)])[0, 1]
    assert align.aligned_distance(a.state_dict(), b, name, names) == float(plain)  # bit-equal: nothing permuted


def test_pairwise_matrix_is_symmetric_with_a_zero_diagonal():
    states = [network("mlp", s).state_dict() for s in range(3)]
    names = parameter_names(network("mlp", 0))
    d = align.aligned_distances(states, "mlp", names)
    assert torch.equal(d, d.T) and torch.equal(d.diagonal(), torch.zeros(3, dtype=d.dtype))
    for i in range(3):
        for j in range(i + 1, 3):
            assert d[i, j] <= plain_distance(states[i], states[j], names) + 1e-9


def test_models_without_a_spec_are_not_aligned():
    assert align.spec_for("resnet20") is None and align.spec_for("mobilenetv2") is None
    state = {"w": torch.zeros(2)}
    assert math.isnan(align.aligned_distance(state, state, "resnet20", ["w"]))
    assert torch.isnan(align.aligned_distances([state, state], "resnet20", ["w"])).all()


def test_a_state_dict_of_another_network_is_named():
    cnn, mlp = network("cnn", 0).state_dict(), network("mlp", 0).state_dict()
    with pytest.raises(ValueError, match="lacks"):
        align.align(mlp, cnn, align.spec_for("mlp"), list(mlp))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_predict_stores_the_aligned_distances_of_a_permuted_copy(digits, name):
    """member_predictions on [A, permuted A, B]: the copy's predictions are A's, its aligned
    distance to A is 0 while its plain one is not, and B is closer to A aligned than plain."""
    from repel.data import DeviceData
    from repel.predict import member_predictions

    shape = (digits["train_x"].shape[1], digits["num_classes"], digits["train_x"].shape[-1])
    torch.manual_seed(0)
    a = models.build(name, *shape)
    torch.manual_seed(1)
    b = models.build(name, *shape)
    spec = align.spec_for(name)
    rng = np.random.default_rng(2)
    perms = {p: rng.permutation(a.state_dict()[axes[0][0]].shape[axes[0][1]]) for p, axes in spec.items()}
    states = [a.state_dict(), align.permute(a.state_dict(), spec, perms), b.state_dict()]
    splits = {s: DeviceData(digits, s, torch.device("cpu")) for s in ("train", "test")}
    out = member_predictions(models.build(name, *shape), [a.state_dict()] * 3, states, splits, model_name=name)
    assert torch.allclose(out["log_probs"][1], out["log_probs"][0], atol=1e-5)
    plain = torch.cdist(out["weights"].double(), out["weights"].double())
    d = out["aligned_distance"]
    assert plain[0, 1] > 1.0 and d[0, 1] == pytest.approx(0.0, abs=1e-6)
    assert d[0, 2] < plain[0, 2]


def test_the_summary_takes_the_aligned_distance_of_the_last_epoch_and_nan_for_older_tables(tmp_path):
    import pandas as pd

    from repel import spec
    from repel.aggregate import combine, summarize

    def labelled(frame):  # as aggregate reads a run's metrics.parquet
        frame.to_parquet(tmp_path / "metrics.parquet")
        return combine([tmp_path / "metrics.parquet"], {})

    run = spec.Run.of({"strength": 10, "gamma": 0.01, "epochs": 2})
    rows = [
        {"phase": "base", "dataset": "d", "model": "mlp", "seed": 0, "run": "base", "epoch": 1, "val_acc": 0.5},
        *(
            {
                "phase": "continue",
                "dataset": "d",
                "model": "mlp",
                "seed": 0,
                "epoch": e,
                "val_acc": 0.6,
                "test_acc": 0.6,
                "dist": float(e),
                "diverged": False,
                **run.columns(),
            }
            for e in (2, 3)
        ),
    ]
    with_aligned = pd.DataFrame(rows).assign(aligned_dist=[math.nan, math.nan, 1.5])
    summary = summarize(labelled(with_aligned))
    assert summary["final_aligned_dist"].tolist() == [1.5] and summary["final_dist"].tolist() == [3.0]
    older = summarize(labelled(pd.DataFrame(rows)))
    assert older["final_aligned_dist"].isna().all()


def test_the_aligned_member_line_to_a_permuted_copy_is_flat(digits, tmp_path):
    """write_lines with align_model: the line from A to its permuted copy, aligned, stays at A
    (the same loss at every alpha, barrier 0), while the plain line leaves it."""
    import pandas as pd

    from repel import landscape
    from repel.data import DeviceData

    shape = (digits["train_x"].shape[1], digits["num_classes"], digits["train_x"].shape[-1])
    torch.manual_seed(0)
    model = models.build("mlp", *shape)
    spec = align.spec_for("mlp")
    rng = np.random.default_rng(3)
    perms = {p: rng.permutation(model.state_dict()[axes[0][0]].shape[axes[0][1]]) for p, axes in spec.items()}
    states = {"a": model.state_dict(), "b": align.permute(model.state_dict(), spec, perms)}
    splits = {s: DeviceData(digits, s, torch.device("cpu")) for s in ("train", "val")}
    ckpt = {"arch": {"model": "mlp"}, "config": {"seed": 0}}
    out = tmp_path / "line.parquet"
    lines = [({"method": "independent", "ensemble": "seeds0-1"}, out, ["a", "b"])]
    landscape.write_lines(
        {"name": "digits"}, ckpt, lines, states.__getitem__, model, splits, 5, 2, lambda m: None, "mlp"
    )
    df = pd.read_parquet(out)
    aligned, plain = df[df["aligned"]], df[~df["aligned"]]
    assert len(aligned) == len(plain) > 0
    assert np.allclose(aligned["loss"], aligned["loss"].iloc[0], rtol=1e-5)
    assert aligned["barrier"].iloc[0] == pytest.approx(0.0, abs=1e-5)
    assert not np.allclose(plain["loss"], plain["loss"].iloc[0], rtol=1e-3)


def test_a_diverged_run_has_no_aligned_distance():
    from repel import models

    model = models.build("mlp", 1, 10, 8)
    a = model.state_dict()
    b = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in a.items()}
    names = models.parameter_names(model)
    assert math.isnan(align.aligned_distance(a, b, "mlp", names))  # linear_sum_assignment would raise on NaN
    # the aligned member line (landscape.write_lines) aligns such a member too: it is left as it is
    aligned = align.align(a, b, align.spec_for("mlp"), names)
    torch.testing.assert_close(aligned, b, rtol=0, atol=0, equal_nan=True)
