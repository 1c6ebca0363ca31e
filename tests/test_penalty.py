import math

import pytest
import torch

from repel.penalty import DistancePenalty, StackedPenalties


def _params(seed=0, shapes=((5, 3), (7,), (2, 3, 4))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]


def _unfused(params, centers, strength, kernel_fn, mean=False):
    """The formula written plainly, for autograd: s * sum_c k(d_c)."""
    total = 0
    n = sum(p.numel() for p in params)
    for center in centers:
        d = sum(((p - c) ** 2).sum() for p, c in zip(params, center))
        total = total + kernel_fn(d / n if mean else d)
    return strength * total


KERNELS = {  # name, config, plain formula of k(d)
    "rbf-width": ("rbf", {"width": 0.7}, lambda d: torch.exp(-d / (2 * 0.7**2))),
    "rbf-gamma": ("rbf", {"gamma": 0.3}, lambda d: torch.exp(-0.3 * d)),
    "laplacian": ("laplacian", {"width": 1.5}, lambda d: torch.exp(-d.sqrt() / 1.5)),
    "imq": ("imq", {"width": 2.0}, lambda d: (1 + d / 2.0**2) ** -0.5),
    "hinge": ("hinge", {"width": 9.0}, lambda d: torch.clamp(1 - d.sqrt() / 9.0, min=0)),
}


def _fused_value_and_grad(pen, params):
    for p in params:
        p.grad = torch.zeros_like(p)
    value, _ = pen.add_grad_(params)
    return value, [p.grad.clone() for p in params]


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("mean", [False, True])
def test_value_and_gradient_match_autograd_on_the_plain_formula(name, mean):
    kernel, scale, formula = KERNELS[name]
    params = _params(0)
    centers = [_params(1), _params(2)]
    pen = DistancePenalty(2.5, kernel, distance="mean" if mean else "sum", **scale)
    pen.centers = centers
    value, grads = _fused_value_and_grad(pen, params)

    leaves = [p.clone().requires_grad_() for p in params]
    expected = _unfused(leaves, centers, 2.5, formula, mean)
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    for g, leaf in zip(grads, leaves):
        torch.testing.assert_close(g, leaf.grad, rtol=1e-9, atol=1e-12)


def test_rbf_gradient_is_the_closed_form():
    # grad of s*k = -(s / sigma^2) * k * (theta - theta_c)
    s, sigma = 3.0, 1.7
    params, center = _params(0), _params(1)
    pen = DistancePenalty(s, "rbf", width=sigma)
    pen.centers = [center]
    value, grads = _fused_value_and_grad(pen, params)
    d = sum(((p - c) ** 2).sum() for p, c in zip(params, center))
    k = torch.exp(-d / (2 * sigma**2))
    assert value.item() == pytest.approx((s * k).item(), rel=1e-12)
    for g, p, c in zip(grads, params, center):
        torch.testing.assert_close(g, -(s / sigma**2) * k * (p - c))


def test_a_released_penalty_pushes_no_more_and_keeps_its_checkpoint_and_release_when_restored():
    params, center = _params(0), _params(1)
    pen = DistancePenalty(1.0, "rbf", width=1.0, release_after=2)
    pen.add_checkpoint(center)
    pen.end_of_epoch(1, params)
    assert _fused_value_and_grad(pen, params)[0].item() > 0  # still acting after one epoch
    pen.end_of_epoch(2, params)
    for p in params:
        p.grad = torch.ones_like(p)
    value, norms = pen.add_grad_(params)
    assert value.item() == 0 and norms[0].item() == 0
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in params)  # the CE gradient alone
    restored = DistancePenalty(1.0, "rbf", width=1.0, release_after=2)
    restored.load_state_dict(pen.state_dict())
    assert restored.released and len(restored.centers) == 1  # the distances are still measured to it


