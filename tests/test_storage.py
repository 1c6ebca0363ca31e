"""A missing or unusable input file stops a job with a message that names the file, says what it
should be and what to do; a file that would run code when unpickled is refused, and never run."""

import os
import shutil

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
    assert main(["train-base", "--data", str(root / "data.pt"), "--model", "cnn", "--epochs", "1",
                 "--threads", "1", "--device", "cpu", "--out-dir", str(root / "base")]) == 0
    f = {"data": root / "data.pt", "checkpoint": root / "base" / "checkpoint.pt",
         "metrics": root / "base" / "metrics.parquet", "weights": root / "weights.pt",
         "marker": root / "MARKER", "random": root / "random.pt", "hostile": root / "hostile.pt"}
    # a run's weights as `continue` writes them: the model's state dict alone
    torch.save(torch.load(f["checkpoint"], weights_only=True)["model"], f["weights"])
    f["random"].write_bytes(os.urandom(20_000))
    torch.save({"model": Hostile(f["marker"])}, f["hostile"])
    # the hostile file really runs its command when it is unpickled without weights_only
    torch.load(f["hostile"], weights_only=False)
    assert f["marker"].exists()
    f["marker"].unlink()
    return f


# the argument under test -> (command line with BAD in its place, which real file it stands for,
# what the message must call it); every command writes under OUT
SLOTS = {
    "train-base --data": (["train-base", "--data", "BAD", "--model", "cnn", "--epochs", "1", "--out-dir", "OUT"],
                          "data", "a prepared dataset"),
    "continue --data": (["continue", "--data", "BAD", "--checkpoint", "CKPT", "--run", "r", "--strength", "1",
                         "--width", "1", "--epochs", "1", "--out-dir", "OUT"], "data", "a prepared dataset"),
    "continue --checkpoint": (["continue", "--data", "DATA", "--checkpoint", "BAD", "--run", "r", "--strength", "1",
                               "--width", "1", "--epochs", "1", "--out-dir", "OUT"], "checkpoint", "a base checkpoint"),
    "predict --checkpoints": (["predict", "--data", "DATA", "--checkpoints", "BAD", "--members", "WEIGHTS",
                               "--method", "m", "--out", "OUT/p.pt"], "checkpoint", "a base checkpoint"),
    "predict --members": (["predict", "--data", "DATA", "--checkpoints", "CKPT", "--members", "BAD",
                           "--method", "m", "--out", "OUT/p.pt"], "weights", "an ensemble member's weights"),
    "landscape --checkpoint": (["landscape", "--data", "DATA", "--checkpoint", "BAD", "--weights", "WEIGHTS",
                                "--run", "r", "--out", "OUT/l.parquet"], "checkpoint", "a base checkpoint"),
    "landscape --weights": (["landscape", "--data", "DATA", "--checkpoint", "CKPT", "--weights", "BAD",
                             "--run", "r", "--out", "OUT/l.parquet"], "weights", "a continuation run's weights"),
    "landscape --between": (["landscape", "--between", "--data", "DATA", "--checkpoint", "CKPT", "--weights",
                             "WEIGHTS", "BAD", "--run", "r", "--out", "OUT/l.parquet"],
                            "weights", "an ensemble member's weights"),
    "ensembles --predictions": (["ensembles", "--predictions", "BAD", "--member-landscapes", "OUT/none.parquet",
                                 "--out-dir", "OUT"], "weights", "stored ensemble predictions"),
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
        assert "holds objects other than tensors" in err and "nothing in it was run" in err
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
