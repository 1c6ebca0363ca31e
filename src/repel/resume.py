"""Resumable training state, so long jobs survive time limits, pre-emption and node failures.

Every `every` epochs the loop saves everything that decides the rest of the run (model, optimizer,
scheduler, RNG states, penalty centres, metrics so far) atomically to one file. A run started
again with the same settings continues from there and ends bit-for-bit where an uninterrupted run
ends (on CPU). A state written under other settings is ignored and replaced, never resumed.
"""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import torch

from . import storage


def fingerprint(settings: dict, *files) -> str:
    """A digest of the run's settings and of the input files' contents."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for f in files:
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


class ResumeState:
    """Periodic save and restore of a training run's complete state, in `path`."""

    def __init__(self, path, fingerprint: str, every: int = 1, log=print):
        if every < 1:
            raise ValueError(f"save interval must be >= 1 epoch, got {every}")
        self.path, self.fingerprint, self.every, self.log = Path(path), fingerprint, every, log
        self.stop_requested = False
        signal.signal(signal.SIGTERM, self._on_sigterm)  # SLURM's time limit: save, then stop

    def _on_sigterm(self, signum, frame):
        self.stop_requested = True
        self.log("SIGTERM: saving the state at the end of this epoch, then stopping")

    def restore(self, parts: dict) -> list[dict]:
        """Load a saved state into `parts` (name -> object with load_state_dict, or a torch
        Generator; None is skipped) and return the metrics rows so far; [] when there is none."""
        if not self.path.exists():
            return []
        state = storage.load_torch(self.path)
        if state.get("fingerprint") != self.fingerprint:
            self.log(f"ignoring {self.path}: it was written under other settings or inputs")
            return []
        for name, obj in parts.items():
            if isinstance(obj, torch.Generator):
                obj.set_state(state[name])
            elif obj is not None:
                obj.load_state_dict(state[name])
        torch.set_rng_state(state["torch_rng"])
        self.log(f"resuming from {self.path} after epoch {state['rows'][-1]['epoch']}")
        return state["rows"]

    def save_if_due(self, parts: dict, rows: list[dict]) -> None:
        """Save after every `every` epochs, and at once when SIGTERM arrived (then exit)."""
        if len(rows) % self.every and not self.stop_requested:
            return
        state = {name: obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
                 for name, obj in parts.items() if obj is not None}
        state.update(fingerprint=self.fingerprint, rows=rows, torch_rng=torch.get_rng_state())
        storage.save_torch(state, self.path)
        if self.stop_requested:
            raise SystemExit(f"stopped by SIGTERM after epoch {rows[-1]['epoch']}; state saved to {self.path}")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
