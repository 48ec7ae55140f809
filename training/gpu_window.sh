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
#     run(command="SET=c100_deepreduce TRAIN_UNTIL=530 bash training/gpu_window.sh train [KEY=VALUE ...]",
#         carry=[".data/window-2"])
#     run(command="bash training/gpu_window.sh fetch")    # while `train` said parts are left to fetch
#     give_back()
# and here, with the folders the calls' files came back in (files_at):
#     bash training/gpu_window.sh receive FILES_AT_1 FILES_AT_2 ...
# which checks each bundle's sha256, unpacks its hub folders into .data/received/<sha>/ and publishes
# each run (`hybrezoo publish DIR --data $DATA`: evaluation on the CPU, weights/NAME/, manifest, cards,
# README table; teachers first). A bundle already received is not published again. Commit what it
# published in the same session.
#
# The device time: machine start (about 90 s) + one short call per `stage` + the `train` call
# (TRAIN_UNTIL + the packing, 7 s for the 11 runs of the CIFAR-100 set on a 2-core CPU, SMOKE=1) + one
# short call per `fetch` (4 parts of 15 MiB each, about 11
# parts for the 11 float16 networks of the CIFAR-100 DeepReDuce set) must fit in the session's
# device time (status's budget_left_s, 900 s at most): lower TRAIN_UNTIL (default 530) when it does not.
#
# `train`: unpacks the data (CIFAR-100 sheets: unpack.py; Tiny ImageNet: the six archives) into
# ~/data, trains `hybrezoo train $SET` (a set file or recipes, `--runs ~/window/runs`) with a time
# budget that ends at TRAIN_UNTIL seconds into the command, then `pack`: every run finished since the
# last pack becomes a hub folder (`export_run(..., dtype="float16")`: every check of a release,
# weights stored as float16), all of them one bundle (bundle-N.tar) split into parts of 15 MiB
# (bundles.txt: name, sha256, parts); the first parts come back with this call, the rest with `fetch`
# (`fetch PART ...` sends those again, RESEND=1 all). Its exit status is hybrezoo train's. Runs the
# budget cut keep their checkpoint on this machine only: a second `train` (no carry needed) continues
# them if the window has time left; `pack` alone brings back whatever finished.
# Extra KEY=VALUE arguments override every run (e.g. epochs=30 for a short schedule; the published
# recipe must then say so). TEACHER_FOLDER (prepare): hub folders of runs published earlier (e.g.
# weights/pi_resnet18.c100) travel with the data and are placed as finished runs in ~/window/runs, so
# a set skips its teacher (when the overrides leave the teacher's recipe as it was), and a SET naming
# only students distills from it (their runs/baseline/... reference is looked up under --runs).
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
  echo "  run(command=\"SET=... TRAIN_UNTIL=530 bash training/gpu_window.sh train [KEY=VALUE ...]\", carry=[\".data/window-$n\"], timeout_s=600)"
  echo "  run(command=\"bash training/gpu_window.sh fetch\", timeout_s=60)     # while train says parts are left"
  echo "TRAIN_UNTIL: below budget_left_s - 90 (start) - the stage and fetch calls (their transfer times are not measured yet) - packing."
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
  have=$( (ls "$WINDOW/parts"/part-* 2>/dev/null || true) | wc -l)
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
    if [ ! -d "$data/tiny-imagenet-200/val" ]; then
      local a pids=()
      for a in "$WINDOW/src/tiny-imagenet-200"/*.tar.gz; do tar -xzf "$a" -C "$data" & pids+=($!); done
      for a in "${pids[@]}"; do wait "$a" || die "unpacking a Tiny ImageNet archive failed"; done
    fi
  fi
  say "data in $data: $(ls "$data" | tr '\n' ' ')"
}

train() {
  local set=${SET:-}
  [ -n "$set" ] || die "SET=... names the set file or recipes to train (e.g. SET=c100_deepreduce)"
  if [ ! -d "$WINDOW/src" ]; then   # a second `train` in the same window reuses what the first unpacked
    stage_parts
    unpack_sources
  fi
  unpack_data
  mkdir -p "$WINDOW/runs"
  cp -rn "$WINDOW/src/runs/." "$WINDOW/runs/" 2>/dev/null || true
  export HYBREZOO_SOURCE_COMMIT
  HYBREZOO_SOURCE_COMMIT=$(cat "$WINDOW/src/COMMIT")
  export HYBREZOO_CACHE=${HYBREZOO_CACHE:-$WINDOW/cache}
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
  local until=${TRAIN_UNTIL:-530} budget resume=()
  budget=${TRAIN_BUDGET:-$((until - (SECONDS - START)))}   # TRAIN_BUDGET: seconds, instead of TRAIN_UNTIL
  [ -n "${TRAIN_BUDGET:-}" ] || [ "$budget" -gt 30 ] || die "no time left to train ($budget s): raise TRAIN_UNTIL"
  ls "$WINDOW"/runs/*/*/checkpoint.pt >/dev/null 2>&1 && resume=(--resume)
  local smoke=()
  [ "${SMOKE:-0}" = 1 ] && smoke=(runtime.max_steps=2 data.batch_size=8 data.eval_batch_size=50 runtime.max_eval_batches=1)
  rm -f "$WINDOW/summary.json"
  say "hybrezoo train $set, budget ${budget}s"
  set +e
  # The budget stops every run at its first step past the deadline; `timeout` sends SIGTERM (the same
  # graceful stop, exit 75) if set-up or evaluation runs long, so `pack` always gets its time.
  # shellcheck disable=SC2086
  timeout -k 15 $((${budget%.*} + 41)) "$PY" -m hybrezoo train $set --data "${DATA:-$HOME/data}" --runs "$WINDOW/runs" \
    --time-budget "${budget}s" --summary "$WINDOW/summary.json" --no-progress "${resume[@]}" "$@" "${smoke[@]}" 2>&1 |
    tee -a "$WINDOW/train.out"
  local status=${PIPESTATUS[0]}
  set -e
  say "hybrezoo train exited $status (0: all finished; 75: the budget cut runs, their checkpoints stay on this \
machine only; 2: a run failed, see its line above)"
  pack
  return "$status"
}

