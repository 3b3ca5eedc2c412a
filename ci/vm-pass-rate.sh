#!/usr/bin/env bash
# Runs the end-to-end VM tests N times each, one at a time, and prints their pass rates.
#
#   bash ci/vm-pass-rate.sh [-n RUNS] [-o OUT_DIR] [FILTER...]
#
# FILTER picks tests by substring of their name (default: every `vm_*` test). Each run's
# output is kept in OUT_DIR/<test>/<i>.log; the table is also written to OUT_DIR/table.md.
# A race test is done only when this shows RUNS/RUNS here (a flaky test is a bug).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=20
OUT=""
while getopts "n:o:h" opt; do
  case $opt in
    n) RUNS=$OPTARG ;;
    o) OUT=$OPTARG ;;
    h) sed -n 2,9p "$0"; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
case $RUNS in '' | *[!0-9]* | 0) echo "vm-pass-rate: -n takes a positive number, not '$RUNS'" >&2; exit 2 ;; esac
OUT=${OUT:-runs/pass-rate-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

# Build once; then run the test binaries directly, so that nothing is rebuilt between runs.
echo "vm-pass-rate: building the test binaries" >&2
mapfile -t BINS < <(cargo test --workspace --release --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])')
TESTS=()
for b in "${BINS[@]}"; do
  while IFS= read -r t; do
    name=${t%: test}
    case $name in vm_*) ;; *) continue ;; esac
    if [ $# -gt 0 ]; then
      keep=0
      for f in "$@"; do case $name in *"$f"*) keep=1 ;; esac; done
      [ $keep = 1 ] || continue
    fi
    TESTS+=("$b"$'\t'"$name")
  done < <("$b" --list 2>/dev/null | grep ': test$')
done
if [ ${#TESTS[@]} = 0 ]; then echo "vm-pass-rate: no vm_* test matches '$*'" >&2; exit 2; fi
echo "vm-pass-rate: ${#TESTS[@]} test(s) x $RUNS runs; logs in $OUT" >&2

TABLE="$OUT/table.md"
printf '| test | runs | passed | pass rate | median s |\n|---|---:|---:|---:|---:|\n' > "$TABLE"
FAILED=0
for entry in "${TESTS[@]}"; do
  bin=${entry%%$'\t'*}
  name=${entry#*$'\t'}
  mkdir -p "$OUT/$name"
  pass=0
  times=()
  for i in $(seq 1 "$RUNS"); do
    t0=$(date +%s.%N)
    if "$bin" --exact "$name" --test-threads 1 > "$OUT/$name/$i.log" 2>&1; then
      pass=$((pass + 1)); r=ok
    else
      r=FAILED
    fi
    t=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
    times+=("$t")
    echo "vm-pass-rate: $name run $i/$RUNS: $r (${t} s)" >&2
  done
  med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
  rate=$(python3 -c "print(f'{100*$pass/$RUNS:.0f}%')")
  printf '| %s | %d | %d | %s | %s |\n' "$name" "$RUNS" "$pass" "$rate" "$med" >> "$TABLE"
  [ $pass = "$RUNS" ] || FAILED=1
done
cat "$TABLE"
exit $FAILED
