"""A training job killed mid-way and run again ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from repel.cli import main
from repel.resume import ResumeState
from repel.storage import load_torch

TIMING = ["epoch_seconds", "train_seconds", "images_per_second"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    assert main(["prepare", "--dataset", "digits", "--out", str(root / "digits.pt")]) == 0
    assert (
        main(
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
            ]
        )
        == 0
    )
    return root


def _continue_cmd(root, out, strength=10):
    spec = {"strength": strength, "width": 1, "epochs": 12, "schedule": "cosine", "checkpoint_every": 4, "merge": True}
    return [
        sys.executable,
        "-m",
        "repel",
        "continue",
        "--data",
        str(root / "digits.pt"),
        "--checkpoint",
        str(root / "base" / "checkpoint.pt"),
        "--spec",
        json.dumps(spec),
        "--threads",
        "1",
        "--device",
        "cpu",
        "--save-every",
        "1",
        "--out-dir",
        str(out),
    ]


def _saved_epochs(path) -> int:
    try:
        return len(load_torch(path)["rows"])
    except (OSError, EOFError, RuntimeError, ValueError):  # not there yet (ValueError: repel's BadFileError)
        return 0


def _interrupt(cmd, state, sig=signal.SIGKILL) -> tuple[int, str]:
    """Start a training command, send it `sig` once its resumable state holds 3 epochs; its exit
    status and output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while _saved_epochs(state) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(sig)
    log = proc.communicate()[0]
    return proc.returncode, log


