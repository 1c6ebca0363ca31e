#!/usr/bin/env bash
# The GPU check: run as it is, from the repository root, on a bare GPU machine (no install):
#
#     bash benchmarks/gpu_check.sh                 # the machine, the tests, then gpu_speed.py: < 8 minutes
#     bash benchmarks/gpu_check.sh --cpu-smoke     # does it run? On a CPU: GPU tests skip, gpu_speed.py
#                                                  # --smoke with the small cnn (resnet32 takes minutes there)
#     bash benchmarks/gpu_check.sh --share 1 2     # further arguments go to gpu_speed.py
#
# It prints the machine (GPU, torch, CUDA), runs tests/test_gpu.py and tests/test_speed.py (the
# project's other test files need snakemake, SLURM or more time), then benchmarks/gpu_speed.py,
# each under a timeout. With $OUT set, everything is also written to $OUT/gpu_check.log.
# Exit status: 1 if the tests failed (or timed out), 2 if only the benchmark did, else 0.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# gpu_speed.py keeps to --budget seconds by skipping what would not fit (the part under way when
# the budget runs out still ends, hence the timeout's margin); tests 150 s + benchmark 300 s at most
bench_args=(--budget 250)
if [ "${1:-}" = "--cpu-smoke" ]; then
    shift
    bench_args=(--smoke --device cpu --model cnn)
fi
bench_args+=("$@")

check() {
    echo "== machine ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "nvidia-smi: not found"; fi
    "$PYTHON" - <<'EOF'
import importlib.metadata as md
import sys

import torch

def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "missing"

print(f"python {sys.version.split()[0]}  torch {torch.__version__}  CUDA {torch.version.cuda}  "
      f"cuDNN {torch.backends.cudnn.version()}")
print("GPU seen by torch:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
print("  ".join(f"{n} {version(n)}" for n in ("torchvision", "triton", "scikit-learn", "pandas", "pyarrow", "pytest")))
EOF

    echo; echo "== tests: tests/test_gpu.py tests/test_speed.py"
    timeout -k 10 150 "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py tests/test_speed.py
    local tests=$?

    echo; echo "== benchmark: benchmarks/gpu_speed.py ${bench_args[*]}"
    timeout -k 10 300 "$PYTHON" benchmarks/gpu_speed.py "${bench_args[@]}"
    local bench=$?

    echo; echo "== tests exit $tests, benchmark exit $bench (124: timed out); ${SECONDS} s in all"
    [ "$tests" -eq 0 ] || return 1
    [ "$bench" -eq 0 ] || return 2
}

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    check 2>&1 | tee "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
check
