"""Dataset shift: each corruption's severity against its parameter, computed by another route;
the files are deterministic; the metrics under shift agree with sklearn's on stored predictions."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from scipy.stats import entropy
from sklearn.metrics import log_loss, roc_auc_score

from repel import cli, shift, shift_tables

SIDE = shift.REFERENCE_SIDE  # pixel sizes are given at this side: no scaling


@pytest.mark.parametrize("severity", shift.SEVERITIES)
def test_noise_has_the_severitys_sigma(severity):
    x = torch.full((8, 1, SIDE, SIDE), 0.5)  # mid-grey: 5 sigma from either clip
    noise = (shift.corrupt(x, "gaussian_noise", severity) - x).numpy().ravel()
    sigma = shift.parameter("gaussian_noise", severity)
    assert np.std(noise) == pytest.approx(sigma, rel=0.05) and abs(np.mean(noise)) < 0.1 * sigma


@pytest.mark.parametrize("severity", shift.SEVERITIES)
def test_blur_is_scipys_gaussian_of_the_severitys_sigma(severity):
    x = torch.zeros(1, 1, SIDE, SIDE)
    x[0, 0, 16, 16] = 1.0  # an impulse far from the border: the output is the kernel
    sigma = shift.parameter("gaussian_blur", severity)
    expected = ndimage.gaussian_filter(x[0, 0].numpy().astype(float), sigma, radius=math.ceil(3 * sigma))
    np.testing.assert_allclose(shift.corrupt(x, "gaussian_blur", severity)[0, 0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("severity", shift.SEVERITIES)
def test_contrast_scales_the_deviation_from_the_mean_by_c(severity):
    x = 0.25 + 0.5 * torch.rand(3, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    c = shift.parameter("contrast", severity)
    a, out = x.numpy(), shift.corrupt(x, "contrast", severity).numpy()
    mean = a.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out - mean, c * (a - mean), atol=1e-5)


def _orientation(img: np.ndarray) -> float:
    """Degrees of an image's principal axis from its second central moments, in (−90, 90]."""
    rows, cols = np.indices(img.shape)
    w = img / img.sum()
    r, c = (rows * w).sum(), (cols * w).sum()
    mu20, mu02, mu11 = ((cols - c) ** 2 * w).sum(), ((rows - r) ** 2 * w).sum(), ((cols - c) * (rows - r) * w).sum()
    return math.degrees(0.5 * math.atan2(2 * mu11, mu20 - mu02))


@pytest.mark.parametrize("severity", shift.SEVERITIES)
def test_rotation_turns_a_bar_by_the_severitys_angle(severity):
    x = torch.zeros(4, 1, SIDE + 1, SIDE + 1)  # odd side: the bar's centre is the rotation's
    x[:, 0, 16, 4:29] = 1.0  # a horizontal bar
    angle = shift.parameter("rotation", severity)
    for img in shift.corrupt(x, "rotation", severity).numpy():
        assert abs(abs(_orientation(img[0])) - angle) < 2  # the sign is drawn per image


def test_elastic_fields_scale_with_alpha_and_move_the_pixels():
    fields = [
        shift.elastic_displacement(2, SIDE, shift.parameter("elastic", s), torch.Generator().manual_seed(0))
        for s in shift.SEVERITIES
    ]
    rms = np.array([f.square().mean().sqrt().item() for f in fields])
    alphas = np.array(shift.CORRUPTIONS["elastic"].values)
    np.testing.assert_allclose(rms / rms[0], alphas / alphas[0], rtol=1e-5)  # the same noise, times alpha
    x = torch.rand(2, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    moved = [(shift.corrupt(x, "elastic", s) - x).abs().mean().item() for s in (1, 5)]
    assert 0 < moved[0] < moved[1]


def test_the_shifted_split_is_deterministic_and_seeded(digits):
    a = shift.shifted_test(digits, ["gaussian_noise", "rotation"], [3, 5], seed=0)
    b = shift.shifted_test(digits, ["gaussian_noise", "rotation"], [3, 5], seed=0)
    c = shift.shifted_test(digits, ["gaussian_noise"], [3], seed=1)
    assert a["x"]["gaussian_noise"].shape == (2, *digits["test_x"].shape) and a["x"]["rotation"].dtype == torch.uint8
    assert all(torch.equal(a["x"][k], b["x"][k]) for k in a["x"])
    assert not torch.equal(a["x"]["gaussian_noise"][0], c["x"]["gaussian_noise"][0])
    assert a["parameters"] == {"gaussian_noise": [0.08, 0.10], "rotation": [45.0, 90.0]}


def test_an_unknown_corruption_or_severity_is_named():
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        shift.parameter("fog", 1)
    with pytest.raises(ValueError, match="severity must be one of"):
        shift.parameter("contrast", 6)


def test_metrics_under_shift_agree_with_sklearn():
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(2, 50, 3, generator=g), -1)  # 2 members, 50 points, 3 classes
    y = torch.randint(0, 3, (50,), generator=g)
    row = shift.metric_rows({("contrast", 2): lp}, y)[0]
    p = lp.double().exp().mean(0).numpy()  # the ensemble: the members' mean softmax
    p /= p.sum(1, keepdims=True)  # float32 log-softmax sums to 1 within 1e-7; sklearn wants it exact
    assert row["nll"] == pytest.approx(log_loss(y.numpy(), p, labels=[0, 1, 2]), abs=1e-6)
    assert row["accuracy"] == pytest.approx((p.argmax(1) == y.numpy()).mean())
    assert row["brier"] == pytest.approx(((p - np.eye(3)[y.numpy()]) ** 2).sum(1).mean())
    assert row["parameter"] == 0.5 and row["members"] == 2


