"""The training jobs' files: the base checkpoint, a run's weights, and the run.json beside them.

Each format is written and read here and nowhere else, and what is read is checked: a file of
another kind (predictions where a checkpoint belongs, weights of another architecture) stops the
job with a message that names the file, what it holds and what it should hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from . import models, storage
from .storage import BadFileError

CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "rng", "arch", "config")


def save_base(path, model, optimizer, epoch: int, generator: torch.Generator, arch: dict, settings: dict) -> None:
    """The base checkpoint: everything a continuation needs to go on exactly where the base stopped."""
    storage.save_torch(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "rng": {"torch": torch.get_rng_state(), "data": generator.get_state()},
            "arch": arch,
            "config": settings,
        },
        path,
    )


def load_base(path) -> dict:
    """A base checkpoint written by save_base, checked to be one."""
    ckpt = storage.load_torch(path, "checkpoint")
    if not isinstance(ckpt, dict) or (missing := [k for k in CHECKPOINT_KEYS if k not in ckpt]):
        raise BadFileError(
            path,
            f"holds {_holds(ckpt)}, without {', '.join(missing) if isinstance(ckpt, dict) else 'them'}"
            f" (a base checkpoint has {', '.join(CHECKPOINT_KEYS)})",
            "checkpoint",
        )
    _check_state(path, ckpt["model"], ckpt["arch"], "checkpoint")
    return ckpt


def model_from(ckpt: dict, device: torch.device, state: dict | None = None) -> torch.nn.Module:
    """The checkpoint's network on `device`, with its own weights or `state`."""
    model = models.from_arch(ckpt["arch"])
    model.load_state_dict(ckpt["model"] if state is None else state)
    return model.to(device)


def save_weights(model, path) -> None:
    storage.save_torch(model.state_dict(), path)


def load_weights(path, arch: dict, kind: str = "weights") -> dict:
    """A network's state dict (final.pt, a snapshot, swa.pt), checked against the architecture it
    should have; `kind` names it in errors (storage.KINDS)."""
    state = storage.load_torch(path, kind)
    _check_state(path, state, arch, kind)
    return state


def _holds(obj) -> str:
    if isinstance(obj, dict):
        return "a dict of " + (", ".join(map(str, list(obj)[:6])) + (", ..." if len(obj) > 6 else "") or "nothing")
    return f"a {type(obj).__name__}"


def _check_state(path, state, arch: dict, kind: str) -> None:
    """`state` must be the state dict of the network `arch` describes: the same names and shapes."""
    expected = {name: tuple(t.shape) for name, t in models.from_arch(arch).state_dict().items()}
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise BadFileError(path, f"holds {_holds(state)}, not a network's weights", kind)
    got = {name: tuple(t.shape) for name, t in state.items()}
    if got != expected:
        wrong = sorted(set(got) ^ set(expected)) or [n for n in expected if got[n] != expected[n]]
        raise BadFileError(
            path,
            f"holds the weights of another network than {arch['model']} with "
            f"{arch['in_channels']} input channels and {arch['num_classes']} classes "
            f"(first differences: {', '.join(wrong[:3])})",
            kind,
        )


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_run_record(out_dir, spec_values: dict, checkpoint, extra: dict | None = None) -> None:
    """run.json beside a run's metrics: what made it (the resolved spec, the base checkpoint it
    started from, the package version and git commit, the command line), so that a results
    folder explains itself without the config."""
    try:
        version = metadata.version("repel")
    except metadata.PackageNotFoundError:
        version = None
    record = {
        "spec": spec_values,
        "checkpoint": str(checkpoint),
        "repel": version,
        "git_commit": _git_commit(),
        "command": sys.argv,
        **(extra or {}),
    }
    storage.save_text(json.dumps(record, indent=2, sort_keys=True) + "\n", Path(out_dir) / "run.json")
