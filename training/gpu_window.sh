#!/usr/bin/env bash
# Train a set of zoo checkpoints in one lent GPU window and bring them back (issues 14, 15, 16).
#
# The window (the device tool, /work/.library/device/README.md): 15 minutes of device time from the
# machine's start (about 1.5 min) to its release, 10 minutes a command, released after 30 s idle; what
# travels (the working tree, tracked and untracked-not-ignored files, plus `carry`) is at most 64 MiB a
# call; what comes back is at most 8 files of 16 MiB, 64 MiB a call. The real data sets are larger than
# one call carries, so they travel in parts, and the weights come back as float16 in parts.
#
# Here, before the window (commit first: the runs record the commit `prepare` checked was clean):
#     bash training/gpu_window.sh prepare c100            # or tin; [TEACHER_FOLDER ...] see below
# It writes .data/window-1, .data/window-2, ... (ignored by git) and prints the calls to make. Then, one
# call right after the other (the machine is released after 30 s idle and what it staged is lost):
#     run(command="bash training/gpu_window.sh stage", carry=[".data/window-1"])        # all parts but the last
#     run(command="SET=c100_deepreduce bash training/gpu_window.sh train [KEY=VALUE ...]", carry=[".data/window-2"])
#     run(command="bash training/gpu_window.sh fetch")    # while `train` said parts are left to fetch
#     give_back()
# and here, with the folders the calls' files came back in (files_at), in call order:
#     bash training/gpu_window.sh receive FILES_AT_1 FILES_AT_2 ...
# which checks the bundle's sha256, unpacks the hub folders into .data/received/ and publishes each
# finished run (`hybrezoo publish DIR --data $DATA`: evaluation on the CPU, weights/NAME/, manifest,
# cards, README table; teachers first). Commit what it published in the same session.
#
# `train`: unpacks the data (CIFAR-100 sheets: unpack.py; Tiny ImageNet: the six archives) into
# ~/data, trains `hybrezoo train $SET` (a set file or recipes, `--runs ~/window/runs`) with a time
# budget that ends at TRAIN_UNTIL seconds into the command (default 530, so the export and packing fit
# in the 600 s limit), then `pack`: every finished run becomes a hub folder (`hybrezoo export --dtype
# float16`: every check of a release, weights stored as float16), all of them one tar split into parts
# of 15 MiB; the first parts come back with this call, the rest with `fetch`. Runs the budget cut keep
# their checkpoint on the machine only: a second `train` in the same window continues them (--resume).
# Extra KEY=VALUE arguments override every run (e.g. epochs=30 for a short schedule; the published
# recipe must then say so). TEACHER_FOLDER (prepare): hub folders of runs published earlier (e.g.
# weights/pi_resnet18.c100) travel with the data and are placed as finished runs, so a set skips its
# teacher (when the overrides leave the teacher's recipe as it was) and its students distill from the
# published weights; with overrides, name only the students in SET.
#
# SMOKE=1: the flow on a CPU with fake data sets and 2-step runs (its weights mean nothing; `pack` then
# exports through the Python API with real_data=False, as `hybrezoo export` refuses smoke runs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WINDOW=${WINDOW:-$HOME/window}          # on the GPU machine: staged parts, unpacked sources, runs, bundle
CARRIED=${CARRIED:-$ROOT/.data}         # here: the window-N folders that travel, and what comes back
PART_BYTES=$((15 * 1024 * 1024))        # parts that come back (16 MiB a file at most)
RETURN_PARTS=4                          # parts a call brings back: 4 x 15 MiB + the small files < 64 MiB
TRAVEL_LIMIT=${TRAVEL_LIMIT:-$((64 * 1024 * 1024))}   # what a call may carry with the tree
PY=${PYTHON:-python3}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
START=$SECONDS

say() { echo "[$((SECONDS - START)) s] $*"; }
die() { echo "gpu_window.sh: $*" >&2; exit 1; }

