import pytest
import torch

from repel import models
from repel.averaging import average_of
from repel.data import DeviceData
from repel.predict import log_softmax_outputs

CPU = torch.device("cpu")


def _net(digits, name, seed):
    torch.manual_seed(seed)
    x = digits["train_x"]
    return models.build(name, x.shape[1], digits["num_classes"], x.shape[-1])


def _states(digits, name):
    """Two different members, each with BatchNorm statistics of its own (where it has BatchNorm)."""
    states = []
    for seed in (1, 2):
        net = _net(digits, name, seed)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(float(seed))  # statistics no recomputation would give
                m.running_var.fill_(float(seed) + 1)
        states.append({k: v.clone() for k, v in net.state_dict().items()})
    return states


def test_the_average_of_two_models_is_their_parameter_wise_mean(digits):
    a, b = _states(digits, "cnn")
    averaged = average_of(_net(digits, "cnn", 0), [a, b], DeviceData(digits, "train", CPU))
    for name, p in averaged.named_parameters():
        assert torch.allclose(p, (a[name] + b[name]) / 2, atol=1e-7), name


def test_batchnorm_statistics_are_recomputed_on_the_training_split(digits):
    a, b = _states(digits, "cnn")
    train = DeviceData(digits, "train", CPU)
    averaged = average_of(_net(digits, "cnn", 0), [a, b], train)
    bn = averaged.features[1]
    assert not torch.allclose(bn.running_mean, a["features.1.running_mean"])
    assert not torch.allclose(bn.running_mean, b["features.1.running_mean"])
    # by hand: update_bn's cumulative average is the mean over batches of each batch's channel mean
    # of the first convolution's output (128 images a batch, in the split's stored order)
    conv = averaged.features[0]
    with torch.no_grad():
        means = [conv(xb).mean(dim=(0, 2, 3)) for xb, _ in train.batches(128)]
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-5)


def test_a_model_averaged_with_itself_predicts_exactly_what_it_predicts(digits):
    state = _states(digits, "mlp")[0]  # no BatchNorm: nothing is recomputed
    model = _net(digits, "mlp", 0)
    test = DeviceData(digits, "test", CPU)
    averaged = average_of(model, [state, state], DeviceData(digits, "train", CPU))
    model.load_state_dict(state)
    assert torch.equal(log_softmax_outputs(averaged, test), log_softmax_outputs(model, test))


def test_no_states_is_refused(digits):
    with pytest.raises(ValueError, match="no states to average"):
        average_of(_net(digits, "mlp", 0), [], DeviceData(digits, "train", CPU))
