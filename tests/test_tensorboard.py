"""TensorBoard events of the training jobs: read back with TensorBoard's own reader, against the
jobs' metrics.parquet; a resumed job has every epoch once; off means no files; a failing writer
never fails a job; the config switch reaches the jobs' commands."""

import copy
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch.utils.tensorboard
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from workflow_run import TINY, snakemake

from repel.cli import main
from repel.storage import load_torch

# every per-epoch metric of a run's metrics.parquet (the list, not the module's)
METRICS = [
    "train_loss",
    "train_ce",
    "train_acc",
    "penalty",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "dist",
    "dist_min",
    "dist_rel",
    "grad_ratio",
    "lr",
    "weight_norm",
    "step_cos",
    "radial_cos",
    "func_disagree",
    "func_kl",
    "epoch_seconds",
    "images_per_second",
]
RUN = "s10-rbf-w1_lr0.01-const-e3"


def _train_base(root, *extra):
    return main(
        [
            "train-base",
            "--data",
            str(root / "digits.pt"),
            "--model",
            "cnn",
            "--epochs",
            "2",
            "--threads",
            "1",
            "--out-dir",
            str(root / "base"),
            *extra,
        ]
    )


def _continue(root, out, *extra):
    return main(
        [
            "continue",
            "--data",
            str(root / "digits.pt"),
            "--checkpoint",
            str(root / "base" / "checkpoint.pt"),
            "--spec",
            '{"strength": 10, "kernel": "rbf", "width": 1, "epochs": 3}',
            "--threads",
            "1",
            "--out-dir",
            str(out),
            *extra,
        ]
    )


def _events(path) -> EventAccumulator:
    return EventAccumulator(str(path), size_guidance={"scalars": 0}).Reload()


