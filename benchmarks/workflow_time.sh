#!/usr/bin/env bash
# The embedded default run's cost with and without packs, side by side on this machine:
#
#     bash benchmarks/workflow_time.sh               # pack: off, then auto; each in a fresh directory
#     bash benchmarks/workflow_time.sh --cores 4     # further arguments go to snakemake
#
# Each run starts from nothing (its own temporary directory: data, base trainings, all) and prints
# its wall, user and system seconds and its job count; the ratio of the two walls is the figure to
# read (absolute seconds depend on the machine and on what else runs on it).
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--cores 2)
for pack in off auto; do
    dir=$(mktemp -d)
    start=$(date +%s.%N)
    /usr/bin/time -f "pack $pack: %e s wall, %U s user, %S s system" \
        snakemake -s Snakefile -d "$dir" --configfile config/config.yaml --config "pack=$pack" -q "${args[@]}" \
        > "$dir/snakemake.out" 2>&1 || { tail -20 "$dir/snakemake.out"; exit 1; }
    tail -1 "$dir/snakemake.out"
    echo "pack $pack: $(find "$dir/results/logs" -name '*.log' | wc -l) jobs besides 'all' ($dir)"
done
