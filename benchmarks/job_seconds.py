"""Where a finished workflow run's time went: job-seconds per rule from Snakemake's own log, and
how many of them were training epochs (the sum of every run's `epoch_seconds`).

    python benchmarks/job_seconds.py WORKDIR      # the directory snakemake ran in (-d)

Job-seconds are each job's wall time from its start to its end as the log stamps them (to the
second); with --cores 2 two jobs run at once, so they add up to about twice the run's wall time.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pandas as pd

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")


def job_seconds(log: Path) -> pd.DataFrame:
    """rule -> jobs, job-seconds; a numbered rule (continue_pack_3) counts under its kind."""
    started, spans, stamp = {}, defaultdict(list), None
    rule = None
    for line in log.read_text().splitlines():
        if m := STAMP.match(line):
            stamp = datetime.strptime(m[1], "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = m[1]
        elif (m := re.match(r"^\s+jobid: (\d+)$", line)) and rule is not None:
            started[m[1]] = (re.sub(r"_\d+$", "", rule), stamp)
            rule = None
        elif m := re.match(r"^Finished jobid: (\d+)", line):
            kind, start = started.pop(m[1])
            spans[kind].append((stamp - start).total_seconds())
    if not spans:
        raise SystemExit(f"{log}: no finished job in it (a run with --quiet logs none)")
    rows = [{"rule": kind, "jobs": len(s), "job_seconds": sum(s)} for kind, s in spans.items()]
    return pd.DataFrame(rows).sort_values("job_seconds", ascending=False, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    args = ap.parse_args()
    log = max((args.workdir / ".snakemake/log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    table = job_seconds(log)
    results = [p for p in args.workdir.glob("results/**/metrics.parquet") if "aggregate" not in p.parts]
    epochs = sum(pd.read_parquet(p, columns=["epoch_seconds"])["epoch_seconds"].sum() for p in results)
    print(table.to_string(index=False))
    total = table["job_seconds"].sum()
    print(
        f"\n{table['jobs'].sum()} jobs, {total:.0f} job-seconds; training epochs (sum of epoch_seconds "
        f"over {len(results)} runs) {epochs:.0f}; the rest {total - epochs:.0f}"
    )


if __name__ == "__main__":
    main()
