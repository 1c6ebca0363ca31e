"""The distance penalty: a kernel "hill" on each checkpoint, s * sum_c k(d(theta, theta_c)).

d is the squared L2 distance over all trainable parameters (or its mean over parameters). Its
gradient has a closed form, -> s * sum_c k'(d_c) * 2 (theta - theta_c) / n, so the penalty never
enters autograd: after the cross-entropy backward, `add_grad_` adds it to `.grad` with a few fused
foreach operations and no host-device synchronisation. Like torch.optim.swa_utils, this object
never owns the training loop; the loop calls it once per step.

The kernels' formulas are in repel.kernels.
"""

from __future__ import annotations

import torch

from .kernels import kernel_and_slope, scale
from .spec import DISTANCES, KERNELS


def _like(t: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """`t`'s values in `layout`'s memory layout."""
    return torch.empty_like(layout).copy_(t)


class DistancePenalty:
    """s * sum_c k(d(theta, theta_c)) over the active centres theta_c.

    The centres are the checkpoints taken so far, or with `merged`, one centre at their mean.
    With `every` = K > 0 a new checkpoint is taken after every K epochs (`end_of_epoch`). With
    `release_after` = R the penalty acts for R epochs and is then switched off for good (`acting`
    is empty); its centres stay, for the distances the loop measures.
    """

    def __init__(
        self,
        strength: float,
        kernel: str = "rbf",
        width: float | None = None,
        gamma: float | None = None,
        distance: str = "sum",
        merged: bool = False,
        every: int = 0,
        release_after: int | None = None,
    ):
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel '{kernel}'; expected one of {', '.join(KERNELS)}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got '{distance}'")
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        if every < 0:
            raise ValueError(f"every must be >= 0 epochs, got {every}")
        if release_after is not None and release_after < 1:
            raise ValueError(f"release_after must be >= 1 epoch (or None: never), got {release_after}")
        if kernel != "none" and (width is None) == (gamma is None):
            raise ValueError(f"kernel '{kernel}' needs exactly one of width (sigma) or gamma")
        for key, value in (("width", width), ("gamma", gamma)):
            if value is not None and not value > 0:
                raise ValueError(f"{key} must be > 0, got {value}")
        self.strength = float(strength)
        self.kernel = kernel
        self.scale = scale(kernel, width, gamma) if kernel != "none" else 0.0
        self.distance = distance
        self.merged = merged
        self.every = every
        self.release_after = release_after
        self.released = False
        self.checkpoints: list[list[torch.Tensor]] = []  # every checkpoint taken, in order
        self.centers: list[list[torch.Tensor]] = []  # the centres the penalty acts on

    def add_checkpoint(self, params: list[torch.Tensor]) -> None:
        """Take a checkpoint of the current parameters (a detached copy)."""
        self.checkpoints.append([p.detach().clone() for p in params])
        self._update_centers()

    def end_of_epoch(self, epochs_done: int, params: list[torch.Tensor]) -> None:
        """Called by the loop after each epoch: a new checkpoint every `every` epochs, and the
        release after `release_after`."""
        if self.release_after is not None and epochs_done >= self.release_after:
            self.released = True
        if self.every and epochs_done % self.every == 0 and not self.released:
            self.add_checkpoint(params)

    @property
    def acting(self) -> list[list[torch.Tensor]]:
        """The centres whose hills push now: none once released."""
        return [] if self.released else self.centers

    def match_layout(self, params: list[torch.Tensor]) -> None:
        """Store the checkpoints in the parameters' memory layout (channels_last, say): the fused
        foreach kernels on CUDA need matching strides, else they fall back to one kernel per tensor."""
        self.checkpoints = [[_like(c, p) for c, p in zip(ckpt, params)] for ckpt in self.checkpoints]
        self._update_centers()

    def _update_centers(self) -> None:
        if self.merged and len(self.checkpoints) > 1:
            self.centers = [[_like(torch.stack(ts).mean(0), ts[0]) for ts in zip(*self.checkpoints)]]
        else:
            self.centers = list(self.checkpoints)

    def state_dict(self) -> dict:
        return {"checkpoints": self.checkpoints, "merged": self.merged, "released": self.released}

    def load_state_dict(self, state: dict) -> None:
        device = self.checkpoints[0][0].device if self.checkpoints else None
        self.checkpoints = [[t.to(device) for t in c] for c in state["checkpoints"]]
        self.merged = state["merged"]
        self.released = state["released"]
        self._update_centers()

    def sq_distances(self, params: list[torch.Tensor], centers=None) -> torch.Tensor:
        """Squared L2 distance to each centre (or to each of `centers`), summed over all parameters."""
        out = []
        for center in self.centers if centers is None else centers:
            norms = torch._foreach_norm(torch._foreach_sub([p.detach() for p in params], center))
            out.append(torch.stack(norms).square().sum())
        return torch.stack(out)

    def _scaled(self, d: torch.Tensor, params: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
        """d as the kernel sees it, and the divisor n: 1 for a sum, the parameter count for a mean."""
        if self.distance == "sum":
            return d, 1.0
        n = float(sum(p.numel() for p in params))
        return d / n, n

    @torch.no_grad()
    def add_grad_(self, params: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the penalty's gradient to each parameter's .grad (which holds the CE gradient).

        Returns (penalty value, [||grad penalty||, ||grad CE||]) as device tensors, so the loop can
        accumulate them without synchronising. The loop reports the ratio of the epoch's summed
        norms: a mean of per-step ratios would be ruled by one step whose CE gradient is near 0.
        """
        grads = [p.grad for p in params]
        ce_norm = torch.stack(torch._foreach_norm(grads)).norm()
        detached = [p.detach() for p in params]
        penalty = total = pen_norm = None
        for center in self.acting:
            diffs = torch._foreach_sub(detached, center)
            d_raw = torch.stack(torch._foreach_norm(diffs)).square().sum()
            d, n = self._scaled(d_raw, params)
            k, slope = kernel_and_slope(self.kernel, self.scale, d, torch)
            coef = slope * (2.0 * self.strength / n)  # this term's gradient is coef * (theta - theta_c)
            penalty = self.strength * k if penalty is None else penalty + self.strength * k
            torch._foreach_mul_(diffs, coef)
            if total is None:  # one centre: the gradient's norm needs no further pass over the parameters
                total, pen_norm = diffs, coef.abs() * d_raw.sqrt()
            else:
                torch._foreach_add_(total, diffs)
                pen_norm = None
        if total is None:
            return torch.zeros_like(ce_norm), torch.stack([torch.zeros_like(ce_norm), ce_norm])
        if pen_norm is None:
            pen_norm = torch.stack(torch._foreach_norm(total)).norm()
        torch._foreach_add_(grads, total)
        return penalty, torch.stack([pen_norm, ce_norm])


class StackedPenalties:
    """The penalties of a pack's k members at once, on parameters laid out as the rows of one (k, n)
    tensor: what DistancePenalty.add_grad_ does for one member, done for every row in a few
    whole-tensor operations, where k separate calls would pay a few kernels per member and step.

    The members' DistancePenalty objects keep their checkpoints (and so their resumable state and
    the distances the rows report); `update` lays their centres out as rows, once per epoch, since
    they change only between epochs.
    """

    def __init__(self, penalties: list[DistancePenalty | None], n: int, device: torch.device):
        def per_member(value, default):  # numbers in float64, as the Python floats DistancePenalty computes with
            values = [value(p) if p is not None else default for p in penalties]
            return torch.tensor(values, dtype=torch.float64 if isinstance(default, float) else None, device=device)

        self.penalties = penalties
        self.has = per_member(lambda p: True, False)
        self.strength = per_member(lambda p: p.strength, 0.0)
        self.scale = per_member(lambda p: p.scale, 0.0)
        # DistancePenalty._scaled's n
        self.divisor = per_member(lambda p: float(n) if p.distance == "mean" else 1.0, 1.0)
        self.kernels = {
            kernel: per_member(lambda p: p.kernel == kernel, False)  # noqa: B023 - called at once
            for kernel in sorted({p.kernel for p in penalties if p is not None})
        }
        self.centers: list[torch.Tensor] = []  # [j]: (k, n) rows of each member's j-th centre
        self.present = torch.zeros(0, len(penalties), dtype=torch.bool, device=device)  # [j, i]: it has one

    def update(self, training: list[bool], rows_of) -> None:
        """Take the centres of the members that train on. `rows_of` lays out one list of tensors per
        member (shaped as its parameters; None for none) as (k, n) rows."""
        centers = [p.acting if p is not None and on else [] for p, on in zip(self.penalties, training)]
        slots = max(map(len, centers), default=0)
        self.centers = [rows_of([c[j] if j < len(c) else None for c in centers]) for j in range(slots)]
        self.present = torch.tensor(
            [[j < len(c) for c in centers] for j in range(slots)], dtype=torch.bool, device=self.has.device
        ).view(slots, len(centers))

    def _kernel_and_slope(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, slope = torch.zeros_like(d), torch.zeros_like(d)
        for kernel, members in self.kernels.items():
            k_kernel, slope_kernel = kernel_and_slope(kernel, self.scale, d, torch)
            k, slope = torch.where(members, k_kernel, k), torch.where(members, slope_kernel, slope)
        return k, slope

    @torch.no_grad()
    def add_grad_(self, rows: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add each member's penalty gradient to its row of `grads` (which holds the CE gradient).

        Returns the penalties (k,) and [||grad penalty||, ||grad CE||] (k, 2), zero for a member
        without a penalty, as DistancePenalty.add_grad_ gives them one member at a time.
        """
        ce_norm = torch.where(self.has, torch.linalg.vector_norm(grads, dim=1), 0.0)
        penalty = torch.zeros_like(ce_norm)
        total = pen_norm = None
        for center, present in zip(self.centers, self.present):
            diffs = rows - center
            d_raw = torch.linalg.vector_norm(diffs, dim=1).square()
            k, slope = self._kernel_and_slope(d_raw / self.divisor)
            # where, not a product: a member without this centre adds exactly 0, whatever its distance
            coef = torch.where(present, slope * (2.0 * self.strength / self.divisor), 0.0)
            penalty += torch.where(present, self.strength * k, 0.0)
            coef = coef.to(rows.dtype)  # the (k, n) products in the rows' own dtype: a mixed one is far slower
            if total is None:  # one centre: the gradient's norm needs no further pass over the rows
                total, pen_norm = diffs.mul_(coef[:, None]), coef.abs() * d_raw.sqrt()
            else:
                total.addcmul_(diffs, coef[:, None])
                pen_norm = None
        if total is None:
            return penalty, torch.stack([torch.zeros_like(ce_norm), ce_norm], 1)
        if pen_norm is None:
            pen_norm = torch.linalg.vector_norm(total, dim=1)
        grads.add_(total)
        return penalty, torch.stack([torch.where(self.has, pen_norm, 0.0), ce_norm], 1)