def _assert_same_run(a, b):
    ma, mb = pd.read_parquet(a / "metrics.parquet"), pd.read_parquet(b / "metrics.parquet")
    pd.testing.assert_frame_equal(ma.drop(columns=TIMING), mb.drop(columns=TIMING), check_exact=True)
    wa, wb = load_torch(a / "final.pt"), load_torch(b / "final.pt")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def uninterrupted(base):
    out = base / "whole"
    subprocess.run(_continue_cmd(base, out), check=True, capture_output=True)
    assert not (out / "resume.pt").exists()  # cleaned up once the outputs are written
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_identical_result(base, uninterrupted, sig):
    out = base / f"killed-{sig.name}"
    returncode, log = _interrupt(_continue_cmd(base, out), out / "resume.pt", sig)
    assert returncode != 0, "the run finished before it could be killed"
    assert not (out / "metrics.parquet").exists()
    done_before = _saved_epochs(out / "resume.pt")
    assert 3 <= done_before < 12
    if sig == signal.SIGTERM:
        assert "state saved" in log

    again = subprocess.run(_continue_cmd(base, out), capture_output=True, text=True, check=True)
    assert f"resuming from {out / 'resume.pt'} after epoch {2 + done_before}" in again.stdout
    # the log of the second attempt (Snakemake starts it anew) holds every epoch once: 3 to 14
    epochs = [int(line.split()[1].split("/")[0]) for line in again.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs == list(range(3, 15))
    _assert_same_run(uninterrupted, out)


@pytest.mark.parametrize(
    "schedule",
    [{"schedule": "swa", "eta_min": 0.005}, {"schedule": "cyclic", "t0": 2, "eta_min": 0.001}],
    ids=["swa", "fge"],
)
def test_swa_and_fge_resume_to_the_identical_result(base, schedule):
    """Their schedulers, and SWA's running average, are part of the saved state."""

    def cmd(out):
        return [
            sys.executable,
            "-m",
            "repel",
            "continue",
            "--data",
            str(base / "digits.pt"),
            "--checkpoint",
            str(base / "base" / "checkpoint.pt"),
            "--spec",
            json.dumps({"strength": 0, "epochs": 8, **schedule}),
            "--threads",
            "1",
            "--device",
            "cpu",
            "--save-every",
            "1",
            "--out-dir",
            str(out),
        ]

    whole, out = base / f"whole-{schedule['schedule']}", base / f"killed-{schedule['schedule']}"
    subprocess.run(cmd(whole), check=True, capture_output=True)
    _interrupt(cmd(out), out / "resume.pt")
    assert 3 <= _saved_epochs(out / "resume.pt") < 8, "the run finished before it could be killed"
    subprocess.run(cmd(out), check=True, capture_output=True)
    _assert_same_run(whole, out)
    if schedule["schedule"] == "swa":
        wa, wb = load_torch(whole / "swa.pt"), load_torch(out / "swa.pt")
        assert all(torch.equal(wa[key], wb[key]) for key in wa)


def test_a_state_from_other_settings_is_not_resumed(base, uninterrupted):
    out = base / "changed"
    proc = subprocess.Popen(_continue_cmd(base, out, strength=3), stdout=subprocess.DEVNULL)
    while _saved_epochs(out / "resume.pt") < 2 and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    again = subprocess.run(_continue_cmd(base, out), capture_output=True, text=True, check=True)
    assert "ignoring" in again.stdout and "resuming" not in again.stdout
    _assert_same_run(uninterrupted, out)


@pytest.mark.parametrize("damage", ["random bytes", "truncated state"])
def test_a_corrupt_state_is_moved_aside_and_the_run_starts_afresh(base, uninterrupted, damage, monkeypatch):
    out = base / f"corrupt-{damage.replace(' ', '-')}"
    out.mkdir()
    state, aside = out / "resume.pt", out / "resume.pt.corrupt"
    if damage == "random bytes":
        state.write_bytes(os.urandom(50_000))
        aside.write_bytes(b"an older corrupt state")  # replaced
    else:  # a state as a job saves it, cut short
        monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own SIGTERM handler
        ResumeState(state, "any").save_if_due({"model": torch.nn.Linear(50, 50)}, [{"epoch": 3}])
        whole = state.read_bytes()
        state.write_bytes(whole[: len(whole) // 2])
    damaged = state.read_bytes()

    run = subprocess.run(_continue_cmd(base, out), capture_output=True, text=True)

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"warning: {state}" in run.stdout and str(aside) in run.stdout
    assert "resuming" not in run.stdout
    assert aside.read_bytes() == damaged
    _assert_same_run(uninterrupted, out)


def test_a_state_lacking_entries_is_moved_aside_before_anything_is_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own SIGTERM handler
    path, logged = tmp_path / "resume.pt", []
    model = torch.nn.Linear(3, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parts = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
    # the optimizer's state is not there
    torch.save(
        {
            "fingerprint": "f",
            "rows": [{"epoch": 1}],
            "torch_rng": torch.get_rng_state(),
            "model": {k: torch.zeros_like(v) for k, v in before.items()},
        },
        path,
    )

    assert ResumeState(path, "f", log=logged.append).restore(parts) == []

    assert not path.exists() and (tmp_path / "resume.pt.corrupt").exists()
    assert any(str(path) in line and "resume.pt.corrupt" in line and "optimizer" in line for line in logged)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # a state from other settings is ignored, as before, and left for the run to replace
    torch.save({"fingerprint": "other", "rows": [{"epoch": 1}]}, path)
    assert ResumeState(path, "f", log=logged.append).restore(parts) == []
    assert path.exists() and "ignoring" in logged[-1]


@pytest.mark.parametrize("model", ["mlp", "cnn"], ids=["batched", "one_after_another"])  # conv nets on a CPU
def test_a_killed_pack_resumes_to_the_identical_result(tmp_path_factory, base, model):
    """`repel continue-pack` saves the pack as one state; killed and run again, every member's
    files equal those of an uninterrupted pack."""
    root = tmp_path_factory.mktemp(f"pack-{model}")
    assert (
        main(
            [
                "train-base",
                "--data",
                str(base / "digits.pt"),
                "--model",
                model,
                "--epochs",
                "2",
                "--threads",
                "1",
                "--out-dir",
                str(root / "base"),
            ]
        )
        == 0
    )
    spec = {"kernel": "rbf", "width": 1.0, "checkpoint_every": 3, "epochs": 20}

    def cmd(out):
        members = [
            {"out_dir": str(out / f"s{s}"), "snapshot_every": 0, "spec": {**spec, "strength": s}} for s in (0, 10)
        ]
        return [
            sys.executable,
            "-m",
            "repel",
            "continue-pack",
            "--data",
            str(base / "digits.pt"),
            "--checkpoint",
            str(root / "base" / "checkpoint.pt"),
            "--members",
            json.dumps(members),
            "--threads",
            "1",
            "--device",
            "cpu",
            "--save-every",
            "1",
            "--out-dir",
            str(out),
        ]

    whole, out = root / "whole", root / "killed"
    log = subprocess.run(cmd(whole), check=True, capture_output=True, text=True).stdout
    assert ("batched" if model == "mlp" else "one member after another") in log
    _interrupt(cmd(out), out / "resume.pt")
    assert not (out / "s0" / "metrics.parquet").exists(), "the pack finished before it could be killed"
    again = subprocess.run(cmd(out), check=True, capture_output=True, text=True).stdout
    assert "resuming from" in again
    for run in ("s0", "s10"):
        _assert_same_run(whole / run, out / run)