def _event_files(root):
    return sorted(root.rglob("events.out.tfevents*"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tensorboard")
    assert main(["prepare", "--dataset", "digits", "--out", str(root / "digits.pt")]) == 0
    assert _train_base(root, "--tensorboard", str(root / "tb")) == 0
    assert _continue(root, root / "run", "--tensorboard", str(root / "tb")) == 0
    return root


@pytest.mark.parametrize("run, out", [("base", "base"), (RUN, "run")])
def test_every_metric_of_every_epoch_is_in_the_events(runs, run, out):
    metrics = pd.read_parquet(runs / out / "metrics.parquet")
    events = _events(runs / "tb" / "digits" / "cnn" / run / "seed0")
    tags = events.Tags()["scalars"]
    for name in METRICS:
        expected = metrics.dropna(subset=[name])
        if expected.empty:  # NaN for the whole run (the base's distances): not written
            assert name not in tags, name
            continue
        scalars = events.Scalars(name)
        assert [s.step for s in scalars] == expected["epoch"].tolist(), name
        for s, value in zip(scalars, expected[name]):
            assert s.value == pytest.approx(value, rel=1e-6, abs=1e-30), name  # stored as float32
    assert metrics["epoch"].tolist() == ([1, 2] if run == "base" else [3, 4, 5])


def test_the_runs_parameters_are_its_hyperparameters(runs):
    content = _events(runs / "tb" / "digits" / "cnn" / RUN / "seed0").PluginTagToContent("hparams")
    start = next(
        HParamsPluginData.FromString(c).session_start_info
        for c in content.values()
        if HParamsPluginData.FromString(c).HasField("session_start_info")
    )
    values = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}
    # as given on the command line above (lr_init and distance: the defaults)
    assert values["strength"] == 10 and values["kernel"] == "rbf" and values["width"] == 1
    assert values["epochs"] == 3 and values["lr_init"] == 0.01 and values["distance"] == "sum"
    assert values["run"] == RUN and values["seed"] == 0 and values["dataset"] == "digits"
    assert "gamma" not in values  # not set: left out, not written as a number
    base = _events(runs / "tb" / "digits" / "cnn" / "base" / "seed0").PluginTagToContent("hparams")
    assert base, "the base run has its hyperparameters too"


def _saved_epochs(path) -> int:
    try:
        return len(load_torch(path)["rows"])
    except (OSError, EOFError, RuntimeError, ValueError):  # not there yet
        return 0


def _last_epoch(run_dir) -> int:
    """The last epoch whose events are all written: images_per_second is an epoch's last scalar."""
    if not run_dir.exists():  # the job is still starting
        return 0
    try:
        return _events(run_dir).Scalars("images_per_second")[-1].step
    except KeyError:  # no epoch yet
        return 0


def test_a_killed_and_resumed_run_has_every_epoch_once(runs):
    out, tb = runs / "killed", runs / "tb-killed"
    run_dir = tb / "digits" / "cnn" / "s10-rbf-w1_lr0.01-const-e10" / "seed0"
    cmd = [
        sys.executable,
        "-m",
        "repel",
        "continue",
        "--data",
        str(runs / "digits.pt"),
        "--checkpoint",
        str(runs / "base" / "checkpoint.pt"),
        "--spec",
        '{"strength": 10, "width": 1, "epochs": 10}',
        "--threads",
        "1",
        "--device",
        "cpu",
        "--save-every",
        "4",
        "--tensorboard",
        str(tb),
        "--out-dir",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it once epoch 7 is written: the state is saved after epochs 4 and 8 of the run (6 and 10),
    # so its events go beyond its saved state, and the resumed attempt writes those epochs again
    deadline = time.time() + 120
    while _last_epoch(run_dir) < 7 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode != 0, "the run finished before it could be killed"
    saved = _saved_epochs(out / "resume.pt")
    written = [s.step for s in _events(run_dir).Scalars("val_acc")]
    assert written[-1] > 2 + saved, "the killed attempt wrote no epoch beyond its saved state"

    subprocess.run(cmd, check=True, capture_output=True)

    assert len(_event_files(run_dir)) == 2  # the killed attempt's file, and the resumed one's
    metrics = pd.read_parquet(out / "metrics.parquet")
    events = _events(run_dir)
    for name in ("val_acc", "dist", "train_loss"):
        scalars = events.Scalars(name)
        assert [s.step for s in scalars] == list(range(3, 13)), name
        assert [s.value for s in scalars] == pytest.approx(metrics[name].tolist(), rel=1e-6), name


def test_without_the_option_no_event_file_is_written(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # SummaryWriter's own default directory is ./runs: here, if anywhere
    (tmp_path / "digits.pt").symlink_to(runs / "digits.pt")
    assert _train_base(tmp_path) == 0
    assert _continue(tmp_path, tmp_path / "run") == 0
    assert (tmp_path / "base" / "metrics.parquet").exists() and (tmp_path / "run" / "metrics.parquet").exists()
    assert _event_files(tmp_path) == []


def test_a_failing_writer_does_not_fail_the_job(runs, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(torch.utils.tensorboard.SummaryWriter, "add_scalar", broken)
    assert _continue(runs, tmp_path / "run", "--tensorboard", str(tmp_path / "tb")) == 0
    log = capsys.readouterr().out
    warnings = [line for line in log.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], log
    assert len(re.findall(r"^epoch ", log, re.M)) == 3  # the job went on to its end
    assert (tmp_path / "run" / "metrics.parquet").exists()


@pytest.mark.parametrize("switch", [None, False])  # None: the default, on
def test_the_config_switch_reaches_the_training_jobs_only_through_their_run_options(tmp_path, switch):
    config = copy.deepcopy(TINY)
    if switch is not None:
        config["tensorboard"] = switch
    dry = snakemake(tmp_path, config, "-n", "-p")
    assert dry.returncode == 0, dry.stderr + dry.stdout
    text = dry.stdout + dry.stderr
    commands = [
        line for line in text.splitlines() if "python -m repel train-base" in line or "python -m repel continue" in line
    ]
    # the base, and one pack for the width family's two points with their control; how they run
    # (TensorBoard among it) comes from the workflow's REPEL_RUN_OPTIONS, not from their params
    assert len(commands) == 1 + 1 and "python -m repel continue-pack" in commands[1]
    assert all("$REPEL_RUN_OPTIONS" in c and "--tensorboard" not in c for c in commands), commands
    assert "tensorboard" not in " ".join(re.findall(r"^\s+output: (.*)$", text, re.M))  # never an output
    # run the base training alone: its events are there exactly when the switch is on (default: on)
    result = snakemake(tmp_path, config, "--cores", "1", "results/base/digits/cnn/seed0/checkpoint.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "results/tensorboard/digits/cnn/base/seed0").is_dir() == (switch is not False)