shared_data() {  # the data sets beside the checkout (../shared/data), or $SHARED_DATA
  local d
  for d in "${SHARED_DATA:-}" "$ROOT/../shared/data" "$ROOT/shared/data"; do
    [ -n "$d" ] && [ -d "$d" ] && { (cd "$d" && pwd); return; }
  done
  die "no ../shared/data beside the checkout: set SHARED_DATA to the folder holding cifar-100/ and tiny-imagenet-200/"
}

travelling_bytes() {  # what a call sends besides `carry`: tracked and untracked-not-ignored files
  # (files listed but absent, e.g. hidden by sparse-checkout, do not travel: stat skips them)
  (cd "$ROOT" && { git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null || true; } |
    awk '{s += $1} END {print s + 0}')
}

# ---------------------------------------------------------------------------------------------- here
prepare() {
  local dataset=${1:-}; shift || true
  case "$dataset" in
    c100|cifar100) dataset=cifar-100 ;;
    tin|tinyimagenet) dataset=tiny-imagenet-200 ;;
    *) die "prepare c100|tin [TEACHER_FOLDER ...]: name the data set the window trains on" ;;
  esac
  command -v git >/dev/null || die "git is needed to name the commit the runs are made from"
  if [ -n "$(cd "$ROOT" && git status --porcelain)" ] && [ "${SMOKE:-0}" != 1 ]; then
    die "the checkout has uncommitted or untracked files (they would travel): commit them first, so the checkpoints \
name the code that made them"
  fi
  grep -qx '/.data/' "$ROOT/.gitignore" 2>/dev/null || die ".data/ must be ignored by git (it is in .gitignore)"
  local src stage tree chunk
  src=$(shared_data)
  [ -d "$src/$dataset" ] || die "$src/$dataset not found"
  tree=$(travelling_bytes)
  chunk=$((TRAVEL_LIMIT - tree - 1024 * 1024))
  [ "$chunk" -gt $((8 * 1024 * 1024)) ] || die "the working tree sends $((tree / 1048576)) MiB of the 64 MiB a call \
carries: too little room for data. Hide weights/ for the window (git sparse-checkout set --no-cone '/*' '!/weights/'; \
git sparse-checkout disable afterwards) or move large untracked files into an ignored folder"
  rm -rf "$CARRIED"/window-* "$CARRIED/window.tmp"
  stage=$CARRIED/window.tmp
  mkdir -p "$stage/src"
  (cd "$ROOT" && git rev-parse HEAD) > "$stage/src/COMMIT"
  echo "$dataset" > "$stage/src/DATASET"
  mkdir -p "$stage/src/runs"
  local folder name method
  for folder in "$@"; do   # published teachers: hub folders placed as finished runs
    [ -f "$folder/metrics.json" ] && [ -f "$folder/model.safetensors" ] || die "$folder is not a hub or run folder"
    name=$(basename "$folder")
    method=$("$PY" -c "import sys; from hybrezoo.registry import resolve_name; print(resolve_name(sys.argv[1]).method)" "$name")
    mkdir -p "$stage/src/runs/$method"
    cp -r "$folder" "$stage/src/runs/$method/$name"
    rm -f "$stage/src/runs/$method/$name/eval.json" "$stage/src/runs/$method/$name/README.md"
  done
  # one uncompressed tar of the data set (already compressed: WebP, JPEG archives) and the teachers
  tar -cf "$stage/bundle.tar" -C "$src" "$dataset" -C "$stage/src" COMMIT DATASET runs
  sha256sum "$stage/bundle.tar" | awk '{print $1}' > "$stage/bundle.sha256"
  (cd "$stage" && split -b "$chunk" -d -a 2 bundle.tar part-)
  local parts=("$stage"/part-*) n=${#parts[@]} i=1
  for part in "${parts[@]}"; do
    mkdir -p "$CARRIED/window-$i"
    mv "$part" "$CARRIED/window-$i/"
    i=$((i + 1))
  done
  cp "$stage/bundle.sha256" "$CARRIED/window-$n/"
  echo "$n" > "$CARRIED/window-$n/PARTS"
  rm -rf "$stage"
  echo "prepared $dataset for a window: $n part(s) of at most $((chunk / 1048576)) MiB (the tree sends $((tree / 1048576)) MiB),"
  echo "commit $(cd "$ROOT" && git rev-parse --short HEAD). The calls, one right after the other:"
  for ((i = 1; i < n; i++)); do
    echo "  run(command=\"bash training/gpu_window.sh stage\", carry=[\".data/window-$i\"], timeout_s=120)"
  done
  echo "  run(command=\"SET=... bash training/gpu_window.sh train [KEY=VALUE ...]\", carry=[\".data/window-$n\"], timeout_s=600)"
  echo "  run(command=\"bash training/gpu_window.sh fetch\", timeout_s=60)     # while train says parts are left"
}

