"""Dataset shift: seeded corruptions of the test split, and the ensembles' metrics on them.

Each corruption has five severities, each set by one parameter (CORRUPTIONS; docs/DESIGN.md gives
their sources: CIFAR-10-C's values of Hendrycks & Dietterich 2019 for noise, blur and contrast, the
rotated-MNIST angles of Ovadia et al. 2019, torchvision's elastic transform at the scale of MNIST-C).
Sizes in pixels (blur σ, elastic α and σ) are given for a 32-pixel image and scale with the image's
side, so an 8-pixel digit and a 32-pixel CIFAR image are blurred alike relative to their size.
Images are corrupted in float [0, 1] with torchvision.transforms.v2's functions and stored as
uint8, like the clean splits (CIFAR-10-C stores its images so too).

Deterministic: a corruption's random numbers (the noise, the rotation's signs, the elastic field)
come from a seed of (config seed, corruption, severity), so one file is the same wherever it is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# torchvision is imported only where a corruption is made: importing it loads torch._dynamo, about
# 1.6 s that every predict job (which reads the corrupted splits, never makes them) would pay

REFERENCE_SIDE = 32  # the image side the pixel sizes below are given for


@dataclass(frozen=True)
class Corruption:
    parameter: str  # what the severity sets, in the parameter's own unit
    values: tuple[float, ...]  # severity 1..5
    source: str


CORRUPTIONS = {
    "gaussian_noise": Corruption(
        "σ of the added noise (pixel values in [0, 1])", (0.04, 0.06, 0.08, 0.09, 0.10), "CIFAR-10-C"
    ),
    "gaussian_blur": Corruption("σ of the Gaussian kernel (pixels at 32 px)", (0.4, 0.6, 0.7, 0.8, 1.0), "CIFAR-10-C"),
    "contrast": Corruption("contrast factor c (1: unchanged)", (0.75, 0.5, 0.4, 0.3, 0.15), "CIFAR-10-C"),
    "rotation": Corruption("rotation angle (degrees, the sign drawn per image)", (15, 30, 45, 60, 90), "Ovadia et al."),
    "elastic": Corruption(
        "α of torchvision's elastic transform (pixels at 32 px; σ = ELASTIC_SIGMA)",
        (4.0, 8.0, 12.0, 16.0, 20.0),
        "MNIST-C's scale",
    ),
}
SEVERITIES = (1, 2, 3, 4, 5)
ELASTIC_SIGMA = 4.0  # smoothness of the elastic field (pixels at 32 px)


def _scaled(pixels: float, side: int) -> float:
    return pixels * side / REFERENCE_SIDE


def _generator(seed: int, name: str, severity: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1000 + 10 * list(CORRUPTIONS).index(name) + severity)


def parameter(name: str, severity: int) -> float:
    """The parameter value of a corruption at a severity (1..5)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption '{name}'; expected one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return CORRUPTIONS[name].values[severity - 1]


def elastic_displacement(n: int, side: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """(n, H, W, 2) displacement fields as torchvision's ElasticTransform draws them: uniform noise
    in [−1, 1], smoothed by a Gaussian of σ = ELASTIC_SIGMA, times α / side (grid coordinates)."""
    from torchvision.transforms.v2 import functional as F

    sigma = _scaled(ELASTIC_SIGMA, side)
    size = 2 * math.ceil(3 * sigma) + 1
    noise = torch.rand(n * 2, 1, side, side, generator=generator) * 2 - 1
    smooth = F.gaussian_blur(noise, [size, size], [sigma, sigma]) * (_scaled(alpha, side) / side)
    return smooth.view(n, 2, side, side).permute(0, 2, 3, 1)


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) float images in [0, 1], corrupted at a severity; deterministic in the seed."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    value, side = parameter(name, severity), x.shape[-1]
    g = _generator(seed, name, severity)
    if name == "gaussian_noise":
        with torch.random.fork_rng(devices=[]):  # v2's gaussian_noise draws from the global generator
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))
            return F.gaussian_noise(x, mean=0.0, sigma=value, clip=True)
    if name == "gaussian_blur":
        sigma = _scaled(value, side)
        size = 2 * math.ceil(3 * sigma) + 1
        return F.gaussian_blur(x, [size, size], [sigma, sigma])
    if name == "contrast":
        return F.adjust_contrast(x, value)
    out = torch.empty_like(x)
    if name == "rotation":
        sign = torch.randint(0, 2, (len(x),), generator=g).bool()
        for flip, angle in ((False, value), (True, -value)):  # two batches, one per sign
            out[sign == flip] = F.rotate(x[sign == flip], angle, InterpolationMode.BILINEAR)
        return out
    displacement = elastic_displacement(len(x), side, value, g)  # elastic: one field per image
    for k in range(len(x)):
        out[k] = F.elastic(x[k : k + 1], displacement[k : k + 1], InterpolationMode.BILINEAR)[0]
    return out


