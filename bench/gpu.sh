#!/usr/bin/env bash
# The GPU benchmarks in one script, for a session that has the device machine (one H200; its own
# Python 3.12 and PyTorch 2.11, torchvision 0.26, no pydantic, no web stack; it gets the checkout only).
#
# Here, once:   .venv/bin/python bench/prepare_data.py --wheels   # .bench-data (45 MB) + .whl (3 MB)
# Then:         run(command="bash bench/gpu.sh", carry=[".bench-data", ".whl"], timeout_s=590)
#               (the steps' limits add up to 570 s; the machine's start comes on top, 15 min in all)
# Locally:      OUT=/tmp/gpu-out bash bench/gpu.sh   (also works on a CUDA workstation)
# Smoke test of this script on a CPU (tiny sizes, any data root in the real formats):
#               SMOKE=1 OUT=/tmp/gpu-out TRANSFERLAB_DATA_DIR=/tmp/tiny bash bench/gpu.sh
#
# Order is by value, each step under its own time limit so one slow step cannot eat the rest:
#   1. seed study, engine as it is: pretrain resnet18 on the STL-10 subset at 96x96, then linear,
#      partial, full on all of MNIST, with evaluation: wall time (target < 60 s) and full fine-tune
#      test accuracy (target >= 99.5%)                                        -> $OUT/seed.json
#   2. the engine's tests on the GPU (TRANSFERLAB_TEST_DEVICE=cuda): every strategy, bf16 and its
#      feature cache, resume, with deterministic algorithms                    -> $OUT/log.txt
#   3. fine-tune table, ours vs textbook, all strategies, all of MNIST, 3 epochs -> $OUT/finetune.json
#   4. pre-training table on STL-10, ours vs textbook, 10 epochs             -> $OUT/pretrain.json
#   5. seed study again with torch.compile and cudnn.benchmark (does it pay?)  -> $OUT/seed-compiled.json
# Everything printed also lands in $OUT/log.txt. Paste the tables into docs/performance.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TRANSFERLAB_DATA_DIR=${TRANSFERLAB_DATA_DIR:-$PWD/.bench-data}
LOG=$OUT/log.txt

if ! $PY -c "import pydantic" 2>/dev/null; then
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no pydantic and no .whl/: run bench/prepare_data.py --wheels and carry .whl"; exit 2; }
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$TRANSFERLAB_DATA_DIR/MNIST/raw" ] || { echo "no data at $TRANSFERLAB_DATA_DIR: carry .bench-data"; exit 2; }

{
    date -u +"%Y-%m-%d %H:%M UTC"
    [ "${SMOKE:-0}" = 1 ] || nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
    $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"
    nproc
} 2>&1 | tee "$LOG"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, and go on whatever happens
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$LOG"
}

DEVICE=cuda
TESTS=(tests/engine)
SEED=(--feature-cache-gb 16)
TABLE=(--epochs 3 --textbook-workers 8)
SOURCE=(--pretrain-epochs 20 --pretrain-samples 1000)
PRETRAIN=(--epochs 10 --textbook-workers 8)
if [ "${SMOKE:-0}" = 1 ]; then  # the same steps at toy sizes on the CPU: checks the plumbing only
    DEVICE=cpu
    TESTS=(tests/engine/test_numerics.py)
    tiny=(--model simple_cnn --image-size 16)
    SEED=("${tiny[@]}" --train-samples 100 --test-samples 50 --pretrain-epochs 1 --epochs 1,1,1)
    TABLE=("${tiny[@]}" --train-samples 100 --test-samples 50 --epochs 1 --textbook-workers 1)
    SOURCE=(--pretrain-epochs 1 --pretrain-samples 100)
    PRETRAIN=(--model simple_cnn --image-size 32 --epochs 1 --textbook-workers 1)
fi

step seed 100 $PY -m bench.seed_study --device $DEVICE "${SEED[@]}" --out "$OUT/seed.json"
step engine-tests 70 env TRANSFERLAB_TEST_DEVICE=$DEVICE $PY -m pytest -q -p no:cacheprovider "${TESTS[@]}"
step finetune 240 $PY -m bench.finetune_throughput --device $DEVICE "${TABLE[@]}" "${SOURCE[@]}" \
    --out "$OUT/finetune.json"
step pretrain 60 $PY -m bench.pretrain_throughput --device $DEVICE "${PRETRAIN[@]}" --out "$OUT/pretrain.json"
COMPILE=(--compile --cudnn-benchmark)
[ "${SMOKE:-0}" = 1 ] && COMPILE=(--cudnn-benchmark)  # inductor needs minutes of CPU compiling
step seed-compiled 100 $PY -m bench.seed_study --device $DEVICE "${SEED[@]}" "${COMPILE[@]}" \
    --out "$OUT/seed-compiled.json"
echo "outputs: $(ls "$OUT")" | tee -a "$LOG"
