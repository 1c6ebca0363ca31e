"""A pack of k members trains each member as k separate train.fit runs would.

Every expected value comes from separate `train.fit` runs with the same model copy, optimizer
state, data generator state and penalty, never from `fit_pack` itself. One after another (the
fallback), a member is its run alone bit for bit. Batched, the matrix products and convolutions
sum their terms in other orders than a single model's: the MLP is compared within a bound derived
from fp32 rounding (`reordered_sums_rtol`), the conv nets within a measured tolerance (TOLERANCE).
"""

import copy
import math
import re
import signal

import pytest
import torch

from repel import models
from repel.data import DeviceData
from repel.pack import batching_problem, fit_pack
from repel.penalty import DistancePenalty
from repel.resume import ResumeState
from repel.train import DIVERGENCE_FACTOR, TrainConfig, fit, resolve_speed

# vmap loops over the members for adaptive_avg_pool2d on channels_last inputs and says so: a speed note
pytestmark = [
    pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning"),
    # what repel.pack filters for the CLI; pytest's own warning filters come before it here
    pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract:UserWarning"),
]

CPU = torch.device("cpu")
TIMING = ("epoch_seconds", "train_seconds", "images_per_second")
EXACT = ("epoch", "lr", "lr_steps", "diverged")
# Conv nets: (relative, absolute) tolerance of every float column and of the final weights and
# buffers, measured. Conv nets in float32 round far from exactly: on ResNet-20 one step's gradients
# in the lower layers differ by 2 % between float32 and float64 (single run or batched alike), as
# cancellations in the BatchNorm backward amplify rounding; on the small CNN a ReLU kink turns a
# 1e-8 difference into 1e-4. Measured pack-vs-single differences on the weights: <= 3e-4 (CNN, 2
# epochs), <= 3e-3 (ResNet-20, one epoch of 4 steps); a wrong optimizer state, penalty or data order
# lies far outside (test_the_tolerance_tells_a_wrong_setup). The MLP: see reordered_sums_rtol.
TOLERANCE = {"cnn": (2e-3, 2e-3), "resnet20": (1e-2, 1e-2)}
U = 2.0**-24  # the unit roundoff of float32
MLP_TERMS = 256  # the longest sum in the MLP's matrix products: its hidden width (batches are <= 128)


def reordered_sums_rtol(steps: int, terms: int) -> float:
    """How far a batched member's weights may lie from its run alone, as a fraction of how far the
    run alone moved the tensor (its largest |w_end - w_start|), when the two sum the same terms in
    other orders (bmm for mm: on an AMD EPYC the MLP's control member differs by 1 ulp in some of
    its weights, a pushed member by 2.5e-6).

    Two float32 sums of m terms in different orders differ by at most 2 gamma_m relative to the sum
    of the terms' magnitudes, gamma_m = m u / (1 - m u) (Higham, Accuracy and Stability of Numerical
    Algorithms, 2nd ed., sec. 3.1). Every sum in a step has at most `terms` terms: the matrix
    products' inner dimensions (widths and batch); the norms and means are pairwise sums, whose
    bound has log2 of their length in place of m (sec. 4.2), far less. So each step's update of a
    tensor is off by at most eps = 2 gamma_m of that update's size, and after S steps the errors
    add up to at most eps * S * |step|. The run alone moved the tensor by S |step| when its steps
    keep their direction (a pushed member) and by ~sqrt(S) |step| when they wander (a control):
    relative to its largest displacement the difference is at most eps * sqrt(S). First order: the
    short runs compared here do not amplify (measured: <= 4.3e-6 of the displacement, 30x inside
    the bound for 20 steps; a wrong set-up is off by the order of the displacement itself).
    """
    gamma = terms * U / (1 - terms * U)
    return 2 * gamma * math.sqrt(steps)


