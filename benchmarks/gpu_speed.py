"""One GPU, one run: ResNet-32 on CIFAR-10-shaped data, our training loop against a reference.

Meant for a bare GPU machine (H100/H200) that has PyTorch and torchvision but maybe none of the
project's other packages and no network: the data are synthetic uint8 images of CIFAR-10's shape
(45,000 train / 5,000 val / 10,000 test, 3x32x32, 10 classes) and `repel` is imported from ./src.
It prints, with the device and versions, min and median over repeats of:

  ours          repel.train.fit(epochs=1) with the distance penalty (rbf), default speed options
                (on CUDA: bf16 autocast, channels_last, no torch.compile): the training pass
                (train_seconds) and the whole epoch with evaluating val and test (epoch_seconds)
  ours, no pen. the same without the penalty: the penalty's overhead
  reference     torchvision-style: per-image PIL transforms (RandomCrop(32, 4), RandomHorizontalFlip,
                ToTensor, Normalize) in a DataLoader (shuffle, --ref-workers workers (2), pinned memory),
                the penalty as a Python loop over parameter tensors under autograd, fp32, NCHW,
                loss.item() every step. It is timed over --ref-steps steps after warm-up and
                extrapolated to a whole training pass (said so in the output).
  sharing       k = 1, 2, 4, 8 small trainings (ResNet-32 with the penalty on 10,000 images) as
                separate processes on the one GPU: total images/s of all k against k = 1
  packs         k = 1, 4, 16 members (--pack) of one pack (repel.pack.fit_pack, one batched step for
                all) on the same 10,000 images: total images/s against k = 1 (benchmarks/pack_speed.py)
  compiled      ours with torch.compile (--compile-modes; default reduce-overhead, which uses CUDA
                graphs), last because compiling takes the longest; skipped unless 150 s of budget remain

The whole script keeps to --budget seconds (default 280) by skipping what would not fit.

    python benchmarks/gpu_speed.py                 # on the GPU machine, from the repository root
    python benchmarks/gpu_speed.py --smoke         # tiny sizes, any device (CPU too): does it run?
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from machine import device_name  # benchmarks/, the script's own directory

from repel.models import build, trainable_parameters
from repel.penalty import DistancePenalty
from repel.train import TrainConfig, fit, resolve_speed

BATCH, LR, MOMENTUM, WEIGHT_DECAY = 128, 0.1, 0.9, 5e-4
STRENGTH, WIDTH = 1.0, 10.0
SIZES = {  # (train, val, test) images
    "full": (45000, 5000, 10000),
    "share": (10000, 1000, 1000),
    "smoke": (384, 128, 128),
    "smoke-share": (256, 64, 64),
}


def synthetic_images(
    n_train: int, n_val: int, n_test: int, seed: int = 0, channels: int = 3, size: int = 32, classes: int = 10
) -> dict:
    """A prepared dataset (as repel.data.prepare returns) of random uint8 images and labels, CIFAR-10's
    shape by default; augmented as repel augments its sets of that shape (colour: crop and flip)."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        return (
            torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8),
            torch.randint(0, classes, (n,), generator=g),
        )

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(n_train), split(n_val), split(n_test)
    pixels = train_x.float().div(255).transpose(0, 1).reshape(channels, -1)
    return {
        "name": f"synthetic-{channels}x{size}x{size}",
        "train_x": train_x,
        "train_y": train_y,
        "val_x": val_x,
        "val_y": val_y,
        "test_x": test_x,
        "test_y": test_y,
        "num_classes": classes,
        "mean": pixels.mean(1),
        "std": pixels.std(1),
        "augment": channels == 3,
        "seed": seed,
    }


