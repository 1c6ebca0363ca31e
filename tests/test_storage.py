"""A missing or unusable input file stops a job with a message that names the file, says what it
should be and what to do; a file that would run code when unpickled is refused, and never run."""

import os
import shutil
from pathlib import Path

import pytest
import torch

from repel.cli import main

DELETE_AND_RERUN = "delete it and run the workflow again"


class Hostile:
    """Unpickled without weights_only, this runs a shell command that writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _half(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    assert main(["prepare", "--dataset", "digits", "--out", str(root / "data.pt")]) == 0
    assert (
        main(
            [
                "train-base",
                "--data",
                str(root / "data.pt"),
                "--model",
                "cnn",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--device",
                "cpu",
                "--out-dir",
                str(root / "base"),
            ]
        )
        == 0
    )
    f = {
        "data": root / "data.pt",
        "checkpoint": root / "base" / "checkpoint.pt",
        "metrics": root / "base" / "metrics.parquet",
        "weights": root / "weights.pt",
        "marker": root / "MARKER",
        "random": root / "random.pt",
        "hostile": root / "hostile.pt",
    }
    # a run's weights as `continue` writes them: the model's state dict alone
    torch.save(torch.load(f["checkpoint"], weights_only=True)["model"], f["weights"])
    f["random"].write_bytes(os.urandom(20_000))
    torch.save({"model": Hostile(f["marker"])}, f["hostile"])
    # the hostile file really runs its command when it is unpickled without weights_only
    torch.load(f["hostile"], weights_only=False)
    assert f["marker"].exists()
    f["marker"].unlink()
    return f


SPEC = ["--spec", '{"strength": 1, "width": 1, "epochs": 1}']
# the argument under test -> (command line with BAD in its place, which real file it stands for,
# what the message must call it); every command writes under OUT
SLOTS = {
    "train-base --data": (
        ["train-base", "--data", "BAD", "--model", "cnn", "--epochs", "1", "--out-dir", "OUT"],
        "data",
        "a prepared dataset",
    ),
    "continue --data": (
        ["continue", "--data", "BAD", "--checkpoint", "CKPT", *SPEC, "--out-dir", "OUT"],
        "data",
        "a prepared dataset",
    ),
    "continue --checkpoint": (
        ["continue", "--data", "DATA", "--checkpoint", "BAD", *SPEC, "--out-dir", "OUT"],
        "checkpoint",
        "a base checkpoint",
    ),
    "predict --checkpoints": (
        [
            "predict",
            "--data",
            "DATA",
            "--checkpoints",
            "BAD",
            "--members",
            "WEIGHTS",
            "--method",
            "m",
            "--ensemble",
            "e",
            "--out",
            "OUT/p.pt",
        ],
        "checkpoint",
        "a base checkpoint",
    ),
    "predict --members": (
        [
            "predict",
            "--data",
            "DATA",
            "--checkpoints",
            "CKPT",
            "--members",
            "BAD",
            "--method",
            "m",
            "--ensemble",
            "e",
            "--out",
            "OUT/p.pt",
        ],
        "weights",
        "an ensemble member's weights",
    ),
    "landscape --checkpoint": (
        [
            "landscape",
            "--data",
            "DATA",
            "--checkpoint",
            "BAD",
            "--weights",
            "WEIGHTS",
            "--run",
            "r",
            "--out",
            "OUT/l.parquet",
        ],
        "checkpoint",
        "a base checkpoint",
    ),
    "landscape --weights": (
        [
            "landscape",
            "--data",
            "DATA",
            "--checkpoint",
            "CKPT",
            "--weights",
            "BAD",
            "--run",
            "r",
            "--out",
            "OUT/l.parquet",
        ],
        "weights",
        "a continuation run's weights",
    ),
    "ensembles --predictions": (
        ["ensembles", "--predictions", "BAD", "--member-landscapes", "OUT/none.parquet", "--out-dir", "OUT"],
        "weights",
        "stored ensemble predictions",
    ),
    "aggregate --runs": (["aggregate", "--runs", "BAD", "--out-dir", "OUT"], "metrics", "a run's metrics table"),
}


def _run(files, slot, bad, out, capsys):
    argv, _, _ = SLOTS[slot]
    names = {"BAD": bad, "DATA": files["data"], "CKPT": files["checkpoint"], "WEIGHTS": files["weights"]}
    argv = [str(names[a]) if a in names else a.replace("OUT", str(out)) for a in argv]
    if argv[0] in ("train-base", "continue", "predict", "landscape"):
        argv += ["--device", "cpu", "--threads", "1"]
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("slot", SLOTS)
@pytest.mark.parametrize("damage", ["truncated", "random bytes", "hostile pickle"])
def test_a_bad_input_file_is_named_with_what_to_do(files, slot, damage, tmp_path, capsys):
    _, real, what = SLOTS[slot]
    bad = tmp_path / f"bad-{files[real].name}"
    if damage == "truncated":
        _half(files[real], bad)
    else:
        shutil.copy(files["random" if damage == "random bytes" else "hostile"], bad)
    out = tmp_path / "out"

    code, err = _run(files, slot, bad, out, capsys)

    assert code == 1
    assert err.startswith("repel: error: ") and "Traceback" not in err
    assert str(bad) in err and what in err and DELETE_AND_RERUN in err
    assert "weights_only" not in err
    if damage == "hostile pickle" and slot != "aggregate --runs":
        assert "holds objects other than" in err and "nothing in it was run" in err
    assert not files["marker"].exists()
    assert not out.exists()  # nothing was written


@pytest.mark.parametrize("slot", SLOTS)
def test_a_missing_input_file_is_named(files, slot, tmp_path, capsys):
    _, _, what = SLOTS[slot]
    missing = tmp_path / "nowhere" / "file"
    out = tmp_path / "out"

    code, err = _run(files, slot, missing, out, capsys)

    assert code == 1
    assert err.startswith("repel: error: ") and "Traceback" not in err
    assert str(missing) in err and ("missing" in err or "not found" in err)
    assert what in err and "run the workflow" in err
    assert not out.exists()


def _state_of(model: str, in_channels: int = 1, num_classes: int = 10) -> dict:
    from repel import models

    return models.from_arch(
        {"model": model, "in_channels": in_channels, "num_classes": num_classes, "image_size": 8}
    ).state_dict()


# a valid file of the wrong kind in a slot: what it holds, and what the message must say of it
WRONG_KIND = {
    "predictions as a checkpoint": (
        "continue --checkpoint",
        lambda f: {"probs": torch.zeros(2, 3, 10)},
        "holds a dict of probs, without model, optimizer, epoch",
    ),
    "weights as a checkpoint": (
        "landscape --checkpoint",
        lambda f: torch.load(f["weights"], weights_only=True),
        "without model, optimizer, epoch, rng, arch, config",
    ),
    "another architecture's snapshot": (
        "predict --members",
        lambda f: _state_of("mlp"),
        "holds the weights of another network than cnn",
    ),
    "a checkpoint as weights": (
        "landscape --weights",
        lambda f: torch.load(f["checkpoint"], weights_only=True),
        "not a network's weights",
    ),
}


@pytest.mark.parametrize("case", WRONG_KIND)
def test_a_valid_file_of_the_wrong_kind_is_named_with_what_it_holds(files, case, tmp_path, capsys):
    slot, content, holds = WRONG_KIND[case]
    bad = tmp_path / "wrong.pt"
    torch.save(content(files), bad)
    code, err = _run(files, slot, bad, tmp_path / "out", capsys)
    assert code == 1 and "Traceback" not in err
    assert str(bad) in err and holds in err and SLOTS[slot][2] in err
    assert not (tmp_path / "out").exists()


def test_a_metrics_table_without_the_grid_columns_is_named(files, tmp_path, capsys):
    import pandas as pd

    bad = tmp_path / "metrics.parquet"
    pd.DataFrame({"phase": ["continue"], "run": ["r"], "seed": [0], "epoch": [1], "val_acc": [0.5]}).to_parquet(bad)
    code, err = _run(files, "aggregate --runs", bad, tmp_path / "out", capsys)
    assert code == 1 and str(bad) in err and "has no column control, strength, kernel" in err


def test_a_write_that_fails_leaves_no_temporary_file_and_says_why(tmp_path, monkeypatch):
    from repel import storage

    def full_disk(obj, path):  # as torch.save fails on a full disk: a part written, then its own words
        Path(path).write_bytes(b"part of a file")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 80512 vs 80408")

    monkeypatch.setattr(torch, "save", full_disk)  # storage imports torch where it saves
    with pytest.raises(
        OSError,
        match=r"could not write .*final\.pt: the write stopped short, as it does on a full "
        r"disk \(\d+ bytes free on its disk\)",
    ):
        storage.save_torch({}, tmp_path / "final.pt")

    # the operating system's own reason, where it gives one (/dev/full: no space left on device)
    def no_space(tmp):
        tmp.write_text("x")
        with open("/dev/full", "w") as full:
            full.write("y")

    with pytest.raises(OSError, match="could not write .*summary.md: No space left on device"):
        storage._write(tmp_path / "summary.md", no_space)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
