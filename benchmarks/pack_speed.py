"""Packed training's speed: total training images/s of a pack of k members against one run alone.

For each model (--models) and pack size k (--ks), k members continue from one base model with a
distance penalty each (default rbf, width 1, strengths 1, 2, 3, ...: a grid's points differ only
in their penalty, and every member pays its own penalty's cost; --penalty none: no penalty) and
are trained by repel.pack.fit_pack for --epochs timed epochs after one warm-up epoch. Timed is
the training pass only (the rows' `train_seconds`: data, forward, backward, penalty, SGD), not the
evaluation of val and test. Printed per k: seconds per epoch, the total images/s over all members
(k * training images / seconds, median over the timed epochs), its ratio to the pack of k = 1
and to one member trained alone by repel.train.fit, as a grid job trains it today.

  CPU (default): the digits dataset (repel.data.prepare("digits"), offline), models cnn and mlp.
  --device cuda: ResNet-32 on synthetic CIFAR-shaped data (3x32x32 uint8, 10 classes, 10,000
                 train / 1,000 val / 1,000 test images), default speed options (bf16, channels_last).
Pack sizes whose estimated time would overrun --budget (default 240 s for the whole script) are
skipped and said so.

    python benchmarks/pack_speed.py                              # under a minute on 2 idle CPU cores
    python benchmarks/pack_speed.py --models mlp --ks 1 8 --epochs 5 --penalty none
    python benchmarks/pack_speed.py --device cuda                # within the budget on one H100
    python benchmarks/pack_speed.py --data synthetic-cifar --models resnet20 --ks 1 2 --train-images 256
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from gpu_speed import synthetic_images  # benchmarks/, the script's own directory
from machine import device_name

from repel.data import prepare
from repel.models import build, trainable_parameters
from repel.pack import fit_pack
from repel.penalty import DistancePenalty
from repel.train import TrainConfig, fit

WIDTH = 1.0
BASE_EPOCHS = 2  # the base model's training before the members continue from it (untimed)


def base_checkpoint(name: str, prepared: dict, device: torch.device):
    """A model trained BASE_EPOCHS epochs, its optimizer state and data generator state."""
    torch.manual_seed(0)
    x = prepared["train_x"]
    model = build(name, x.shape[1], prepared["num_classes"], x.shape[-1]).to(device)
    _, optimizer, generator = fit(model, prepared, TrainConfig(epochs=BASE_EPOCHS), device, log=lambda _: None)
    return model, optimizer.state_dict(), generator.get_state()


def members(base, k: int, kernel: str):
    """k copies of the base model, each with its own penalty centred on the base (None for 'none')."""
    models = [copy.deepcopy(base) for _ in range(k)]
    penalties = []
    for i, model in enumerate(models):
        penalty = None
        if kernel != "none":
            penalty = DistancePenalty(float(i + 1), kernel, width=WIDTH)
            penalty.add_checkpoint(trainable_parameters(model))
        penalties.append(penalty)
    return models, penalties


def train_seconds(run, epochs: int) -> float:
    """The median training-pass seconds per epoch of `run(epochs)`, after one warm-up epoch."""
    run(1)
    return statistics.median(row["train_seconds"] for row in run(epochs))


def measure(name: str, prepared: dict, args, device: torch.device, deadline: float) -> None:
    """Print the table for one model; pack sizes that would end after `deadline` are skipped."""
    base, optimizer_state, data_rng = base_checkpoint(name, prepared, device)
    n_train = len(prepared["train_y"])
    cfg = TrainConfig(epochs=args.epochs)

    def alone(epochs):
        (model,), (penalty,) = members(base, 1, args.penalty)
        return fit(
            model,
            prepared,
            TrainConfig(epochs=epochs),
            device,
            penalty=penalty,
            optimizer_state=optimizer_state,
            data_rng=data_rng,
            log=lambda _: None,
        )[0]

    def pack(k):
        def run(epochs):
            models, penalties = members(base, k, args.penalty)
            paths = []
            rows = fit_pack(
                models,
                prepared,
                TrainConfig(epochs=epochs),
                device,
                penalties,
                optimizer_states=[optimizer_state] * k,
                data_rng=data_rng,
                log=paths.append,
            )
            assert paths[0].startswith(f"pack of {k}: batched"), paths[0]  # timing the fallback would mislead
            return rows[0]

        return run

    n_params = sum(p.numel() for p in trainable_parameters(base))
    print(
        f"\n{name} ({n_params:,} parameters), {prepared['name']}: {n_train} training images of "
        f"{tuple(prepared['train_x'].shape[1:])}, batch {cfg.batch_size}, penalty {args.penalty}; "
        f"{args.epochs} timed epochs after 1 warm-up"
    )
    print(f"{'':>10s} {'train s/epoch':>14s} {'total img/s':>12s} {'x pack k=1':>11s} {'x fit alone':>12s}")
    start = time.perf_counter()
    single = n_train / train_seconds(alone, args.epochs)
    print(f"{'fit alone':>10s} {n_train / single:14.4f} {single:12.0f} {'':>11s} {1.0:12.2f}", flush=True)
    one = None  # the pack of 1's images/s
    member_seconds = 1 / single  # per member image, from the last measurement: to keep to the time budget
    for k in args.ks:
        label = f"pack k={k}"
        if time.perf_counter() + (args.epochs + 2) * k * n_train * member_seconds > deadline:
            print(f"{label:>10s}  skipped: would overrun the --budget", flush=True)
            continue
        seconds = train_seconds(pack(k), args.epochs)
        total = k * n_train / seconds
        member_seconds = 1 / total
        one = total if k == 1 else one
        ratio = f"{total / one:11.2f}" if one else f"{'':>11s}"
        print(f"{label:>10s} {seconds:14.4f} {total:12.0f} {ratio} {total / single:12.2f}", flush=True)
    print(f"({time.perf_counter() - start:.0f} s for {name})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--data",
        choices=["digits", "synthetic-cifar"],
        default=None,
        help="default: digits on CPU, synthetic CIFAR-shaped images on CUDA",
    )
    parser.add_argument("--train-images", type=int, default=10_000, help="training images of synthetic-cifar")
    parser.add_argument(
        "--models", nargs="+", default=None, help="default: cnn mlp on digits, resnet32 on synthetic-cifar"
    )
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8, 16], help="pack sizes")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement (after 1 warm-up)")
    parser.add_argument(
        "--penalty",
        default="rbf",
        choices=["rbf", "laplacian", "imq", "none"],
        help="every member's penalty kernel (strengths 1, 2, ...), or none",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--budget", type=float, default=240, help="seconds; pack sizes that would overrun are skipped")
    args = parser.parse_args(argv)
    deadline = time.perf_counter() + args.budget
    load = os.getloadavg()  # other work on the machine skews the figures, ratios included
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs  device: {device} "
        f"({device_name(device)})  threads: {torch.get_num_threads()}  torch {torch.__version__}"
    )
    data = args.data or ("synthetic-cifar" if device.type == "cuda" else "digits")
    if data == "synthetic-cifar":
        prepared = synthetic_images(args.train_images, 1_000, 1_000)
    else:
        prepared = prepare("digits", "unused", val_fraction=0.1, test_fraction=0.2, seed=0)
    for name in args.models or (["resnet32"] if data == "synthetic-cifar" else ["cnn", "mlp"]):
        measure(name, prepared, args, device, deadline)


if __name__ == "__main__":
    main()
