import copy
import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax

from repel import models
from repel.data import DeviceData
from repel.penalty import DistancePenalty
from repel.train import DIVERGENCE_FACTOR, Directions, TrainConfig, divergence, fit, make_scheduler

CHECKPOINT_METRICS = ("func_disagree", "func_kl", "step_cos", "radial_cos")  # measured against θ_c


def _model(digits, seed=0):
    torch.manual_seed(seed)
    x = digits["train_x"]
    return models.build("cnn", x.shape[1], digits["num_classes"], x.shape[-1])


def _checkpoint(digits, epochs=3):
    model = _model(digits)
    _, optimizer, _ = fit(model, digits, TrainConfig(epochs=epochs), torch.device("cpu"), log=lambda m: None)
    return model.state_dict(), optimizer.state_dict()


def _continue(digits, ckpt, penalty_args, epochs=3):
    model = _model(digits, seed=1)
    model.load_state_dict(ckpt[0])
    penalty = None
    if penalty_args is not None:
        penalty = DistancePenalty(**penalty_args)
        penalty.add_checkpoint(models.trainable_parameters(model))
    rows, _, _ = fit(
        model,
        digits,
        TrainConfig(epochs=epochs, seed=7),
        torch.device("cpu"),
        penalty=penalty,
        first_epoch=4,
        optimizer_state=ckpt[1],
        log=lambda m: None,
    )
    return model, rows


def test_zero_strength_is_exactly_plain_training(digits):
    ckpt = _checkpoint(digits)
    plain, _ = _continue(digits, ckpt, None)
    control, rows = _continue(digits, ckpt, {"strength": 0.0, "kernel": "rbf", "width": 0.5})
    for (name, a), b in zip(plain.state_dict().items(), control.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["penalty"] for r in rows] == [0.0] * 3
    assert rows[0]["dist"] > 0  # the weights did move: the comparison is not of two frozen models
    plain_rows = _continue(digits, ckpt, None, epochs=1)[1]  # no checkpoint to measure against
    assert all(math.isnan(plain_rows[0][key]) for key in CHECKPOINT_METRICS)


def test_the_penalty_pushes_farther_from_the_checkpoint_than_the_control(digits):
    ckpt = _checkpoint(digits)
    _, control = _continue(digits, ckpt, {"strength": 0.0, "kernel": "none"})
    _, pushed = _continue(digits, ckpt, {"strength": 10.0, "kernel": "rbf", "width": 1.0})
    assert pushed[-1]["dist"] > 2 * control[-1]["dist"]
    assert pushed[-1]["penalty"] > 0 and pushed[-1]["grad_ratio"] > 0


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def test_metrics_have_every_column_and_sane_values(digits):
    ckpt = _checkpoint(digits)
    model, rows = _continue(digits, ckpt, {"strength": 1.0, "kernel": "rbf", "width": 1.0}, epochs=2)
    assert [r["epoch"] for r in rows] == [4, 5]
    for r in rows:
        for key in ("train_acc", "val_acc", "test_acc"):
            assert 0 <= r[key] <= 1
        assert r["epoch_seconds"] > 0 and r["images_per_second"] > 0
        assert r["diverged"] is False
    # the last epoch's distances, from the weights themselves: the checkpoint's parameters are
    # its state dict's entries that are parameters of the model (not BatchNorm buffers)
    names = [name for name, _ in model.named_parameters()]
    theta_c, theta = _flat(ckpt[0][n] for n in names), _flat(model.parameters())
    last = rows[-1]
    assert last["dist"] == pytest.approx((theta - theta_c).norm().item(), rel=1e-5)
    assert last["dist_rel"] == pytest.approx((theta - theta_c).norm().item() / theta_c.norm().item(), rel=1e-5)
    assert last["weight_norm"] == pytest.approx(theta.norm().item(), rel=1e-5)


class _Path:
    """A 'member' whose two parameters are set by hand, for Directions."""

    def __init__(self, point):
        self.theta = [torch.tensor(point, dtype=torch.float32)]

    def params(self, i):
        return self.theta


