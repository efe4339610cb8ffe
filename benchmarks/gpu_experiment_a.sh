#!/usr/bin/env bash
# The paper's Experiment A at the paper's model size on one GPU, and the GPU speed figures, in one
# go (the recipe of docs/results.md's GPU section). Needs the real data of the `mnist-trousers`
# scenario: a folder with mnist_22k.npz and fashion_mnist_trousers.npz in $UNLEARN_GYM_DATA.
#
#   UNLEARN_GYM_DATA=../shared/data OUT=runs/gpu bash benchmarks/gpu_experiment_a.sh
#
# Settings (environment variables, defaults for an H100/H200; CLASSIFIER_DIR: a classifier made with
# `unlearn-gym train-classifier --scenario mnist-trousers --epochs 6 --seed 0`, else trained here):
#   DEVICE=cuda PRESET=siss PRETRAIN_SECONDS=170 PRETRAIN_BATCH=128 BENCH_BATCH=64 BENCH_LR=1e-4
#   HORIZON=100 SEEDS=5 POLICIES=static:0.5,vi-adaptive,random PERF_NUM_ENVS=1,4,16,64
#   PERF_EXECUTORS=loop,vmap,graph (graph: the batched update captured as one CUDA graph)
# Each stage appends to $OUT/gpu.log; the reports land in $OUT/results/.
set -uo pipefail
: "${OUT:=runs/gpu}" "${DEVICE:=cuda}" "${PRESET:=siss}" "${PRETRAIN_SECONDS:=170}" "${PRETRAIN_BATCH:=128}"
: "${BENCH_BATCH:=64}" "${BENCH_LR:=1e-4}" "${HORIZON:=100}" "${SEEDS:=5}" "${CLASSIFIER_EPOCHS:=6}"
: "${POLICIES:=static:0.5,vi-adaptive,random}" "${PERF_NUM_ENVS:=1,4,16,64}" "${PERF_EXECUTORS:=loop,vmap,graph}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/results"
LOG="$OUT/gpu.log"
UG=(python3 -m unlearn_gym.cli)
WORK="${WORK:-runs/gpu-work}"
mkdir -p "$WORK"
stage() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
timed() {  # run "$@", then log its wall-clock seconds
  local t0=$SECONDS; "$@"; local rc=$?; echo "wall $((SECONDS - t0)) s (exit $rc)" | tee -a "$LOG"; return $rc
}

stage "machine"
{ nvidia-smi -L 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"; } 2>&1 | tee -a "$LOG"

stage "perf: env.step per preset (eager, batch $BENCH_BATCH)"
for preset in ${PERF_PRESETS:-tiny small siss}; do
  "${UG[@]}" perf --device "$DEVICE" --preset "$preset" --batch "$BENCH_BATCH" --json 2>>"$LOG" | tee -a "$OUT/results/perf.jsonl"
done
stage "gpu tests: no host sync in the update; the graph executor against eager vmap"
python3 -m pytest -q -p no:cacheprovider -m gpu -rs tests/test_engine_sync.py tests/test_batched_engine.py 2>&1 \
  | tail -n 15 | tee -a "$LOG"
stage "perf: N = $PERF_NUM_ENVS batched runs, executors $PERF_EXECUTORS (docs/results.md's GPU table)"
for preset in tiny small; do
  "${UG[@]}" perf --device "$DEVICE" --preset "$preset" --batch "$BENCH_BATCH" --num-envs "$PERF_NUM_ENVS" \
    --executor "$PERF_EXECUTORS" --json 2>>"$LOG" | tee -a "$OUT/results/perf_num_envs.jsonl"
done

# pretraining steps that fit PRETRAIN_SECONDS, from the measured plain DDPM step at this preset
ms=$(python3 - "$OUT/results/perf.jsonl" "$PRESET" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
row = [r for r in rows if r.get("preset") == sys.argv[2]]
print(row[-1]["plain_ms"] if row else 100.0)
EOF
)
STEPS=$(python3 -c "import math; print(max(200, int(${PRETRAIN_SECONDS} * 1000 / (1.3 * ${ms}))))")
stage "pretrain: $PRESET on mnist-trousers, $STEPS steps at batch $PRETRAIN_BATCH (plain step ${ms} ms at batch $BENCH_BATCH)"
timed "${UG[@]}" pretrain --scenario mnist-trousers --preset "$PRESET" --steps "$STEPS" \
  --batch-size "$PRETRAIN_BATCH" --lr 1e-3 --lr-schedule cosine --warmup-steps 100 --seed 0 --device "$DEVICE" \
  --no-progress --out "$WORK/model" 2>&1 | tail -n 5 | tee -a "$LOG"

if [ -n "${CLASSIFIER_DIR:-}" ]; then  # trained beforehand (e.g. on a CPU): the same command, saves GPU time
  stage "classifier: $CLASSIFIER_DIR"
  cp -r "$CLASSIFIER_DIR" "$WORK/model/classifier"
else
  stage "classifier on mnist-trousers ($CLASSIFIER_EPOCHS epochs)"
  timed "${UG[@]}" train-classifier --scenario mnist-trousers --epochs "$CLASSIFIER_EPOCHS" \
    --seed 0 --threads 8 --no-progress --out "$WORK/model/classifier" 2>&1 | tail -n 3 | tee -a "$LOG"
fi

stage "bench: $POLICIES x $SEEDS seeds, T = $HORIZON, batch $BENCH_BATCH, lr $BENCH_LR"
timed "${UG[@]}" bench --checkpoint "$WORK/model" --device "$DEVICE" --policies "$POLICIES" \
  --seeds "$SEEDS" --horizon "$HORIZON" --batch-size "$BENCH_BATCH" --lr "$BENCH_LR" --workers 1 --no-progress \
  --out "$WORK/bench" 2>&1 | tail -n 70 | tee -a "$LOG"
cp "$WORK/model/config.json" "$OUT/results/model_config.json" 2>/dev/null
cp "$WORK"/bench/{bench.md,bench.json,samples.png,curves.png} "$OUT/results/" 2>/dev/null
stage "done"
