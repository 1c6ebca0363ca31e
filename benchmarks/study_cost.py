"""What a config costs: jobs, epochs and device-hours, from a training step timed on this device.

For every dataset x model of the config it times training steps (batch, forward, backward,
penalty, SGD step) on synthetic data of the dataset's shape on this machine's device, turns them
into an epoch time (training pass only: evaluation adds roughly a tenth), and multiplies by the
epochs of every job the config expands to (base trainings and continuation runs, all seeds,
ensemble runs included; the landscape and predict jobs, a few forward passes each, are not).
Then the same for the config's packs (config key `pack`): each pack size's epoch is timed with
repel.pack.fit_pack on the same synthetic data, and the study's hours are summed over its packs
and the runs that train alone.

    python benchmarks/study_cost.py --configfile config/config.yaml
    python benchmarks/study_cost.py --configfile config/study.yaml --device cuda

The hours are for this device only: run it on the hardware you will use.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from gpu_speed import synthetic_images  # benchmarks/, the script's own directory

from repel import grid, models
from repel.pack import fit_pack
from repel.penalty import DistancePenalty
from repel.train import TrainConfig

# name -> (channels, image size, classes, training images after a 10 % validation split)
SHAPES = {
    "digits": (1, 8, 10, 1294),
    "mnist": (1, 28, 10, 54000),
    "fashion_mnist": (1, 28, 10, 54000),
    "cifar10": (3, 32, 10, 45000),
    "cifar100": (3, 32, 100, 45000),
}


def step_seconds(model_name: str, dataset: str, batch: int, device: torch.device, steps: int) -> float:
    """Median wall time of one training step with the penalty, on synthetic data."""
    channels, size, classes, _ = SHAPES[dataset]
    torch.manual_seed(0)
    model = models.build(model_name, channels, classes, size).to(device).train()
    params = models.trainable_parameters(model)
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3)
    penalty = DistancePenalty(1.0, "rbf", width=1.0)
    penalty.add_checkpoint(params)
    x = torch.randn(batch, channels, size, size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        penalty.add_grad_(params)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def pack_step_seconds(model_name: str, dataset: str, batch: int, device: torch.device, k: int, steps: int) -> float:
    """Wall time of one training step of a pack of k members (penalty on), from the second of two
    epochs of `steps` batches (the first is the warm-up)."""
    channels, size, classes, _ = SHAPES[dataset]
    data = synthetic_images(batch * steps, batch, batch, channels=channels, size=size, classes=classes)
    torch.manual_seed(0)
    nets = [models.build(model_name, channels, classes, size).to(device) for _ in range(k)]
    penalties = []
    for strength, net in enumerate(nets, 1):
        penalties.append(DistancePenalty(float(strength), "rbf", width=1.0))
        penalties[-1].add_checkpoint(models.trainable_parameters(net))
    rows = fit_pack(nets, data, TrainConfig(epochs=2, batch_size=batch), device, penalties, log=lambda msg: None)
    return rows[0][-1]["train_seconds"] / steps


def packed_hours(packs: dict, runs: dict, run_seeds: dict, epoch_alone: float, epoch_pack: dict) -> float:
    """Device-hours of one dataset/model's continuation jobs with the config's packs (grid.packs):
    each pack at its size's epoch time, the runs of no pack at one run's."""
    packed = {(rid, p["seed"]) for p in packs.values() for rid in p["runs"]}
    alone = sum(
        runs[rid]["spec"].training.epochs
        for rid, seeds in run_seeds.items()
        for seed in seeds
        if (rid, seed) not in packed
    )
    seconds = epoch_alone * alone
    for p in packs.values():
        seconds += epoch_pack[len(p["runs"])] * runs[p["runs"][0]]["spec"].training.epochs
    return seconds / 3600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default="config/config.yaml")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per model (default %(default)s)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    config = yaml.safe_load(Path(args.configfile).read_text())
    batch = config["base"].get("batch_size", 128)
    runs = grid.expand(config["continuation"], config["seeds"], config.get("ensembles"))
    run_seeds = {rid: grid.training_seeds(run) for rid, run in runs.items()}  # members' seeds too
    run_epochs = sum(run["spec"].training.epochs * len(run_seeds[rid]) for rid, run in runs.items())
    n_seeds = len({s for seeds in run_seeds.values() for s in seeds})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{args.configfile}: {len(runs)} grid points (family points, their controls, ensemble runs), "
        f"{n_seeds} seeds; timed on {device} ({name}), batch {batch}, torch {torch.__version__}\n"
    )
    packs = grid.packs(runs, grid.pack_size(config.get("pack", "auto")))
    pack_sizes = sorted({len(p["runs"]) for p in packs.values()})
    print(
        f"{'dataset':14s} {'model':12s} {'step ms':>8s} {'epoch s':>8s} {'base h':>8s} {'point h':>8s} {'all h':>9s} "
        f"{'packed h':>9s}"
    )
    total_hours, packed_total, jobs = 0.0, 0.0, 0  # training jobs: base and continuation runs
    for dataset in config["datasets"]:
        steps_per_epoch = math.ceil(SHAPES[dataset][3] / batch)
        for model_name in config["models"]:
            epoch = step_seconds(model_name, dataset, batch, device, args.steps) * steps_per_epoch
            base_hours = epoch * config["base"]["epochs"] / 3600
            point_hours = epoch * max(r["spec"].training.epochs for r in runs.values()) / 3600
            all_hours = n_seeds * base_hours + epoch * run_epochs / 3600
            epoch_pack = {
                k: pack_step_seconds(model_name, dataset, batch, device, k, args.steps) * steps_per_epoch
                for k in pack_sizes
            }
            packed = n_seeds * base_hours + packed_hours(packs, runs, run_seeds, epoch, epoch_pack)
            total_hours += all_hours
            packed_total += packed
            jobs += n_seeds + sum(len(seeds) for seeds in run_seeds.values())
            print(
                f"{dataset:14s} {model_name:12s} {epoch / steps_per_epoch * 1e3:8.1f} {epoch:8.1f} "
                f"{base_hours:8.2f} {point_hours:8.2f} {all_hours:9.1f} {packed:9.1f}"
            )
    pack_jobs = len(packs) * len(config["datasets"]) * len(config["models"])
    print(
        f"\nin all: {jobs} training jobs, {total_hours:.1f} device-hours on this device "
        "(base h: one base training; point h: the longest continuation run, one seed; all h: "
        "every base and continuation job of that dataset/model)"
    )
    print(
        f"packed (pack: {config.get('pack', 'auto')}, sizes {pack_sizes or 'none'}): {pack_jobs} pack jobs instead "
        f"of {sum(len(p['runs']) for p in packs.values()) * len(config['datasets']) * len(config['models'])} "
        f"runs, {packed_total:.1f} device-hours (packed h)"
    )


if __name__ == "__main__":
    main()
