#!/usr/bin/env bash
# Step b of the one-command GPU check (issue 15; docs/gpu-verification.md): the kernel test programs
# of every family of native/cuda/instantiations.json (native/cuda/<family>/tests/<family>_test.cc,
# the programs test/cuda-kernels.test.ts runs under the SIMT emulator) built with nvcc from the same
# sources and the family's generated translation units, run case by case on the GPU against their
# float64 references, and a subset under compute-sanitizer memcheck and racecheck.
#
#   scripts/gpu-check-kernels.sh [--rehearse] [options] OUTDIR
#
# Writes OUTDIR/kernels/: bin/ (the programs), obj/ (objects, unless --cache), logs/ (one log per
# build step and per run) and results.json:
#   {"mode":"gpu"|"rehearse","arch":[..],"ok":bool,"seconds":N,
#    "programs":[{"family":"fmha","program":"native/cuda/fmha/tests/fmha_test.cc",
#                 "build":{"ok":bool,"seconds":N,"units":N,"log":"logs/fmha/build.log"},
#                 "cases":[{"name":"fmha_fwd_dense_f16_d64","ok":true,"seconds":1.2,
#                           "notes":{"max_err_out":"0.000977",..},"detail":"the FAIL line (failures only)"}],
#                 "sanitizer":{"memcheck":[{"name","ok","seconds"}],"racecheck":[..]} | {"skipped":"why"}}]}
# Exit status 0 when every family built and every case (and sanitizer run) passed; 1 otherwise;
# 2 on bad usage.
#
# --rehearse        build with g++ against the SIMT emulator instead (the flags of
#                   test/simt-toolchain.ts, -O2 -g) and run the same way; no sanitizer (skipped, said so)
# --cases A,B       run only these cases (of any family); a family none of whose cases is named still
#                   builds and is listed with no cases
# --arch 90[,80]    the GPU architectures to compile for (default 90: the H200)
# --jobs N          parallel compile jobs (default: the number of cores)
# --cache DIR       keep objects in DIR, named by a digest of the sources, compiler and flags, and reuse
#                   them (the CI rehearsal does; default: OUTDIR/kernels/obj, rebuilt every run)
# --build-only      build, do not run (results list no cases)
# --case-timeout S  time box of one case (default 60 on the GPU, 600 in the rehearsal)
# --sanitizer-timeout S
#                   time box of one compute-sanitizer run (default 90)
# --budget S        the whole run's time box: once it is spent, the cases left are recorded as not run
#                   (failed), and every run's box is cut to what is left; give it a little less than the
#                   caller's `timeout` (a TERM still writes results.json, with what ran, and exits 124)
# $COMPUTE_SANITIZER: the compute-sanitizer to use (in the rehearsal too); default: the one on PATH or
# in $CUDA_PATH/bin. The subset: the first forward and the last backward case of each family (the
# first case of its list's first direction and the last of its last), after every family's cases. The driver shapes of a family (SIMT_SHAPES under the emulator, from
# test/simt-families.ts) are read from native/cuda/<family>/tests/driver-shapes.txt when it exists
# (test/gpu-check-kernels.test.ts keeps it equal to what simt-families.ts generates).
# Needs bash, python3 (reads the list, writes the JSON) and coreutils' timeout; nothing from a registry.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

usage() {
  echo "usage: scripts/gpu-check-kernels.sh [--rehearse] [--cases A,B] [--arch 90,80] [--jobs N] [--cache DIR] [--build-only] [--case-timeout S] OUTDIR" >&2
  exit 2
}

REHEARSE=0
CASES=""
ARCHS="90"
JOBS=$(nproc 2>/dev/null || echo 2)
CACHE=""
BUILD_ONLY=0
CASE_TIMEOUT=""
SAN_TIMEOUT=90
BUDGET=0
OUTDIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --cases) [ $# -ge 2 ] || usage; CASES="$2"; shift ;;
    --arch) [ $# -ge 2 ] || usage; ARCHS="$2"; shift ;;
    --jobs) [ $# -ge 2 ] || usage; JOBS="$2"; shift ;;
    --cache) [ $# -ge 2 ] || usage; CACHE="$2"; shift ;;
    --build-only) BUILD_ONLY=1 ;;
    --case-timeout) [ $# -ge 2 ] || usage; CASE_TIMEOUT="$2"; shift ;;
    --sanitizer-timeout) [ $# -ge 2 ] || usage; SAN_TIMEOUT="$2"; shift ;;
    --budget) [ $# -ge 2 ] || usage; BUDGET="$2"; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print } /^set -u/ { exit }' "$0"; exit 0 ;;
    -*) usage ;;
    *) [ -z "$OUTDIR" ] || usage; OUTDIR="$1" ;;
  esac
  shift
