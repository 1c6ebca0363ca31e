"""A training job killed mid-way and run again ends exactly where an uninterrupted run ends."""

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from repel.cli import main
from repel.storage import load_torch

TIMING = ["epoch_seconds", "train_seconds", "images_per_second"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    assert main(["prepare", "--dataset", "digits", "--out", str(root / "digits.pt")]) == 0
    assert main(["train-base", "--data", str(root / "digits.pt"), "--model", "cnn", "--epochs", "2",
                 "--threads", "1", "--out-dir", str(root / "base")]) == 0
    return root


def _continue_cmd(root, out, strength="10"):
    return [sys.executable, "-m", "repel", "continue", "--data", str(root / "digits.pt"),
            "--checkpoint", str(root / "base" / "checkpoint.pt"), "--run", "r", "--strength", strength,
            "--width", "1", "--epochs", "12", "--schedule", "cosine", "--threads", "1", "--device", "cpu",
            "--checkpoint-every", "4", "--merge", "--save-every", "1", "--out-dir", str(out)]


def _saved_epochs(path) -> int:
    try:
        return len(load_torch(path)["rows"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


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
    proc = subprocess.Popen(_continue_cmd(base, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while _saved_epochs(out / "resume.pt") < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(sig)
    log = proc.communicate()[0]
    assert proc.returncode != 0, "the run finished before it could be killed"
    assert not (out / "metrics.parquet").exists()
    done_before = _saved_epochs(out / "resume.pt")
    assert 3 <= done_before < 12
    if sig == signal.SIGTERM:
        assert "state saved" in log

    again = subprocess.run(_continue_cmd(base, out), capture_output=True, text=True, check=True)
    assert f"resuming from {out / 'resume.pt'} after epoch {2 + done_before}" in again.stdout
    _assert_same_run(uninterrupted, out)


def test_a_state_from_other_settings_is_not_resumed(base, uninterrupted):
    out = base / "changed"
    proc = subprocess.Popen(_continue_cmd(base, out, strength="3"), stdout=subprocess.DEVNULL)
    while _saved_epochs(out / "resume.pt") < 2 and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    again = subprocess.run(_continue_cmd(base, out), capture_output=True, text=True, check=True)
    assert "ignoring" in again.stdout and "resuming" not in again.stdout
    _assert_same_run(uninterrupted, out)