pack() {
  mkdir -p "$WINDOW/hub" "$WINDOW/out"
  # every finished run (metrics.json) not packed yet and not carried in, exported in one process (one
  # import of torch instead of one per run): every check of `hybrezoo export`, weights as float16;
  # the names exported now go to $WINDOW/new
  "$PY" - "$WINDOW" "${SMOKE:-0}" <<'EOF' || say "packing stopped: $?"
import sys
from pathlib import Path

from hybrezoo.hub.export import export_run

window, smoke = Path(sys.argv[1]), sys.argv[2] == "1"
new = []
for metrics in sorted(window.glob("runs/*/*/metrics.json")):
    run = metrics.parent
    where = run.relative_to(window / "runs")
    if (window / "src" / "runs" / where).is_dir() or (window / "hub" / where).is_dir():
        continue   # a teacher that came with the data, or packed by an earlier call
    try:   # smoke runs only through the API's real_data=False (the command line refuses them)
        export_run(run, window / "hub" / where, real_data=not smoke, dtype="float16")
        new.append(str(where))
        print(f"exported {where} (float16)", flush=True)
    except Exception as err:   # one bad run must not keep the others from coming back
        print(f"not exported: {where}: {type(err).__name__}: {err}", flush=True)
(window / "new").write_text("".join(f"{name}\n" for name in new))
EOF
  [ -f "$WINDOW/summary.json" ] && cp "$WINDOW/summary.json" "$WINDOW/out/summary.json"
  (cd "$WINDOW" && tar -czf out/logs.tar.gz $(ls train.out 2>/dev/null) $(find runs -name train.log | sort) 2>/dev/null) || true
  if [ "$(stat -c %s "$WINDOW/out/logs.tar.gz" 2>/dev/null || echo 0)" -gt $((3 * 1024 * 1024)) ]; then
    tail -c 1048576 "$WINDOW/train.out" | gzip > "$WINDOW/out/logs.tar.gz"   # keep within the 64 MiB a call
  fi
  if [ ! -s "$WINDOW/new" ]; then
    say "no newly finished run to bring back"
  else
    # one bundle per pack: only what this call exported, so earlier bundles stay valid
    local n=1
    while [ -e "$WINDOW/out/bundle-$n.tar.part-00" ]; do n=$((n + 1)); done
    (cd "$WINDOW/hub" && tar -cf "$WINDOW/bundle-$n.tar" $(cat "$WINDOW/new"))
    local sha
    sha=$(sha256sum "$WINDOW/bundle-$n.tar" | awk '{print $1}')
    (cd "$WINDOW/out" && split -b "$PART_BYTES" -d -a 2 "$WINDOW/bundle-$n.tar" "bundle-$n.tar.part-")
    rm -f "$WINDOW/bundle-$n.tar"
    echo "bundle-$n.tar $sha $(ls "$WINDOW/out"/bundle-$n.tar.part-* | wc -l)" >> "$WINDOW/out/bundles.txt"
    say "packed $(wc -l < "$WINDOW/new") hub folder(s) into bundle-$n: $(ls "$WINDOW/out"/bundle-$n.tar.part-* | wc -l) part(s) of 15 MiB"
  fi
  fetch
}