done
[ -n "$OUTDIR" ] || usage
[ -n "$CASE_TIMEOUT" ] || CASE_TIMEOUT=$([ "$REHEARSE" = 1 ] && echo 600 || echo 60)
for n in "$JOBS" "$CASE_TIMEOUT" "$SAN_TIMEOUT" "$BUDGET"; do
  case "$n" in '' | *[!0-9]*) usage ;; esac
done
[ "$JOBS" -gt 0 ] && [ "$CASE_TIMEOUT" -gt 0 ] && [ "$SAN_TIMEOUT" -gt 0 ] || usage
command -v python3 >/dev/null || { echo "gpu-check-kernels: python3 is needed (reads the list, writes results.json)" >&2; exit 2; }

mkdir -p "$OUTDIR" || exit 2
KOUT=$(cd "$OUTDIR" && pwd)/kernels
rm -rf "$KOUT" && mkdir -p "$KOUT/bin" "$KOUT/logs" || exit 2
OBJ=${CACHE:-$KOUT/obj}
mkdir -p "$OBJ" || exit 2
OBJ=$(cd "$OBJ" && pwd)
RESULTS=$KOUT/results.tsv  # kind, family, name, ok, seconds, extra (one record per line)
: >"$RESULTS"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
T_START=$(now)

# ------------------------------------------------------------------ toolchain and flags
if [ "$REHEARSE" = 1 ]; then
  MODE=rehearse
  CXX=g++
  command -v g++ >/dev/null || { echo "gpu-check-kernels: g++ not found" >&2; exit 2; }
  CUDA_INC=""
  for d in "${CUDA_PATH:-}" "${CUDA_HOME:-}" /usr/local/cuda; do
    if [ -n "$d" ] && [ -f "$d/include/cuda_fp16.h" ]; then CUDA_INC="$d/include"; break; fi
  done
  [ -n "$CUDA_INC" ] || { echo "gpu-check-kernels: CUDA headers not found (set CUDA_PATH)" >&2; exit 2; }
  # test/simt-toolchain.ts COMMON_FLAGS + FLAVOR_FLAGS.opt, plus the public headers (cuda-kernels.test.ts)
  FLAGS=(-std=c++17 -Wall -Wextra -Wno-unknown-pragmas -pthread "-I$CUDA_INC" "-I$ROOT/native/include" -O2 -g)
  UNIT_PRE=(-x c++)
  UNIT_POST=(-x none)
  MAIN_PRE=()
  LINK_EXTRA=(-ldl)
  RUNTIME=(native/simt/runtime.cc native/simt/fiber.cc native/simt/switch_x86_64.S)
  VERSION=$(g++ --version | head -1)
else
  MODE=gpu
  CXX=${NVCC:-}
  if [ -z "$CXX" ]; then
    for c in nvcc "${CUDA_PATH:-/nonexistent}/bin/nvcc" "${CUDA_HOME:-/nonexistent}/bin/nvcc" /usr/local/cuda/bin/nvcc; do
      if command -v "$c" >/dev/null 2>&1; then CXX=$(command -v "$c"); break; fi
    done
  fi
  [ -n "$CXX" ] || { echo "gpu-check-kernels: nvcc not found (set NVCC or CUDA_PATH)" >&2; exit 2; }
  GENCODE=()
  IFS=',' read -r -a arch_list <<<"$ARCHS"
  for a in "${arch_list[@]}"; do
    case "$a" in '' | *[!0-9]*) usage ;; esac
    GENCODE+=("-gencode" "arch=compute_$a,code=sm_$a")
  done
  # -lineinfo: compute-sanitizer names the source lines of what it finds
  FLAGS=(-std=c++17 -O2 -lineinfo "${GENCODE[@]}" "-I$ROOT/native/include")
  UNIT_PRE=()
  UNIT_POST=()
  MAIN_PRE=(-x cu)
  LINK_EXTRA=()
  RUNTIME=()
  VERSION=$("$CXX" --version | tail -1)
fi

