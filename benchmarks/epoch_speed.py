"""Epoch time of repel's training loop against a straightforward PyTorch reference, in one run.

What it measures: the wall-clock time of one epoch, here a training pass over the train split
followed by evaluating the val and test splits (batch 1024), in these variants on the same model,
data, batch size (128), optimiser settings, device and thread count:

  reference      torchvision.datasets.MNIST with per-image ToTensor + Normalize, a DataLoader
                 (shuffle, num_workers=0), loss = CE + s * exp(-d / (2 width^2)) with d summed in a
                 Python loop over parameters, autograd backward, loss.item() every step
  ours           repel.train.fit(epochs=1) with DistancePenalty(strength=1, kernel="rbf", width=1)
  ours, no pen.  the same fit() call with penalty=None: the penalty's overhead
  ours + bf16    (--also bf16) fit() with amp="bf16": bf16 autocast, fast only on CPUs with AMX
  ours + compile (--also compile) fit() with compile="on": torch.compile; its compile time falls
                 in the warm-up epoch, which is printed apart

"ours" is fit() with the default speed options (on CPU: channels_last on for conv nets, no
autocast, no compile). The penalty's overhead is also measured per training step, steps with and
without the penalty alternating on one model, which is much less exposed to the machine's noise
than whole epochs.

Each variant gets one warm-up epoch, then --repeats timed epochs; the variants take turns so that
a slow phase of the machine hits all of them alike. Ours is timed around the whole fit() call
(set-up, training pass, evaluation) and the reference does the same evaluation work. The figures
that carry over to other machines are the ratios, and they are only comparable within one run:
reference/ours and with/without penalty.

Data: without --data-dir, a synthetic 28x28 digit set written in real MNIST idx format (from
scikit-learn's 8x8 digits, upsampled, shifted and noised) into a temporary directory; with
--data-dir DIR, the real MNIST under DIR/MNIST/raw.

    python benchmarks/epoch_speed.py
    python benchmarks/epoch_speed.py --model mlp --repeats 5 --threads 4
    python benchmarks/epoch_speed.py --data-dir data --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from machine import device_name  # benchmarks/, the script's own directory
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from repel import data as repel_data
from repel.data import DeviceData
from repel.models import MODELS, build, trainable_parameters
from repel.penalty import DistancePenalty
from repel.train import TrainConfig, fit, resolve_speed

BATCH, EVAL_BATCH = 128, 1024
LR, MOMENTUM, WEIGHT_DECAY = 1e-2, 0.9, 1e-3
STRENGTH, WIDTH = 1.0, 1.0
VAL_FRACTION, SEED = 0.1, 0
# opt-in speed options, each timed as one more variant of ours with the penalty
ALSO = {
    "bf16": ("ours + bf16 autocast, with penalty", {"amp": "bf16"}),
    "compile": ("ours + torch.compile, with penalty", {"compile": "on"}),
}


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed idx file: magic 2051 (uint8, 3 dims) for images, 2049 (uint8, 1 dim) for labels."""
    magic = 2051 if array.ndim == 3 else 2049
    path.write_bytes(struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes())


def synthetic_mnist(root: Path, n_train: int, n_test: int, seed: int) -> None:
    """Tile scikit-learn's 8x8 digits, upsampled to 28x28, with random shifts of up to 2 pixels and noise."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    big = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)[:, 0].numpy()
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    source = np.arange(n) % len(big)
    padded = np.pad(big[source], ((0, 0), (2, 2), (2, 2)))
    dy, dx = rng.integers(0, 5, size=(2, n))
    shifted = np.stack([padded[i, a : a + 28, b : b + 28] for i, (a, b) in enumerate(zip(dy, dx))])
    images = np.clip(shifted * 255 + rng.normal(0, 8, shifted.shape), 0, 255).astype(np.uint8)
    labels = digits.target[source].astype(np.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, part in (("train", slice(0, n_train)), ("t10k", slice(n_train, n))):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[part])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[part])


def reference_loaders(root: Path, n_train: int, n_val: int, mean: list, std: list):
    """Same split sizes as ours: the first n_train training images train, the next n_val validate."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    train_set = datasets.MNIST(str(root), train=True, download=False, transform=tf)
    test_set = datasets.MNIST(str(root), train=False, download=False, transform=tf)
    return (
        DataLoader(Subset(train_set, range(n_train)), batch_size=BATCH, shuffle=True, num_workers=0),
        DataLoader(Subset(train_set, range(n_train, n_train + n_val)), batch_size=EVAL_BATCH),
        DataLoader(test_set, batch_size=EVAL_BATCH),
    )


