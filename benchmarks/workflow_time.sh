#!/usr/bin/env bash
# The embedded default run from nothing at an older commit and at HEAD on this machine, and the
# ratio of their walls (the figure to quote: absolute seconds depend on the machine and on what else
# runs on it):
#
#     bash benchmarks/workflow_time.sh 7c9a3d6               # OLD = 7c9a3d6, then HEAD; --cores 2
#     NEW=abc1234 bash benchmarks/workflow_time.sh 7c9a3d6   # another commit in place of HEAD
#     bash benchmarks/workflow_time.sh 7c9a3d6 --cores 4     # further arguments go to snakemake
#     CONFIG=config/reduced.yaml bash benchmarks/workflow_time.sh 7c9a3d6   # each commit's own reduced.yaml
#     CONFIG=/tmp/old.yaml bash benchmarks/workflow_time.sh 7c9a3d6         # an absolute path: one file for both
#     SIDE_BY_SIDE=1 bash benchmarks/workflow_time.sh 7c9a3d6  # both at once, --cores 1 each
#
# One after the other, a change in the machine's load between the two runs moves the ratio (two
# such pairs on one machine gave 0.68 and 0.81); side by side, both runs share whatever else runs,
# each on its own core.
#
# Each commit's tree is exported to a temporary directory and runs its own Snakefile, config and
# package (PYTHONPATH) in a fresh work directory (data, base trainings, all). After each run, its
# job-seconds per rule and how many of them were training epochs (benchmarks/job_seconds.py).
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: bash benchmarks/workflow_time.sh OLD_COMMIT [snakemake arguments]}
shift
args=("$@")
side_by_side=${SIDE_BY_SIDE:-}
[ ${#args[@]} -gt 0 ] || { [ -n "$side_by_side" ] && args=(--cores 1) || args=(--cores 2); }
config=${CONFIG:-config/config.yaml}
new=${NEW:-HEAD}
out=$(mktemp -d)

run() { # commit, label: exports the tree, runs it from nothing, writes its wall and work directory
    local commit=$1 label=$2 tree dir start configfile
    tree=$(mktemp -d) dir=$(mktemp -d)
    git archive "$commit" | tar -x -C "$tree"
    case $config in /*) configfile=$config ;; *) configfile=$tree/$config ;; esac
    start=$(date +%s.%N)
    PYTHONPATH="$tree/src" snakemake -s "$tree/Snakefile" -d "$dir" --configfile "$configfile" "${args[@]}" \
        > "$dir/snakemake.out" 2>&1 || { tail -20 "$dir/snakemake.out"; return 1; }
    python -c "print(round($(date +%s.%N) - $start, 1))" > "$out/$label.wall"
    echo "$dir" > "$out/$label.dir"
}

if [ -n "$side_by_side" ]; then
    run "$old" old & old_pid=$!
    run "$new" new & new_pid=$!
    failed=0
    wait $old_pid || failed=1
    wait $new_pid || failed=1
    [ $failed = 0 ] || exit 1
else
    run "$old" old
    run "$new" new
fi
for label in old new; do
    commit=$([ $label = old ] && echo "$old" || echo "$new")
    echo "== $commit ($(git rev-parse --short "$commit")): $(cat "$out/$label.wall") s wall ($(cat "$out/$label.dir"))"
    python benchmarks/job_seconds.py "$(cat "$out/$label.dir")" | tail -1
done
how=$([ -n "$side_by_side" ] && echo "side by side" || echo "one after the other")
cpu=$(grep -m1 "model name" /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs)
ratio=$(python -c "print(round($(cat "$out/new.wall") / $(cat "$out/old.wall"), 3))")
echo "$new / $old: $ratio (wall, ${args[*]}, $how on this machine: $cpu, $(nproc) cores)"