# The digest of every input that must trigger a rebuild (as test/simt-toolchain.ts inputsDigest):
# the emulator, the CUDA sources and headers, the public headers; plus compiler and flags.
KEY=$( {
  find native/simt native/cuda native/include -type f \( -name '*.h' -o -name '*.cuh' -o -name '*.cc' -o -name '*.cu' \
    -o -name '*.S' -o -name '*.inc' \) | LC_ALL=C sort | xargs sha256sum
  echo "$CXX $VERSION ${FLAGS[*]}"
} | sha256sum | cut -c1-16)
# objects of other inputs or flags are stale: remove them (one cache directory per mode)
find "$OBJ" -maxdepth 1 -type f \( -name "*.o" -o -name "*.o.tmp.*" \) ! -name "*-$KEY.o" -delete

# ------------------------------------------------------------------ the families of the list
FAMILIES=$(python3 - <<'EOF'
import json
with open('native/cuda/instantiations.json') as f:
    listed = json.load(f)
for fam in listed.get('families', []):
    inst = fam.get('instantiations', [])
    if inst:  # with the directions of its first and last entries (the sanitizer subset below)
        print(fam['family'], fam.get('dir', 'native/cuda/' + fam['family']), len(inst), inst[0]['direction'], inst[-1]['direction'])
EOF
) || { echo "gpu-check-kernels: cannot read native/cuda/instantiations.json" >&2; exit 2; }

# Runs the commands of a file (one shell line each) with at most $JOBS at a time; 0 if all succeeded.
run_parallel() {
  local list=$1 failed=0 running=0 line
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    bash -c "$line" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
      wait -n || failed=1
      running=$((running - 1))
    fi
  done <"$list"
  while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
  done
  return $failed
}

# One compile step as a shell line: writes to a temporary name, renamed on success (an interrupted
# build never leaves an object behind); skipped when the object exists (a cache hit).
compile_line() {  # target log args...
  local target=$1 log=$2
  shift 2
  local q
  q=$(printf '%q ' "$CXX" "$@")
  printf '[ -f %q ] || { %s -o %q.tmp.$$ >>%q 2>&1 && mv %q.tmp.$$ %q; } || { echo "failed: %s" >>%q; exit 1; }\n' \
    "$target" "$q" "$target" "$log" "$target" "$target" "$(basename "$target")" "$log"
}

record() {  # kind family name ok seconds extra (the extra field kept to one line without tabs)
  local extra=${6//$'\t'/ }
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${extra//$'\n'/ }" >>"$RESULTS"
}

selected() {  # case: 0 when --cases names it (or no --cases)
  [ -z "$CASES" ] && return 0
  case ",$CASES," in *",$1,"*) return 0 ;; *) return 1 ;; esac
}

SANITIZER=""
SAN_WHY=""
if [ "$BUILD_ONLY" = 1 ]; then
  SAN_WHY="--build-only"
elif [ -n "${COMPUTE_SANITIZER:-}" ]; then
  SANITIZER=$COMPUTE_SANITIZER  # given: used in every mode (test/gpu-check-kernels.test.ts passes a stand-in)
elif [ "$REHEARSE" = 1 ]; then
  SAN_WHY="rehearsal: compute-sanitizer checks GPU runs (under the emulator: its hazard check and ASan, test/cuda-kernels.test.ts)"
elif command -v compute-sanitizer >/dev/null 2>&1; then
  SANITIZER=$(command -v compute-sanitizer)
elif [ -x "${CUDA_PATH:-/usr/local/cuda}/bin/compute-sanitizer" ]; then
  SANITIZER="${CUDA_PATH:-/usr/local/cuda}/bin/compute-sanitizer"
else
  SAN_WHY="compute-sanitizer not found"
fi

# Seconds left of --budget (a large number without one).
left() {
  if [ "$BUDGET" = 0 ]; then echo 1000000; return; fi
  awk -v a="$T_START" -v b="$(now)" -v n="$BUDGET" 'BEGIN { l = int(n - (b - a)); print (l > 0 ? l : 0) }'
}

# Runs one case with its time box; records ok when the program exits 0 and printed "ok <case>".
run_case() {  # kind family bin case log timeout prefix...
  local kind=$1 family=$2 bin=$3 name=$4 log=$5 box=$6
  shift 6
  local t0 rc ok detail rest
  rest=$(left)
  if [ "$rest" -lt 2 ]; then
    record "$kind" "$family" "$name" false 0 "not run: the budget of $BUDGET s was spent"
    return 1
  fi
  [ "$rest" -lt "$box" ] && box=$rest
  t0=$(now)
  timeout -k 10 "$box" "$@" "$bin" "$name" >"$log" 2>&1
  rc=$?
  ok=false
  detail=""
  if [ "$rc" = 0 ] && grep -qx "ok $name" "$log"; then
    ok=true
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    detail="timed out after ${box} s"
  else
    detail=$(grep -m1 "^FAIL $name" "$log" || true)
    [ -n "$detail" ] || detail="exit status $rc: $(tail -3 "$log" | tr '\n\t' '  ' | cut -c1-400)"
  fi
  record "$kind" "$family" "$name" "$ok" "$(since "$t0")" "$detail"
  [ "$ok" = true ]
}

