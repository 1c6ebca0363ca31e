"""The command line as a user meets it: every option explained, and the README's by-hand commands."""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import yaml

from repel import cli

ROOT = Path(__file__).resolve().parents[1]


def _options():
    """(command, argparse action) for every option of every subcommand."""
    commands = next(a for a in cli.parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                yield name, action


def test_every_option_has_a_help_text():
    assert [f"{name} {a.option_strings[0]}" for name, a in _options() if not a.help] == []


def test_device_help_lists_what_the_config_accepts():
    pattern = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())["properties"]["device"][
        "pattern"
    ]
    accepted = re.findall(r"[a-z]+", pattern.replace("\\Z", ""))  # auto, cpu, cuda, mps
    assert set(accepted) == {"auto", "cpu", "cuda", "mps"}
    helps = [a.help for _, a in _options() if a.dest == "device"]
    assert helps and all(word in h for h in helps for word in accepted + ["cuda:N"])


def _commands(text: str) -> list[str]:
    """The `python -m repel ...` commands of a text, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip().startswith("python -m repel")]


def test_the_readme_by_hand_commands_run_and_write_only_under_scratch(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Running stages by hand")[1].split("```bash")[1].split("```")[0]
    commands = _commands(block)
    assert commands[:-1] == _commands(cli.__doc__)  # `repel --help` shows the same commands
    for command in commands:
        assert "results/" not in command and "/tmp" not in command
        result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (command, result.stderr[-2000:])
    assert [p.name for p in tmp_path.iterdir()] == ["scratch"]
    assert (tmp_path / "scratch/plots/push.png").read_bytes()[:4] == b"\x89PNG"


def test_a_pack_member_lacking_a_setting_is_named(tmp_path, capsys):
    members = json.dumps([{"out_dir": str(tmp_path / "s10"), "snapshot_every": 0}])
    assert (
        cli.main(
            [
                "continue-pack",
                "--data",
                "unused.pt",
                "--checkpoint",
                "unused.pt",
                "--members",
                members,
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 1
    )
    assert f"--members: the member {tmp_path / 's10'} lacks spec" in capsys.readouterr().err


def test_a_spec_with_an_unknown_or_bad_key_is_named(tmp_path, capsys):
    args = ["continue", "--data", "unused.pt", "--checkpoint", "unused.pt", "--out-dir", str(tmp_path)]
    assert cli.main([*args, "--spec", '{"strength": 1, "width": 1, "epochs": 2, "colour": 3}']) == 1
    assert "--spec: unknown key colour" in capsys.readouterr().err
    assert cli.main([*args, "--spec", '{"strength": 1, "width": 1, "epochs": 2.5}']) == 1
    assert "--spec.epochs is 2.5: expected an integer" in capsys.readouterr().err


def test_predict_writes_the_loss_between_its_members(tmp_path):
    """The predict job draws the lines between its members in its own process: pair 0 runs from the
    first member to the second, so where the first member is the checkpoint itself, it is the line
    the landscape command draws from the checkpoint to the second."""
    import pandas as pd
    import torch

    data, base = tmp_path / "data.pt", tmp_path / "base"
    device = ["--device", "cpu", "--threads", "1"]
    assert cli.main(["prepare", "--dataset", "digits", "--out", str(data)]) == 0
    assert (
        cli.main(
            ["train-base", "--data", str(data), "--model", "mlp", "--epochs", "1", *device, "--out-dir", str(base)]
        )
        == 0
    )
    weights = torch.load(base / "checkpoint.pt", weights_only=True)["model"]
    members = []
    for i, scale in enumerate((1.0, 0.5, -1.0)):  # three distinct members; the first is the checkpoint
        path = tmp_path / f"member{i}.pt"
        torch.save({k: v * scale for k, v in weights.items()}, path)
        members.append(str(path))
    ckpt = str(base / "checkpoint.pt")
    landscape = ["--steps", "5", "--bn-batches", "2"]
    assert (
        cli.main(
            [
                "predict",
                "--data",
                str(data),
                "--checkpoints",
                ckpt,
                ckpt,
                ckpt,
                "--members",
                *members,
                "--method",
                "distance",
                "--ensemble",
                "seed0",
                *landscape,
                *device,
                "--member-landscape",
                str(tmp_path / "from_predict.parquet"),
                "--out",
                str(tmp_path / "predictions.npz"),
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "landscape",
                "--data",
                str(data),
                "--checkpoint",
                ckpt,
                "--weights",
                members[1],
                "--run",
                "r",
                *landscape,
                *device,
                "--out",
                str(tmp_path / "line.parquet"),
            ]
        )
        == 0
    )

    from_predict = pd.read_parquet(tmp_path / "from_predict.parquet")
    assert sorted(from_predict["pair"].unique()) == [0, 1]
    assert list(from_predict.drop_duplicates("pair")["end"]) == members[1:]
    assert (from_predict["method"] == "distance").all() and (from_predict["ensemble"] == "seed0").all()
    line = pd.read_parquet(tmp_path / "line.parquet")
    first = from_predict[from_predict["pair"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        first[["alpha", "loss", "error", "barrier"]], line[["alpha", "loss", "error", "barrier"]]
    )
    predictions = np.load(tmp_path / "predictions.npz", allow_pickle=False)  # numpy alone reads it
    assert predictions["log_probs"].shape[0] == 3 and predictions["members"].tolist() == members