# ------------------------------------------------------------------------------------ on the machine
stage_parts() {
  mkdir -p "$WINDOW/parts"
  local found=0 d
  for d in "$CARRIED"/window-*; do
    [ -d "$d" ] || continue
    cp "$d"/* "$WINDOW/parts/"
    found=1
  done
  [ "$found" = 1 ] || die "no .data/window-N carried: name it in the call's carry"
  say "staged: $(cd "$WINDOW/parts" && ls | tr '\n' ' ')"
}

unpack_sources() {
  [ -f "$WINDOW/parts/PARTS" ] || die "the last part (with PARTS) has not been carried: carry .data/window-N last"
  local n have
  n=$(cat "$WINDOW/parts/PARTS")
  have=$(ls "$WINDOW/parts"/part-* | wc -l)
  [ "$have" = "$n" ] || die "$have of $n parts staged: the machine was released between calls (run every stage call again)"
  [ -d "$WINDOW/src" ] && return 0
  cat "$WINDOW"/parts/part-* > "$WINDOW/bundle.in.tar"
  [ "$(sha256sum "$WINDOW/bundle.in.tar" | awk '{print $1}')" = "$(cat "$WINDOW/parts/bundle.sha256")" ] ||
    die "the joined data bundle does not match its sha256: prepare again and carry every part"
  mkdir -p "$WINDOW/src.tmp" && tar -xf "$WINDOW/bundle.in.tar" -C "$WINDOW/src.tmp" && mv "$WINDOW/src.tmp" "$WINDOW/src"
  rm -f "$WINDOW/bundle.in.tar" "$WINDOW"/parts/part-*
  say "unpacked the bundle (commit $(cat "$WINDOW/src/COMMIT"))"
}

unpack_data() {
  local dataset data=${DATA:-$HOME/data}
  dataset=$(cat "$WINDOW/src/DATASET")
  mkdir -p "$data"
  if [ "${SMOKE:-0}" = 1 ]; then
    "$PY" -c "
from hybrezoo.data.synthetic import write_fake_cifar100, write_fake_tinyimagenet
(write_fake_cifar100 if '$dataset' == 'cifar-100' else write_fake_tinyimagenet)('$data', 2, 1)"
  elif [ "$dataset" = cifar-100 ]; then
    [ -d "$data/cifar-100-python" ] || "$PY" "$WINDOW/src/cifar-100/unpack.py" "$data"
  else
    [ -d "$data/tiny-imagenet-200/val" ] || for a in "$WINDOW/src/tiny-imagenet-200"/*.tar.gz; do
      tar -xzf "$a" -C "$data" & done; wait
  fi
  say "data in $data: $(ls "$data" | tr '\n' ' ')"
}

train() {
  local set=${SET:-}
  [ -n "$set" ] || die "SET=... names the set file or recipes to train (e.g. SET=c100_deepreduce)"
  stage_parts
  unpack_sources
  unpack_data
  mkdir -p "$WINDOW/runs"
  cp -rn "$WINDOW/src/runs/." "$WINDOW/runs/" 2>/dev/null || true
  export HYBREZOO_SOURCE_COMMIT
  HYBREZOO_SOURCE_COMMIT=$(cat "$WINDOW/src/COMMIT")
  export HYBREZOO_CACHE=${HYBREZOO_CACHE:-$WINDOW/cache}
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
  local until=${TRAIN_UNTIL:-530} budget resume=()
  budget=$((until - (SECONDS - START)))
  [ "$budget" -gt 30 ] || die "no time left to train ($budget s)"
  ls "$WINDOW"/runs/*/*/checkpoint.pt >/dev/null 2>&1 && resume=(--resume)
  local smoke=()
  [ "${SMOKE:-0}" = 1 ] && smoke=(runtime.max_steps=2 data.batch_size=8 data.eval_batch_size=50 runtime.max_eval_batches=1)
  say "hybrezoo train $set, budget ${budget}s"
  set +e
  # shellcheck disable=SC2086
  "$PY" -m hybrezoo train $set --data "${DATA:-$HOME/data}" --runs "$WINDOW/runs" --time-budget "${budget}s" \
    --summary "$WINDOW/summary.json" --no-progress "${resume[@]}" "$@" "${smoke[@]}" 2>&1 | tee -a "$WINDOW/train.out"
  local status=${PIPESTATUS[0]}
  set -e
  say "hybrezoo train exited $status (0: all finished, 75: the budget cut runs, resumable in this window)"
  pack
}