def test_the_table_starts_every_corruption_at_the_clean_split():
    one = pd.DataFrame(
        {
            "dataset": "d",
            "model": "m",
            "method": "distance",
            "ensemble": "seed0",
            "corruption": ["clean", "noise", "blur"],
            "severity": [0, 3, 3],
            "accuracy": [0.9, 0.7, 0.8],
        }
    )
    t = shift_tables.combine([one, one.assign(ensemble="seed1")])
    assert len(t) == 8 and set(t["corruption"]) == {"noise", "blur"}
    assert (t[t["severity"] == 0]["accuracy"] == 0.9).all()
    fig = shift_tables.shift_figure(t.assign(nll=1.0, brier=0.3, ece=0.1))
    assert len(fig.axes) == len(shift_tables.SHIFT_METRICS) * 2  # one column per corruption


def test_predict_under_shift_end_to_end(tmp_path):
    import torch

    data, base = tmp_path / "data.pt", tmp_path / "base"
    device = ["--device", "cpu", "--threads", "1"]
    assert cli.main(["prepare", "--dataset", "digits", "--out", str(data)]) == 0
    run = ["--data", str(data), "--model", "mlp", "--epochs", "1", *device, "--out-dir", str(base)]
    assert cli.main(["train-base", *run]) == 0
    shifted = tmp_path / "shift.pt"
    corruptions = ["--corruptions", "contrast", "gaussian_blur", "--severities", "1", "5", "--ood", "inverted"]
    assert cli.main(["shift-data", "--data", str(data), *corruptions, "--out", str(shifted)]) == 0
    weights = torch.load(base / "checkpoint.pt", weights_only=True)["model"]
    members = []
    for i, scale in enumerate((1.0, 0.5)):
        members.append(str(tmp_path / f"member{i}.pt"))
        torch.save({k: v * scale for k, v in weights.items()}, members[-1])
    out, table = tmp_path / "p.npz", tmp_path / "shift.parquet"
    given = ["--data", str(data), "--shift", str(shifted), "--checkpoints", *[str(base / "checkpoint.pt")] * 2]
    names = ["--method", "snapshots", "--ensemble", "seed0", "--out", str(tmp_path / "clean.npz")]
    names += ["--shift-out", str(out), "--shift-table", str(table), "--ood-scores", str(tmp_path / "scores.parquet")]
    assert cli.main(["predict", *given, "--members", *members, *names, *device]) == 0
    t = pd.read_parquet(table)
    assert sorted(zip(t["corruption"], t["severity"])) == [
        ("clean", 0),
        ("contrast", 1),
        ("contrast", 5),
        ("gaussian_blur", 1),
        ("gaussian_blur", 5),
    ]
    stored = np.load(out)  # numpy alone reads it
    y = stored["labels"]
    assert np.array_equal(stored["clean/0"], np.load(tmp_path / "clean.npz")["log_probs"])  # the same pass
    for r in t.itertuples():  # the table from the stored predictions, by sklearn
        p = np.exp(stored[f"{r.corruption}/{r.severity}"].astype(np.float64)).mean(0)
        p /= p.sum(1, keepdims=True)
        assert r.nll == pytest.approx(log_loss(y, p, labels=range(p.shape[1])), abs=1e-6)
    detection = tmp_path / "ood.parquet"
    assert cli.main(["ood-table", "--scores", str(tmp_path / "scores.parquet"), "--out", str(detection)]) == 0
    row = pd.read_parquet(detection).set_index("score").loc["entropy"]
    assert row["ood"] == "inverted"
    entropies = [  # the predictive entropy from the stored predictions, by scipy; OOD the positives
        entropy(np.exp(stored[key].astype(np.float64)).mean(0), axis=1) for key in ("clean/0", "ood/inverted")
    ]
    labels = np.r_[np.zeros(len(entropies[0])), np.ones(len(entropies[1]))]
    assert row["auroc"] == pytest.approx(roc_auc_score(labels, np.r_[entropies[0], entropies[1]]), abs=1e-6)
    plots = ["--shift", str(table), "--ood", str(detection), "--out-dir", str(tmp_path / "plots")]
    assert cli.main(["shift-table", "--tables", str(table), "--out", str(tmp_path / "all.parquet")]) == 0
    plots[1] = str(tmp_path / "all.parquet")
    assert cli.main(["plot-shift", *plots, "--formats", "png"]) == 0
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"ensemble_shift.png", "ensemble_ood.png"}
    # the three table and figure stages again, in a process of their own: none loads torch
    stages = [
        ["shift-table", "--tables", str(table), "--out", str(tmp_path / "again.parquet")],
        ["ood-table", "--scores", str(tmp_path / "scores.parquet"), "--out", str(tmp_path / "ood_again.parquet")],
        ["plot-shift", *plots, "--formats", "png"],
    ]
    script = "import json, sys\nfrom repel.cli import main\nfor argv in json.loads(sys.argv[1]):\n"
    script += "    assert main(argv) == 0, argv\nprint('torch' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", script, json.dumps(stages)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "False", result.stderr[-2000:]


def test_a_predict_job_never_imports_torchvision():
    # predict reads the corrupted splits prepare_shift made; importing torchvision would load
    # torch._dynamo too, seconds of every predict job's start
    code = "import sys\nfrom repel import cli, jobs, ood, predict, shift\n"
    code += "print(sorted(m for m in sys.modules if m.startswith('torchvision')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_the_schema_lists_the_declared_corruptions_and_severities():
    from pathlib import Path

    import yaml

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    block = schema["properties"]["ensembles"]["properties"]["shift"]["properties"]
    assert block["corruptions"]["items"]["enum"] == list(shift.CORRUPTIONS)
    items = block["severities"]["items"]
    assert (items["minimum"], items["maximum"]) == (min(shift.SEVERITIES), max(shift.SEVERITIES))
