"""Datasets: prepared once into one compact tensor file, then loaded whole onto the device.

A prepared file holds uint8 images (N, C, H, W) and int64 labels for a train, validation and test
split, plus the per-channel mean/std of the training split. Training jobs load it in well under a
second and never touch PIL or a DataLoader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# name -> (torchvision class name, what the user must place under the data directory)
TORCHVISION_SETS = {
    "mnist": ("MNIST", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)"),
    "cifar10": ("CIFAR10", "cifar-10-python.tar.gz or its extracted cifar-10-batches-py/"),
    "cifar100": ("CIFAR100", "cifar-100-python.tar.gz or its extracted cifar-100-python/"),
}
DATASETS = ("digits", *TORCHVISION_SETS)
# pad-4 random crop + horizontal flip is the standard augmentation for these; none for digits
AUGMENTED = {"cifar10", "cifar100"}


class DatasetMissingError(ValueError):
    """The dataset is neither on disk nor downloadable."""


def _as_nchw_uint8(images) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images), dtype=torch.uint8)
    if x.ndim == 3:  # (N, H, W) grey images
        x = x.unsqueeze(1)
    elif x.shape[-1] == 3:  # (N, H, W, C) colour images from CIFAR
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()


def _load_digits():
    """scikit-learn's 8x8 handwritten digits: 1797 images, ships inside the package, no network."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # pixel values 0..16 -> 0..255
    return _as_nchw_uint8(images), torch.as_tensor(d.target, dtype=torch.int64), None, None


def _load_torchvision(name: str, root: Path, download: bool):
    import torchvision.datasets as tvd

    cls_name, expected = TORCHVISION_SETS[name]
    cls = getattr(tvd, cls_name)
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=False)
        except RuntimeError:
            if not download:
                raise DatasetMissingError(
                    f"dataset '{name}' not found under {root}: expected {expected} there (downloads are switched off)"
                ) from None
            try:  # torchvision's own download, which verifies its checksums
                ds = cls(root=str(root), train=train, download=True)
            except Exception as err:
                raise DatasetMissingError(
                    f"dataset '{name}' is not under {root} and could not be downloaded ({err}). "
                    f"Put {expected} into {root} (for example copied from a machine with network "
                    "access or from your cluster's shared storage) and run again."
                ) from err
        images = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else ds.data
        splits += [_as_nchw_uint8(images), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)]
    return splits


def prepare(
    name: str,
    data_dir: str | Path = "data",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    download: bool = True,
) -> dict:
    """Read a dataset and split it reproducibly: the same seed always gives the same split.

    Sets with an official test split keep it; the validation split is taken from the training set.
    `test_fraction` is used only for sets without a test split (digits).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; expected one of {', '.join(DATASETS)}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    g = torch.Generator().manual_seed(seed)
    if name == "digits":
        x, y, test_x, test_y = _load_digits()
        perm = torch.randperm(len(y), generator=g)
        n_test = round(test_fraction * len(y))
        test_x, test_y = x[perm[:n_test]], y[perm[:n_test]]
        x, y = x[perm[n_test:]], y[perm[n_test:]]
    else:
        x, y, test_x, test_y = _load_torchvision(name, Path(data_dir), download)
    perm = torch.randperm(len(y), generator=g)
    n_val = round(val_fraction * len(y))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    if min(len(train_idx), len(val_idx), len(test_y)) < 1:  # the workflow checks this before any job
        fractions = f"val_fraction {val_fraction}" + (f", test_fraction {test_fraction}" if name == "digits" else "")
        raise ValueError(
            f"{name} would be split into {len(train_idx)} training, {len(val_idx)} validation and "
            f"{len(test_y)} test images ({fractions}); every split needs at least one image"
        )
    train_x = x[train_idx]
    # one channel at a time keeps the float copy small (CIFAR's training set is 600 MB as float32)
    channels = (train_x[:, c].float() / 255 for c in range(train_x.shape[1]))
    mean, std = zip(*((c.mean(), c.std()) for c in channels))
    return {
        "name": name,
        "train_x": train_x,
        "train_y": y[train_idx],
        "val_x": x[val_idx],
        "val_y": y[val_idx],
        "test_x": test_x,
        "test_y": test_y,
        "num_classes": int(max(y.max(), test_y.max()) + 1),
        "mean": torch.stack(mean),
        "std": torch.stack(std),
        "augment": name in AUGMENTED,
        "seed": seed,
    }


def load(path: str | Path) -> dict:
    """Load a prepared dataset file (plain tensors only: nothing in it can run code)."""
    # imported here, not at the top: training needs only torch, and storage imports pandas
    from .storage import load_torch

    return load_torch(path, "data")


class DeviceData:
    """One split resident on the device, served in shuffled batches with batch-wise augmentation."""

    def __init__(self, prepared: dict, split: str, device: torch.device):
        self.x = prepared[f"{split}_x"].to(device)
        self.y = prepared[f"{split}_y"].to(device)
        self.mean = prepared["mean"].to(device).view(1, -1, 1, 1)
        self.std = prepared["std"].to(device).view(1, -1, 1, 1)
        self.augment = bool(prepared["augment"]) and split == "train"
        self.device = device

    def __len__(self) -> int:
        return len(self.y)

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        return (xb.float() / 255 - self.mean) / self.std

    def batches(self, batch_size: int, generator: torch.Generator | None = None, channels_last: bool = False):
        """Yield (images, labels); shuffled and augmented when a CPU generator is given.

        The epoch's random numbers are drawn on the CPU up front and moved to the device once: a
        CPU tensor copied to a GPU inside the loop would make every step wait for the GPU.
        """
        n = len(self)
        order = offsets = flips = None
        if generator is not None:
            order = torch.randperm(n, generator=generator).to(self.device)
            if self.augment:
                offsets, flips = draw_crop_flip(n, generator)
                offsets, flips = offsets.to(self.device), flips.to(self.device)
        for start in range(0, n, batch_size):
            end = start + batch_size
            idx = order[start:end] if order is not None else slice(start, end)
            xb, yb = self.x[idx], self.y[idx]
            if offsets is not None:
                xb = crop_flip(xb, offsets[:, start:end], flips[start:end])
            xb = self.normalize(xb)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb


def draw_crop_flip(n: int, generator: torch.Generator, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop offsets (2, n) in [0, 2 pad] and horizontal flips (n,), from a CPU generator,
    so a run is reproducible on any device."""
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    return offsets, torch.rand(n, generator=generator) < 0.5


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Crop each image at its (row, column) offset into the padded image and flip where asked, one gather."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
