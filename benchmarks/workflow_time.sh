#!/usr/bin/env bash
# The embedded default run from nothing at an older commit and at HEAD, one after the other on this
# machine, and the ratio of their walls (the figure to quote: absolute seconds depend on the machine
# and on what else runs on it):
#
#     bash benchmarks/workflow_time.sh 7c9a3d6               # OLD = 7c9a3d6, then HEAD; --cores 2
#     NEW=abc1234 bash benchmarks/workflow_time.sh 7c9a3d6   # another commit in place of HEAD
#     bash benchmarks/workflow_time.sh 7c9a3d6 --cores 4     # further arguments go to snakemake
#     CONFIG=config/reduced.yaml bash benchmarks/workflow_time.sh 7c9a3d6   # each commit's own reduced.yaml
#     CONFIG=/tmp/old.yaml bash benchmarks/workflow_time.sh 7c9a3d6         # an absolute path: one file for both
#
# Each commit's tree is exported to a temporary directory and runs its own Snakefile, config and
# package (PYTHONPATH) in a fresh work directory (data, base trainings, all). After each run, its
# job-seconds per rule and how many of them were training epochs (benchmarks/job_seconds.py).
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: bash benchmarks/workflow_time.sh OLD_COMMIT [snakemake arguments]}
shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--cores 2)
config=${CONFIG:-config/config.yaml}
walls=()
new=${NEW:-HEAD}
for commit in "$old" "$new"; do
    tree=$(mktemp -d) dir=$(mktemp -d)
    git archive "$commit" | tar -x -C "$tree"
    start=$(date +%s.%N)
    case $config in /*) configfile=$config ;; *) configfile=$tree/$config ;; esac
    PYTHONPATH="$tree/src" snakemake -s "$tree/Snakefile" -d "$dir" --configfile "$configfile" "${args[@]}" \
        > "$dir/snakemake.out" 2>&1 || { tail -20 "$dir/snakemake.out"; exit 1; }
    wall=$(python -c "print(round($(date +%s.%N) - $start, 1))")
    walls+=("$wall")
    echo "== $commit ($(git rev-parse --short "$commit")): $wall s wall ($dir)"
    python benchmarks/job_seconds.py "$dir" | tail -1
done
echo "$new / $old: $(python -c "print(round(${walls[1]} / ${walls[0]}, 3))") (wall, one after the other on this machine: $(grep -m1 "model name" /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs), $(nproc) cores)"
