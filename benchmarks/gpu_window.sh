#!/usr/bin/env bash
# One GPU window, prepared: the measurements issue 13 asks for, in about 7 minutes of one command on a
# lent NVIDIA H200/H100 (limits: /work/.library/device/README.md, 10 minutes a command, 15 minutes of
# device time a session, at most 8 files of 16 MiB back from $OUT, two folders deep).
#
# From the session that holds the GPU (the repository root):
#     mkdir -p .data && cp /work/shared/data/tiny-imagenet-200/train-0.tar.gz .data/   # optional: real JPEGs
#     run(command="bash benchmarks/gpu_window.sh", carry=[".data"], timeout_s=600)
# Anywhere else: OUT=/tmp/out bash benchmarks/gpu_window.sh
# SMOKE=1 checks the script's flow on a CPU in a few minutes (tiny sizes: its figures mean nothing).
#
# What it measures (everything on synthetic images in the real Tiny ImageNet format, 64x64, 200
# classes: the real data set is larger than what travels to the machine, so no accuracy comes out):
#   1. JPEG decoding (benchmarks/decode_throughput.py): 10,000 files serially vs 20,000 on one process
#      per core, on real Tiny ImageNet JPEGs when .data/train-0.tar.gz (40 classes) travelled, and on
#      the synthetic split; then the cache every run below reads.
#   2. ResNet18 epoch time (benchmarks/train_throughput.py, 100,000 images, second epoch timed):
#      eager; eager + fused SGD and torch.compile + fused SGD last, while time is left.
#   3. The Tiny ImageNet DeepReDuce set (benchmarks/train_throughput.py --set): every run's step rate
#      alone (the KD student epoch time among them) and the lockstep group's, GPU-minutes, checkpoints
#      per GPU-hour, fraction of the dense bf16 peak.
#   4. The real command on the set, one epoch per run (epochs=1) on 50,000 synthetic training images,
#      side by side: today's path (--no-lockstep, one run after another), lockstep, and --no-lockstep
#      --jobs 4 (four processes share the GPU); the wall time of each is the set's GPU time.
#   5. A time budget that cuts a run and --resume that finishes it, on the GPU.
# Results: $OUT/gpu_window.log (everything printed), $OUT/set_*.json (summaries of step 4),
# $OUT/runs.tar.gz (metrics.json, log.jsonl, train.log of every run; the weights of runs on synthetic
# images are worthless and too large to come back: their sha256 are in the log).
set -u
OUT=${OUT:-/tmp/gpu_window_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_window.log") 2>&1
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
section() { echo; echo "=== [$(elapsed) s] $*"; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/hybrezoo_window}
rm -rf "$WORK"; mkdir -p "$WORK"
export HYBREZOO_CACHE=$WORK/cache HYBREZOO_DATA=$WORK/data
if [ "${SMOKE:-0}" = 1 ]; then   # the flow only, on a CPU
  PER_CLASS=2; VAL=1; TP="--images 32 --batch-size 16 --epochs 1"; SETB="--steps 1 --batch-size 4"; SLOW=5
  SMOKE_O="runtime.max_steps=1 data.batch_size=8 data.eval_batch_size=50 runtime.max_eval_batches=1"
else
  PER_CLASS=250; VAL=50; TP=""; SETB="--steps 30"; SMOKE_O=""; SLOW=1
fi

# run a step only while the window has room for it (the command's limit is 600 s)
room() { if [ "${SMOKE:-0}" = 1 ] || [ "$(elapsed)" -lt "$1" ]; then return 0; else echo "skipped (at $(elapsed) s): $2"; return 1; fi; }

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv || true
nproc
$PY -c "import sys, torch, timm, PIL, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__, 'pillow', PIL.__version__, 'numpy', numpy.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO GPU')" || { echo "python stack missing: stop"; exit 1; }
$PY -c "import hybrezoo; print('hybrezoo', hybrezoo.__version__)" || { echo "hybrezoo does not import here: stop"; exit 1; }

section "1. synthetic Tiny ImageNet in the real format ($PER_CLASS train / $VAL val JPEGs per class)"
$PY -c "
import time
from hybrezoo.data.synthetic import write_fake_tinyimagenet
t = time.perf_counter()
write_fake_tinyimagenet('$WORK/data', train_per_class=$PER_CLASS, val_per_class=$VAL)
print(f'wrote {200 * $PER_CLASS:,} train + {200 * $VAL:,} val JPEGs in {time.perf_counter() - t:.1f} s')"

section "1. JPEG decoding: serial vs one process per core"
REAL=
if [ -f .data/train-0.tar.gz ]; then
  mkdir -p "$WORK/real" && tar -xzf .data/train-0.tar.gz -C "$WORK/real" && REAL=$WORK/real
else
  echo "no .data/train-0.tar.gz: real JPEGs not timed"
fi
$PY benchmarks/decode_throughput.py "$WORK/data" $REAL
# the cache every training run below reads (decoded once, on all cores)
$PY -c "
import time; from hybrezoo.data import load_split
t = time.perf_counter(); load_split('tinyimagenet', 'train'); load_split('tinyimagenet', 'val')
print(f'decoded and cached train + val in {time.perf_counter() - t:.1f} s')"

section "2. ResNet18 on Tiny ImageNet shapes: epoch of 100,000 images (second of two epochs timed), eager"
timeout 90 $PY benchmarks/train_throughput.py $TP

SET=training/sets/tin_deepreduce.yaml
COMMON="--data $WORK/data --no-progress epochs=1 schedule.warmup_epochs=0 $SMOKE_O"
set_run() {  # name, options, timeout: the real command on the set, one epoch per run
  section "4. hybrezoo train $SET $2 (one epoch per run on $(( 200 * PER_CLASS )) images: $1)"
  local t0=$SECONDS
  timeout $(( $3 * SLOW )) $PY -m hybrezoo train $SET --runs "$WORK/runs_$1" --summary "$OUT/set_$1.json" $2 $COMMON
  echo "exit $? after $((SECONDS - t0)) s (wall time of the whole command, start-up included)"
}
room 300 "the set one run after another" && set_run sequential "--no-lockstep" 170
room 380 "the set in lockstep" && set_run lockstep "" 120

room 420 "the --set benchmark" && {
  section "3. the set's step rates alone and in lockstep (benchmarks/train_throughput.py --set, 30 timed steps)"
  timeout $(( 120 * SLOW )) $PY benchmarks/train_throughput.py --set $SET $SETB; }

room 460 "the set in 4 processes" && set_run jobs4 "--no-lockstep --jobs 4" 110

room 490 "the budget and resume" && {
  section "5. a 15 s budget cuts the lockstep set, --resume finishes it"
  B="$PY -m hybrezoo train $SET --runs $WORK/runs_budget $COMMON"
  timeout $(( 60 * SLOW )) $B --time-budget 15s --summary "$OUT/set_budget_1.json"; echo "exit $? (75: stopped, resumable)"
  timeout $(( 90 * SLOW )) $B --resume --summary "$OUT/set_budget_2.json"; echo "exit $?"; }

room 520 "fused SGD" && {
  section "2b. ResNet18 epoch, eager + fused SGD"
  timeout 40 $PY benchmarks/train_throughput.py --fused $TP; }
room 470 "torch.compile" && {
  section "2c. ResNet18 epoch, torch.compile + fused SGD"
  left=$(( 560 - $(elapsed) )); [ "$left" -lt 30 ] && left=$(( 30 * SLOW ))
  timeout $left $PY benchmarks/train_throughput.py --compile --fused $TP; }

section "results"
(cd "$WORK" && find . -name model.safetensors -exec sha256sum {} + | sort -k2)
(cd "$WORK" && tar -czf "$OUT/runs.tar.gz" $(find . -name metrics.json -o -name log.jsonl -o -name train.log | sort))
ls -la "$OUT"
echo "done in $(elapsed) s"
