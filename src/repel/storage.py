"""Writing results: every file appears whole or not at all (write to a temporary name, then rename)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def save_torch(obj, path) -> None:
    path = Path(path)
    tmp = _tmp(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_torch(path) -> dict:
    """Load a checkpoint or weights file; weights_only: nothing in it can run code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_parquet(df: pd.DataFrame, path) -> None:
    path = Path(path)
    tmp = _tmp(path)
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def save_text(text: str, path) -> None:
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)
