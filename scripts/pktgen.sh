#!/usr/bin/env bash
# RFC 2544 throughput lab on one box (docs/benchmarks.md, "pktgen runs"): flowgate-gen drives
# a device under test (DUT) and reports NDR (highest rate with 0 loss) and PDR (<= 0.5% loss)
# per frame size, latency at fractions of the NDR, and the DUT's drops per trial.
#
# Parts (PARTS, default all three):
#
#   memif   generator TX -> DUT in0 -> DUT out0 -> generator RX over DPDK net_memif (two DPDK
#           processes through shared memory; the DUT is the memif server, its sockets in a
#           temporary directory; the generator connects as client). DUTs in the same run:
#           flowgate (inline mode, `peer`, the ClassBench rules as flows) and
#           `dpdk-testpmd --forward-mode=io` (the I/O bound). Frame sizes 64 ... 1518 and IMIX.
#           flowgate's drops by reason and imissed come from `flowctl --json stats` around
#           every trial.
#   rules   flowgate over memif at 64 bytes with 100, 1K, 10K and 100K rules of a ClassBench
#           set (the first 100 rules of SET_1K with the trace lines they match, then SET_1K,
#           SET_10K, SET_100K), each with its own trace.
#   kernel  the same rules and flows on a Linux router in a network namespace (nftables, a
#           linear chain and the idiomatic form with verdict maps, from `flowgate-gen nft`),
#           against flowgate on net_af_packet over the same veths, with the same generator
#           over net_af_packet; 10, 1K and 10K rules; Mpps and loss of each, ratios.
#
# On a machine with NICs, set PCI mode (memif part only): GEN_TX/GEN_RX = the generator's
# PCI addresses, DUT_IN/DUT_OUT = flowgate's (cabled GEN_TX -> DUT_IN, DUT_OUT -> GEN_RX);
# testpmd then runs on DUT_IN/DUT_OUT too.
#
# CPU placement (2 vCPUs): the generator on GEN_CPU (one lcore: TX and RX), the DUT's worker on
# DUT_CPU (flowgate workers = [DUT_CPU], testpmd's forwarding lcore DUT_CPU; the kernel
# router's receive processing steered to DUT_CPU with RPS).
#
# Output: OUT (default target/pktgen): report.md (tables), *.jsonl (every trial), PNG plots
# (gnuplot): throughput.png (NDR/PDR vs frame size, flowgate vs testpmd io), latency_cdf.png,
# rules.png (NDR vs rule count), kernel.png. DOCS=1 copies the PNGs to docs/img/pktgen-*.png.
# Every derived file (flows, traces, nft rulesets, configs) is generated into a temporary
# directory removed at exit (KEEP=1 keeps it); nothing derived from ClassBench is committed.
#
# Environment (defaults: the full run, about 10 minutes on an idle 2-vCPU machine):
#   QUICK=1            smoke run: 64 and IMIX only, 0.2 s trials, 3 trials per search,
#                      rule counts 100 and 1K, kernel at 10 rules
#   PARTS="memif rules kernel"   SIZES="64 128 256 512 1024 1518 imix"
#   TRIAL=1 (s)  LAT_TRIAL=2 (s)  PRECISION=0.02  MAX_TRIALS=8 (rates per search)
#   REPEAT=3 (trials per rate at most: a rate passes when 2 of 3 pass, as CSIT's MLRsearch
#   with a 50% goal exceed ratio; REPEAT=1 is RFC 2544's single trial)  PDR_LOSS=0.005
#   MEMIF_RSIZE=14 (log2 of the memif ring size: 16384 slots; with DPDK's default 10, a VM's
#   stalls of a few ms bound the NDR at ring size / stall, about 0.25 Mpps here)
#   SET=acl1  FLOWS=4096 (trace lines per profile)  RULE_COUNTS="100 1000 10000 100000"
#   KERNEL_RULES="10 1000 10000"   GEN_CPU=0 DUT_CPU=1   TESTPMD=dpdk-testpmd   KEEP=0
#   FLOWGATE, FLOWCTL, GEN, CBFLOWS: binaries (default: cargo build --release here; CBFLOWS is
#                      the classbench_flows example)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    : "${SIZES:=64 imix}" "${TRIAL:=0.2}" "${LAT_TRIAL:=0.2}" "${MAX_TRIALS:=3}" "${REPEAT:=1}"
    : "${RULE_COUNTS:=100 1000}" "${KERNEL_RULES:=10}" "${FLOWS:=512}" "${PRECISION:=0.1}"
