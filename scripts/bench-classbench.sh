#!/usr/bin/env bash
# Classifier vs DPDK rte_acl on the ClassBench 1K, 10K and 100K sets, side by side, one core.
#
# Usage: scripts/bench-classbench.sh            (env: FLOWGATE_CLASSBENCH, ROUNDS, ITERS_1K,
#                                                ITERS_10K, ITERS_100K, SETS, CPU)
# Builds flowgate (release), then for each set runs `flowgate bench classbench` (which verifies
# every trace line and prints the lookup kernel it chose) and `dpdk-test-acl` (avx2, scalar,
# and avx512x32 where /proc/cpuinfo lists avx512f: that one needs
# `--force-max-simd-bitwidth=512`) ROUNDS times, alternating, and keeps the best figure of each
# tool. rte_acl's avx2 column is left empty for the 100K sets when it fails there (its build
# needs more memory than `-m 6144` on some sets). Prints one markdown table. The data stays in
# $FLOWGATE_CLASSBENCH (default ../shared/classbench beside the workspace); nothing is copied.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cb=${FLOWGATE_CLASSBENCH:-$root/../shared/classbench}
rounds=${ROUNDS:-3}
iters_1k=${ITERS_1K:-400}
iters_10k=${ITERS_10K:-40}
iters_100k=${ITERS_100K:-10}
sets=${SETS:-"acl1_1K fw1_1K ipc1_1K acl1_10K fw1_10K ipc1_10K acl1_100K fw1_100K ipc1_100K"}
cpu=${CPU:-1}
acl=${DPDK_TEST_ACL:-/usr/bin/dpdk-test-acl}
# shellcheck source=scripts/lib/dpdk-prefix.sh
. "$root/scripts/lib/dpdk-prefix.sh"
trap dpdk_prefix_cleanup EXIT

if [ ! -d "$cb" ]; then
    echo "ClassBench directory $cb not found (set FLOWGATE_CLASSBENCH)" >&2
    exit 1
fi
(cd "$root" && cargo build --release -q -p flowgate-control)
fg=$root/target/release/flowgate
have_acl=1
[ -x "$acl" ] || { echo "note: $acl not found; rte_acl columns left empty" >&2; have_acl=0; }
have_512=0
grep -qw avx512f /proc/cpuinfo && have_512=1

# max / min helpers over decimal numbers
max() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 > a + 0) print b; else print a }'; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }

run_acl() { # set alg iters -> "mpps cycles bytes"
    local out simd=()
    [ "$2" = avx512x32 ] && simd=(--force-max-simd-bitwidth=512)
    out=$(taskset -c "$cpu" "$acl" --no-huge -m 6144 --no-pci --file-prefix="$DPDK_PREFIX" -l "$cpu" "${simd[@]}" --log-level=lib.acl:debug -- \
        --rulesf="$cb/$1.rules" --tracef="$cb/$1.trace" --rulenum=200000 --tracenum=1000000 \
        --iter="$3" --verbose=0 --alg="$2" 2>&1) || { echo "dpdk-test-acl failed on $1 $2" >&2; echo "- - -"; return; }
    local line mpps cyc bytes
    line=$(grep 'search_ip5tuples' <<<"$out" | tail -1)
    cyc=$(sed -E 's/.* ([0-9.]+) cycles\/pkt.*/\1/' <<<"$line")
    mpps=$(sed -E 's/.* ([0-9.]+) pkt\/sec.*/\1/' <<<"$line" | awk '{ printf "%.2f", $1 / 1e6 }')
    bytes=$(grep -A8 'Gen phase' <<<"$out" | grep -oE 'total: [0-9]+ bytes' | head -1 | grep -oE '[0-9]+')
    echo "$mpps $cyc ${bytes:--}"
}

printf '| set | rules | flowgate kernel | flowgate build s | flowgate memory | flowgate ns/pkt batched | flowgate ns/pkt single | flowgate Mpps batched | flowgate Mpps on-CPU | rte_acl avx2 Mpps | rte_acl avx2 cycles/pkt | rte_acl avx512x32 Mpps | rte_acl scalar Mpps | rte_acl memory | Mpps ratio flowgate/avx2 | Mpps ratio flowgate/avx512x32 | memory ratio rte_acl/flowgate |\n'
printf '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for set in $sets; do
    case $set in *_1K) it=$iters_1k ;; *_100K) it=$iters_100k ;; *) it=$iters_10k ;; esac
    b_build="" b_mem="" b_nsb="" b_nss="" b_cpu="" a_mpps="" a_cyc="" s_mpps="" a_mem="" rules="" x_mpps="" kern=""
    for _ in $(seq "$rounds"); do
        out=$(taskset -c "$cpu" "$fg" bench classbench --rules "$cb/$set.rules" --trace "$cb/$set.trace" --iters "$it")
        rules=$(awk '/^rules:/ { print $2 }' <<<"$out")
        kern=$(awk '/^kernel:/ { print $2 }' <<<"$out")
        b_build=$(min "$b_build" "$(awk '/^build time:/ { print $3 }' <<<"$out")")
        b_mem=$(awk '/^memory:/ { print $2 }' <<<"$out")
        b_nsb=$(min "$b_nsb" "$(awk '/^batched/ { print $3 }' <<<"$out")")
        b_nss=$(min "$b_nss" "$(awk '/^single:/ { print $2 }' <<<"$out")")
        c=$(awk '/^on-CPU:/ { print $2 }' <<<"$out")
        [ -n "$c" ] && b_cpu=$(min "$b_cpu" "$c")
        if [ "$have_acl" = 1 ]; then
            read -r m c2 by < <(run_acl "$set" avx2 "$it")
            a_mpps=$(max "$a_mpps" "$m"); a_cyc=$(min "$a_cyc" "$c2"); a_mem=$by
            read -r m _ by < <(run_acl "$set" scalar "$it")
            s_mpps=$(max "$s_mpps" "$m"); [ "${a_mem:--}" = - ] && a_mem=$by
            if [ "$have_512" = 1 ]; then
                read -r m _ by < <(run_acl "$set" avx512x32 "$it")
                x_mpps=$(max "$x_mpps" "$m"); [ "${a_mem:--}" = - ] && a_mem=$by
            fi
        fi
    done
    fg_mpps=$(awk -v n="$b_nsb" 'BEGIN { printf "%.2f", 1000 / n }')
    fg_cpu=$(awk -v n="$b_cpu" 'BEGIN { if (n > 0) printf "%.2f", 1000 / n; else print "-" }')
    mem_mib=$(awk -v b="$b_mem" 'BEGIN { printf "%.2f MiB", b / 1048576 }')
    acl_mib=$(awk -v b="$a_mem" 'BEGIN { if (b > 0) printf "%.2f MiB", b / 1048576; else print "-" }')
    ratio=$(awk -v a="$fg_mpps" -v b="$a_mpps" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
    xratio=$(awk -v a="$fg_mpps" -v b="$x_mpps" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
    mratio=$(awk -v a="$a_mem" -v b="$b_mem" 'BEGIN { if (a > 0) printf "%.1fx", a / b; else print "-" }')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$set" "$rules" "${kern:--}" "$b_build" "$mem_mib" "$b_nsb" "$b_nss" "$fg_mpps" "$fg_cpu" \
        "${a_mpps:--}" "${a_cyc:--}" "${x_mpps:--}" "${s_mpps:--}" "$acl_mib" "$ratio" "$xratio" "$mratio"
done