def test_gradient_is_added_to_the_existing_gradient():
    params, center = _params(0), _params(1)
    pen = DistancePenalty(1.0, "rbf", width=1.0)
    pen.centers = [center]
    _, alone = _fused_value_and_grad(pen, params)
    for p in params:
        p.grad = torch.ones_like(p)
    pen.add_grad_(params)
    for p, g in zip(params, alone):
        torch.testing.assert_close(p.grad, g + 1)


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_is_one_at_the_checkpoint_and_decreases_with_distance(name):
    kernel, scale, _ = KERNELS[name]
    center = _params(1)
    pen = DistancePenalty(1.0, kernel, **scale)
    pen.centers = [center]
    direction = _params(5)
    # the value add_grad_ reports, as the training loop reads it
    values = [
        _fused_value_and_grad(pen, [c + t * u for c, u in zip(center, direction)])[0].item()
        for t in (0, 0.1, 0.5, 1, 3)
    ]
    assert values[0] == 1.0
    assert all(a > b for a, b in zip(values, values[1:]) if a > 0)
    assert values[-1] < values[1]


def test_no_force_at_the_checkpoint_itself():
    for name in KERNELS:
        kernel, scale, _ = KERNELS[name]
        params = _params(0)
        pen = DistancePenalty(5.0, kernel, **scale)
        pen.add_checkpoint(params)
        _, grads = _fused_value_and_grad(pen, params)
        assert all(torch.equal(g, torch.zeros_like(g)) for g in grads), name


def test_several_checkpoints_sum_their_terms():
    params = _params(0)
    centers = [_params(i) for i in (1, 2, 3)]
    both = DistancePenalty(1.5, "rbf", width=2.0)
    both.centers = centers
    value, grads = _fused_value_and_grad(both, params)
    single_values, single_grads = [], []
    for c in centers:
        one = DistancePenalty(1.5, "rbf", width=2.0)
        one.centers = [c]
        v, g = _fused_value_and_grad(one, params)
        single_values.append(v)
        single_grads.append(g)
    assert value.item() == pytest.approx(sum(v.item() for v in single_values), rel=1e-12)
    for i, g in enumerate(grads):
        torch.testing.assert_close(g, sum(sg[i] for sg in single_grads))


def test_merge_replaces_the_checkpoints_by_their_mean():
    # three checkpoints, then a saved state of them that says merged: what a resumed merged run loads
    pen = DistancePenalty(1.0, "rbf", width=1.0)
    centers = [_params(i) for i in (1, 2, 3)]
    for c in centers:
        pen.add_checkpoint(c)
    assert len(pen.centers) == 3
    pen.load_state_dict({**pen.state_dict(), "merged": True})
    assert len(pen.centers) == 1
    for i, merged in enumerate(pen.centers[0]):
        torch.testing.assert_close(merged, (centers[0][i] + centers[1][i] + centers[2][i]) / 3)


def test_a_merged_penalty_weighs_every_checkpoint_equally():
    # not a running average of averages: after three checkpoints, each counts a third
    pen = DistancePenalty(1.0, "rbf", width=1.0, merged=True)
    centers = [_params(i) for i in (1, 2, 3)]
    for n, c in enumerate(centers, start=1):
        pen.add_checkpoint(c)
        assert len(pen.centers) == 1 and len(pen.checkpoints) == n
    for i, merged in enumerate(pen.centers[0]):
        torch.testing.assert_close(merged, (centers[0][i] + centers[1][i] + centers[2][i]) / 3)


def test_add_grad_returns_both_gradient_norms():
    params, center = _params(0), _params(1)
    pen = DistancePenalty(2.0, "rbf", width=3.0)
    pen.centers = [center]
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    ce_norm = math.sqrt(sum(p.numel() for p in params) * 0.25)
    _, alone = _fused_value_and_grad(pen, params)
    pen_norm = math.sqrt(sum((g**2).sum().item() for g in alone))
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    _, norms = pen.add_grad_(params)
    assert norms.tolist() == pytest.approx([pen_norm, ce_norm], rel=1e-9)