fi
PARTS=${PARTS:-memif rules kernel}
SIZES=${SIZES:-64 128 256 512 1024 1518 imix}
TRIAL=${TRIAL:-1}
LAT_TRIAL=${LAT_TRIAL:-2}
PRECISION=${PRECISION:-0.02}
MAX_TRIALS=${MAX_TRIALS:-8}
REPEAT=${REPEAT:-3}
MEMIF_RSIZE=${MEMIF_RSIZE:-14}
PDR_LOSS=${PDR_LOSS:-0.005}
SET=${SET:-acl1}
FLOWS=${FLOWS:-4096}
RULE_COUNTS=${RULE_COUNTS:-100 1000 10000 100000}
KERNEL_RULES=${KERNEL_RULES:-10 1000 10000}
GEN_CPU=${GEN_CPU:-0}
DUT_CPU=${DUT_CPU:-1}
TESTPMD=${TESTPMD:-dpdk-testpmd}
KEEP=${KEEP:-0}
OUT=${OUT:-target/pktgen}
CB=${FLOWGATE_CLASSBENCH:-../shared/classbench}
PCI_MODE=0
if [[ -n ${GEN_TX:-} || -n ${DUT_IN:-} ]]; then
    PCI_MODE=1
    : "${GEN_TX:?GEN_TX (generator TX PCI address) is required in PCI mode}"
    : "${GEN_RX:?GEN_RX is required in PCI mode}" "${DUT_IN:?DUT_IN is required in PCI mode}"
    : "${DUT_OUT:?DUT_OUT is required in PCI mode}"
fi

log() { echo "pktgen: $*" >&2; }
die() {
    log "$*"
    exit 1
}

[[ -d $CB ]] || die "ClassBench directory $CB not found (set FLOWGATE_CLASSBENCH)"
CB=$(cd "$CB" && pwd)
command -v gnuplot >/dev/null || die "gnuplot not found (scripts/setup.sh installs gnuplot-nox)"
[[ $(id -u) == 0 ]] || die "needs root (DPDK, namespaces)"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
tmp=$(mktemp -d /tmp/fg-pktgen.XXXXXX)
chmod 755 "$tmp"
bg_pids=()
NS_GEN=fgpk-gen-$$
# shellcheck source=scripts/lib/dpdk-prefix.sh
. scripts/lib/dpdk-prefix.sh
NS_DUT=fgpk-dut-$$