def shifted_test(prepared: dict, corruptions: list[str], severities: list[int], seed: int = 0) -> dict:
    """The test split corrupted: {"x": corruption -> uint8 (S, N, C, H, W), "y", "severities",
    "parameters": corruption -> the parameter at each severity, "name", "seed"}."""
    x = prepared["test_x"].float() / 255
    out = {}
    for name in corruptions:
        out[name] = torch.stack([(corrupt(x, name, s, seed) * 255).round().clamp(0, 255).byte() for s in severities])
    return {
        "x": out,
        "y": prepared["test_y"],
        "severities": list(severities),
        "parameters": {name: [float(parameter(name, s)) for s in severities] for name in corruptions},
        "name": prepared["name"],
        "seed": seed,
    }


def metric_rows(log_probs: dict[tuple[str, int], torch.Tensor], y: torch.Tensor, bins: int = 15) -> list[dict]:
    """One row per (corruption, severity): the ensemble's accuracy, NLL, Brier and ECE (the
    functions of repel.ensemble, on the mean softmax of all M members) and its members' mean
    accuracy. `log_probs`: (corruption, severity) -> (M, N, K); severity 0 is the clean test split."""
    from .ensemble import ensemble_log_probs, member_accuracy, model_metrics

    rows = []
    for (name, severity), lp in log_probs.items():
        metrics = model_metrics(ensemble_log_probs(lp, len(lp)), y, bins)
        rows.append(
            {
                "corruption": name,
                "severity": severity,
                "parameter": math.nan if severity == 0 else float(parameter(name, severity)),
                "members": len(lp),
                **metrics,
                "mean_member_accuracy": float(member_accuracy(lp, y).mean()),
            }
        )
    return rows


# --- the job that makes the shifted data (the command line's shift-data) ------------------------------------


def prepare_job(args) -> None:
    """The prepared dataset's test split, corrupted once, and its OOD sets (repel.ood): one file
    per dataset."""
    from . import data, ood, storage

    prepared = data.load(args.data)
    seed = 0 if args.seed is None else args.seed
    out = shifted_test(prepared, args.corruptions or [], args.severities or [], seed)
    given = {"data_dir": args.data_dir or "data", "download": not args.no_download}
    out["ood"] = {name: ood.images(prepared, name, seed, **given) for name in args.ood or []}
    storage.save_torch(out, args.out)
    print(
        f"{prepared['name']}: {len(out['y'])} test images x {args.corruptions} x severities {args.severities}; "
        f"OOD sets {', '.join(f'{k} ({len(v)})' for k, v in out['ood'].items()) or 'none'}"
    )


def predict_under_shift(model, member_states, prepared, shifted, device, cell, clean) -> tuple:
    """An ensemble's members on every corrupted copy of the test split and on every OOD set (the
    predict job's network and members; `clean`: their (M, N, K) outputs on the clean test split,
    already computed). Returns the log-softmax outputs by "<corruption>/<severity>" (the clean split
    as "clean/0", the OOD sets as "ood/<name>"), the ensemble's metrics per severity, and every test
    and OOD point's OOD scores (the test split's as set "test")."""
    import numpy as np
    import pandas as pd

    from . import ood
    from .data import DeviceData
    from .predict import log_softmax_outputs

    inputs = {(name, s): x[k] for name, x in shifted["x"].items() for k, s in enumerate(shifted["severities"])}
    inputs.update({("ood", name): x for name, x in shifted["ood"].items()})
    splits = {key: DeviceData({**prepared, "test_x": x}, "test", device) for key, x in inputs.items()}  # once
    outputs = {key: [] for key in inputs}
    for state in member_states:
        model.load_state_dict(state)
        for key, split in splits.items():
            outputs[key].append(log_softmax_outputs(model, split).cpu())
    log_probs = {("clean", 0): torch.as_tensor(clean), **{key: torch.stack(v) for key, v in outputs.items()}}
    points = [
        pd.DataFrame({**cell, "set": name, **{k: v.numpy() for k, v in ood.scores(log_probs[key]).items()}})
        for name, key in [("test", ("clean", 0)), *((name, ("ood", name)) for name in shifted["ood"])]
    ]
    table = pd.DataFrame(metric_rows({k: v for k, v in log_probs.items() if k[0] != "ood"}, prepared["test_y"]))
    stored = {f"{name}/{s}": np.asarray(lp) for (name, s), lp in log_probs.items()}
    return stored, table.assign(**cell), pd.concat(points, ignore_index=True)
