"""A checkpoint at initialization (base.epochs 0, a run's `start: init`): the initial weights, with the
optimizer and data order a base training starts from, so that continuing them is training from scratch."""

import json

import pandas as pd
import pytest
import torch

from repel import models
from repel.cli import main
from repel.storage import load_torch


def _base(root, epochs, model="mlp", seed=3):
    out = root / f"base-{model}-{epochs}"
    args = ["train-base", "--data", str(root / "digits.pt"), "--model", model, "--seed", str(seed)]
    assert main([*args, "--epochs", str(epochs), "--threads", "1", "--device", "cpu", "--out-dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    assert main(["prepare", "--dataset", "digits", "--out", str(root / "digits.pt")]) == 0
    return root


def test_epoch_zero_is_the_seeds_initial_weights(root):
    out = _base(root, 0)
    ckpt = load_torch(out / "checkpoint.pt")
    assert ckpt["epoch"] == 0 and ckpt["optimizer"]["state"] == {}  # no step taken: no momentum yet
    torch.manual_seed(3)  # the initialisation, built by hand from the seed
    by_hand = models.from_arch(ckpt["arch"]).state_dict()
    assert by_hand.keys() == ckpt["model"].keys()
    assert all(torch.equal(by_hand[k], ckpt["model"][k]) for k in by_hand)
    assert len(pd.read_parquet(out / "metrics.parquet")) == 0


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_continuing_the_initial_weights_without_penalty_is_the_base_training(root, model):
    """Epoch 0 continued for 2 epochs at the base's lr with s = 0 ends bit-identical to a base training
    of 2 epochs: the same weights, optimizer, torch and data generator states."""
    init, trained = _base(root, 0, model), _base(root, 2, model)
    spec = {"strength": 0, "epochs": 2, "lr": 0.01, "start": "init"}
    out = root / f"from-init-{model}"
    args = ["continue", "--data", str(root / "digits.pt"), "--checkpoint", str(init / "checkpoint.pt")]
    assert main([*args, "--spec", json.dumps(spec), "--threads", "1", "--device", "cpu", "--out-dir", str(out)]) == 0
    final, base = load_torch(out / "final.pt"), load_torch(trained / "checkpoint.pt")["model"]
    assert final.keys() == base.keys()
    assert all(torch.equal(final[k], base[k]) for k in base), [k for k in base if not torch.equal(final[k], base[k])]
    run, ref = pd.read_parquet(out / "metrics.parquet"), pd.read_parquet(trained / "metrics.parquet")
    assert run["epoch"].tolist() == ref["epoch"].tolist() == [1, 2]
    for col in ("train_loss", "val_acc", "test_acc", "weight_norm"):
        assert run[col].tolist() == ref[col].tolist(), col


def test_a_run_from_init_refuses_a_trained_checkpoint(root, capsys):
    trained = _base(root, 1)
    spec = json.dumps({"strength": 10, "gamma": 0.01, "epochs": 2, "start": "init"})
    args = ["continue", "--data", str(root / "digits.pt"), "--checkpoint", str(trained / "checkpoint.pt")]
    assert main([*args, "--spec", spec, "--device", "cpu", "--out-dir", str(root / "refused")]) == 1
    err = capsys.readouterr().err
    assert "start is init" in err and "at epoch 1" in err


def test_a_table_without_start_reads_as_from_the_checkpoint(tmp_path):
    """Runs made before `start` existed (or at its default) have no start column; aggregate reads them as
    starting from the checkpoint, beside a run from init that has the column."""
    from repel import aggregate, spec

    paths = []
    for values in ({"strength": 0, "epochs": 1}, {"strength": 0, "epochs": 1, "start": "init"}):
        run = spec.Run.of(values)
        row = {"phase": "continue", "dataset": "digits", "model": "mlp", "seed": 0, "epoch": 1, **run.columns()}
        paths.append(tmp_path / f"{run.id}.parquet")
        pd.DataFrame([row]).to_parquet(paths[-1])
    table = aggregate.combine(paths, {})
    assert dict(zip(table["run"], table["start"])) == {
        "s0_lr0.01-const-e1": "checkpoint",
        "s0_init-lr0.01-const-e1": "init",
    }