cleanup() {
    local p
    for p in "${bg_pids[@]}"; do
        kill -INT "$p" 2>/dev/null || true
    done
    sleep 0.5
    for p in "${bg_pids[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    ip netns del "$NS_GEN" 2>/dev/null || true
    ip netns del "$NS_DUT" 2>/dev/null || true
    dpdk_prefix_cleanup
    if [[ $KEEP == 1 ]]; then
        log "kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

# --- binaries ------------------------------------------------------------------------------
if [[ -z ${FLOWGATE:-} || -z ${FLOWCTL:-} || -z ${GEN:-} ]]; then
    log "building (release)"
    cargo build --release --quiet -p flowgate-control --bin flowgate --bin flowctl \
        -p flowgate-gen --bin flowgate-gen
fi
if [[ -z ${CBFLOWS:-} ]]; then
    cargo build --release --quiet -p flowgate-dataplane --example classbench_flows
fi
FLOWGATE=$(realpath "${FLOWGATE:-target/release/flowgate}")
FLOWCTL=$(realpath "${FLOWCTL:-target/release/flowctl}")
GEN=$(realpath "${GEN:-target/release/flowgate-gen}")
CBFLOWS=$(realpath "${CBFLOWS:-target/release/examples/classbench_flows}")
command -v "$TESTPMD" >/dev/null || die "$TESTPMD not found (Debian package dpdk)"

EAL_VIRT=(--no-huge -m 1024 --no-pci --no-shconf --log-level=lib.eal:error)
SEARCH_OPTS=(--trial "$TRIAL" --latency-trial "$LAT_TRIAL" --precision "$PRECISION"
    --max-trials "$MAX_TRIALS" --repeat "$REPEAT" --pdr-loss "$PDR_LOSS" --limit "$FLOWS")

# wait_for LOG PATTERN PID: until PATTERN is in LOG (60 s), while PID lives
wait_for() {
    local i
    for ((i = 0; i < 600; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# stop PID: SIGINT, then wait (10 s) and SIGKILL
stop() {
    local pid=$1 i
    kill -INT "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local -a keep=()
    for p in "${bg_pids[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    bg_pids=("${keep[@]}")
}

# --- ClassBench inputs ---------------------------------------------------------------------
# make_set N DIR: DIR/rules (N rules of $SET), DIR/trace (the lines of its trace they match,
# first $FLOWS), DIR/bench.flows
make_set() {
    local n=$1 d=$2 src
    mkdir -p "$d"
    if ((n <= 1000)); then src=${SET}_1K; elif ((n <= 10000)); then src=${SET}_10K; else src=${SET}_100K; fi
    [[ -f $CB/$src.rules ]] || die "$CB/$src.rules not found"
    head -n "$n" "$CB/$src.rules" >"$d/rules"
    # trace lines whose first match (last column, 1-based) is among the kept rules
    awk -v n="$n" -v lim="$FLOWS" '$NF <= n { print; if (++c >= lim) exit }' "$CB/$src.trace" >"$d/trace"
    [[ -s $d/trace ]] || die "$src: no trace line matches the first $n rules"
    "$CBFLOWS" --rules "$d/rules" --out "$d/bench.flows" 2>>"$d/gen.log"
    echo "$src"
}

# flowgate_config DIR IN_DEV OUT_DEV: DIR/bench.toml (inline in0 -> out0, no TAPs)
flowgate_config() {
    local d=$1 in=$2 out=$3 eal
    if [[ $PCI_MODE == 1 && $in != net_* ]]; then
        eal='"-m", "1024", "--file-prefix", "fgpk-dut"'
    else
        eal='"--no-huge", "-m", "1024", "--no-pci", "--no-shconf"'
    fi
    # flowgate starts on a one-rule file and gets the rule set with `flowctl apply` (its
    # publish time is logged; the lint runs after publication)
    printf 'flow cb permit\n  match proto tcp dstport 1\n' >"$d/start.flows"
    cat >"$d/bench.toml" <<EOF
flows = "start.flows"

[dataplane]
workers = [$DUT_CPU]
eal = [$eal]
default_flow = "permit"

[control]
socket = "$d/control.sock"

[[port]]
name = "in0"
device = "$in"
kernel = false
peer = "out0"

[[port]]
name = "out0"
device = "$out"
kernel = false
EOF
}

# start_flowgate DIR [NETNS]: runs flowgate with DIR/bench.toml until stopped, then applies
# DIR/bench.flows; sets FG_PID
start_flowgate() {
    local d=$1 ns=${2:-}
    local -a pre=()
    if [[ -n $ns ]]; then pre=(ip netns exec "$ns"); fi
    "${pre[@]}" "$FLOWGATE" run --config "$d/bench.toml" --stats-json "$d/stats.json" \
        </dev/null >"$d/flowgate.log" 2>&1 &
    FG_PID=$!
    bg_pids+=("$FG_PID")
    local i
    for ((i = 0; i < 600; i++)); do
        if [[ -S $d/control.sock ]] &&
            "$FLOWCTL" --socket "$d/control.sock" status >/dev/null 2>&1; then
            "$FLOWCTL" --socket "$d/control.sock" apply "$d/bench.flows" >"$d/apply.log" 2>&1 ||
                die "flowctl apply $d/bench.flows failed: $(cat "$d/apply.log")"
            log "  $(tail -1 "$d/apply.log")"
            return 0
        fi
        kill -0 "$FG_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$d/flowgate.log" >&2
    die "flowgate did not start ($d/flowgate.log)"
}

# memif devargs: role, socket
memif() { echo "net_memif$1,role=$2,socket=$3,socket-abstract=no,rsize=$MEMIF_RSIZE"; }

# gen_search LABEL JSONL SIZES [extra generator args...] -- EAL...: one generator run (with
# GEN_CMD: the generator, prefixed with `ip netns exec` in the kernel part)
GEN_CMD=("$GEN")
gen_search() {
    local label=$1 out=$2 sizes=$3
    shift 3
    "${GEN_CMD[@]}" search --label "$label" --sizes "$sizes" "${SEARCH_OPTS[@]}" "$@" \
        >>"$out" 2>>"$tmp/gen.log" || {
        tail -20 "$tmp/gen.log" >&2
        die "generator run '$label' failed"
    }
}

SIZES_CSV=$(echo "$SIZES" | tr ' ' ',')
MODEL=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
log "output in $OUT; load average $(cut -d' ' -f1-3 /proc/loadavg)"
{
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- Machine: $MODEL, $(nproc) CPUs; generator on CPU $GEN_CPU, DUT worker on CPU $DUT_CPU"
    echo "- Load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- Settings: QUICK=$QUICK TRIAL=$TRIAL s LAT_TRIAL=$LAT_TRIAL s PRECISION=$PRECISION MAX_TRIALS=$MAX_TRIALS REPEAT=$REPEAT PDR_LOSS=$PDR_LOSS SET=$SET FLOWS=$FLOWS"
} >"$OUT/meta.md"
: >"$OUT/memif.jsonl"
: >"$OUT/rules.jsonl"
: >"$OUT/kernel.jsonl"

# --- part 1: memif (or PCI), flowgate and testpmd io --------------------------------------
part_memif() {
    local d=$tmp/memif src in out gen_eal tx rx
    src=$(make_set 1000 "$d")
    if [[ $PCI_MODE == 1 ]]; then
        in=$DUT_IN out=$DUT_OUT
        gen_eal=(-m 1024 --file-prefix fgpk-gen -l "$GEN_CPU" -a "$GEN_TX" -a "$GEN_RX")
        tx=$GEN_TX rx=$GEN_RX
    else
        in=$(memif 0 server "$d/in0.sock") out=$(memif 1 server "$d/out0.sock")
        gen_eal=("${EAL_VIRT[@]}" -l "$GEN_CPU" --vdev="$(memif 0 client "$d/in0.sock")"
            --vdev="$(memif 1 client "$d/out0.sock")")
        tx=net_memif0 rx=net_memif1
    fi
    flowgate_config "$d" "$in" "$out"

    log "memif: flowgate ($src rules, $(wc -l <"$d/trace") trace lines), sizes $SIZES"
    start_flowgate "$d"
    gen_search flowgate "$OUT/memif.jsonl" "$SIZES_CSV" --tx "$tx" --rx "$rx" \
        --profile "trace:$d/trace" \
        --dut-stats "$FLOWCTL --socket $d/control.sock --json stats" -- "${gen_eal[@]}"
    stop "$FG_PID"

    log "memif: dpdk-testpmd --forward-mode=io"
    rm -f "$d/in0.sock" "$d/out0.sock"
    local -a tp_eal
    if [[ $PCI_MODE == 1 ]]; then
        tp_eal=(-m 1024 --file-prefix fgpk-dut -a "$DUT_IN" -a "$DUT_OUT")
    else
        tp_eal=("${EAL_VIRT[@]}" --file-prefix="$DPDK_PREFIX" --vdev="$in" --vdev="$out")
    fi
    "$TESTPMD" "${tp_eal[@]}" -l "$GEN_CPU,$DUT_CPU" -- --forward-mode=io --nb-cores=1 \
        --total-num-mbufs=16384 --stats-period 1 </dev/null >"$d/testpmd.log" 2>&1 &
    local tp=$!
    bg_pids+=("$tp")
    wait_for "$d/testpmd.log" "Port statistics" "$tp" || {
        tail -20 "$d/testpmd.log" >&2
        die "testpmd did not start"
    }
    gen_search "testpmd-io" "$OUT/memif.jsonl" "$SIZES_CSV" --tx "$tx" --rx "$rx" \
        --profile "trace:$d/trace" -- "${gen_eal[@]}"
    stop "$tp"
}

# --- part 2: rule count --------------------------------------------------------------------
part_rules() {
    local n d src
    for n in $RULE_COUNTS; do
        d=$tmp/rules-$n
        src=$(make_set "$n" "$d")
        flowgate_config "$d" "$(memif 0 server "$d/in0.sock")" "$(memif 1 server "$d/out0.sock")"
        log "rules: flowgate with $(wc -l <"$d/rules") rules of $src, 64 bytes"
        start_flowgate "$d"
        gen_search "flowgate-$n" "$OUT/rules.jsonl" 64 --tx net_memif0 --rx net_memif1 \
            --profile "trace:$d/trace" --latency-at 0.5 \
            --dut-stats "$FLOWCTL --socket $d/control.sock --json stats" -- \
            "${EAL_VIRT[@]}" -l "$GEN_CPU" --vdev="$(memif 0 client "$d/in0.sock")" \
            --vdev="$(memif 1 client "$d/out0.sock")"
        stop "$FG_PID"
    done
}

# --- part 3: the kernel comparison ---------------------------------------------------------
# in_ns NS CMD...: run in a namespace
in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

kernel_lab_up() {
    ip netns add "$NS_GEN"
    ip netns add "$NS_DUT"
    local ns
    for ns in "$NS_GEN" "$NS_DUT"; do
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        in_ns "$ns" ip link set lo up
    done
    ip link add kg0 netns "$NS_GEN" type veth peer name kr0 netns "$NS_DUT"
    ip link add kg1 netns "$NS_GEN" type veth peer name kr1 netns "$NS_DUT"
    local gmask dmask
    gmask=$(printf '%x' $((1 << GEN_CPU)))
    dmask=$(printf '%x' $((1 << DUT_CPU)))
    for l in kg0 kg1; do
        in_ns "$NS_GEN" ip link set "$l" up
        in_ns "$NS_GEN" sh -c "echo $gmask > /sys/class/net/$l/queues/rx-0/rps_cpus"
    done
    for l in kr0 kr1; do
        in_ns "$NS_DUT" sh -c "echo $dmask > /sys/class/net/$l/queues/rx-0/rps_cpus"
    done
    in_ns "$NS_DUT" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv4.conf.kr0.rp_filter=0 net.ipv4.conf.kr1.rp_filter=0
    KR0_MAC=$(in_ns "$NS_DUT" cat /sys/class/net/kr0/address)
}

# kernel_router_up: the router's links, addresses, route and next hop, (again) before each
# nftables run: a DPDK af_packet port sets its interface down when it stops (flowgate on
# kr0/kr1 after the previous rule count), and the kernel drops the routes over a link
# that goes down
kernel_router_up() {
    in_ns "$NS_DUT" ip link set kr0 up
    in_ns "$NS_DUT" ip link set kr1 up
    in_ns "$NS_DUT" ip addr replace 10.255.0.1/30 dev kr0
    in_ns "$NS_DUT" ip addr replace 10.255.1.1/30 dev kr1
    in_ns "$NS_DUT" ip route replace default via 10.255.1.2 dev kr1
    in_ns "$NS_DUT" ip neigh replace 10.255.1.2 lladdr "$(in_ns "$NS_GEN" cat /sys/class/net/kg1/address)" \
        nud permanent dev kr1
}

part_kernel() {
    kernel_lab_up
    local n d src form
    GEN_CMD=(ip netns exec "$NS_GEN" "$GEN")
    local -a gen_eal=("${EAL_VIRT[@]}" -l "$GEN_CPU" --vdev=net_af_packet0,iface=kg0
        --vdev=net_af_packet1,iface=kg1)
    for n in $KERNEL_RULES; do
        d=$tmp/kernel-$n
        src=$(make_set "$n" "$d")
        # the kernel router: nftables, both forms
        kernel_router_up
        in_ns "$NS_DUT" sysctl -qw net.ipv4.ip_forward=1
        for form in linear sets; do
            "$GEN" nft --rules "$d/rules" --form "$form" --out "$d/$form.nft" 2>>"$d/gen.log"
            in_ns "$NS_DUT" nft flush ruleset
            in_ns "$NS_DUT" nft -f "$d/$form.nft" || die "nft -f $d/$form.nft failed"
            local i=1
            while [[ -f $d/$form.nft.$i ]]; do
                in_ns "$NS_DUT" nft -f "$d/$form.nft.$i" || die "nft -f $d/$form.nft.$i failed"
                i=$((i + 1))
            done
            log "kernel: nftables $form, $(wc -l <"$d/rules") rules of $src"
            gen_search "nft-$form-$n" "$OUT/kernel.jsonl" 64 --tx net_af_packet0 \
                --rx net_af_packet1 --profile "trace:$d/trace" --routable \
                --dst-mac "$KR0_MAC" --latency-at 0.5 -- "${gen_eal[@]}"
        done
        in_ns "$NS_DUT" nft flush ruleset
        in_ns "$NS_DUT" sysctl -qw net.ipv4.ip_forward=0
        # flowgate on the same veths (frames not addressed to kr0: the kernel drops them early)
        flowgate_config "$d" net_af_packet0,iface=kr0 net_af_packet1,iface=kr1
        log "kernel: flowgate on net_af_packet, $(wc -l <"$d/rules") rules of $src"
        start_flowgate "$d" "$NS_DUT"
        gen_search "flowgate-afpacket-$n" "$OUT/kernel.jsonl" 64 --tx net_af_packet0 \
            --rx net_af_packet1 --profile "trace:$d/trace" --routable --latency-at 0.5 \
            --dut-stats "$FLOWCTL --socket $d/control.sock --json stats" \
            -- "${gen_eal[@]}"
        stop "$FG_PID"
    done
    GEN_CMD=("$GEN")
}

for part in $PARTS; do
    case $part in
    memif) part_memif ;;
    rules) part_rules ;;
    kernel) part_kernel ;;
    *) die "unknown part $part (memif, rules, kernel)" ;;
    esac
done
echo "- Load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/meta.md"

# --- report and plots ----------------------------------------------------------------------
python3 "$ROOT/scripts/pktgen-report.py" "$OUT" >"$OUT/report.md"
(cd "$OUT" && gnuplot "$ROOT/scripts/pktgen.gp") || die "gnuplot failed"
if [[ ${DOCS:-0} == 1 ]]; then
    mkdir -p docs/img
    for f in "$OUT"/*.png; do cp "$f" "docs/img/pktgen-$(basename "$f")"; done
    log "copied the plots to docs/img/"
fi
cat "$OUT/report.md"
log "report: $OUT/report.md; plots: $(cd "$OUT" && ls ./*.png | tr '\n' ' ')"