fetch() {  # fetch [PART ...]: the next parts not sent yet (RESEND=1: all again), or the parts named
  [ -n "${OUT:-}" ] || die "\$OUT is not set: run this on the device machine (OUT=/tmp/out elsewhere)"
  [ -d "$WINDOW/out" ] || die "nothing was packed on this machine (it was released since: what it held is lost)"
  mkdir -p "$OUT"
  local f sent=0
  for f in summary.json logs.tar.gz bundles.txt; do
    [ -f "$WINDOW/out/$f" ] && cp "$WINDOW/out/$f" "$OUT/"
  done
  [ "${RESEND:-0}" = 1 ] && rm -f "$WINDOW/sent"
  touch "$WINDOW/sent"
  local wanted
  if [ $# -gt 0 ]; then wanted=("$@"); else mapfile -t wanted < <(cd "$WINDOW/out" && ls bundle-*.tar.part-* 2>/dev/null || true); fi
  for f in "${wanted[@]}"; do
    [ -f "$WINDOW/out/$f" ] || die "no part $f on this machine"
    [ $# -eq 0 ] && grep -qx "$f" "$WINDOW/sent" && continue
    [ "$sent" -lt "$RETURN_PARTS" ] || break
    cp "$WINDOW/out/$f" "$OUT/" && echo "$f" >> "$WINDOW/sent"
    sent=$((sent + 1))
  done
  local total left
  total=$( (cd "$WINDOW/out" && ls bundle-*.tar.part-* 2>/dev/null || true) | wc -l)
  left=$((total - $(sort -u "$WINDOW/sent" | wc -l)))
  say "this call brings back $sent part(s); $left left: $([ "$left" -gt 0 ] && echo 'call `bash training/gpu_window.sh fetch` now' || echo 'all sent')"
  ls -la "$OUT"
}

# ---------------------------------------------------------------------------------------------- here
receive() {  # receive FILES_AT ...: every complete bundle is checked, unpacked and (PUBLISH=1) published
  [ $# -gt 0 ] || die "receive FILES_AT ...: the folders the calls' files came back in"
  mkdir -p "$CARRIED"
  local work
  work=$(mktemp -d "$CARRIED/receive.XXXXXX")
  # shellcheck disable=SC2064  # expanded now: $work is local
  trap "rm -rf '$work'" EXIT
  local d f
  for d in "$@"; do
    for f in "$d"/bundle-*.tar.part-*; do [ -f "$f" ] && cp "$f" "$work/"; done
    [ -f "$d/bundles.txt" ] && cat "$d/bundles.txt" >> "$work/bundles.all"
  done
  [ -s "$work/bundles.all" ] || die "no bundles.txt in $*: give every files_at folder of the window"
  local name sha count incomplete=0 published=() i
  while read -r name sha count; do
    local parts=() into=$CARRIED/received/${sha:0:12}
    for ((i = 0; i < count; i++)); do parts+=("$work/$name.part-$(printf %02d "$i")"); done
    local missing=0
    for f in "${parts[@]}"; do [ -f "$f" ] || missing=$((missing + 1)); done
    if [ "$missing" -gt 0 ]; then
      echo "$name: $missing of $count part(s) missing: fetch them (bash training/gpu_window.sh fetch) while the machine is warm" >&2
      incomplete=1; continue
    fi
    if [ -d "$into" ]; then echo "$name: already received into $into"; continue; fi
    cat "${parts[@]}" > "$work/$name"
    if [ "$(sha256sum "$work/$name" | awk '{print $1}')" != "$sha" ]; then
      echo "$name: the joined bundle does not match its sha256 (a part is damaged or from another bundle)" >&2
      incomplete=1; continue
    fi
    mkdir -p "$into.tmp"
    "$PY" - "$work/$name" "$into.tmp" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1]) as tar:   # the 'data' filter: no absolute paths, links out or devices
    tar.extractall(sys.argv[2], filter="data")
EOF
    mv "$into.tmp" "$into"
    rm -f "$work/$name"
    echo "$name: received into $into:"
    for f in $(cd "$into" && { ls -d baseline/* 2>/dev/null; ls -d */* | grep -v '^baseline/' || true; }); do
      echo "  $f"; published+=("$into/$f")
    done
  done < <(sort -u "$work/bundles.all")
  if [ "${PUBLISH:-1}" = 1 ] && [ ${#published[@]} -gt 0 ]; then
    local data=${DATA:-$HOME/data}
    for f in "${published[@]}"; do   # teachers first within each bundle
      say "hybrezoo publish $f --data $data"
      "$PY" -m hybrezoo publish "$f" --data "$data" ${OVERWRITE:+--overwrite} || echo "  not published: $f"
    done
    echo "commit weights/, hybrezoo/hub/manifest.json, model_cards/ and README.md together"
  fi
  return "$incomplete"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  stage) stage_parts ;;
  train) shift; train "$@" ;;
  pack) pack ;;
  fetch) fetch ;;
  receive) shift; receive "$@" ;;
  *) sed -n '2,47p' "$0"; exit 2 ;;
esac
