import struct

import numpy as np
import torch

from repel import data
from repel.cli import main


def _write_idx(path, array: np.ndarray, magic: int):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def fake_mnist(root, n_train=60, n_test=20):
    """A tiny dataset in MNIST's own file format, read by torchvision's real MNIST class."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 2049)


def test_digits_split_is_complete_disjoint_and_reproducible(digits):
    again = data.prepare("digits", "unused", val_fraction=0.1, test_fraction=0.2, seed=0)
    assert torch.equal(digits["val_y"], again["val_y"]) and torch.equal(digits["train_x"], again["train_x"])
    n = [len(digits[f"{s}_y"]) for s in ("train", "val", "test")]
    assert sum(n) == 1797 and n[2] == round(0.2 * 1797)
    assert digits["train_x"].dtype == torch.uint8 and digits["train_x"].shape[1:] == (1, 8, 8)
    assert digits["train_x"].max() == 255 and digits["num_classes"] == 10
    other = data.prepare("digits", "unused", val_fraction=0.1, test_fraction=0.2, seed=1)
    assert not torch.equal(digits["val_y"], other["val_y"])
    # no image is in two splits
    rows = {s: {bytes(x.numpy()) for x in digits[f"{s}_x"]} for s in ("train", "val", "test")}
    assert len(rows["val"] & rows["test"]) < 3  # digits has a few duplicate images, not whole splits


def test_mnist_files_on_disk_are_used_without_download(tmp_path):
    fake_mnist(tmp_path)
    prepared = data.prepare("mnist", tmp_path, val_fraction=0.25, test_fraction=0.2, seed=0, download=False)
    assert prepared["train_x"].shape == (45, 1, 28, 28) and len(prepared["val_y"]) == 15
    assert len(prepared["test_y"]) == 20 and prepared["augment"] is False


def test_missing_dataset_without_download_says_where_to_put_which_files(tmp_path, capsys):
    rc = main(
        [
            "prepare",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path),
            "--no-download",
            "--out",
            str(tmp_path / "out.pt"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "cifar-10-python.tar.gz" in err and str(tmp_path) in err
    assert not (tmp_path / "out.pt").exists()


def test_prepared_file_round_trips_through_a_safe_load(tmp_path, digits):
    out = tmp_path / "digits.pt"
    assert main(["prepare", "--dataset", "digits", "--out", str(out)]) == 0
    loaded = data.load(out)
    assert torch.equal(loaded["test_x"], digits["test_x"])


def test_crop_and_flip_move_whole_images_within_the_padding():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).view(2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    offsets, flips = data.draw_crop_flip(len(x), g, pad=2)
    out = data.crop_flip(x, offsets, flips, pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_device_data_serves_every_training_image_once_per_epoch(digits):
    train = data.DeviceData(digits, "train", torch.device("cpu"))
    labels = torch.cat([yb for _, yb in train.batches(128, torch.Generator().manual_seed(0))])
    assert torch.equal(labels.sort().values, digits["train_y"].sort().values)
    xb, _ = next(train.batches(2000))
    assert abs(xb.mean().item()) < 1e-4  # normalised with the training split's own statistics
