"""Writing results: every file appears whole or not at all (write to a temporary name, then rename).

Reading them back: a missing or unreadable input stops the job with one message that says which
file it is, what it should be, which step makes it and what to do.
"""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and pandas are imported where a file of theirs is read or written: a stage that
    # only reads tables never loads torch (seconds of start-up), one that needs no table never loads pandas
    import pandas as pd

# what each kind of input file is, and the command (Snakemake rule) that makes it
KINDS = {
    "data": ("a prepared dataset", "`repel prepare` (Snakemake rule prepare_data)"),
    "checkpoint": ("a base checkpoint", "`repel train-base` (Snakemake rule train_base)"),
    "weights": ("a continuation run's weights", "`repel continue` (Snakemake rule continue_run)"),
    "member": (
        "an ensemble member's weights",
        "`repel continue` (Snakemake rules continue_run_snapshots, continue_run_fge, continue_run_swa, "
        "continue_run for independent seeds)",
    ),
    "SWA model": ("an SWA run's averaged weights", "`repel continue --schedule swa` (Snakemake rule continue_run_swa)"),
    "predictions": ("stored ensemble predictions", "`repel predict` (Snakemake rule predict)"),
    "metrics": (
        "a run's metrics table",
        "`repel train-base` or `repel continue` (Snakemake rules train_base, continue_run)",
    ),
    "landscape": ("a run's landscape table", "`repel landscape` (Snakemake rule landscape)"),
    "member landscape": (
        "the loss between ensemble members",
        "`repel predict --member-landscape` (Snakemake rule predict)",
    ),
    "aggregated metrics": ("the aggregated metrics table", "`repel aggregate` (Snakemake rule aggregate)"),
    "summary": ("the summary table", "`repel aggregate` (Snakemake rule aggregate)"),
    "aggregated landscape": (
        "the aggregated landscape table",
        "`repel aggregate-landscape` (Snakemake rule aggregate_landscape)",
    ),
    "ensemble curves": ("the ensembles' metrics table", "`repel ensembles` (Snakemake rule evaluate_ensembles)"),
    "ensemble pairs": ("the ensembles' pairwise table", "`repel ensembles` (Snakemake rule evaluate_ensembles)"),
    "weight averages": ("the weight averages' table", "`repel ensembles` (Snakemake rule evaluate_ensembles)"),
    "claims": ("the claims' verdicts table", "`repel claims` (Snakemake rule claims)"),
    "shifted test split": ("the corrupted test split", "`repel shift-data` (Snakemake rule prepare_shift)"),
    "ensemble shift metrics": (
        "an ensemble's metrics under shift",
        "`repel predict --shift` (Snakemake rule predict)",
    ),
    "ensemble shift table": ("the ensembles' metrics under shift", "`repel shift-table` (Snakemake rule shift_table)"),
    "ensemble OOD scores": ("an ensemble's OOD scores", "`repel predict --shift` (Snakemake rule predict)"),
    "ensemble OOD table": ("the ensembles' OOD detection table", "`repel ood-table` (Snakemake rule ood_table)"),
}
MISSING = "is missing (not found)"
DAMAGED = "cannot be read: it is cut short, damaged or not a torch file"
UNSAFE_ARRAYS = (
    "was not loaded: it holds objects other than numpy arrays, which repel never writes, so nothing in it was run"
)
UNSAFE = (
    "was not loaded: it holds objects other than tensors and plain containers, which repel never "
    "writes, so nothing in it was run"
)
DAMAGED_TABLE = "cannot be read: it is cut short, damaged or not a Parquet table"
DAMAGED_ARRAYS = "cannot be read: it is cut short, damaged or not a numpy .npz file"
# how a cut-short or garbled file shows itself (torch and pyarrow say it in many ways)
_UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, TypeError, KeyError, IndexError)