pack() {
  mkdir -p "$WINDOW/hub" "$WINDOW/out"
  # every finished run (metrics.json) not packed yet and not carried in, exported in one process (one
  # import of torch instead of one per run): every check of `hybrezoo export`, weights as float16
  "$PY" - "$WINDOW" "${SMOKE:-0}" <<'EOF' || say "packing stopped: $?"
import sys
from pathlib import Path

from hybrezoo.errors import HybrezooError
from hybrezoo.hub.export import export_run

window, smoke = Path(sys.argv[1]), sys.argv[2] == "1"
for metrics in sorted(window.glob("runs/*/*/metrics.json")):
    run = metrics.parent
    where = run.relative_to(window / "runs")
    if (window / "src" / "runs" / where).is_dir() or (window / "hub" / where).is_dir():
        continue   # a teacher that came with the data, or packed by an earlier call
    try:   # smoke runs only through the API's real_data=False (the command line refuses them)
        export_run(run, window / "hub" / where, real_data=not smoke, dtype="float16")
        print(f"exported {where} (float16)", flush=True)
    except HybrezooError as err:
        print(f"not exported: {where}: {err}", flush=True)
EOF
  [ -f "$WINDOW/summary.json" ] && cp "$WINDOW/summary.json" "$WINDOW/out/summary.json"
  (cd "$WINDOW" && tar -czf out/logs.tar.gz train.out $(cd "$WINDOW" && find runs -name train.log -o -name log.jsonl | sort) 2>/dev/null) || true
  if ! ls "$WINDOW/hub"/*/* >/dev/null 2>&1; then
    say "no finished run to bring back"
  else
    rm -f "$WINDOW"/out/bundle.tar.part-* "$WINDOW/sent"
    (cd "$WINDOW" && tar -cf bundle.tar hub && sha256sum bundle.tar | awk '{print $1}' > out/bundle.sha256 &&
      split -b "$PART_BYTES" -d -a 2 bundle.tar out/bundle.tar.part- && rm bundle.tar)
    (cd "$WINDOW/out" && ls bundle.tar.part-* > parts.txt)
    say "packed $(ls -d "$WINDOW"/hub/*/* | wc -l) hub folder(s): $(wc -l < "$WINDOW/out/parts.txt") part(s) of 15 MiB"
  fi
  fetch
}

