#!/usr/bin/env bash
# The one-command GPU check (issue 15; docs/gpu-verification.md "The one-command GPU check").
#
#   scripts/gpu-check.sh [--rehearse] [--skip STEPS] [--fast]
#
# Run from the repository root of a working tree, on a GPU machine that has no Node.js and no
# network: it uses the folder `npm run gpu-check:stage` wrote (gpu-check-stage/: a compressed Node.js,
# the package with the CUDA addon for sm_80 and sm_90). Steps, each time-boxed with `timeout`:
#   a  nvidia-smi, the driver, `attnkit info --json` through the staged node and addon
#   b  the kernel test programs on the GPU (scripts/gpu-check-kernels.sh, when the tree has it)
#   c  the package end to end on cuda:0 against the CPU backend (scripts/gpu-check/e2e.mjs)
#   d  `attnkit bench --device cuda:0 --json`
#   e  peers on the same GPU (scripts/gpu-check/peers/torch_attention.py)
#   f  summary.md + summary.json
# Everything lands in $OUT (default ./gpu-check-out): at most 8 files (the device tool brings back
# no more): summary.md, summary.json, a-info.json, b-kernels.json, c-e2e.json, d-bench.json,
# e-peers.json, logs.txt. Build trees and the unpacked node go to $GPU_CHECK_WORK (default
# ${TMPDIR:-/tmp}/attnkit-gpu-check), which is emptied first.
#
# --rehearse: the same script on a machine without a GPU: step b on the SIMT emulator
# (gpu-check-kernels.sh --rehearse), step c against the fake-CUDA addon (ATTNKIT_ADDON, built with
# `npm run build:fake-cuda` when missing) with --quick shapes, step d on the fake device with one tiny
# shape (its timings mean nothing and say so), step e skipped without CUDA PyTorch; the local node
# and dist/. --skip b,d: leaves those steps out (recorded as skipped); --fast is --skip b,d.
# test/gpu-check.test.ts runs `--rehearse --skip b` (step b has its own test).
#
# Budgets (seconds; GPU_CHECK_BUDGET_<STEP>=N overrides one): from the times measured on the CPU
# machine and scaled to the GPU machine's 16 cores (the docs section lists them); their sum stays
# within 8 minutes. The exit status is 0 when every step that ran passed.
# For tests: GPU_CHECK_NODE, GPU_CHECK_PKG, GPU_CHECK_STAGE, GPU_CHECK_KERNELS (the step b program),
# GPU_CHECK_UNPACK=python (unpack the staged node with Python even where xz exists).
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

REHEARSE=0
SKIP=","
usage() { echo "usage: scripts/gpu-check.sh [--rehearse] [--skip b,d,e] [--fast]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --fast) SKIP="$SKIP,b,d," ;;
    --skip) [ $# -ge 2 ] || usage; SKIP="$SKIP,$2,"; shift ;;
    -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
    *) usage ;;
  esac
  shift
done
skipped() { case "$SKIP" in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

OUT=${OUT:-./gpu-check-out}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/summary.md "$OUT"/summary.json "$OUT"/a-info.json "$OUT"/b-kernels.json "$OUT"/c-e2e.json \
  "$OUT"/d-bench.json "$OUT"/e-peers.json "$OUT"/logs.txt
WORK=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/attnkit-gpu-check}
rm -rf "$WORK" && mkdir -p "$WORK/logs" || exit 2
STAGE=${GPU_CHECK_STAGE:-$ROOT/gpu-check-stage}
STEPS=$WORK/steps.tsv
: >"$STEPS"

budget() { # budget STEP DEFAULT
  local v="GPU_CHECK_BUDGET_$1"
  echo "${!v:-$2}"
}
B_SETUP=$(budget SETUP 20)
B_A=$(budget A 20)
B_B=$(budget B 200)
B_C=$(budget C 45)
B_D=$(budget D 90)
B_E=$(budget E 90)
B_F=$(budget F 5)

