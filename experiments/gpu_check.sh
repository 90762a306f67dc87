#!/usr/bin/env bash
# The prepared GPU check: JAX training-step variants and the PyTorch reference
# (eager, and torch.compile in bf16) on one GPU, 227x227, batch 256, the paper's
# full net, bf16 then fp32. Prints a short table last; JSON and logs go to $OUT.
#
# On a GPU machine, from the repository root (results under $OUT):
#   OUT=/tmp/gpu_check bash experiments/gpu_check.sh
# Here, on a CPU, to check the script in a few minutes:
#   OUT=/tmp/gpu_check bash experiments/gpu_check.sh --tiny
#
# Needs jax, flax, optax, orbax-checkpoint and (for the reference rows) torch;
# no TensorFlow and no ml_collections (the benchmark imports neither).
# Each stage has a soft time budget (benchmark --budget_s: later variants are
# skipped, the JSON is written anyway) and a hard `timeout`, so a slow stage
# cannot hold up the ones after it.
set -uo pipefail

TINY=0
if [[ "${1:-}" == "--tiny" ]]; then TINY=1; shift; fi
if [[ $# -gt 0 ]]; then
  echo "usage: bash experiments/gpu_check.sh [--tiny]" >&2
  exit 2
fi
OUT="${OUT:-/tmp/gpu_check}"
# The PyTorch children's own JSON (also copied into perf_*.json): kept out of
# $OUT, so that $OUT holds only the few files worth keeping.
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

if ! "$PY" -c 'import ml_collections' 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit \
      --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import jax, flax, optax; print("jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__)'
  "$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())' 2>/dev/null || echo "no torch"
} 2>&1 | tee "$OUT/machine.txt"

if [[ $TINY == 1 ]]; then
  COMMON=(--tiny --scratch "$SCRATCH")
  BF16_VARIANTS="flax_baseline,s2d"
  FP32_VARIANTS="s2d"
  BUDGET_BF16=0; BUDGET_FP32=0
else
  COMMON=(--image_size=227 --batch_sizes=256 --num_classes=1000 --width=1.0
          --steps_per_window=20 --windows=5 --warmup=5 --pause=0
          --scratch "$SCRATCH")
  # Most informative first (a stage out of time skips the tail): the
  # straightforward Flax baseline (the first Flax row of the H200 reference
  # table in docs/performance.md), the default (shift LRN, sliced pooling),
  # conv1 as space-to-depth with each LRN form, the reference table's split
  # and banded-LRN rows (reduce_window pooling), and last its row without
  # groups and LRN (not the same net). experiments/harness.py's VARIANTS says
  # what each name changes.
  BF16_VARIANTS="flax_baseline,default,s2d,s2d+lrn_banded,lrn_banded+pool_reduce_window,s2d+lrn_matmul,s2d+pool_reduce_window,lrn_matmul+pool_reduce_window,one_tower+no_lrn+pool_reduce_window"
  FP32_VARIANTS="flax_baseline,default,s2d"
  BUDGET_BF16=250; BUDGET_FP32=90
fi

# bf16: every variant, torch eager and torch.compile (children, one at a time).
timeout $((BUDGET_BF16 > 0 ? BUDGET_BF16 + 60 : 1200)) \
    "$PY" -m experiments.benchmark "${COMMON[@]}" --budget_s=$BUDGET_BF16 \
    --dtypes=bfloat16 --variants="$BF16_VARIANTS" --torch=subprocess \
    --torch_compile --output="$OUT/perf_bf16.json" 2>&1 | tee "$OUT/perf_bf16.log"
echo "bf16 stage exit: ${PIPESTATUS[0]}"

# fp32 (TF32 matmuls and convolutions on both sides): the main variants and
# torch eager; the goal is at least twice torch eager's fp32 figure.
timeout $((BUDGET_FP32 > 0 ? BUDGET_FP32 + 60 : 1200)) \
    "$PY" -m experiments.benchmark "${COMMON[@]}" --budget_s=$BUDGET_FP32 \
    --dtypes=float32 --variants="$FP32_VARIANTS" --torch=subprocess \
    --output="$OUT/perf_fp32.json" 2>&1 | tee "$OUT/perf_fp32.log"
echo "fp32 stage exit: ${PIPESTATUS[0]}"

echo
"$PY" -m experiments.benchmark --summarize="$OUT/perf_bf16.json,$OUT/perf_fp32.json"
