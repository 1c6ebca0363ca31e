import pytest
import torch

from repel import models


@pytest.mark.parametrize(
    "name, channels, size",
    [
        ("cnn", 1, 8),
        ("cnn", 3, 32),
        ("mlp", 1, 28),
        ("resnet20", 3, 32),
        ("resnet20", 1, 28),
        ("mobilenetv2", 3, 32),
        ("mobilenetv2", 1, 28),
    ],
)
def test_models_follow_the_dataset_shape(name, channels, size):
    torch.manual_seed(0)
    model = models.build(name, channels, 7, size).eval()
    assert model(torch.randn(2, channels, size, size)).shape == (2, 7)


def test_resnet_depth_is_6n_plus_2():
    def convs(m):
        return sum(isinstance(x, torch.nn.Conv2d) and x.kernel_size == (3, 3) for x in m.modules())

    # 6n 3x3 convs in the blocks + the stem; the head is the +1 linear layer
    assert convs(models.build("resnet32", 3, 10, 32)) == 31
    assert convs(models.build("resnet56", 3, 10, 32)) == 55
    with pytest.raises(ValueError, match="6n\\+2"):
        models.CifarResNet(30, 3, 10)


def test_mobilenet_keeps_spatial_resolution_in_its_stem():
    stem = models.build("mobilenetv2", 3, 10, 32).features[0][0]
    assert stem.stride == (1, 1) and stem.in_channels == 3


def test_distance_excludes_batchnorm_running_statistics():
    model = models.build("cnn", 1, 10, 8)
    model.head.bias.requires_grad_(False)  # a frozen parameter is not trained, so not in d either
    params = models.trainable_parameters(model)
    buffers = {b.data_ptr() for b in model.buffers()}
    assert buffers and not any(p.data_ptr() in buffers for p in params)
    assert len(params) == len(list(model.parameters())) - 1
    assert not any(p is model.head.bias for p in params)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        models.build("vgg", 3, 10, 32)


def test_flat_weights_from_a_model_a_list_and_a_state_dict():
    model = models.build("cnn", 1, 10, 8)
    flat = models.flat_weights(model)
    assert flat.shape == (sum(p.numel() for p in models.trainable_parameters(model)),)
    assert torch.equal(models.flat_weights(models.trainable_parameters(model)), flat)
    state = model.state_dict()  # holds BatchNorm buffers too
    assert torch.equal(models.flat_weights(state, models.parameter_names(model)), flat)
    with pytest.raises(ValueError, match="buffers"):
        models.flat_weights(state)
    assert torch.equal(models.flat_weights([torch.ones(2, 2), torch.zeros(3)]), torch.tensor([1.0] * 4 + [0.0] * 3))
