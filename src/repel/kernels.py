"""The kernels' formulas, once, for the training penalty (torch tensors) and for the figures that
draw them (NumPy arrays, in a stage that never loads torch): `xp` is the array module, torch or numpy.

With a = the config's scale (`width` sigma or `gamma`, see `scale`), over d = the squared distance:

| kernel    | width sigma            | gamma              |
|-----------|------------------------|--------------------|
| rbf       | exp(-d / (2 sigma^2))  | exp(-gamma d)      |
| laplacian | exp(-sqrt(d) / sigma)  | exp(-gamma sqrt d) |
| imq       | (1 + d / sigma^2)^-1/2 | (1 + gamma d)^-1/2 |
| hinge     | max(0, 1 - sqrt(d)/sigma) | max(0, 1 - gamma sqrt d) |
| none      | 0 (control)            | 0                  |
"""

from __future__ import annotations

import numpy as np

from .spec import KERNELS


def scale(kernel: str, width: float | None, gamma: float | None) -> float:
    """The number that multiplies d (rbf, imq) or sqrt(d) (laplacian, hinge)."""
    if gamma is not None:
        return float(gamma)
    if kernel == "rbf":
        return 1.0 / (2.0 * width**2)
    if kernel == "imq":
        return 1.0 / width**2
    return 1.0 / width  # laplacian, hinge act on sqrt(d)


def kernel_and_slope(kernel: str, scale: float, d, xp=np):
    """k(d) and dk/dd, elementwise over an array of (non-negative) squared distances."""
    if kernel == "rbf":
        k = xp.exp(-scale * d)
        return k, -scale * k
    if kernel == "imq":
        base = 1.0 + scale * d
        return base**-0.5, -0.5 * scale * base**-1.5
    zero = xp.zeros_like(d)
    r = xp.sqrt(d)
    safe_r = xp.where(r > 0, r, zero + 1)  # d sqrt(d)/dd is infinite at 0: no force there
    if kernel == "laplacian":
        k = xp.exp(-scale * r)
        return k, xp.where(r > 0, -scale * k / (2 * safe_r), zero)
    if kernel == "hinge":
        k = xp.where(scale * r < 1.0, 1.0 - scale * r, zero)
        return k, xp.where((r > 0) & (k > 0), -scale / (2 * safe_r), zero)
    if kernel == "none":
        return zero, zero
    raise ValueError(f"unknown kernel '{kernel}'; expected one of {', '.join(KERNELS)}")