def test_step_and_radial_cosines_on_a_two_parameter_path_by_hand():
    path = _Path([0.0, 0.0])  # starts at the checkpoint theta_c = (0, 0)
    center = [torch.zeros(2)]
    directions = Directions(path, [object()])
    got = []
    for point in ([1.0, 0.0], [2.0, 1.0], [1.0, 1.0]):
        path.theta[0].copy_(torch.tensor(point))
        got.append(directions.measure(0, path.params(0), center).tolist())
    # epoch 1: no earlier step, and no displacement from theta_c yet
    assert all(math.isnan(v) for v in got[0])
    # epoch 2: step (1, 1) after step (1, 0), from displacement (1, 0)
    assert got[1] == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2)])
    # epoch 3: step (-1, 0) after (1, 1), from displacement (2, 1): back towards theta_c
    assert got[2] == pytest.approx([-1 / math.sqrt(2), -2 / math.sqrt(5)])


def _np_flat(state: dict, names) -> np.ndarray:
    return np.concatenate([state[n].double().numpy().ravel() for n in names])


def _np_cos(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_direction_and_function_metrics_are_those_of_the_saved_weights(digits):
    """Every epoch's step_cos, radial_cos, func_disagree and func_kl, recomputed in float64 numpy
    from the weights after each epoch and the checkpoint's own predictions on the validation split."""
    ckpt = _checkpoint(digits)
    model = _model(digits)
    model.load_state_dict(ckpt[0])
    penalty = DistancePenalty(10.0, "rbf", width=1.0)
    penalty.add_checkpoint(models.trainable_parameters(model))
    states = [copy.deepcopy(ckpt[0])]
    rows, _, _ = fit(
        model,
        digits,
        TrainConfig(epochs=3, seed=7),
        torch.device("cpu"),
        penalty=penalty,
        first_epoch=4,
        optimizer_state=ckpt[1],
        log=lambda m: None,
        on_epoch_end=lambda done, m: states.append(copy.deepcopy(m.state_dict())),
    )
    names = [name for name, _ in model.named_parameters()]
    w = [_np_flat(state, names) for state in states]
    val = DeviceData(digits, "val", torch.device("cpu"))

    def val_log_probs(state):
        net = _model(digits)
        net.load_state_dict(state)
        with torch.no_grad():
            logits = net.eval()(val.normalize(val.x)).double().numpy()
        return log_softmax(logits, axis=1)

    ref = val_log_probs(states[0])
    for e, row in enumerate(rows, start=1):
        step = w[e] - w[e - 1]
        if e == 1:
            assert math.isnan(row["step_cos"]) and math.isnan(row["radial_cos"])
        else:
            assert row["step_cos"] == pytest.approx(_np_cos(step, w[e - 1] - w[e - 2]), abs=1e-4)
            assert row["radial_cos"] == pytest.approx(_np_cos(step, w[e - 1] - w[0]), abs=1e-4)
        log_p = val_log_probs(states[e])
        disagree = np.mean(log_p.argmax(1) != ref.argmax(1))
        kl = np.mean(np.sum(np.exp(ref) * (ref - log_p), axis=1))
        assert abs(row["func_disagree"] - disagree) <= 1.01 / len(val)
        assert row["func_kl"] == pytest.approx(kl, rel=1e-3, abs=1e-7)
    assert rows[-1]["func_kl"] > 0 and rows[-1]["radial_cos"] > 0  # pushed away: not a vacuous comparison


def test_the_penalty_column_is_the_kernel_of_the_distance_by_hand(digits):
    """With lr 0 nothing moves, so every step sees the same distance to a centre placed 0.3 away
    in every coordinate: penalty = s exp(-d / (2 sigma^2)) with d = 0.09 n, and the training
    loss is the CE plus exactly that."""
    model = _model(digits)
    params = models.trainable_parameters(model)
    n = sum(p.numel() for p in params)
    penalty = DistancePenalty(3.0, "rbf", width=50.0)
    penalty.add_checkpoint([p.detach() + 0.3 for p in params])
    rows, _, _ = fit(
        model, digits, TrainConfig(epochs=1, lr=0.0), torch.device("cpu"), penalty=penalty, log=lambda m: None
    )
    expected = 3.0 * math.exp(-0.09 * n / (2 * 50.0**2))
    assert 0.01 < expected < 2.99  # the kernel is neither flat nor zero here
    assert rows[0]["penalty"] == pytest.approx(expected, rel=1e-4)
    assert rows[0]["train_loss"] - rows[0]["train_ce"] == pytest.approx(expected, rel=1e-4)
    assert rows[0]["dist"] == pytest.approx(math.sqrt(0.09 * n), rel=1e-4)  # float32 sums of 0.3 - rounding


def test_a_nan_loss_stops_the_run_and_is_marked_diverged(digits):
    model = _model(digits)
    rows, _, _ = fit(model, digits, TrainConfig(epochs=5, lr=1e6), torch.device("cpu"), log=lambda m: None)
    assert len(rows) < 5
    assert rows[-1]["diverged"] is True
    assert not math.isfinite(rows[-1]["train_loss"])
    assert all(r["diverged"] is False for r in rows[:-1])


def test_a_run_that_explodes_without_reaching_inf_stops_and_is_marked_diverged(digits):
    """The small CNN at lr 50: its cross-entropy is finite but far above 100 ln 10 (= 230) after the
    first epoch; it stops there, its row marked."""
    logged = []
    rows, _, _ = fit(_model(digits), digits, TrainConfig(epochs=3, lr=50.0), torch.device("cpu"), log=logged.append)
    assert len(rows) == 1 and rows[-1]["diverged"] is True
    assert math.isfinite(rows[-1]["train_loss"]) and rows[-1]["train_ce"] > DIVERGENCE_FACTOR * math.log(10)
    assert "diverged at epoch 1: the training cross-entropy" in logged[-1]


def test_a_rough_run_that_does_not_explode_is_not_marked_diverged(digits):
    """The MLP at lr 1: its loss jumps about (well above ln 10 at times) but stays below the rule's
    limit, and it trains every epoch."""
    torch.manual_seed(0)
    mlp = models.build("mlp", 1, digits["num_classes"], digits["train_x"].shape[-1])
    rows, _, _ = fit(mlp, digits, TrainConfig(epochs=4, lr=1.0), torch.device("cpu"), log=lambda m: None)
    assert len(rows) == 4 and not any(r["diverged"] for r in rows)
    assert max(r["train_ce"] for r in rows) > math.log(10)  # rough: worse than a uniform guess at times
    assert all(r["train_ce"] < DIVERGENCE_FACTOR * math.log(10) for r in rows)


def test_the_divergence_rule_on_hand_made_rows():
    limit = DIVERGENCE_FACTOR * math.log(10)
    assert divergence({"train_loss": 1e3, "train_ce": 0.5}, limit) is None  # a large penalty: no explosion
    assert divergence({"train_loss": 1.0, "train_ce": 1.0}, limit) is None
    assert "above 100 ln C" in divergence({"train_loss": 2 * limit, "train_ce": 2 * limit}, limit)
    assert divergence({"train_loss": math.inf, "train_ce": 1.0}, limit) == "the training loss is inf"
    assert divergence({"train_loss": math.nan, "train_ce": math.nan}, limit) == "the training loss is nan"


def test_warm_restarts_restart_the_lr_every_t0_epochs():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    steps_per_epoch = 4
    sched = make_scheduler(optimizer, TrainConfig(epochs=6, lr=0.1, schedule="cosine_restarts", t0=2), steps_per_epoch)
    lrs = []
    for _ in range(6 * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    restarts = [i for i in range(1, len(lrs)) if lrs[i] > lrs[i - 1]]
    assert restarts == [8, 16]  # every t0 = 2 epochs of 4 steps
    assert lrs[0] == lrs[8] == 0.1


def test_a_control_continuation_is_the_base_training_continued(tmp_path):
    """Base to epoch 2 + continuation with s = 0 for 2 epochs == base trained 4 epochs, bit for bit:
    the continuation carries on the checkpoint's optimizer state and data order."""
    from repel.cli import main
    from repel.storage import load_torch

    data = str(tmp_path / "digits.pt")
    assert main(["prepare", "--dataset", "digits", "--out", data]) == 0
    for epochs in ("2", "4"):
        assert (
            main(
                [
                    "train-base",
                    "--data",
                    data,
                    "--model",
                    "cnn",
                    "--epochs",
                    epochs,
                    "--seed",
                    "3",
                    "--threads",
                    "1",
                    "--out-dir",
                    str(tmp_path / f"base{epochs}"),
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "continue",
                "--data",
                data,
                "--checkpoint",
                str(tmp_path / "base2/checkpoint.pt"),
                "--spec",
                '{"strength": 0, "epochs": 2}',
                "--threads",
                "1",
                "--out-dir",
                str(tmp_path / "cont"),
            ]
        )
        == 0
    )
    longer, continued = load_torch(tmp_path / "base4/checkpoint.pt")["model"], load_torch(tmp_path / "cont/final.pt")
    for key in longer:
        assert torch.equal(longer[key], continued[key]), key


def test_repeated_checkpoints_are_taken_every_k_epochs_and_measured(digits):
    ckpt = _checkpoint(digits)
    model = _model(digits, seed=1)
    model.load_state_dict(ckpt[0])
    start = _flat(model.parameters())
    penalty = DistancePenalty(10.0, "rbf", width=1.0, every=2)
    penalty.add_checkpoint(models.trainable_parameters(model))
    after = {}  # the weights after each epoch, kept by the test itself

    def keep(epochs_done, model):
        after[epochs_done] = _flat(model.parameters())

    rows, _, _ = fit(
        model,
        digits,
        TrainConfig(epochs=5),
        torch.device("cpu"),
        penalty=penalty,
        optimizer_state=ckpt[1],
        log=lambda m: None,
        on_epoch_end=keep,
    )
    assert len(penalty.checkpoints) == 1 + 2  # after epochs 2 and 4
    assert [len(r["dist_checkpoints"]) for r in rows] == [1, 1, 2, 2, 3]
    # epoch 5: the nearest checkpoint is the one taken after epoch 4, one epoch away
    final = after[5]
    assert rows[-1]["dist"] == pytest.approx((final - start).norm().item(), rel=1e-5)
    assert rows[-1]["dist_min"] == pytest.approx((final - after[4]).norm().item(), rel=1e-5)
    assert rows[-1]["dist_checkpoints"][1] == pytest.approx((final - after[2]).norm().item(), rel=1e-5)
    assert rows[-1]["dist_min"] < rows[-1]["dist"]


def test_snapshots_are_saved_every_k_epochs(tmp_path):
    from repel.cli import main
    from repel.storage import load_torch

    data = str(tmp_path / "digits.pt")
    assert main(["prepare", "--dataset", "digits", "--out", data]) == 0
    assert (
        main(
            [
                "train-base",
                "--data",
                data,
                "--model",
                "cnn",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--out-dir",
                str(tmp_path / "base"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "continue",
                "--data",
                data,
                "--checkpoint",
                str(tmp_path / "base/checkpoint.pt"),
                "--spec",
                '{"strength": 1, "width": 1, "epochs": 4}',
                "--snapshot-every",
                "2",
                "--threads",
                "1",
                "--out-dir",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "run/snapshots").iterdir()) == ["epoch3.pt", "epoch5.pt"]
    last, final = load_torch(tmp_path / "run/snapshots/epoch5.pt"), load_torch(tmp_path / "run/final.pt")
    assert all(torch.equal(last[k], final[k]) for k in final)


def test_every_step_s_learning_rate_is_recorded_as_the_scheduler_set_it(digits):
    cfg = TrainConfig(epochs=2, lr=0.1, schedule="cosine")
    rows, _, _ = fit(_model(digits), digits, cfg, torch.device("cpu"), log=lambda m: None)
    steps = math.ceil(len(digits["train_y"]) / cfg.batch_size)
    # the same schedule stepped by hand: cosine from 0.1 to 0 over every step of the run
    expected = [0.5 * 0.1 * (1 + math.cos(math.pi * i / (2 * steps))) for i in range(2 * steps)]
    recorded = [lr for row in rows for lr in row["lr_steps"]]
    assert len(rows[0]["lr_steps"]) == steps and recorded == pytest.approx(expected, rel=1e-6)


def test_each_epoch_s_lr_is_the_step_schedule_s_value_by_hand(digits):
    # step decay x0.5 every epoch: 0.1, 0.05, 0.025 at the epochs' starts
    rows, _, _ = fit(
        _model(digits),
        digits,
        TrainConfig(epochs=3, lr=0.1, schedule="step", step_size=1, step_gamma=0.5),
        torch.device("cpu"),
        log=lambda m: None,
    )
    assert [row["lr"] for row in rows] == pytest.approx([0.1, 0.05, 0.025], rel=1e-12)


@pytest.mark.parametrize("t0", [1, 2])
def test_fge_lr_follows_the_triangular_cycle_and_members_sit_at_its_lowest(digits, t0):
    high, low = 0.05, 0.001
    cfg = TrainConfig(epochs=2 * t0, lr=high, schedule="cyclic", t0=t0, eta_min=low)
    members = []
    rows, _, _ = fit(
        _model(digits),
        digits,
        cfg,
        torch.device("cpu"),
        log=lambda m: None,
        on_epoch_end=lambda done, model: members.append(done) if done % t0 == 0 else None,
    )
    steps = math.ceil(len(digits["train_y"]) / cfg.batch_size)
    cycle = t0 * steps  # steps per cycle (an odd count puts the peak between two steps)

    def garipov(i):  # Garipov et al. (2018), eq. 2, with t the position in the cycle, shifted by half a cycle
        t = ((i + cycle / 2) % cycle) / cycle
        return (1 - 2 * t) * high + 2 * t * low if t <= 0.5 else (2 - 2 * t) * low + (2 * t - 1) * high

    recorded = [lr for row in rows for lr in row["lr_steps"]]
    assert recorded == pytest.approx([garipov(i) for i in range(2 * cycle)], rel=1e-9)
    assert max(recorded) > 0.8 * high  # the cycle does reach up
    # a member after every t0 epochs: the last step of a cycle is still going down, the next one
    # starts at the lowest lr
    assert members == [t0, 2 * t0]
    for k in (1, 2):
        assert recorded[k * cycle - 1] < recorded[k * cycle - 2]
    assert recorded[cycle] == pytest.approx(low, rel=1e-12) and min(recorded) == pytest.approx(low, rel=1e-12)


def test_swa_anneals_to_its_lr_and_averages_the_weights_of_every_epoch(digits):
    from torch.optim.swa_utils import AveragedModel

    model = _model(digits)
    averaged = AveragedModel(model)
    kept = []
    cfg = TrainConfig(epochs=3, lr=0.05, schedule="swa", eta_min=0.01)
    rows, _, _ = fit(
        model,
        digits,
        cfg,
        torch.device("cpu"),
        log=lambda m: None,
        averaged=averaged,
        on_epoch_end=lambda done, model: kept.append(_flat(model.parameters())),
    )
    first, later = rows[0]["lr_steps"], [lr for row in rows[1:] for lr in row["lr_steps"]]
    assert first[0] == 0.05 and all(a > b for a, b in zip(first, first[1:]))  # annealed down over epoch 1
    assert later == pytest.approx([0.01] * len(later), rel=1e-12)  # then SWA's constant lr
    assert int(averaged.n_averaged) == 3
    mean = torch.stack(kept).mean(0)
    assert torch.allclose(_flat(averaged.module.parameters()), mean, atol=1e-6)
    assert not torch.allclose(mean, kept[-1], atol=1e-4)  # the average is not the last epoch's weights
