#!/usr/bin/env bash
# Run every cargo fuzz target (libFuzzer) for a bounded time: FUZZ_SECONDS each (default 20),
# starting from the seed corpora in fuzz/seeds/<target> (kept in the repository) plus what
# earlier runs found (fuzz/corpus/<target>, not kept). A crash fails the script; libFuzzer
# leaves the input in fuzz/artifacts/<target>/. `scripts/fuzz.sh TARGET...` runs only those.
# docs/fuzzing.md says more.
#
# cargo fuzz needs nightly features; the toolchain here is stable, hence RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-20}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
# -a: debug assertions and overflow checks, as in the tests
cargo fuzz build -a
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  status=0
  cargo fuzz run -a "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t FAILED (status $status); the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  echo "fuzz: $t: ${runs:-?} runs in ${seconds}s, peak RSS ${rss:-?} MB, no crash"
done
