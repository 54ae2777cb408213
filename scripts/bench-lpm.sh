#!/usr/bin/env bash
# IPv4 LPM: flowgate (DIR-24-8, DIR-16-8-8) against DPDK's rte_lpm, same prefixes, same lookup
# addresses, same run. Prints a markdown table (best of ROUNDS rounds for each).
#
#   scripts/bench-lpm.sh [PREFIXES] [LOOKUPS] [ROUNDS] [SEED]
#
# Needs libdpdk-dev (pkg-config libdpdk) and a C compiler. The lookup checksums of every
# implementation must agree (same next hop for every address), or the run fails.
set -euo pipefail

PREFIXES=${1:-500000}
LOOKUPS=${2:-1048576}
ROUNDS=${3:-5}
SEED=${4:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${LPM_BENCH_DIR:-$(mktemp -d /tmp/flowgate-lpm.XXXXXX)}
mkdir -p "$WORK"
# shellcheck source=scripts/lib/dpdk-prefix.sh
. "$ROOT/scripts/lib/dpdk-prefix.sh"
trap dpdk_prefix_cleanup EXIT

cc -O3 -Wall -Wextra $(pkg-config --cflags libdpdk) "$ROOT/scripts/lpm-ref/rte_lpm_bench.c" \
    $(pkg-config --libs libdpdk) -o "$WORK/rte_lpm_bench"
(cd "$ROOT" && cargo build --quiet --release -p flowgate-dataplane --example lpm_bench)

# flowgate runs before and right after rte_lpm (whose build takes minutes), so a shared
# machine's changing load shows in the two flowgate rows instead of skewing one ratio.
BENCH="$ROOT/target/release/examples/lpm_bench"
"$BENCH" --prefixes "$PREFIXES" --lookups "$LOOKUPS" --rounds "$ROUNDS" --seed "$SEED" \
    --out "$WORK" | sed 's/impl="\([^"]*\)"/impl="\1 (before)"/' | tee "$WORK/rust.txt" >&2
"$WORK/rte_lpm_bench" "$WORK/prefixes.txt" "$WORK/addrs.txt" "$ROUNDS" \
    --no-huge -m 2048 --no-pci --no-shconf --file-prefix="$DPDK_PREFIX" -l 0 --log-level=lib.eal:error | tee "$WORK/dpdk.txt" >&2
"$BENCH" --prefixes "$PREFIXES" --lookups "$LOOKUPS" --rounds "$ROUNDS" --seed "$SEED" |
    sed 's/impl="\([^"]*\)"/impl="\1 (after)"/' | tee -a "$WORK/rust.txt" >&2

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
name() { sed -n 's/^RESULT impl="\([^"]*\)".*/\1/p' <<<"$1"; }

echo
echo "$PREFIXES prefixes (BGP-shaped), $LOOKUPS lookups (90% inside a prefix), best of $ROUNDS rounds, seed $SEED"
echo
echo "| implementation | lookup | build ms | memory MiB | Mlookups/s | ns/lookup | checksum |"
echo "|---|---|---:|---:|---:|---:|---|"
sums=()
while read -r line; do
    n=$(name "$line")
    echo "| $n | single | $(field build_ms "$line") | $(field memory_mib "$line") | $(field single_mlps "$line") | $(field single_ns "$line") | $(field checksum "$line") |"
    echo "| $n | batch of 32 | $(field build_ms "$line") | $(field memory_mib "$line") | $(field batch_mlps "$line") | $(field batch_ns "$line") | $(field checksum_batch "$line") |"
    sums+=("$(field checksum "$line")")
done < <(grep '^RESULT' "$WORK/rust.txt")
while read -r line; do
    n=$(name "$line")
    kind=${n#rte_lpm }
    echo "| rte_lpm | $kind | $(field build_ms "$line") | $(field memory_mib "$line") | $(field mlps "$line") | $(field ns "$line") | $(field checksum "$line") |"
    [[ $kind == lookup ]] && sums+=("$(field checksum "$line")")
done < <(grep '^RESULT' "$WORK/dpdk.txt")

for s in "${sums[@]}"; do
    if [[ $s != "${sums[0]}" ]]; then
        echo "checksum mismatch: ${sums[*]}" >&2
        exit 1
    fi
done
echo
echo "files: $WORK"