fetch() {
  [ -n "${OUT:-}" ] || die "\$OUT is not set: run this on the device machine (OUT=/tmp/out elsewhere)"
  mkdir -p "$OUT"
  local f sent=0
  for f in summary.json logs.tar.gz bundle.sha256 parts.txt; do
    [ -f "$WINDOW/out/$f" ] && cp "$WINDOW/out/$f" "$OUT/"
  done
  touch "$WINDOW/sent"
  for f in $(cat "$WINDOW/out/parts.txt" 2>/dev/null); do
    grep -qx "$f" "$WINDOW/sent" && continue
    [ "$sent" -lt "$RETURN_PARTS" ] || break
    cp "$WINDOW/out/$f" "$OUT/" && echo "$f" >> "$WINDOW/sent"
    sent=$((sent + 1))
  done
  local total left
  total=$(wc -l < "$WINDOW/out/parts.txt" 2>/dev/null || echo 0)
  left=$((total - $(wc -l < "$WINDOW/sent")))
  say "this call brings back $sent part(s); $left left: $([ "$left" -gt 0 ] && echo 'call `bash training/gpu_window.sh fetch` now' || echo 'all sent')"
  ls -la "$OUT"
}

# ---------------------------------------------------------------------------------------------- here
receive() {
  [ $# -gt 0 ] || die "receive FILES_AT ...: the folders the calls' files came back in"
  local into=$CARRIED/received work
  mkdir -p "$CARRIED"
  work=$(mktemp -d "$CARRIED/receive.XXXXXX")
  # shellcheck disable=SC2064  # expanded now: $work is local
  trap "rm -rf '$work'" EXIT
  local d f sha=""
  for d in "$@"; do
    for f in "$d"/bundle.tar.part-*; do [ -f "$f" ] && cp "$f" "$work/"; done
    [ -f "$d/bundle.sha256" ] && sha=$(cat "$d/bundle.sha256")
    [ -f "$d/parts.txt" ] && cp "$d/parts.txt" "$work/parts.txt"
  done
  [ -n "$sha" ] && [ -f "$work/parts.txt" ] || die "no bundle.sha256 / parts.txt in $*: give every files_at folder of the window"
  for f in $(cat "$work/parts.txt"); do
    [ -f "$work/$f" ] || die "$f is missing: fetch it (bash training/gpu_window.sh fetch) while the machine is warm"
  done
  (cd "$work" && cat $(cat parts.txt) > bundle.tar)
  [ "$(sha256sum "$work/bundle.tar" | awk '{print $1}')" = "$sha" ] || die "the joined bundle does not match its sha256"
  mkdir -p "$into"
  "$PY" - "$work/bundle.tar" "$into" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1]) as tar:   # the 'data' filter: no absolute paths, links out or devices
    tar.extractall(sys.argv[2], filter="data")
EOF
  echo "received into $into:"
  local order
  order=$(cd "$into/hub" && ls -d baseline/* 2>/dev/null; cd "$into/hub" && ls -d */* | grep -v '^baseline/' || true)
  for f in $order; do echo "  $f"; done
  if [ "${PUBLISH:-1}" = 1 ]; then
    local data=${DATA:-$HOME/data}
    for f in $order; do
      say "hybrezoo publish $into/hub/$f --data $data"
      "$PY" -m hybrezoo publish "$into/hub/$f" --data "$data" ${OVERWRITE:+--overwrite} || echo "  not published: $f"
    done
    echo "commit weights/, hybrezoo/hub/manifest.json, model_cards/ and README.md together"
  fi
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  stage) stage_parts ;;
  train) shift; train "$@" ;;
  pack) pack ;;
  fetch) fetch ;;
  receive) shift; receive "$@" ;;
  *) sed -n '2,40p' "$0"; exit 2 ;;
esac
