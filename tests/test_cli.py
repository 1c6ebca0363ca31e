"""The command line as a user meets it: every option explained, and the README's by-hand commands."""

import json
import re
import subprocess
from pathlib import Path

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
    pattern = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())["properties"]["device"]["pattern"]
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
    members = json.dumps([{"run": "s10", "out_dir": str(tmp_path / "s10"), "snapshot_every": 0, "strength": 10}])
    assert cli.main(["continue-pack", "--data", "unused.pt", "--checkpoint", "unused.pt", "--members", members,
                 "--epochs", "1", "--out-dir", str(tmp_path)]) == 1
    lacks = "--members: the member s10 lacks kernel, width, gamma, distance, checkpoint_every, merge"
    assert lacks in capsys.readouterr().err


def test_predict_writes_the_member_landscape_that_landscape_between_writes(tmp_path):
    """The predict job draws the lines between its members in its own process: the same table as the
    landscape command over the same members, in their order, and the predictions beside it."""
    import pandas as pd
    import torch

    data, base = tmp_path / "data.pt", tmp_path / "base"
    device = ["--device", "cpu", "--threads", "1"]
    assert cli.main(["prepare", "--dataset", "digits", "--out", str(data)]) == 0
    assert cli.main(["train-base", "--data", str(data), "--model", "mlp", "--epochs", "1", *device,
                     "--out-dir", str(base)]) == 0
    weights = torch.load(base / "checkpoint.pt", weights_only=True)["model"]
    members = []
    for i, scale in enumerate((1.0, 0.5, -1.0)):  # three distinct members; the last flips every weight
        path = tmp_path / f"member{i}.pt"
        torch.save({k: v * scale for k, v in weights.items()}, path)
        members.append(str(path))
    ckpt = str(base / "checkpoint.pt")
    landscape = ["--steps", "5", "--bn-batches", "2"]
    assert cli.main(["predict", "--data", str(data), "--checkpoints", ckpt, ckpt, ckpt, "--members", *members,
                     "--method", "distance", "--ensemble", "seed0", *landscape, *device,
                     "--member-landscape", str(tmp_path / "from_predict.parquet"),
                     "--out", str(tmp_path / "predictions.pt")]) == 0
    assert cli.main(["landscape", "--between", "--data", str(data), "--checkpoint", ckpt, "--weights", *members,
                     "--run", "distance/seed0", *landscape, *device, "--out", str(tmp_path / "between.parquet")]) == 0

    from_predict = pd.read_parquet(tmp_path / "from_predict.parquet")
    pd.testing.assert_frame_equal(from_predict, pd.read_parquet(tmp_path / "between.parquet"))
    assert sorted(from_predict["pair"].unique()) == [0, 1]
    assert list(from_predict.drop_duplicates("pair")["end"]) == members[1:]
    assert (from_predict["run"] == "distance/seed0").all()
    predictions = torch.load(tmp_path / "predictions.pt", weights_only=True)
    assert predictions["log_probs"].shape[0] == 3 and predictions["members"] == members