class BadFileError(ValueError):
    """An input file that is missing or cannot be used; `problem` says what is wrong with it."""

    def __init__(self, path, problem: str, kind: str | None = None):
        what, made_by = KINDS.get(kind, ("a file repel writes", "an earlier step of the workflow"))
        todo = (
            "run the workflow, which makes it"
            if problem == MISSING
            else "delete it and run the workflow again; it will be made anew"
        )
        super().__init__(f"{path} {problem}. It should be {what}, made by {made_by}: {todo}.")
        self.path, self.problem = Path(path), problem


class WriteError(OSError):
    """An output that could not be written, with the reason."""


def _write(path, write) -> None:
    """`write(tmp)` to a temporary name beside `path`, then rename it into place. A write that fails
    (a full disk, say) leaves no temporary file behind and says why, naming the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch reports a failed write as a RuntimeError
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        raise WriteError(f"could not write {path}: {_os_cause(err)} ({free} bytes free on its disk)") from err


def _os_cause(err: BaseException | None) -> str:
    """The operating system's reason behind a failed write; torch says only 'unexpected pos ...'."""
    while err is not None:
        if isinstance(err, OSError) and err.strerror:
            return err.strerror
        err = err.__cause__ or err.__context__
    return "the write stopped short, as it does on a full disk"


def save_torch(obj, path) -> None:
    import torch

    _write(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path, kind: str | None = None) -> dict:
    """Load a file written by save_torch; weights_only: nothing in it can run code.
    `kind` (a key of KINDS) names the file in the error when it is missing or cannot be used."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BadFileError(path, MISSING, kind) from None
    except pickle.UnpicklingError:
        # weights_only refused it. Never pass torch's text on: it suggests weights_only=False,
        # which would run whatever the file holds. save_torch always writes a zip, so a whole zip
        # was refused for what it holds, anything else is damaged.
        raise BadFileError(path, UNSAFE if zipfile.is_zipfile(path) else DAMAGED, kind) from None
    except _UNREADABLE as err:
        raise BadFileError(path, DAMAGED, kind) from err


def save_arrays(arrays: dict, path) -> None:
    """Arrays (numpy, CPU tensors, strings, lists of strings) in one .npz, read back without pickle
    and without torch; a None value is left out."""
    import numpy as np

    def as_array(value):
        return np.asarray(value, dtype=str) if isinstance(value, (list, tuple)) else np.asarray(value)

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: given a name, numpy would append ".npz" to it
            np.savez(f, **{k: as_array(v) for k, v in arrays.items() if v is not None})

    _write(path, write)


def load_arrays(path, kind: str | None = None) -> dict:
    """Read a file written by save_arrays; allow_pickle=False: nothing in it can run code."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            # a zip of something else (a torch file, say): numpy hands members that are not arrays over as bytes
            arrays = isinstance(npz, np.lib.npyio.NpzFile) and all(n.endswith(".npy") for n in npz.zip.namelist())
            loaded = {name: npz[name] for name in npz.files} if arrays else None
    except FileNotFoundError:
        raise BadFileError(path, MISSING, kind) from None
    except ValueError as err:
        if "pickle" in str(err):  # a pickle or an object array, which save_arrays never writes
            raise BadFileError(path, UNSAFE_ARRAYS, kind) from None
        raise BadFileError(path, DAMAGED_ARRAYS, kind) from err
    except (*_UNREADABLE, zipfile.BadZipFile) as err:
        raise BadFileError(path, DAMAGED_ARRAYS, kind) from err
    if loaded is None:
        raise BadFileError(path, UNSAFE_ARRAYS, kind)
    return loaded


def read_parquet(path, kind: str | None = None) -> pd.DataFrame:
    """Read a table written by save_parquet; `kind` as for load_torch."""
    try:
        import pandas as pd

        return pd.read_parquet(path)
    except FileNotFoundError:
        raise BadFileError(path, MISSING, kind) from None
    except _UNREADABLE as err:
        raise BadFileError(path, DAMAGED_TABLE, kind) from err


def save_parquet(df: pd.DataFrame, path) -> None:
    _write(path, lambda tmp: df.to_parquet(tmp, index=False))


def save_text(text: str, path) -> None:
    _write(path, lambda tmp: tmp.write_text(text))
