"""TensorBoard event files of a training job, to watch a study while it runs.

One TensorBoard run per job, `<root>/<dataset>/<model>/<run>/seed<k>`: every per-epoch metric of
the job's metrics.parquet as a scalar at step = the epoch, flushed every epoch, and, at the end,
the grid point's parameters as HParams. The events are a side channel: any error of TensorBoard is
logged once as a warning and the job goes on without events. TensorBoard is imported only when
the first event is written, so a job without events imports nothing more.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

# the per-epoch metrics written as scalars, under the names of the metrics.parquet columns
METRICS = (
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
)


def run_dir(root, dataset: str, model: str, run: str, seed: int) -> Path:
    """A job's TensorBoard run directory under `root`: one per grid point and seed."""
    return Path(root) / dataset / model / run / f"seed{seed}"


class EventLog:
    """A job's TensorBoard writer that never fails the job."""

    def __init__(self, log_dir, log=print):
        self.log_dir, self._log = Path(log_dir), log
        self._writer = None
        self.failed = False

    def _open(self, purge_step: int):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # Opened at the first epoch this attempt writes: a resumed job (after epoch E) purges
            # from E + 1 what its killed attempt wrote after the saved state, so every epoch is
            # there once; a job started afresh purges an earlier attempt's events altogether.
            self._writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        return self._writer

    def _fail(self, err: Exception) -> None:
        self.failed = True
        self._log(
            f"warning: TensorBoard events in {self.log_dir} failed ({type(err).__name__}: {err}); "
            "the job goes on without them"
        )
        if self._writer is not None:
            with contextlib.suppress(Exception):  # already reported
                self._writer.close()

    def row(self, row: dict) -> None:
        """One epoch's metrics (NaN skipped), flushed at once so that they show while the job runs."""
        if self.failed:
            return
        try:
            writer = self._open(purge_step=row["epoch"])
            for key in METRICS:
                value = row.get(key)
                if value is not None and not math.isnan(value):
                    writer.add_scalar(key, value, row["epoch"])
            writer.flush()
        except Exception as err:  # noqa: BLE001 - a side channel: whatever TensorBoard raises
            self._fail(err)

    def finish(self, hparams: dict, last_epoch: int) -> None:
        """The grid point's parameters (None skipped) for the HParams dashboard, then close.

        Written into the run's own directory (add_hparams would make a sub-run), without the
        experiment summary that hparams() also returns: TensorBoard takes one run's experiment as
        every run's, so base runs' and width runs' would hide strength or gamma; without one it
        gathers the hyperparameters of every run, and takes as metrics the runs' scalars, each at
        its last value: the final val_acc, test_acc, dist, ... of every run.
        At step `last_epoch`, so that a job run again (`--forcerun`) purges them with its epochs.
        """
        if self.failed:
            return
        try:
            from torch.utils.tensorboard.summary import hparams as hparams_summaries

            writer = self._open(purge_step=last_epoch + 1)  # all epochs restored: nothing to purge
            _, session_start, session_end = hparams_summaries(hparams, {})
            writer.file_writer.add_summary(session_start, last_epoch)
            writer.file_writer.add_summary(session_end, last_epoch)
            writer.close()
        except Exception as err:  # noqa: BLE001 - a side channel: whatever TensorBoard raises
            self._fail(err)