log() { echo "gpu-check: $*" >&2; }
now() { date +%s.%N; }
# record STEP NAME STATUS SECONDS BUDGET REASON  (status: pass fail skipped "not available")
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6//$'\t'/ }" >>"$STEPS"; log "step $1 ($2): $3${6:+ — $6} ($4 s of $5)"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# boxed SECONDS STDOUT STDERR CMD...: runs CMD under `timeout`; the status, 124 on time-out
boxed() {
  local secs=$1 o=$2 e=$3
  shift 3
  timeout --kill-after=5 "$secs" "$@" >"$o" 2>"$e"
}
why_status() { # why_status RC BUDGET: the reason text for a non-zero status
  if [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; then echo "ran past its budget of $2 s"; else echo "exit status $1"; fi
}
# gate STEP NAME BUDGET: records the step as skipped (--skip) or failed (no node) and returns 1, else 0
gate() {
  if skipped "$1"; then record "$1" "$2" skipped 0 "$3" "--skip $1"; return 1; fi
  if [ -z "$NODE" ]; then record "$1" "$2" fail 0 "$3" "no node (setup failed)"; return 1; fi
}
# finish STEP NAME BUDGET T0 RC PASS_NOTE [FAIL_NOTE]: records pass or fail by the status RC
finish() {
  if [ "$5" = 0 ]; then
    record "$1" "$2" pass "$(elapsed "$4")" "$3" "$6"
  else
    record "$1" "$2" fail "$(elapsed "$4")" "$3" "$(why_status "$5" "$3")${7:+: $7}"
  fi
}

MODE=gpu
[ "$REHEARSE" = 1 ] && MODE=rehearse
log "mode $MODE, out $OUT, work $WORK"

# ------------------------------------------------------------------ setup: node, package, addon
t0=$(now)
NODE=""
setup_why=""
if [ -n "${GPU_CHECK_NODE:-}" ]; then
  NODE=$GPU_CHECK_NODE
elif [ "$REHEARSE" = 0 ] && [ -f "$STAGE/node/node.xz" ]; then
  # The staged node is xz-compressed (scripts/gpu-check-stage.mjs): xz where it exists, else
  # Python's lzma module (the GPU machine has python3).
  mkdir -p "$WORK/node/bin"
  if [ "${GPU_CHECK_UNPACK:-}" != python ] && command -v xz >/dev/null 2>&1; then
    timeout "$B_SETUP" xz -dc "$STAGE/node/node.xz" >"$WORK/node/bin/node"
  else
    timeout "$B_SETUP" python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"), 1 << 20)' \
      "$STAGE/node/node.xz" "$WORK/node/bin/node"
  fi && chmod +x "$WORK/node/bin/node" && NODE=$WORK/node/bin/node
  [ -n "$NODE" ] || setup_why="could not unpack $STAGE/node/node.xz"
elif command -v node >/dev/null 2>&1; then
  NODE=$(command -v node)
else
  setup_why="no Node.js: neither $STAGE/node/node.xz (npm run gpu-check:stage) nor node on PATH"
fi
if [ -n "$NODE" ] && ! NODE_VERSION=$("$NODE" --version 2>"$WORK/logs/setup.log"); then
  setup_why="$NODE does not run: $(head -c 300 "$WORK/logs/setup.log")"
  NODE=""
fi

# The package: the staged one (with the CUDA addon in its build/Release) on the GPU machine, this
# tree's dist/ in a rehearsal (or GPU_CHECK_PKG).
if [ -n "${GPU_CHECK_PKG:-}" ]; then
  PKG=$GPU_CHECK_PKG
elif [ "$REHEARSE" = 0 ] && [ -f "$STAGE/package/dist/src/index.js" ]; then
  PKG=$STAGE/package
else
  PKG=$ROOT
fi
PKG=$(cd "$PKG" && pwd)
if [ "$REHEARSE" = 1 ]; then
  if [ -z "${ATTNKIT_ADDON:-}" ]; then
    export ATTNKIT_ADDON=$ROOT/build/fake-cuda/attnkit.node
    if [ ! -f "$ATTNKIT_ADDON" ] && [ -n "$NODE" ]; then
      log "building the fake-CUDA addon (npm run build:fake-cuda)"
      "$NODE" scripts/build-fake-cuda.mjs >>"$WORK/logs/setup.log" 2>&1 || setup_why="npm run build:fake-cuda failed"
    fi
  fi
elif [ -z "${ATTNKIT_ADDON:-}" ] && [ -f "$PKG/build/Release/attnkit.node" ]; then
  export ATTNKIT_ADDON=$PKG/build/Release/attnkit.node
fi
[ -f "$PKG/dist/src/index.js" ] || setup_why="${setup_why:-no $PKG/dist/src/index.js (npm run build:ts, or npm run gpu-check:stage)}"
if [ -z "$setup_why" ]; then
  record setup "node and package" pass "$(elapsed "$t0")" "$B_SETUP" "node $NODE_VERSION ($NODE); package $PKG; addon ${ATTNKIT_ADDON:-found by node-gyp-build}"
else
  record setup "node and package" fail "$(elapsed "$t0")" "$B_SETUP" "$setup_why"
fi
CLI="$PKG/dist/src/cli/index.js"

# ------------------------------------------------------------------ a: machine, driver, addon
t0=$(now)
{
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 20 nvidia-smi
    timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  else
    echo "nvidia-smi: not found"
  fi
} >"$WORK/logs/a-nvidia-smi.txt" 2>&1
GPU_LINE=$(grep -A1 '^name, driver_version' "$WORK/logs/a-nvidia-smi.txt" 2>/dev/null | tail -n +2 | head -1)
if ! gate a "machine and addon" "$B_A"; then
  :
elif boxed "$B_A" "$OUT/a-info.json" "$WORK/logs/a-info.log" "$NODE" "$CLI" info --json; then
  # the addon must see the device (the fake one in a rehearsal)
  if cuda_why=$("$NODE" -e '
      const i = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      const c = i.cuda ?? {};
      if (!c.compiled) { console.log("the addon has no CUDA backend"); process.exit(1); }
      if (!c.available) { console.log("CUDA not available: " + c.reason); process.exit(1); }
      console.log(`${c.deviceCount} device(s): ${(c.devices ?? []).map((d) => d.name + " sm_" + d.computeCapability.replace(".", "")).join(", ")}; kernels for ${(c.archs ?? []).join(",")}`);
    ' "$OUT/a-info.json" 2>&1); then
    if [ "$REHEARSE" = 0 ] && [ -z "$GPU_LINE" ]; then
      record a "machine and addon" fail "$(elapsed "$t0")" "$B_A" "nvidia-smi found no GPU; attnkit: $cuda_why"
    else
      record a "machine and addon" pass "$(elapsed "$t0")" "$B_A" "${GPU_LINE:-no nvidia-smi (rehearsal)}; attnkit: $cuda_why"
    fi
  else
    record a "machine and addon" fail "$(elapsed "$t0")" "$B_A" "$cuda_why"
  fi
else
  rc=$?
  record a "machine and addon" fail "$(elapsed "$t0")" "$B_A" "attnkit info --json: $(why_status $rc "$B_A")"
fi

# ------------------------------------------------------------------ b: kernel test programs
# (the interface: scripts/gpu-check-kernels.sh [--budget S] [--rehearse] OUTDIR builds into OUTDIR/kernels/,
# writes OUTDIR/kernels/results.json and exits 0 when every program passed)
KERNELS=${GPU_CHECK_KERNELS:-scripts/gpu-check-kernels.sh}
t0=$(now)
if skipped b; then
  record b "kernel test programs" skipped 0 "$B_B" "--skip b"
elif [ ! -f "$KERNELS" ]; then
  record b "kernel test programs" "not available" 0 "$B_B" "$KERNELS is not in this tree"
else
  kargs=(--budget $((B_B - 10)))  # its own budget first, so that results.json is written before the box closes
  [ "$REHEARSE" = 1 ] && kargs+=(--rehearse)
  rc=0
  boxed "$B_B" "$WORK/logs/b-kernels.log" "$WORK/logs/b-kernels.log" bash "$KERNELS" "${kargs[@]}" "$WORK" || rc=$?
  if [ -f "$WORK/kernels/results.json" ]; then cp "$WORK/kernels/results.json" "$OUT/b-kernels.json"; elif [ $rc = 0 ]; then rc=1; fi
  finish b "kernel test programs" "$B_B" "$t0" $rc "$([ "$REHEARSE" = 1 ] && echo 'on the SIMT emulator (rehearsal)')" \
    "$([ -f "$OUT/b-kernels.json" ] || echo 'no kernels/results.json written')"
fi

# ------------------------------------------------------------------ c: end to end through the API
t0=$(now)
if gate c "end to end on cuda:0" "$B_C"; then
  cargs=(--pkg "$PKG" --out "$OUT/c-e2e.json")
  [ "$REHEARSE" = 1 ] && cargs+=(--quick)
  rc=0
  boxed "$B_C" "$WORK/logs/c-e2e.log" "$WORK/logs/c-e2e.log" "$NODE" scripts/gpu-check/e2e.mjs "${cargs[@]}" || rc=$?
  finish c "end to end on cuda:0" "$B_C" "$t0" $rc "$(tail -1 "$WORK/logs/c-e2e.log")$([ "$REHEARSE" = 1 ] && echo ' (fake-CUDA addon)')" \
    "$(grep 'FAIL' "$WORK/logs/c-e2e.log" | head -3 | tr '\n' ';')"
fi

# ------------------------------------------------------------------ d: the CUDA benchmark
t0=$(now)
if gate d "attnkit bench --device cuda:0" "$B_D"; then
  dargs=(bench --device cuda:0 --json)
  # on the fake device one tiny shape: it shows the command and its JSON work, not any speed
  [ "$REHEARSE" = 1 ] && dargs+=(--op attention --shape 1,64,1,64 --dtype float16 --repeats 1)
  rc=0
  boxed "$B_D" "$OUT/d-bench.json" "$WORK/logs/d-bench.log" "$NODE" "$CLI" "${dargs[@]}" || rc=$?
  # the bench succeeds with {"skipped": true} where CUDA is missing: here that is a failure
  if [ $rc = 0 ] && ! "$NODE" -e '
      const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      if (r.skipped || !r.ok || !(r.results?.length > 0)) { console.error(`attnkit bench: ${r.reason ?? r.error ?? "no results"}`); process.exit(1); }
    ' "$OUT/d-bench.json" 2>>"$WORK/logs/d-bench.log"; then rc=1; fi
  finish d "attnkit bench --device cuda:0" "$B_D" "$t0" $rc "$([ "$REHEARSE" = 1 ] && echo 'on the fake device: timings not meaningful')" \
    "$(tail -3 "$WORK/logs/d-bench.log" | tr '\n' ' ')"
fi

# ------------------------------------------------------------------ e: peers (PyTorch)
t0=$(now)
PEERS=scripts/gpu-check/peers/torch_attention.py
if skipped e; then
  record e "peers (PyTorch)" skipped 0 "$B_E" "--skip e"
elif [ ! -f "$PEERS" ]; then
  record e "peers (PyTorch)" skipped 0 "$B_E" "$PEERS is not in this tree"
elif ! timeout 60 python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  record e "peers (PyTorch)" skipped 0 "$B_E" "no CUDA PyTorch here"
elif awk -v b="$B_E" 'BEGIN { exit !(b <= 0) }'; then
  record e "peers (PyTorch)" skipped 0 "$B_E" "no time budgeted (GPU_CHECK_BUDGET_E)"
else
  rc=0
  boxed "$B_E" "$WORK/logs/e-peers.log" "$WORK/logs/e-peers.log" python3 "$PEERS" --budget $((B_E - 15)) --json "$OUT/e-peers.json" || rc=$?
  finish e "peers (PyTorch)" "$B_E" "$t0" $rc ""
fi

# ------------------------------------------------------------------ f: the summary
# logs.txt: every step's log, the tail of each when long (the device tool returns up to 16 MiB a file)
for f in "$WORK"/logs/*; do
  [ -f "$f" ] || continue
  echo "===== $(basename "$f") ====="
  tail -c 2000000 "$f"
  echo
done >"$OUT/logs.txt"

t0=$(now)
summary_ok=0
if [ -n "$NODE" ]; then
  boxed "$B_F" "$WORK/logs/f-summary.log" "$WORK/logs/f-summary.log" "$NODE" scripts/gpu-check/summary.mjs --mode "$MODE" --steps "$STEPS" --out "$OUT" --budget "$B_F" \
    && summary_ok=1
  cat "$WORK/logs/f-summary.log" >&2
fi
if [ "$summary_ok" = 0 ]; then
  # no node (or the summary program failed): the step table alone, written by the shell
  {
    echo "# GPU check ($MODE): summary without node"
    echo
    echo "| step | name | status | seconds | budget | note |"
    echo "|---|---|---|---|---|---|"
    while IFS=$'\t' read -r s n st sec b why; do echo "| $s | $n | $st | $sec | $b | $why |"; done <"$STEPS"
  } >"$OUT/summary.md"
  {
    echo '{"ok": false, "mode": "'"$MODE"'", "summaryFallback": true, "steps": ['
    first=1
    while IFS=$'\t' read -r s n st sec b why; do
      [ $first = 1 ] || echo ','
      first=0
      why=${why//\\/\\\\}
      printf '{"step": "%s", "name": "%s", "status": "%s", "seconds": %s, "budget": %s, "note": "%s"}' "$s" "$n" "$st" "$sec" "$b" "${why//\"/\\\"}"
    done <"$STEPS"
    echo ']}'
  } >"$OUT/summary.json"
fi

if grep -q $'\tfail\t' "$STEPS" || [ "$summary_ok" = 0 ]; then
  log "FAILED (see $OUT/summary.md)"
  exit 1
fi
log "passed (see $OUT/summary.md)"
exit 0