def _tolerance(name: str, setup, cfg) -> float | tuple[float, float]:
    """The MLP's bound (a fraction of each tensor's displacement) for `cfg`'s steps; a conv net's (rtol, atol)."""
    if name != "mlp":
        return TOLERANCE[name]
    return reordered_sums_rtol(cfg.epochs * math.ceil(len(setup[0]["train_y"]) / cfg.batch_size), MLP_TERMS)


# accuracies (and the share of validation images whose label differs from the checkpoint's): a
# prediction on the edge of two classes may flip, one image per split
ACCURACY = ("train_acc", "val_acc", "test_acc", "func_disagree")
# what a member is measured with against its checkpoint, which a member without a penalty has not
AGAINST_CHECKPOINT = ("dist", "dist_rel", "dist_min", "dist_checkpoints", "grad_ratio")
AGAINST_CHECKPOINT += ("func_disagree", "func_kl", "step_cos", "radial_cos")

RBF = {"strength": 1.0, "kernel": "rbf", "width": 1.0}
LAPLACIAN = {"strength": 10.0, "kernel": "laplacian", "gamma": 0.1}


@pytest.fixture(autouse=True)
def _keep_sigterm(monkeypatch):
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # ResumeState would take pytest's SIGTERM


def _synthetic_32(n_train=128, n_eval=32) -> dict:
    """A prepared dataset of random 3x32x32 uint8 images (with crop-and-flip augmentation)."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        return (
            torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g),
        )

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(n_train), split(n_eval), split(n_eval)
    return {
        "name": "synthetic32",
        "train_x": train_x,
        "train_y": train_y,
        "val_x": val_x,
        "val_y": val_y,
        "test_x": test_x,
        "test_y": test_y,
        "num_classes": 10,
        "mean": torch.full((3,), 0.5),
        "std": torch.full((3,), 0.29),
        "augment": True,
        "seed": 0,
    }


@pytest.fixture(scope="module")
def setups(digits):
    """model name -> (data, batch size, base checkpoint): weights, optimizer state, data generator
    state after one epoch of train.fit, so every member starts with momentum buffers."""
    out = {}
    for name, data, batch in (("cnn", digits, 128), ("mlp", digits, 128), ("resnet20", _synthetic_32(), 32)):
        torch.manual_seed(0)
        x = data["train_x"]
        model = models.build(name, x.shape[1], data["num_classes"], x.shape[-1])
        _, optimizer, generator = fit(model, data, TrainConfig(epochs=1, batch_size=batch), CPU, log=lambda m: None)
        out[name] = (data, batch, (model.state_dict(), optimizer.state_dict(), generator.get_state()))
    return out


def _member(setup, spec, bn_momentum=0.1):
    """A fresh copy of the base model and its penalty (None for None), centred on the base weights."""
    data, _, (weights, _, _), name = setup
    x = data["train_x"]
    model = models.build(name, x.shape[1], data["num_classes"], x.shape[-1])
    model.load_state_dict(weights)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = bn_momentum
    if spec is None:
        return model, None
    penalty = DistancePenalty(**spec)
    penalty.add_checkpoint(models.trainable_parameters(model))
    return model, penalty


def _cfg(setup, **kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "seed": 5, "batch_size": setup[1], "schedule": "cosine", **kw})


def _singles(setup, specs, cfg, first_epoch=4, optimizer_state="base", data_rng="base", **member_kw):
    """Each member trained alone by train.fit: (models, rows per member); from the base checkpoint's
    optimizer and data generator states unless told otherwise."""
    _, _, (_, base_optimizer_state, base_data_rng), _ = setup
    out_models, out_rows = [], []
    for spec in specs:
        model, penalty = _member(setup, spec, **member_kw)
        rows, _, _ = fit(
            model,
            setup[0],
            cfg,
            CPU,
            penalty,
            first_epoch=first_epoch,
            optimizer_state=base_optimizer_state if optimizer_state == "base" else optimizer_state,
            data_rng=base_data_rng if data_rng == "base" else data_rng,
            log=lambda m: None,
        )
        out_models.append(model)
        out_rows.append(rows)
    return out_models, out_rows


def _pack(setup, specs, cfg, first_epoch=4, log=None, member_kw=None, **kw):
    """The members trained as one pack: (models, rows per member, penalties)."""
    _, _, (_, optimizer_state, data_rng), _ = setup
    members = [_member(setup, spec, **(member_kw or {})) for spec in specs]
    pack_models, penalties = [m for m, _ in members], [p for _, p in members]
    rows = fit_pack(
        pack_models,
        setup[0],
        cfg,
        CPU,
        penalties,
        first_epoch=first_epoch,
        optimizer_states=[optimizer_state] * len(specs),
        data_rng=data_rng,
        log=log if log is not None else (lambda m: None),
        **kw,
    )
    return pack_models, rows, penalties


def _close(a, b, rtol, atol) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, rtol, atol) for x, y in zip(a, b))
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def _assert_same_rows(expected, got, tolerance, n_images):
    # the MLP's bound, relative to each value (its losses, norms and distances move by as much as its weights)
    rtol, atol = tolerance if isinstance(tolerance, tuple) else (tolerance, 0.0)
    assert len(got) == len(expected)
    for want, row in zip(expected, got):
        assert row.keys() == want.keys()
        for key, value in want.items():
            if key in TIMING:
                assert row[key] > 0, key
            elif key in EXACT:
                assert row[key] == value, key
            elif key in ACCURACY:
                assert _close(value, row[key], 0.0, 1.01 / n_images[key]), (key, row[key], value)
            else:
                assert _close(value, row[key], rtol, atol), (row["epoch"], key, value, row[key])


def _assert_same_weights(expected: torch.nn.Module, got: torch.nn.Module, tolerance, start: dict | None = None):
    """Parameters and every buffer (BatchNorm running statistics included): elementwise within
    atol + rtol |w| for a tolerance (rtol, atol), or for a float rho within rho times the largest
    distance the expected run moved that tensor from `start` (the weights both runs began with).
    A failure names the tensor, how many elements are off, and the largest difference and where."""
    want, have = expected.state_dict(), got.state_dict()
    assert want.keys() == have.keys()
    for key, w in want.items():
        h = have[key]
        assert h.shape == w.shape and h.dtype == w.dtype, (key, h.shape, w.shape, h.dtype, w.dtype)
        if not w.is_floating_point():  # BatchNorm's batch counts
            assert torch.equal(h, w), key
            continue
        diff = (h - w).abs()
        if isinstance(tolerance, tuple):
            rtol, atol = tolerance
            allowed, rule = atol + rtol * w.abs(), f"{atol:g} + {rtol:g} |w|"
        else:
            moved = (w - start[key]).abs().max()
            allowed, rule = tolerance * moved, f"{tolerance:.3g} x the largest displacement {moved:.3g}"
        off = ~(diff <= allowed)  # NaN counts as off
        if off.any():
            worst = torch.where(off, diff.nan_to_num(math.inf), -1.0).argmax()
            at = tuple(int(i) for i in torch.unravel_index(worst, w.shape))
            allowed_there = allowed if allowed.dim() == 0 else allowed.flatten()[worst]
            raise AssertionError(
                f"{key}: {int(off.sum())} of {w.numel()} elements differ by more than {rule}; "
                f"the largest, {diff.flatten()[worst].item():.3g} at {at}: got "
                f"{h.flatten()[worst].item():.9g}, expected {w.flatten()[worst].item():.9g}, "
                f"allowed {float(allowed_there):.3g}"
            )


def _n_images(data):
    return {f"{s}_acc": len(data[f"{s}_y"]) for s in ("train", "val", "test")} | {"func_disagree": len(data["val_y"])}


def _assert_pack_is_singles(setup, name, specs, cfg, pack, singles):
    (pack_models, pack_rows, _), (single_models, single_rows) = pack, singles
    tolerance, start = _tolerance(name, setup, cfg), setup[2][0]
    for i in range(len(specs)):
        _assert_same_rows(single_rows[i], pack_rows[i], tolerance, _n_images(setup[0]))
        _assert_same_weights(single_models[i], pack_models[i], tolerance, start)


def _without_timing(rows) -> list[dict]:
    """Rows as exactly comparable values: no timings, NaN as a string (NaN != NaN)."""

    def plain(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else [plain(x) for x in v] if isinstance(v, list) else v

    return [{k: plain(v) for k, v in r.items() if k not in TIMING} for r in rows]


def _with_name(setups, name):
    return (*setups[name], name)


@pytest.mark.parametrize(
    "name,channels_last", [("cnn", "on"), ("cnn", "off"), ("mlp", "off"), ("resnet20", "on"), ("resnet20", "off")]
)
def test_a_pack_equals_its_members_trained_alone(setups, name, channels_last):
    setup = _with_name(setups, name)
    # a strong push: the members' weights and BatchNorm statistics part far beyond the tolerance
    push = {**LAPLACIAN, "strength": 5e3 if name == "resnet20" else 1e3}
    specs = [None, push] + ([RBF] if name != "resnet20" else [])
    # ResNet-20's float32 trajectories part fastest (see TOLERANCE): one epoch
    cfg = _cfg(setup, channels_last=channels_last, epochs=1 if name == "resnet20" else 2)
    logged = []
    pack = _pack(setup, specs, cfg, log=logged.append)
    assert logged[0].startswith(f"pack of {len(specs)}: batched")
    _assert_pack_is_singles(setup, name, specs, cfg, pack, _singles(setup, specs, cfg))
    # the members did part: the comparison is not of k copies of one run
    assert pack[1][1][-1]["dist"] > 0 and pack[1][0][-1]["train_loss"] != pack[1][1][-1]["train_loss"]
    if name != "mlp":  # each member's BatchNorm statistics, compared above with its single run's, are its own
        stats = [torch.cat([v.flatten() for k, v in m.state_dict().items() if "running" in k]) for m in pack[0]]
        assert (stats[0] - stats[1]).abs().max() > 10 * TOLERANCE[name][1]


def test_kernels_strengths_repeated_checkpoints_and_merge_in_one_pack(setups):
    setup = _with_name(setups, "mlp")
    specs = [
        {**RBF, "strength": 1.0},
        {**RBF, "strength": 10.0},
        {**LAPLACIAN, "strength": 1.0},
        {**LAPLACIAN, "strength": 10.0},
        {"strength": 10.0, "kernel": "imq", "gamma": 0.5},
        {**RBF, "strength": 10.0, "every": 1},
        {**RBF, "strength": 10.0, "every": 1, "merged": True},
        {**RBF, "strength": 10.0, "release_after": 1},
    ]
    cfg = _cfg(setup, epochs=3, schedule="step", step_size=1, step_gamma=0.5)
    pack = _pack(setup, specs, cfg)
    singles = _singles(setup, specs, cfg)
    _assert_pack_is_singles(setup, "mlp", specs, cfg, pack, singles)
    pack_rows, penalties = pack[1], pack[2]
    # new checkpoints after epochs 1 and 2, taken from each member's own weights, and measured
    assert [len(r["dist_checkpoints"]) for r in pack_rows[5]] == [1, 2, 3]
    assert len(penalties[5].checkpoints) == len(penalties[6].checkpoints) == 4
    assert len(penalties[6].centers) == 1 and pack_rows[6][-1]["dist_min"] != pack_rows[5][-1]["dist_min"]
    # the released member's penalty acted in its first epoch only
    assert pack_rows[7][0]["penalty"] > 0 and [r["penalty"] for r in pack_rows[7][1:]] == [0.0, 0.0]
    # the members differ from one another: each penalty acted on its own member
    assert len({round(rows[-1]["dist"], 6) for rows in pack_rows}) == len(specs)


def test_the_control_in_a_pack_equals_the_control_alone(setups):
    setup = _with_name(setups, "cnn")
    specs = [None, {"strength": 0.0, "kernel": "rbf", "width": 1.0}, {**RBF, "strength": 30.0}]
    cfg = _cfg(setup)
    (pack_models, pack_rows, _), ((control,), (control_rows,)) = _pack(setup, specs, cfg), _singles(setup, [None], cfg)
    for i in (0, 1):
        compare = [{k: v for k, v in r.items() if k not in AGAINST_CHECKPOINT} for r in pack_rows[i]]
        alone = [{k: v for k, v in r.items() if k not in AGAINST_CHECKPOINT} for r in control_rows]
        _assert_same_rows(alone, compare, TOLERANCE["cnn"], _n_images(setup[0]))
        _assert_same_weights(control, pack_models[i], TOLERANCE["cnn"])
        assert all(r["penalty"] == 0 for r in pack_rows[i])
    # the pushed member is not the control: it went much farther from the checkpoint
    assert pack_rows[2][-1]["dist"] > 2 * pack_rows[1][-1]["dist"]


# strength 2e35 with a negligible gamma: the kernel is 1, the force on the weights is -0.04 (theta -
# theta_c), but the epoch's summed penalty, 2e35 x 1294 images x (number of checkpoints), overflows
# float32 (3.4e38) once a second checkpoint is taken: the member diverges at epoch 2 with finite weights
OVERFLOWS = {"strength": 2e35, "kernel": "rbf", "gamma": 1e-37, "every": 1}


def test_a_diverged_member_stops_alone(setups):
    setup = _with_name(setups, "mlp")
    specs = [None, OVERFLOWS, RBF]
    cfg = _cfg(setup, epochs=3)
    calls = []
    pack_models, pack_rows, _ = _pack(
        setup,
        specs,
        cfg,
        on_row=lambda i, row: calls.append(("row", i, row["epoch"])),
        on_epoch_end=lambda i, done, model: calls.append(("end", i, done)),
    )
    single_models, single_rows = _singles(setup, specs, cfg)
    assert [r["diverged"] for r in single_rows[1]] == [False, True]  # the setting does diverge alone, at epoch 2
    assert [r["epoch"] for r in pack_rows[1]] == [4, 5] and pack_rows[1][-1]["diverged"] is True
    assert not math.isfinite(pack_rows[1][-1]["train_loss"])
    _assert_pack_is_singles(setup, "mlp", specs, cfg, (pack_models, pack_rows, None), (single_models, single_rows))
    assert [len(rows) for rows in pack_rows] == [3, 2, 3]
    # its callbacks stop with it: a row for the diverged epoch, no end-of-epoch call for it
    assert [c for c in calls if c[1] == 1] == [("row", 1, 4), ("end", 1, 1), ("row", 1, 5)]
    assert [c for c in calls if c[1] == 2 and c[0] == "end"] == [("end", 2, 1), ("end", 2, 2), ("end", 2, 3)]


# a push that blows the MLP's weights up within its first epoch: its cross-entropy stays finite but
# lies far above the divergence rule's limit of 100 ln 10 = 230 (measured: 2.3e4, logits up to 3e7)
EXPLODES = {"strength": 1e5, "kernel": "laplacian", "gamma": 0.1}


def test_a_member_that_explodes_without_reaching_inf_stops_alone(setups):
    setup = _with_name(setups, "mlp")
    specs = [None, EXPLODES]
    cfg = _cfg(setup, epochs=3)
    pack_models, pack_rows, _ = _pack(setup, specs, cfg)
    single_models, single_rows = _singles(setup, specs, cfg)
    limit = DIVERGENCE_FACTOR * math.log(setup[0]["num_classes"])
    for rows in (single_rows, pack_rows):  # alone and in the pack: marked after its first epoch, and stopped
        assert [len(r) for r in rows] == [3, 1] and [r["diverged"] for r in rows[1]] == [True]
        assert math.isfinite(rows[1][0]["train_loss"]) and rows[1][0]["train_ce"] > limit
    # the other member goes on, as it trains alone
    _assert_pack_is_singles(
        setup, "mlp", [None], cfg, (pack_models[:1], pack_rows[:1], None), (single_models[:1], single_rows[:1])
    )
    # the exploded member keeps the weights of its last epoch. Not compared with its run alone: an
    # explosion is no first-order perturbation (reordered_sums_rtol), and losses from logits of 3e7
    # keep few of their digits
    weights = torch.cat([p.detach().flatten() for p in models.trainable_parameters(pack_models[1])])
    assert weights.norm().item() == pytest.approx(pack_rows[1][0]["weight_norm"], rel=1e-6)


def test_the_fallback_trains_each_member_with_fit_and_agrees_with_the_batched_pack(setups):
    setup = _with_name(setups, "cnn")
    specs = [None, RBF, {**LAPLACIAN, "every": 1, "merged": True}]
    cfg = _cfg(setup)
    logged = []
    fallback = _pack(setup, specs, cfg, log=logged.append, batched=False)
    assert logged[0] == (
        "pack of 3: one member after another with train.fit (asked to train the members one after another)"
    )
    # one after another, each is exactly its own train.fit run
    single_models, single_rows = _singles(setup, specs, cfg)
    for i in range(len(specs)):
        assert _without_timing(fallback[1][i]) == _without_timing(single_rows[i])
        _assert_same_weights(single_models[i], fallback[0][i], (0, 0))
    # and the batched pack agrees with it
    _assert_pack_is_singles(setup, "cnn", specs, cfg, _pack(setup, specs, cfg), fallback[:2])


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_the_tolerance_tells_a_wrong_setup(setups, name):
    """What a mistake in the pack would look like (a member without its momentum buffers, another
    member's penalty, another data order) lies far outside the conv nets' tolerance and the MLP's bound."""
    setup = _with_name(setups, name)
    cfg = _cfg(setup)
    tolerance, start = _tolerance(name, setup, cfg), setup[2][0]
    pack_models, _, _ = _pack(setup, [RBF], cfg)
    right = _singles(setup, [RBF], cfg)[0][0]
    _assert_same_weights(right, pack_models[0], tolerance, start)
    wrong = [
        _singles(setup, [RBF], cfg, optimizer_state=None)[0][0],
        _singles(setup, [LAPLACIAN], cfg)[0][0],
        _singles(setup, [RBF], cfg, data_rng=None)[0][0],
    ]
    for model in wrong:
        with pytest.raises(AssertionError, match="elements differ by more than"):
            _assert_same_weights(model, pack_models[0], tolerance, start)


def test_a_model_vmap_cannot_batch_falls_back_by_itself(setups):
    """BatchNorm with momentum=None keeps a cumulative average and reads its batch count as a Python
    number, which vmap cannot batch."""
    setup = _with_name(setups, "cnn")
    cfg = _cfg(setup, epochs=1)
    cumulative = [_member(setup, None, bn_momentum=None)[0] for _ in range(2)]
    speed = resolve_speed(cfg, cumulative[0], CPU)
    train = DeviceData(setup[0], "train", CPU)
    problem = batching_problem(cumulative, train, speed)
    assert problem is not None and "vmap cannot batch SmallCNN" in problem
    assert batching_problem([_member(setup, None)[0] for _ in range(2)], train, speed) is None
    mixed = [_member(setup, None)[0], models.build("cnn", 1, 7, 8)]
    assert batching_problem(mixed, train, speed) == "the members differ in architecture"

    logged = []
    specs = [None, RBF]
    pack_models, pack_rows, _ = _pack(setup, specs, cfg, log=logged.append, member_kw={"bn_momentum": None})
    assert logged[0].startswith("pack of 2: one member after another with train.fit (vmap cannot batch SmallCNN")
    single_models, single_rows = _singles(setup, specs, cfg, bn_momentum=None)
    for i in range(2):
        assert pack_rows[i][0]["val_loss"] == single_rows[i][0]["val_loss"]
        _assert_same_weights(single_models[i], pack_models[i], (0, 0))


class _Killed(Exception):
    """Stands for the job being killed: the state saved so far is all the next attempt has."""


@pytest.mark.parametrize("batched", [True, False])
def test_a_pack_resumed_after_a_kill_ends_exactly_as_an_uninterrupted_pack(setups, tmp_path, batched):
    """Killed in epoch 3, after member 0 diverged (epoch 2) and before epoch 3's state was saved; one
    after another (the fallback), member 0 has finished and member 1 is in its epoch 3."""
    setup = _with_name(setups, "cnn")
    specs = [OVERFLOWS, {**RBF, "every": 2, "merged": True}, None]
    cfg = _cfg(setup, epochs=3)

    def run(path, kill=False):
        logged = []

        def on_epoch_end(i, done, model):
            if kill and (i, done) == (1, 3):  # before the state of this epoch is saved
                raise _Killed

        resume = ResumeState(path, "fingerprint", every=1, log=logged.append)
        pack = _pack(setup, specs, cfg, log=resume.log, batched=batched, resume=resume, on_epoch_end=on_epoch_end)
        return pack, logged

    whole, _ = run(tmp_path / "whole.pt")
    with pytest.raises(_Killed):
        run(tmp_path / "killed.pt", kill=True)
    again, logged = run(tmp_path / "killed.pt")

    assert any("resuming from" in line for line in logged)
    if batched:  # epochs 1 and 2 (4 and 5 of the run) come from the state; only the last is trained again
        after = logged[next(i for i, line in enumerate(logged) if line.startswith("resumed from")) :]
        trained = {int(m.group(1)) for m in map(re.compile(r"member \d+: epoch +(\d+)/").match, after) if m}
        assert trained == {6}
    for i in range(len(specs)):
        assert _without_timing(again[1][i]) == _without_timing(whole[1][i])
        for key, value in whole[0][i].state_dict().items():
            assert torch.equal(again[0][i].state_dict()[key], value), (i, key)
    assert [len(rows) for rows in again[1]] == [2, 3, 3]


@pytest.mark.parametrize("batched", [None, False])
def test_members_with_dropout_draw_the_masks_their_separate_runs_draw(digits, batched):
    """Each continuation job starts from the checkpoint's torch RNG state; so does every member of a
    pack, batched (one mask for all members, vmap's randomness 'same') or one after another."""
    torch.manual_seed(0)
    base = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(64, 10)
    )
    specs = [None, RBF]
    cfg = TrainConfig(epochs=2)

    def member(spec):
        model = copy.deepcopy(base)
        if spec is None:
            return model, None
        penalty = DistancePenalty(**spec)
        penalty.add_checkpoint(models.trainable_parameters(model))
        return model, penalty

    singles = []
    for spec in specs:
        model, penalty = member(spec)
        torch.manual_seed(123)
        singles.append((model, fit(model, digits, cfg, CPU, penalty, log=lambda m: None)[0]))
    pack_models, penalties = zip(*(member(spec) for spec in specs))
    torch.manual_seed(123)
    pack_rows = fit_pack(list(pack_models), digits, cfg, CPU, list(penalties), log=lambda m: None, batched=batched)
    # its longest sums: the batch of 128 in the weight gradients
    rho = reordered_sums_rtol(cfg.epochs * math.ceil(len(digits["train_y"]) / cfg.batch_size), cfg.batch_size)
    for (model, rows), pack_model, member_rows in zip(singles, pack_models, pack_rows):
        _assert_same_rows(rows, member_rows, rho, _n_images(digits))
        _assert_same_weights(model, pack_model, rho, base.state_dict())
