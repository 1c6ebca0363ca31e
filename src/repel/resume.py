"""Resumable training state, so long jobs survive time limits, pre-emption and node failures.

Every `every` epochs the loop saves everything that decides the rest of the run (model, optimizer,
scheduler, RNG states, penalty centres, metrics so far) atomically to one file. A run started
again with the same settings continues from there and ends bit-for-bit where an uninterrupted run
ends (on CPU). A state written under other settings is ignored and replaced, never resumed; one
that cannot be used (cut short, damaged) is moved aside, so that it cannot block the job's retries.
"""

from __future__ import annotations

import hashlib
import json
import os
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


def state_of(parts: dict) -> dict:
    """The state of `parts` (name -> object with state_dict, or a torch Generator; None is
    skipped), with the torch RNG's."""
    state = {
        name: obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
        for name, obj in parts.items()
        if obj is not None
    }
    return {**state, "torch_rng": torch.get_rng_state()}


def load_parts(parts: dict, state: dict) -> None:
    """Load what `state_of` saved back into `parts`, and the torch RNG's state."""
    for name, obj in parts.items():
        if isinstance(obj, torch.Generator):
            obj.set_state(state[name])
        elif obj is not None:
            obj.load_state_dict(state[name])
    torch.set_rng_state(state["torch_rng"])


class PerMember:
    """A list of parts (objects with state_dict, or None: skipped) as one part: a pack's per-member
    penalties, say."""

    def __init__(self, parts: list):
        self.parts = parts

    def state_dict(self) -> list:
        return [p.state_dict() if p is not None else None for p in self.parts]

    def load_state_dict(self, state: list) -> None:
        if len(state) != len(self.parts):
            raise ValueError(f"a saved state of {len(state)} members for {len(self.parts)}")
        for part, saved in zip(self.parts, state):
            if part is not None:
                part.load_state_dict(saved)


class ResumeState:
    """Periodic save and restore of a training run's complete state, in `path`.

    The state keeps the lines logged through `log` too: Snakemake starts each attempt's log file
    anew, so a resumed job writes the lines of the epochs before its stop again, and its log
    holds every epoch once.
    """

    def __init__(self, path, fingerprint: str, every: int = 1, log=print):
        if every < 1:
            raise ValueError(f"save interval must be >= 1 epoch, got {every}")
        self.path, self.fingerprint, self.every, self._print = Path(path), fingerprint, every, log
        self.lines: list[str] = []  # what this run logged, saved with the state
        self.stop_requested = False
        signal.signal(signal.SIGTERM, self._on_sigterm)  # SLURM's time limit: save, then stop

    def log(self, msg: str) -> None:
        """Log a line of the run and keep it for the saved state."""
        self.lines.append(msg)
        self._print(msg)

    def _on_sigterm(self, signum, frame):
        self.stop_requested = True
        self.log("SIGTERM: saving the state at the end of this epoch, then stopping")

    def restore(self, parts: dict) -> list[dict]:
        """Load a saved state into `parts` (name -> object with load_state_dict, or a torch
        Generator; None is skipped) and return the metrics rows so far; [] when there is none."""
        if not self.path.exists():
            return []
        try:
            state = storage.load_torch(self.path)
        except storage.BadFileError as err:
            return self._set_aside(err.problem)
        if not isinstance(state, dict) or "fingerprint" not in state:
            return self._set_aside("is not a saved training state")
        if state["fingerprint"] != self.fingerprint:
            self.log(f"ignoring {self.path}: it was written under other settings or inputs")
            return []
        # checked before any part is changed: a half-restored run could not start afresh
        lacking = [name for name, obj in parts.items() if obj is not None and name not in state]
        lacking += [name for name in ("rows", "torch_rng") if name not in state]
        if lacking:
            return self._set_aside(f"lacks the entries {', '.join(lacking)}")
        load_parts(parts, state)
        earlier = state.get("log", [])  # states saved before the log was kept have none
        self.lines = earlier + self.lines
        self._print(f"resuming from {self.path} after epoch {state['rows'][-1]['epoch']}; the run's log up to there:")
        for line in earlier:
            self._print(line)
        self.log(f"resumed from {self.path} after epoch {state['rows'][-1]['epoch']}")
        return state["rows"]

    def _set_aside(self, problem: str) -> list[dict]:
        """A state that cannot be resumed would stop the job at every retry: move it aside (for a
        look, replacing an older one) and start the run from its beginning."""
        aside = self.path.with_name(self.path.name + ".corrupt")
        os.replace(self.path, aside)
        self.log(f"warning: {self.path} {problem}; moved it to {aside} and starting the run from its beginning")
        return []

    def save_if_due(self, parts: dict, rows: list[dict]) -> None:
        """Save after every `every` epochs, and at once when SIGTERM arrived (then exit)."""
        if len(rows) % self.every and not self.stop_requested:
            return
        state = {**state_of(parts), "fingerprint": self.fingerprint, "rows": rows, "log": self.lines}
        storage.save_torch(state, self.path)
        if self.stop_requested:
            raise SystemExit(f"stopped by SIGTERM after epoch {rows[-1]['epoch']}; state saved to {self.path}")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