def new_model(name: str, device) -> torch.nn.Module:
    torch.manual_seed(0)  # every variant starts from the same initialisation
    return build(name, 3, 10, 32).to(device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def min_med(values) -> str:
    return f"min {min(values):7.3f}  median {statistics.median(values):7.3f}"


class Ours:
    """Repeated one-epoch fit() calls on one model, as a long run's epochs are."""

    def __init__(self, args, prepared, device, penalty: bool, **speed):
        self.model = new_model(args.model, device)
        self.penalty = None
        if penalty:
            self.penalty = DistancePenalty(STRENGTH, "rbf", width=WIDTH)
            self.penalty.add_checkpoint(trainable_parameters(self.model))
        self.cfg = dataclasses.replace(
            TrainConfig(epochs=1, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, batch_size=BATCH), **speed
        )
        self.prepared, self.device = prepared, device
        self.train_s, self.epoch_s = [], []

    def epoch(self, record: bool = True) -> dict:
        row = fit(self.model, self.prepared, self.cfg, self.device, penalty=self.penalty, log=lambda _: None)[0][-1]
        if record:
            self.train_s.append(row["train_seconds"])
            self.epoch_s.append(row["epoch_seconds"])
        return row


class PilImages(torch.utils.data.Dataset):
    """As torchvision.datasets.CIFAR10 serves images: HWC uint8 arrays, one PIL image per item."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.data, self.targets, self.transform = x.permute(0, 2, 3, 1).numpy(), y.tolist(), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def reference_step_seconds(args, prepared, device, steps: int, warmup: int) -> list[float]:
    """Seconds per training step of the straightforward implementation."""
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(prepared["mean"].tolist(), prepared["std"].tolist()),
        ]
    )
    loader = torch.utils.data.DataLoader(
        PilImages(prepared["train_x"], prepared["train_y"], tf),
        batch_size=BATCH,
        shuffle=True,
        num_workers=args.ref_workers,
        pin_memory=device.type == "cuda",
    )
    model = new_model(args.model, device)
    params = trainable_parameters(model)
    centers = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    model.train()
    times, start = [], time.perf_counter()
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        d = sum(((p - c) ** 2).sum() for p, c in zip(params, centers))
        loss = F.cross_entropy(model(x), y) + STRENGTH * torch.exp(-d / (2 * WIDTH**2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the usual running-loss bookkeeping; it also waits for the GPU
        now = time.perf_counter()
        if i >= warmup:
            times.append(now - start)
        start = now
        if len(times) == steps:
            break
    return times


def share_worker(rank: int, args, barrier, results) -> None:
    """One of k concurrent small trainings: warm up, wait for the others, then time its epochs."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ours = Ours(
        args, synthetic_images(*SIZES["smoke-share" if args.smoke else "share"], seed=rank), device, penalty=True
    )
    ours.epoch(record=False)
    sync(device)
    barrier.wait()
    images = 0
    for _ in range(args.share_epochs):
        ours.epoch()
        images += len(ours.prepared["train_y"])
    sync(device)
    results.put(images)