def reference_epoch(model, optimizer, centers, loaders, device) -> tuple[float, float]:
    """One naive epoch: train, then evaluate val and test; returns (mean train loss, val accuracy)."""
    train, val, test = loaders
    params = trainable_parameters(model)
    model.train()
    total = 0.0
    for x, y in train:
        x, y = x.to(device), y.to(device)
        d = sum(((p - c) ** 2).sum() for p, c in zip(params, centers))
        loss = F.cross_entropy(model(x), y) + STRENGTH * torch.exp(-d / (2 * WIDTH**2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    model.eval()
    accuracy = []
    with torch.no_grad():
        for loader in (val, test):
            loss_sum = correct = 0  # loss and accuracy, the same work as repel.train.evaluate
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                out = model(x)
                loss_sum += F.cross_entropy(out, y, reduction="sum").item()
                correct += (out.argmax(1) == y).sum().item()
            accuracy.append(correct / len(loader.dataset))
    return total / len(train), accuracy[0]


def new_model(name: str, prepared: dict, device) -> torch.nn.Module:
    torch.manual_seed(SEED)  # every variant starts from the same initialisation
    x = prepared["train_x"]
    return build(name, x.shape[1], prepared["num_classes"], x.shape[-1]).to(device)


def timed(run, device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def penalty_step_times(model_name: str, prepared: dict, cfg: TrainConfig, device, steps: int):
    """Seconds of training steps with and without the penalty, alternating on one model (ours, defaults)."""
    model = new_model(model_name, prepared, device)
    speed = resolve_speed(cfg, model, device)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    params = trainable_parameters(model)
    penalty = DistancePenalty(strength=STRENGTH, kernel="rbf", width=WIDTH)
    penalty.add_checkpoint(params)
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    batches = DeviceData(prepared, "train", device).batches(
        BATCH, torch.Generator().manual_seed(SEED), channels_last=speed.channels_last
    )
    xb, yb = next(batches)

    def step(use_penalty: bool) -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=speed.amp):
            loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        if use_penalty:
            penalty.add_grad_(params)
        optimizer.step()

    times = ([], [])
    for i in range(2 * (steps + 2)):  # the first two of each are warm-up
        use_penalty = i % 2 == 0
        t, _ = timed(lambda use=use_penalty: step(use), device)
        if i >= 4:
            times[0 if use_penalty else 1].append(t)
    return times


def benchmark(args, root: Path, source: str) -> None:
    load = os.getloadavg()[0]  # other work on the machine skews even the ratios
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    prepared = repel_data.prepare(
        "mnist", root, val_fraction=VAL_FRACTION, test_fraction=0.2, seed=SEED, download=False
    )
    n_train, n_val, n_test = (len(prepared[f"{s}_y"]) for s in ("train", "val", "test"))
    mean, std = prepared["mean"].tolist(), prepared["std"].tolist()
    cfg = TrainConfig(epochs=1, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, batch_size=BATCH, seed=SEED)

    def ours(penalty, **speed):
        model = new_model(args.model, prepared, device)
        if penalty is not None:
            penalty.add_checkpoint(trainable_parameters(model))
        run_cfg = dataclasses.replace(cfg, **speed)

        def run():
            row = fit(model, prepared, run_cfg, device, penalty=penalty, log=lambda _: None)[0][-1]
            return row["train_loss"], row["val_acc"]

        return run

    ref_model = new_model(args.model, prepared, device)
    ref_optimizer = torch.optim.SGD(ref_model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    ref_centers = [p.detach().clone() for p in trainable_parameters(ref_model)]
    ref_loaders = reference_loaders(root, n_train, n_val, mean, std)
    variants = {
        "reference (DataLoader + autograd)": lambda: reference_epoch(
            ref_model, ref_optimizer, ref_centers, ref_loaders, device
        ),
        "ours, fit() with penalty": ours(DistancePenalty(strength=STRENGTH, kernel="rbf", width=WIDTH)),
        "ours, fit() without penalty": ours(None),
    }
    for key in args.also:
        name, speed = ALSO[key]
        variants[name] = ours(DistancePenalty(strength=STRENGTH, kernel="rbf", width=WIDTH), **speed)
    seconds = {name: [] for name in variants}
    warmup = {}  # the first epoch's time: includes torch.compile's compilation
    last = {}  # (train loss, val accuracy) of each variant's last epoch: all of them learn
    for round_ in range(1 + args.repeats):  # round 0 is the warm-up
        for name, run in variants.items():
            t, last[name] = timed(run, device)
            if round_ > 0:
                seconds[name].append(t)
            else:
                warmup[name] = t
    step_times = penalty_step_times(args.model, prepared, cfg, device, args.steps)

    n_params = sum(p.numel() for p in trainable_parameters(ref_model))
    print(
        f"device: {device} ({device_name(device)})  threads: {torch.get_num_threads()}  "
        f"torch {torch.__version__}  torchvision {torchvision.__version__}  load average at start {load:.2f}"
    )
    print(
        f"data: {source}; train {n_train}, val {n_val}, test {n_test} images of 28x28; "
        f"mean {mean[0]:.4f}, std {std[0]:.4f}"
    )
    print(
        f"model: {args.model} ({n_params:,} trainable parameters); batch {BATCH}, SGD lr {LR} "
        f"momentum {MOMENTUM} weight decay {WEIGHT_DECAY}; penalty rbf, strength {STRENGTH}, width {WIDTH}"
    )
    print(
        f"timed: one epoch = training pass + evaluation of val and test (batch {EVAL_BATCH}) in every "
        f"variant; 1 warm-up + {args.repeats} timed epochs each, variants interleaved\n"
    )
    print(
        f"{'variant':36s} {'warm-up s':>9s} {'min s':>8s} {'median s':>9s} {'train img/s':>12s} "
        f"{'train loss':>11s} {'val acc':>8s}"
    )
    stats = {name: (min(ts), statistics.median(ts)) for name, ts in seconds.items()}
    for name, (lo, med) in stats.items():
        print(
            f"{name:36s} {warmup[name]:9.2f} {lo:8.2f} {med:9.2f} {n_train / med:12.0f} "
            f"{last[name][0]:11.4f} {last[name][1]:8.3f}"
        )
    names = list(stats)
    ref, pen, nopen = (stats[n] for n in names[:3])
    print(f"\nreference / ours (both with penalty): min {ref[0] / pen[0]:.2f}x, median {ref[1] / pen[1]:.2f}x")
    for name in names[3:]:
        print(f"reference / {name}: min {ref[0] / stats[name][0]:.2f}x, median {ref[1] / stats[name][1]:.2f}x")
    print(
        f"penalty overhead, whole epochs, ours with / without: min {pen[0] / nopen[0]:.3f}x, "
        f"median {pen[1] / nopen[1]:.3f}x"
    )
    with_pen, without = step_times
    print(
        f"penalty overhead, single training steps ({args.steps} each, alternating), with / without: "
        f"min {min(with_pen) / min(without):.3f}x, "
        f"median {statistics.median(with_pen) / statistics.median(without):.3f}x "
        f"(median step {statistics.median(without) * 1e3:.2f} ms without)"
    )
    print(
        "(img/s counts training images per whole epoch, evaluation included; all figures are from this "
        "one run: compare the ratios, not the seconds, across machines)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cnn", choices=MODELS)
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs per variant (default %(default)s)")
    ap.add_argument(
        "--also",
        nargs="*",
        choices=list(ALSO),
        default=list(ALSO),
        help="speed options timed as extra variants (default: %(default)s; none: --also)",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=100,
        help="training steps with and without the penalty for the per-step overhead (default %(default)s)",
    )
    ap.add_argument("--train-images", type=int, default=12000, help="synthetic training images (default %(default)s)")
    ap.add_argument("--data-dir", type=Path, help="use the real MNIST under DIR/MNIST/raw instead of synthetic data")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.data_dir is not None:
        try:
            datasets.MNIST(str(args.data_dir), train=True, download=False)
        except RuntimeError:
            raise SystemExit(f"no MNIST under {args.data_dir}: expected MNIST/raw/*-ubyte files there") from None
        benchmark(args, args.data_dir, f"MNIST from {args.data_dir}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthetic_mnist(root, args.train_images, 2000, SEED)
        check = datasets.MNIST(str(root), train=True, download=False)
        assert check.data.shape == (args.train_images, 28, 28) and len(check.targets) == args.train_images
        benchmark(args, root, f"synthetic digits in MNIST idx format ({args.train_images} + 2000 images)")


if __name__ == "__main__":
    main()
