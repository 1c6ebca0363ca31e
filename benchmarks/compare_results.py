"""Compare two results roots of the same config, made by two versions of repel: are they the same study?

    python benchmarks/compare_results.py OLD_ROOT NEW_ROOT      # e.g. /tmp/old/results results

Every run's own metrics.parquet (base and continuation) and every aggregated table are compared
column by column, exactly (bit for bit, NaN equal to NaN), on the rows of both. Columns that time
the work (epoch_seconds, train_seconds, images_per_second) are left out: they differ between any
two runs. A column or table only one root has is listed, not counted as a difference (a new
version may add columns). Exits 1 if any shared column differs, else 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TIMINGS = {"epoch_seconds", "train_seconds", "images_per_second"}
TABLES = [
    "summary.parquet",
    "claims.parquet",
    "ensembles.parquet",
    "ensemble_pairs.parquet",
    "landscape.parquet",
    "member_landscape.parquet",
    "weight_averages.parquet",
    "metrics.parquet",
]
# columns that name files under the root they were made in, and the order rows come in
PATHS = {"start", "end", "members", "checkpoints", "swa"}


def _equal(a: pd.Series, b: pd.Series) -> bool:
    if a.dtype != b.dtype and not (a.dtype.kind in "fiu" and b.dtype.kind in "fiu"):
        return list(a.astype(str)) == list(b.astype(str))
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        x, y = a.to_numpy(float), b.to_numpy(float)
        return bool(np.array_equal(x, y, equal_nan=True))
    return a.astype(object).equals(b.astype(object))


def compare(old: pd.DataFrame, new: pd.DataFrame, name: str) -> tuple[list[str], list[str]]:
    """(differences, notes) between two versions of one table."""
    notes = []
    if only_new := sorted(set(new.columns) - set(old.columns)):
        notes.append(f"{name}: new columns {', '.join(only_new)}")
    if only_old := sorted(set(old.columns) - set(new.columns)):
        notes.append(f"{name}: columns gone {', '.join(only_old)}")
    if len(old) != len(new):
        return [f"{name}: {len(old)} rows before, {len(new)} now"], notes
    shared = [c for c in old.columns if c in new.columns and c not in TIMINGS and c not in PATHS]
    differ = [c for c in shared if not _equal(old[c].reset_index(drop=True), new[c].reset_index(drop=True))]
    return [f"{name}: column {c} differs" for c in differ], notes


def run_tables(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in sorted(
            [*root.glob("base/*/*/seed*/metrics.parquet"), *root.glob("continue/*/*/*/seed*/metrics.parquet")]
        )
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path, help="the results root of the older version")
    ap.add_argument("new", type=Path, help="the results root of the newer version")
    args = ap.parse_args(argv)
    differences, notes = [], []
    old_runs, new_runs = run_tables(args.old), run_tables(args.new)
    for name in sorted(set(old_runs) ^ set(new_runs)):
        differences.append(f"{name}: only {'before' if name in old_runs else 'now'}")
    for name in sorted(set(old_runs) & set(new_runs)):
        d, n = compare(pd.read_parquet(old_runs[name]), pd.read_parquet(new_runs[name]), name)
        differences += d
        notes += n
    for table in TABLES:
        old, new = args.old / "aggregate" / table, args.new / "aggregate" / table
        if old.exists() != new.exists():
            notes.append(f"aggregate/{table}: only {'before' if old.exists() else 'now'}")
        elif old.exists():
            d, n = compare(pd.read_parquet(old), pd.read_parquet(new), f"aggregate/{table}")
            differences += d
            notes += n
    folded: dict[str, list[str]] = {}  # the same note on many runs' tables, said once
    for note in notes:
        table, _, what = note.partition(": ")
        folded.setdefault(what, []).append(table)
    for what, tables in folded.items():
        where = tables[0] if len(tables) == 1 else f"{len(tables)} tables ({tables[0]}, ...)"
        print(f"note: {where}: {what}")
    for difference in differences:
        print(f"DIFFERS: {difference}")
    print(
        f"{len(set(old_runs) & set(new_runs))} runs' tables and {len(TABLES)} aggregated tables compared: "
        f"{len(differences)} differences (timing columns {', '.join(sorted(TIMINGS))} left out)"
    )
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