@pytest.mark.parametrize("centres", [1, 3])
def test_the_penalty_norm_is_that_of_the_whole_penalty_gradient(centres):
    # one centre takes a shortcut (|coefficient| * distance), several sum their terms first
    params = _params(0)
    pen = DistancePenalty(2.0, "rbf", width=3.0)
    pen.centers = [_params(i) for i in range(1, 1 + centres)]
    _, alone = _fused_value_and_grad(pen, params)
    pen_norm = math.sqrt(sum((g**2).sum().item() for g in alone))
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    _, norms = pen.add_grad_(params)
    ce_norm = math.sqrt(sum(p.numel() for p in params) * 0.25)
    assert pen_norm > 0
    assert norms.tolist() == pytest.approx([pen_norm, ce_norm], rel=1e-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strength": 1, "kernel": "gauss", "width": 1}, "unknown kernel 'gauss'"),
        ({"strength": 1, "kernel": "rbf", "width": -1}, "width must be > 0"),
        ({"strength": 1, "kernel": "rbf"}, "exactly one of width"),
        ({"strength": 1, "kernel": "rbf", "width": 1, "gamma": 1}, "exactly one of width"),
        ({"strength": -1, "kernel": "rbf", "width": 1}, "strength must be >= 0"),
        ({"strength": 1, "kernel": "rbf", "width": 1, "distance": "max"}, "distance must be one of"),
        ({"strength": 1, "kernel": "rbf", "width": 1, "release_after": 0}, "release_after must be >= 1 epoch"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistancePenalty(**kwargs)


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def test_stacked_penalties_give_each_row_its_members_penalty_and_nothing_to_the_others():
    """Six members in one (k, n) tensor: each kernel, sum and mean distances, several and merged
    checkpoints, a control without a penalty, a stopped member. Each row against the plain formula
    through autograd for that member alone."""
    kfn = {name: spec for name, spec in KERNELS.items()}
    setups = [  # penalty arguments, the formula of k(d), checkpoints (seeds), mean distance, trains on
        (dict(strength=2.0, kernel="rbf", width=0.7), kfn["rbf-width"][2], [10], False, True),
        (dict(strength=3.0, kernel="laplacian", width=1.5, distance="mean"), kfn["laplacian"][2], [11, 12], True, True),
        (dict(strength=0.5, kernel="imq", width=2.0, merged=True), kfn["imq"][2], [13, 14, 15], False, True),
        (None, None, [], False, True),
        (dict(strength=1.0, kernel="hinge", width=9.0), kfn["hinge"][2], [16, 17], False, False),
        (dict(strength=4.0, kernel="rbf", gamma=0.3), kfn["rbf-gamma"][2], [18], False, True),
    ]
    members = [_params(seed=i) for i in range(len(setups))]
    ce_grads = [_params(seed=100 + i) for i in range(len(setups))]
    n = sum(p.numel() for p in members[0])
    penalties = []
    for args, _, seeds, _, _ in setups:
        penalty = DistancePenalty(**args) if args is not None else None
        for seed in seeds:
            penalty.add_checkpoint(_params(seed=seed))
        penalties.append(penalty)

    stacked = StackedPenalties(penalties, n, torch.device("cpu"))
    stacked.update(
        [on for *_, on in setups],
        lambda per_member: torch.stack(
            [_flat(t) if t is not None else torch.zeros(n, dtype=torch.float64) for t in per_member]
        ),
    )
    rows = torch.stack([_flat(m) for m in members])
    grads = torch.stack([_flat(g) for g in ce_grads])
    values, norms = stacked.add_grad_(rows, grads)

    for i, (args, formula, seeds, mean, on) in enumerate(setups):
        if args is None or not on:
            assert torch.equal(grads[i], _flat(ce_grads[i])), f"member {i}'s gradient changed"
            assert values[i] == 0
            continue
        params = [p.clone().requires_grad_() for p in members[i]]
        centres = [_params(seed=s) for s in seeds]
        if args.get("merged"):
            centres = [[torch.stack(ts).mean(0) for ts in zip(*centres)]]
        value = _unfused(params, centres, args["strength"], formula, mean)
        value.backward()
        penalty_grad = _flat([p.grad for p in params])
        assert values[i].item() == pytest.approx(value.item(), rel=1e-10), f"member {i}"
        torch.testing.assert_close(grads[i], _flat(ce_grads[i]) + penalty_grad, rtol=1e-10, atol=1e-12)
        assert norms[i, 0].item() == pytest.approx(penalty_grad.norm().item(), rel=1e-10)
        assert norms[i, 1].item() == pytest.approx(_flat(ce_grads[i]).norm().item(), rel=1e-12)
    assert norms[3].tolist() == [0.0, 0.0]  # no penalty: no norms, as the loop reports a run without one