def sharing(args, k: int) -> float:
    """Total training images/s of k concurrent processes, from the moment all are warm to the last one's end."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(k + 1), ctx.Queue()
    procs = [ctx.Process(target=share_worker, args=(rank, args, barrier, results)) for rank in range(k)]
    for p in procs:
        p.start()
    barrier.wait(timeout=300)
    start = time.perf_counter()
    images = sum(results.get(timeout=300) for _ in range(k))
    seconds = time.perf_counter() - start
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a sharing worker failed (exit code {p.exitcode})")
    return images / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    ap.add_argument("--model", default="resnet32")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs per variant of ours (default %(default)s)")
    ap.add_argument("--ref-steps", type=int, default=60, help="timed reference steps (default %(default)s)")
    ap.add_argument(
        "--ref-workers",
        type=int,
        default=2,
        help="reference DataLoader workers (default %(default)s, as in PyTorch's CIFAR-10 tutorial)",
    )
    ap.add_argument("--share", type=int, nargs="*", default=[1, 2, 4, 8], help="k for the sharing figure")
    ap.add_argument("--share-epochs", type=int, default=2, help="timed epochs per sharing process (and per pack)")
    ap.add_argument("--pack", type=int, nargs="*", default=[1, 4, 16], help="k for the packs figure")
    ap.add_argument(
        "--compile-modes",
        nargs="*",
        default=["reduce-overhead"],
        help="torch.compile modes for the compiled variant of ours (none: --compile-modes)",
    )
    ap.add_argument("--budget", type=float, default=280, help="seconds; later parts are skipped past it")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, 1 repeat, k = 1 and 2, no compile: checks that the script runs",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke:
        args.repeats, args.ref_steps, args.ref_workers, args.share_epochs = 1, 2, 0, 1
        args.share, args.compile_modes = [k for k in args.share if k <= 2], []
        args.pack = [1, 2]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import torchvision

    print(
        f"device: {device} ({device_name(device)})  torch {torch.__version__}  torchvision "
        f"{torchvision.__version__}  CUDA {torch.version.cuda}  CPU threads {torch.get_num_threads()}"
    )
    sizes = SIZES["smoke" if args.smoke else "full"]
    prepared = synthetic_images(*sizes)
    steps_per_epoch = -(-sizes[0] // BATCH)
    print(
        f"data: synthetic uint8 images, train {sizes[0]} / val {sizes[1]} / test {sizes[2]}, 3x32x32, "
        f"crop+flip augmentation; model {args.model}, batch {BATCH} ({steps_per_epoch} steps per epoch), "
        f"SGD lr {LR} momentum {MOMENTUM} wd {WEIGHT_DECAY}; penalty rbf s={STRENGTH} width={WIDTH}"
    )

    def over_budget(part: str, needs: float = 0) -> bool:
        """Whether `part`, which takes about `needs` seconds, would end past the budget."""
        if time.perf_counter() - t0 + needs > args.budget:
            print(f"\n{part}: skipped, it would not finish within the budget of {args.budget:.0f} s")
            return True
        return False

    # ours, default speed options, with and without the penalty, epochs interleaved
    with_pen, without = Ours(args, prepared, device, penalty=True), Ours(args, prepared, device, penalty=False)
    speed = resolve_speed(with_pen.cfg, with_pen.model, device)
    for first in (True, *[False] * args.repeats):
        for ours in (with_pen, without):
            ours.epoch(record=not first)
    print(
        f"\nours (default speed options here: bf16 autocast {speed.amp}, channels_last {speed.channels_last}, "
        f"torch.compile {speed.compile_mode or 'off'}; "
        f"1 warm-up + {args.repeats} epochs), seconds:"
    )
    print(f"  with penalty     training pass {min_med(with_pen.train_s)}   whole epoch {min_med(with_pen.epoch_s)}")
    print(f"  without penalty  training pass {min_med(without.train_s)}   whole epoch {min_med(without.epoch_s)}")
    overhead = [a / b for a, b in zip(with_pen.train_s, without.train_s)]
    print(f"  penalty overhead (training pass, with / without, per round): {min_med(overhead)}")
    ours_train = statistics.median(with_pen.train_s)

    if not over_budget("reference"):
        warmup = 1 if args.smoke else 5
        times = reference_step_seconds(args, prepared, device, args.ref_steps, warmup)
        per_epoch = [t * steps_per_epoch for t in times]
        print(
            f"\nreference ({args.ref_workers} DataLoader workers, fp32): {len(times)} steps timed after "
            f"{warmup} warm-up, extrapolated to {steps_per_epoch} steps:"
        )
        print(f"  training pass (extrapolated) {min_med(per_epoch)}   per step {min_med(times)}")
        print(
            f"  reference / ours, training pass with penalty: median {statistics.median(per_epoch) / ours_train:.2f}x, "
            f"min {min(per_epoch) / min(with_pen.train_s):.2f}x"
        )

    if args.share and not over_budget("sharing"):
        print(
            f"\nsharing one {device.type} device: k processes, each {args.model} with the penalty on "
            f"{SIZES['smoke-share' if args.smoke else 'share'][0]} images, "
            f"{args.share_epochs} timed epochs after 1 warm-up"
        )
        base = None
        for k in args.share:
            if over_budget(f"sharing k={k}"):
                break
            rate = sharing(args, k)
            base = base or rate
            print(f"  k={k}: total {rate:9.0f} images/s   {rate / base:5.2f}x k=1")

    if args.pack and not over_budget("packs"):
        from types import SimpleNamespace

        from pack_speed import measure  # benchmarks/

        share = synthetic_images(*SIZES["smoke-share" if args.smoke else "share"])
        print("\npacks: k members in one process, one batched step for all (GPU packing defaults come from here)")
        measure(
            args.model,
            share,
            SimpleNamespace(epochs=args.share_epochs, penalty="rbf", ks=args.pack),
            device,
            deadline=t0 + args.budget,
        )

    for mode in args.compile_modes:
        if over_budget(f"compile={mode}", needs=0 if args.smoke else 150):  # compiling takes minutes
            break
        try:
            compiled = Ours(args, prepared, device, penalty=True, compile=mode)
            start = time.perf_counter()
            compiled.epoch(record=False)
            warm = time.perf_counter() - start
            for _ in range(args.repeats):
                compiled.epoch()
        except Exception as err:  # noqa: BLE001 -- report and go on: a compile failure is a result too
            print(f"\nours with compile={mode}: failed: {type(err).__name__}: {err}")
            continue
        print(f"\nours with compile={mode} (first epoch, compiling included: {warm:.1f} s), seconds:")
        print(f"  with penalty     training pass {min_med(compiled.train_s)}   whole epoch {min_med(compiled.epoch_s)}")
        print(
            f"  ours compiled / ours default, training pass: median "
            f"{statistics.median(compiled.train_s) / ours_train:.2f}x"
        )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