# ------------------------------------------------------------------ results.json
# Folds the records into results.json; exit status 0 when everything passed.
write_results() {  # status unmatched-cases
  python3 - "$RESULTS" "$KOUT" "$MODE" "$ARCHS" "$(since "$T_START")" "$SAN_WHY" "$1" "$2" <<'EOF'
import json, os, re, sys
tsv, kout, mode, archs, seconds, san_why, status, unmatched = sys.argv[1:9]
programs, order = {}, []
def program(family):
    if family not in programs:
        order.append(family)
        programs[family] = {'family': family, 'program': None, 'build': None, 'cases': [],
                            'sanitizer': {'skipped': san_why} if san_why else {'memcheck': [], 'racecheck': []}}
    return programs[family]
def notes(family, name):
    path = os.path.join(kout, 'logs', family, name + '.log')
    try:
        with open(path, errors='replace') as f:
            return dict(m.groups() for m in re.finditer(r'^note (\w+)=(.*)$', f.read(), re.M))
    except OSError:
        return {}
ok_all = status == '0'
with open(tsv) as f:
    for line in f:
        kind, family, name, ok, secs, extra = line.rstrip('\n').split('\t', 5)
        p = program(family)
        if kind == 'build':
            p['program'] = name
            p['build'] = {'ok': ok == 'true', 'seconds': float(secs), 'log': 'logs/%s/build.log' % family}
            if ok == 'true':
                p['build']['units'] = int(extra)
            else:
                p['build']['detail'] = extra or 'the build failed (see the log)'
            continue
        row = {'name': name, 'ok': ok == 'true', 'seconds': float(secs)}
        if kind == 'case':
            n = notes(family, name)
            if n:
                row['notes'] = n
        if ok != 'true':
            row['detail'] = extra
            ok_all = False
        if kind == 'case':
            p['cases'].append(row)
        else:
            p['sanitizer'].setdefault(kind, []).append(row)
for p in programs.values():
    if not (p['build'] or {}).get('ok', False):
        ok_all = False
out = {'mode': mode, 'arch': [] if mode == 'rehearse' else ['sm_' + a for a in archs.split(',')],
       'ok': ok_all, 'seconds': float(seconds), 'programs': [programs[f] for f in order]}
if status == '124':
    out['interrupted'] = True
    out['ok'] = ok_all = False
if unmatched:
    out['unmatchedCases'] = unmatched.split(',')
    out['ok'] = ok_all = False
with open(os.path.join(kout, 'results.json'), 'w') as f:
    json.dump(out, f, indent=1)
    f.write('\n')
sys.exit(0 if ok_all else 1)
EOF
}
# Stopped by the caller's time box: what ran still goes into results.json.
on_term() {
  trap '' TERM INT
  local j
  for j in $(jobs -p); do kill "$j" 2>/dev/null; done
  [ -n "$BUILDING" ] && record build "$BUILDING" "$BUILDING_PROGRAM" false 0 "stopped by a signal while building"
  echo "gpu-check-kernels: stopped by a signal after $(since "$T_START") s ($BASHPID); $KOUT/results.json has what ran" >&2
  write_results 124 "" >/dev/null 2>&1
  exit 124
}
trap on_term TERM INT

