#!/usr/bin/env bash
# The cost of the NAT hand-over between workers: flowgate's owner decision and ring hop
# (dataplane/examples/handoff_bench.rs) beside DPDK's own ring_perf_autotest (dpdk-test), in
# the same run. Prints a markdown table.
#
#   scripts/bench-handoff.sh [PACKETS]
#
# Needs the `dpdk` package (dpdk-test) and two CPUs.
set -euo pipefail

PACKETS=${1:-20000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/flowgate-handoff.XXXXXX)
# shellcheck source=scripts/lib/dpdk-prefix.sh
. "$ROOT/scripts/lib/dpdk-prefix.sh"
trap 'rm -rf "$WORK"; dpdk_prefix_cleanup' EXIT

(cd "$ROOT" && cargo build --quiet --release -p flowgate-dataplane --example handoff_bench)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$ROOT/target/release/examples/handoff_bench" --packets "$PACKETS" 2>/dev/null | tee "$WORK/fg.txt" >&2
DPDK_TEST=ring_perf_autotest dpdk-test --no-huge -m 512 --no-pci --no-shconf --file-prefix="$DPDK_PREFIX" -l 0-1 \
    --log-level=lib.eal:error >"$WORK/ref.txt" 2>&1 || true
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
grep -q "Test OK" "$WORK/ref.txt" || { cat "$WORK/ref.txt" >&2; echo "ring_perf_autotest failed" >&2; exit 1; }

echo
echo "| what | cycles per packet | ns per packet |"
echo "|---|---:|---:|"
sed -n 's/^RESULT case="\([^"]*\)".* cycles_per_pkt=\([^ ]*\) ns_per_pkt=\([^ ]*\).*/| flowgate: \1 | \2 | \3 |/p' "$WORK/fg.txt"
# the reference: rte_ring with pointer elements (legacy APIs), cycles per element
# one core: cycles per burst of 32 (enqueue + dequeue), shown per element
grep -E "^legacy APIs: (MP/MC|SP/SC): (burst|bulk) \(size: 32\)" "$WORK/ref.txt" | head -4 |
    sed 's/^\(.*\): \([0-9.]*\)$/\1|\2/' |
    awk -F'|' '{printf "| DPDK ring_perf_autotest: %s, one core, enqueue + dequeue | %.2f | |\n", $1, $2 / 32}'
# two cores: cycles per element, the enqueuer's plus the dequeuer's
awk '/Testing using two physical cores/ {f=1; next} f && /^legacy APIs: .*size: 32/ {print; } /Testing using all/ {f=0}' "$WORK/ref.txt" | head -2 |
    sed 's/^\(.*\): \([0-9.]*\)$/| DPDK ring_perf_autotest: \1, two cores (enqueuer + dequeuer cycles) | \2 | |/'
