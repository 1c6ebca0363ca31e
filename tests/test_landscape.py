import itertools

import pandas as pd
import pytest
import torch
from torch.optim.swa_utils import update_bn

from repel import models
from repel.data import DeviceData
from repel.landscape import alphas, barrier, interpolate
from repel.train import TrainConfig, evaluate, fit

CPU = torch.device("cpu")
BN_BATCHES, BATCH = 3, 128  # BatchNorm statistics from 3 training batches keep the tests fast


def _cnn(seed=0):
    torch.manual_seed(seed)
    return models.build("cnn", 1, 10, 8)


@pytest.fixture(scope="module")
def trained(digits):
    """theta_c after one epoch, theta after two more, and the splits on the CPU."""
    torch.set_num_threads(1)
    model = _cnn()
    fit(model, digits, TrainConfig(epochs=1), CPU, log=lambda m: None)
    theta_c = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, digits, TrainConfig(epochs=2, seed=1), CPU, log=lambda m: None)
    theta = {k: v.clone() for k, v in model.state_dict().items()}
    return theta_c, theta, DeviceData(digits, "train", CPU), DeviceData(digits, "test", CPU)


def _evaluate_alone(state, train, test):
    """An endpoint evaluated on its own: load it, recompute BatchNorm, evaluate."""
    model = _cnn(seed=5)
    model.load_state_dict(state)
    update_bn(itertools.islice(train.batches(BATCH), BN_BATCHES), model)
    return evaluate(model, test).tolist()


def test_the_endpoints_are_the_two_models(trained):
    theta_c, theta, train, test = trained
    df = interpolate(_cnn(seed=3), theta_c, theta, [0.0, 0.5, 1.0], train, test, bn_batches=BN_BATCHES)
    assert list(df.columns) == ["alpha", "loss", "error"]
    for alpha, state in ((0.0, theta_c), (1.0, theta)):
        loss, acc = _evaluate_alone(state, train, test)
        row = df[df["alpha"] == alpha].iloc[0]
        assert row["loss"] == pytest.approx(loss, abs=1e-6)
        assert row["error"] == pytest.approx(1 - acc, abs=1e-6)
    assert df["loss"].iloc[0] != df["loss"].iloc[2]  # the two models differ: the check has teeth


def test_the_midpoint_interpolates_parameters_and_recomputes_batchnorm(trained):
    theta_c, theta, train, test = trained
    names = {n for n, _ in _cnn().named_parameters()}
    # parameters halfway; the running statistics start from something wrong, since they are recomputed
    mid = {k: (theta_c[k] + theta[k]) / 2 if k in names else torch.full_like(v, 7) for k, v in theta.items()}
    loss, acc = _evaluate_alone(mid, train, test)
    df = interpolate(_cnn(), theta_c, theta, [0.5], train, test, bn_batches=BN_BATCHES)
    assert df["loss"].iloc[0] == pytest.approx(loss, rel=1e-5)
    assert df["error"].iloc[0] == pytest.approx(1 - acc, abs=1e-6)


def test_identical_endpoints_have_no_barrier(trained):
    _, theta, train, test = trained
    df = interpolate(_cnn(), theta, theta, alphas(), train, test, bn_batches=BN_BATCHES)
    assert df["loss"].nunique() == 1  # every alpha is the same model
    assert barrier(df) == 0.0


def test_the_model_is_left_as_it_was(trained):
    theta_c, theta, train, test = trained
    model = _cnn(seed=9).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    interpolate(model, theta_c, theta, [0.25], train, test, bn_batches=1)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_model_without_batchnorm(digits):
    torch.manual_seed(0)
    mlp_c, mlp = models.build("mlp", 1, 10, 8), models.build("mlp", 1, 10, 8)
    train, test = DeviceData(digits, "train", CPU), DeviceData(digits, "test", CPU)
    # theta_c is the model's own live state dict: interpolate must not overwrite it as it goes
    df = interpolate(mlp_c, mlp_c.state_dict(), mlp.state_dict(), alphas(n=4), train, test)
    assert len(df) == 6 and df["loss"].notna().all()  # 4 points plus 0 and 1
    assert df["error"].between(0, 1).all()
    assert df["loss"].nunique() == 6  # in particular alpha -0.5 is not alpha 0, nor 1.5 alpha 1


def test_mismatched_states_are_named(trained):
    theta_c, theta, train, test = trained
    with pytest.raises(ValueError, match="theta_state does not match the model"):
        interpolate(_cnn(), theta_c, {k: v for k, v in theta.items() if k != "head.bias"}, [0.0], train, test)
    with pytest.raises(ValueError, match="bn_batches|batches must be"):
        interpolate(_cnn(), theta_c, theta, [0.0], train, test, bn_batches=0)


def test_alphas_span_the_range_and_hit_the_endpoints_exactly():
    a = alphas()
    assert len(a) >= 21 and min(a) == -0.5 and max(a) == 1.5
    assert 0.0 in a and 1.0 in a and a == sorted(a)
    assert str(a[a.index(0.0)]) == "0.0"  # not -0.0 or 5.6e-17
    b = alphas(n=4)  # -0.5, 1/6, 5/6, 1.5 miss both endpoints, which are added
    assert len(b) == 6 and 0.0 in b and 1.0 in b
    with pytest.raises(ValueError, match="endpoints 0 and 1"):
        alphas(lo=0.2)
    with pytest.raises(ValueError, match="n must be"):
        alphas(n=1)


def test_barrier_by_hand():
    df = pd.DataFrame({"alpha": [-0.5, 0.0, 0.5, 1.0, 1.5], "loss": [9.0, 1.0, 3.0, 2.0, 9.0]})
    # at alpha .5 the line is (1 + 2)/2 = 1.5 and the loss 3: barrier 1.5 (alpha outside [0, 1] ignored)
    assert barrier(df) == pytest.approx(1.5)
    # a convex path lies below the line: the maximum is at the endpoints, 0
    assert barrier(df.assign(loss=[9.0, 1.0, 1.2, 2.0, 9.0])) == 0.0


def test_barrier_needs_both_endpoints():
    df = pd.DataFrame({"alpha": [0.0, 0.5], "loss": [1.0, 2.0]})
    with pytest.raises(ValueError, match="alpha = 1"):
        barrier(df)
    with pytest.raises(ValueError, match="alpha = 0"):
        barrier(df.assign(alpha=[0.5, 1.0]))
    with pytest.raises(ValueError, match="'loss' column"):
        barrier(pd.DataFrame({"alpha": [0.0, 1.0]}))


def test_the_function_distance_to_the_control_by_hand(trained, digits):
    """func_disagree_control and func_kl_control, against the softmax of one full-batch forward pass
    and scipy's KL (entropy(p, q) = sum p log(p / q))."""
    from scipy.stats import entropy

    from repel.jobs import function_distance

    theta_c, theta, _, test = trained
    model = _cnn(seed=7)
    got = function_distance(model, theta, theta_c, test)
    probs = []
    for state in (theta_c, theta):
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            probs.append(torch.softmax(model(test.normalize(test.x)), -1))  # all images in one pass
    p_c, p = (q.double().numpy() for q in probs)
    assert got["func_disagree_control"] == pytest.approx((p_c.argmax(1) != p.argmax(1)).mean(), abs=1e-12)
    assert got["func_kl_control"] == pytest.approx(entropy(p_c, p, axis=1).mean(), rel=1e-4)
    assert got["func_kl_control"] > 0
    same = function_distance(model, theta, theta, test)
    assert same == {"func_disagree_control": 0.0, "func_kl_control": 0.0}