STATUS=0
SANITIZE=()  # "family bin case" to run under compute-sanitizer
BUILDING=""
BUILDING_PROGRAM=""
while read -r family dir count first_dir last_dir; do
  [ -n "$family" ] || continue
  program="$dir/tests/${family}_test.cc"
  logs="$KOUT/logs/$family"
  mkdir -p "$logs"
  echo "== $family: $count instantiation(s), $program ($MODE)"
  if [ ! -f "$program" ]; then
    record build "$family" "$program" false 0 "no test program $program"
    STATUS=1
    continue
  fi
  # build: the emulator runtime (rehearsal), every generated unit, the program; then the link
  t0=$(now)
  steps="$KOUT/logs/$family/steps.sh"
  : >"$steps"
  objects=()
  nunits=0
  for src in "${RUNTIME[@]}"; do
    o="$OBJ/$(basename "${src%.*}")-$KEY.o"
    compile_line "$o" "$logs/build.log" "${FLAGS[@]}" -c "$src" >>"$steps"
    objects+=("$o")
  done
  for src in "$dir"/generated/*.cu; do
    [ -f "$src" ] || continue
    o="$OBJ/$(basename "${src%.*}")-$KEY.o"
    compile_line "$o" "$logs/build.log" "${FLAGS[@]}" "${UNIT_PRE[@]}" -c "$src" "${UNIT_POST[@]}" >>"$steps"
    objects+=("$o")
    nunits=$((nunits + 1))
  done
  main="$OBJ/${family}_test-$KEY.o"
  compile_line "$main" "$logs/build.log" "${FLAGS[@]}" "${MAIN_PRE[@]}" -c "$program" >>"$steps"
  bin="$KOUT/bin/${family}_test"
  built=true
  BUILDING=$family
  BUILDING_PROGRAM=$program
  if run_parallel "$steps"; then
    "$CXX" "${FLAGS[@]}" "$main" "${objects[@]}" "${LINK_EXTRA[@]}" -o "$bin" >>"$logs/build.log" 2>&1 || built=false
  else
    built=false
  fi
  BUILDING=""
  record build "$family" "$program" "$built" "$(since "$t0")" "$nunits"
  echo "   build: $built ($(since "$t0") s, $nunits units)"
  if [ "$built" != true ]; then
    STATUS=1
    tail -20 "$logs/build.log"
    continue
  fi
  [ "$BUILD_ONLY" = 1 ] && continue

  shapes="$dir/tests/driver-shapes.txt"
  env_shapes=()
  [ -f "$shapes" ] && env_shapes=(env "SIMT_SHAPES=$ROOT/$shapes")
  list=$("$bin" --list 2>"$logs/list.log") || { record build "$family" "$program" false 0 "$bin --list failed"; STATUS=1; continue; }
  [ -n "$list" ] || { record build "$family" "$program" false 0 "$bin --list printed no case"; STATUS=1; continue; }
  for name in $list; do
    selected "$name" || continue
    if run_case case "$family" "$bin" "$name" "$logs/$name.log" "$CASE_TIMEOUT" "${env_shapes[@]}"; then
      echo "   ok   $name"
    else
      echo "   FAIL $name (log: kernels/logs/$family/$name.log)"
      STATUS=1
    fi
  done
  # compute-sanitizer later, on a subset: the first case of the list's first direction and the last
  # of its last (fwd and bwd; selection: moba and xattention)
  for name in $(printf '%s\n' $list | grep -m1 "_${first_dir}_") $(printf '%s\n' $list | grep "_${last_dir}_" | tail -1); do
    selected "$name" && SANITIZE+=("$family $bin $name")
  done
done <<<"$FAMILIES"

# compute-sanitizer runs after every family's cases (they are the first to give way to --budget)
if [ -n "$SANITIZER" ]; then
  for entry in "${SANITIZE[@]}"; do
    read -r family bin name <<<"$entry"
    shapes="$(awk -v f="$family" '$1 == f { print $2 }' <<<"$FAMILIES")/tests/driver-shapes.txt"
    env_shapes=()
    [ -f "$shapes" ] && env_shapes=(env "SIMT_SHAPES=$ROOT/$shapes")
    for tool in memcheck racecheck; do
      if run_case "$tool" "$family" "$bin" "$name" "$KOUT/logs/$family/$name.$tool.log" "$SAN_TIMEOUT" "${env_shapes[@]}" \
        "$SANITIZER" --tool "$tool" --error-exitcode 3; then
        echo "   ok   $name under $tool"
      else
        echo "   FAIL $name under $tool (log: kernels/logs/$family/$name.$tool.log)"
        STATUS=1
      fi
    done
  done
fi
# a case --cases names that no program has is a failure (a typo must not pass as "nothing failed")
UNMATCHED=""
if [ -n "$CASES" ] && [ "$BUILD_ONLY" = 0 ]; then
  IFS=',' read -r -a wanted <<<"$CASES"
  for name in "${wanted[@]}"; do
    [ -n "$name" ] || continue
    awk -F'\t' -v n="$name" '$1 == "case" && $3 == n { found = 1 } END { exit !found }' "$RESULTS" && continue
    echo "   FAIL $name: no program has this case"
    UNMATCHED="$UNMATCHED${UNMATCHED:+,}$name"
    STATUS=1
  done
fi

write_results "$STATUS" "$UNMATCHED" || STATUS=1
rm -f "$RESULTS"
echo "gpu-check-kernels: $([ "$STATUS" = 0 ] && echo passed || echo FAILED) in $(since "$T_START") s; $KOUT/results.json"
exit "$STATUS"
