#!/usr/bin/env bash
# Dataplane throughput benchmark (docs/benchmarks.md, "Dataplane throughput"): one worker
# core, no kernel in the path. For each ClassBench set, in one run:
#
#   1. dpdk-testpmd --forward-mode=io    net_pcap0 (rx_pcap=F.pcap, infinite_rx=1) -> net_null0
#      (the I/O bound: what the vdevs cost with no work per packet);
#   2. flowgate bench classbench         the classifier alone on the same rules and trace lines
#      (the classifier bound, batched ns/packet);
#   3. flowgate run --duration           the same vdevs, port in0 inline to out0 (`peer`), the
#      rule set as one `cb permit` flow (every trace packet is permitted and forwarded).
#
# Target: flowgate ns/pkt <= 1.2 x (testpmd io ns/pkt + classifier ns/pkt), and on acl1_1K
# flowgate Mpps >= 0.6 x testpmd io Mpps. Prints one markdown report on stdout.
#
# The ClassBench files are located at run time (${FLOWGATE_CLASSBENCH:-../shared/classbench});
# every derived file (pcap, flows, truncated trace, configs, logs) lives in a temporary
# directory that is removed on exit (KEEP=1 keeps it and prints its path).
#
# Environment:
#   SETS="acl1_1K fw1_10K"  rule sets            DURATION=10   seconds per forwarding run
#   LIMIT=4096              trace lines -> pcap frames (the pcap PMD's infinite_rx keeps a copy
#                           of every frame in the port's mempool: flowgate's pool has 8191
#                           mbufs and testpmd's --total-num-mbufs=8192, so stay well below)
#   ITERS=200               classifier passes over the trace
#   ROUNDS=3                rounds of (testpmd, classifier, flowgate); the table takes the
#                           best of each (noise on a shared machine only slows runs down)
#   WORKER=1                the worker lcore (testpmd: -l 0,$WORKER; flowgate: workers=[$WORKER])
#   FLOWGATE=path           a flowgate binary (default: build target/release/flowgate here)
#   TESTPMD=dpdk-testpmd    KEEP=1   keep the temporary directory
set -euo pipefail
cd "$(dirname "$0")/.."

CB=${FLOWGATE_CLASSBENCH:-../shared/classbench}
SETS=${SETS:-acl1_1K fw1_10K}
DURATION=${DURATION:-10}
LIMIT=${LIMIT:-4096}
ITERS=${ITERS:-200}
ROUNDS=${ROUNDS:-3}
WORKER=${WORKER:-1}
TESTPMD=${TESTPMD:-dpdk-testpmd}
KEEP=${KEEP:-0}

if [[ ! -d $CB ]]; then
    echo "bench-dataplane: ClassBench directory $CB not found (set FLOWGATE_CLASSBENCH)" >&2
    exit 1
fi
CB=$(cd "$CB" && pwd)

tmp=$(mktemp -d /tmp/fg-dpbench.XXXXXX)
bg_pid=""
cleanup() {
    if [[ -n $bg_pid ]] && kill -0 "$bg_pid" 2>/dev/null; then
        kill -INT "$bg_pid" 2>/dev/null || true
        sleep 2
        kill -KILL "$bg_pid" 2>/dev/null || true
    fi
    if [[ $KEEP == 1 ]]; then
        echo "bench-dataplane: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

log() { echo "bench-dataplane: $*" >&2; }

# --- build only what is needed -------------------------------------------------------------
log "building the generators"
cargo build --release --quiet -p flowgate-dataplane --example classbench_pcap --example classbench_flows
EX=target/release/examples
if [[ -z ${FLOWGATE:-} ]]; then
    log "building flowgate"
    cargo build --release --quiet -p flowgate-control --bin flowgate
    FLOWGATE=target/release/flowgate
fi
FLOWGATE=$(realpath "$FLOWGATE")
command -v "$TESTPMD" >/dev/null || {
    echo "bench-dataplane: $TESTPMD not found (Debian package dpdk)" >&2
    exit 1
}

EAL_COMMON=(--no-huge -m 1024 --no-pci --no-shconf)

# Wait (up to 180 s) until $2 matches in log $1 while $bg_pid lives.
wait_for() {
    local i
    for ((i = 0; i < 1800; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$bg_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# testpmd io: started with --stats-period 1, stopped with SIGINT after DURATION seconds of
# forwarding; prints the mean Tx-pps of port 1 (the null port) over the full periods.
run_testpmd() {
    local pcap=$1 logf=$2
    "$TESTPMD" "${EAL_COMMON[@]}" -l "0,$WORKER" \
        --vdev="net_pcap0,rx_pcap=$pcap,infinite_rx=1" --vdev=net_null0,no-rx=1 -- \
        --forward-mode=io --total-num-mbufs=8192 --nb-cores=1 --stats-period 1 \
        </dev/null >"$logf" 2>&1 &
    bg_pid=$!
    if ! wait_for "$logf" "Tx-pps"; then
        log "testpmd did not start forwarding; log:"
        tail -30 "$logf" >&2
        exit 1
    fi
    sleep "$((DURATION + 1))"
    kill -INT "$bg_pid"
    wait "$bg_pid" || true
    bg_pid=""
    python3 - "$logf" <<'EOF'
import re, sys
port, samples = None, []
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"NIC statistics for port (\d+)", line)
    if m:
        port = int(m.group(1))
    m = re.search(r"Tx-pps:\s*(\d+)", line)
    if m and port == 1:
        samples.append(int(m.group(1)))
# the first period includes the start of forwarding; the last may be cut short by SIGINT
steady = samples[1:] if len(samples) > 2 else samples
if not steady or max(steady) == 0:
    sys.exit(f"testpmd: no forwarding samples in {sys.argv[1]}")
print(f"{sum(steady) / len(steady):.0f} {len(steady)}")
EOF
}

# flowgate run: prints "pps in_rx out_tx permit deny elapsed".
run_flowgate() {
    local cfg=$1 json=$2 logf=$3
    "$FLOWGATE" run --config "$cfg" --duration "$DURATION" --stats-json "$json" \
        </dev/null >"$logf" 2>&1 &
    bg_pid=$!
    if ! wait "$bg_pid"; then
        bg_pid=""
        log "flowgate run failed; log:"
        tail -30 "$logf" >&2
        exit 1
    fi
    bg_pid=""
    python3 - "$json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
ports = {p["name"]: p for p in s["ports"]}
def get(p, *keys):
    for k in keys:
        if k in p:
            return int(p[k])
    return 0
rx = get(ports["in0"], "rx_packets", "rx")
tx = get(ports["out0"], "tx_packets", "tx")
el = float(s["elapsed_s"])
v = s.get("verdicts", {})
drops = sum(int(x) for x in s.get("drops", {}).values())
print(f"{tx / el:.0f} {rx} {tx} {v.get('permit', 0)} {v.get('deny', 0)} {drops} {el:.3f}")
EOF
}

MODEL=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
NOW=$(date -u '+%Y-%m-%d %H:%M UTC')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
rows=()
notes=()

for SET in $SETS; do
    rules="$CB/$SET.rules"
    trace_full="$CB/$SET.trace"
    d="$tmp/$SET"
    mkdir -p "$d"
    head -n "$LIMIT" "$trace_full" >"$d/trace"
    frames=$(wc -l <"$d/trace")
    log "$SET: pcap ($frames frames) and flows"
    "$EX/classbench_pcap" --trace "$d/trace" --out "$d/bench.pcap" 2>>"$d/gen.log"
    "$EX/classbench_flows" --rules "$rules" --out "$d/bench.flows" 2>>"$d/gen.log"
    cat >"$d/bench.toml" <<EOF
flows = "bench.flows"

[dataplane]
workers = [$WORKER]
eal = ["--no-huge", "-m", "1024", "--no-pci", "--no-shconf"]
default_flow = "permit"

[control]
socket = "$d/control.sock"

[[port]]
name = "in0"
device = "net_pcap0,rx_pcap=$d/bench.pcap,infinite_rx=1"
kernel = false
peer = "out0"

[[port]]
name = "out0"
device = "net_null0,no-rx=1"
kernel = false
EOF

    tp_all="" cls_all="" fg_all=""
    for ((round = 1; round <= ROUNDS; round++)); do
        log "$SET: round $round/$ROUNDS: dpdk-testpmd io, ${DURATION} s"
        run_testpmd "$d/bench.pcap" "$d/testpmd.$round.log" >"$d/testpmd.res"
        read -r tp_pps tp_n <"$d/testpmd.res"
        tp_all+=" $tp_pps"

        log "$SET: round $round/$ROUNDS: flowgate bench classbench"
        "$FLOWGATE" bench classbench --rules "$rules" --trace "$d/trace" --iters "$ITERS" \
            >"$d/classbench.$round.log" 2>&1
        cls_ns=$(sed -n 's/^batched ([0-9]*):[[:space:]]*\([0-9.]*\) ns\/pkt.*/\1/p' \
            "$d/classbench.$round.log")
        if [[ -z $cls_ns ]]; then
            log "could not read the classifier's ns/pkt; log:"
            cat "$d/classbench.$round.log" >&2
            exit 1
        fi
        cls_all+=" $cls_ns"

        log "$SET: round $round/$ROUNDS: flowgate run, ${DURATION} s"
        run_flowgate "$d/bench.toml" "$d/stats.$round.json" "$d/flowgate.$round.log" \
            >"$d/flowgate.res"
        read -r fg_pps fg_rx fg_tx fg_permit fg_deny fg_drops fg_el <"$d/flowgate.res"
        fg_all+=" $fg_pps"
        notes+=("$SET round $round: testpmd $((tp_pps / 1000)) kpps ($tp_n one-second samples); classifier $cls_ns ns/pkt; flowgate in0 rx $fg_rx, out0 tx $fg_tx, permit $fg_permit, deny $fg_deny, drops $fg_drops in $fg_el s")
    done

    # best of the rounds for each (the machine is shared: noise only ever slows a run down)
    row=$(python3 - "$SET" "$frames" "$tp_all" "$cls_all" "$fg_all" <<'EOF'
import sys
s, frames = sys.argv[1], int(sys.argv[2])
tp = max(float(x) for x in sys.argv[3].split())
cls = min(float(x) for x in sys.argv[4].split())
fg = max(float(x) for x in sys.argv[5].split())
tp_ns, fg_ns = 1e9 / tp, 1e9 / fg
bound = 1.2 * (tp_ns + cls)
ratio = fg / tp
t1 = "yes" if fg_ns <= bound else "**no**"
t2 = ("yes" if ratio >= 0.6 else "**no**") if s == "acl1_1K" else "-"
print(f"| {s} | {frames} | {tp/1e6:.2f} | {tp_ns:.1f} | {cls:.1f} | {fg/1e6:.2f} | {fg_ns:.1f} "
      f"| {bound:.1f} | {t1} | {ratio:.0%} | {t2} |")
EOF
)
    rows+=("$row")
    notes+=("$SET: $(sed "s#$d/##g" "$d/gen.log" | tr '\n' ' ')")
done

cat <<EOF
### Dataplane throughput (scripts/bench-dataplane.sh)

- Machine: $MODEL, $(nproc) CPUs; worker / forwarding lcore $WORKER
- Date: $NOW, commit $COMMIT, $(dpkg-query -W -f='DPDK ${Version}' dpdk 2>/dev/null || echo 'DPDK ?')
- Best of $ROUNDS rounds of (testpmd, classifier, flowgate) per set; each round's figures are listed below the table
- Data: ClassBench sets, first $LIMIT trace lines each as pcap frames (min 64 bytes), rules as one \`cb permit\` flow
- testpmd: \`$TESTPMD ${EAL_COMMON[*]} -l 0,$WORKER --vdev=net_pcap0,rx_pcap=F.pcap,infinite_rx=1 --vdev=net_null0,no-rx=1 -- --forward-mode=io --total-num-mbufs=8192 --nb-cores=1 --stats-period 1\` for $DURATION s (mean Tx-pps of port 1)
- classifier: \`flowgate bench classbench --rules R --trace T --iters $ITERS\` (batched ns/pkt, same trace lines)
- flowgate: \`flowgate run --config BENCH.toml --duration $DURATION --stats-json OUT.json\` (out0 tx packets / elapsed_s)

| set | frames | testpmd io Mpps | testpmd ns/pkt | classifier ns/pkt | flowgate Mpps | flowgate ns/pkt | 1.2 x (io + cls) ns | time target | flowgate / testpmd pps | >= 60% (acl1_1K) |
|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|
EOF
printf '%s\n' "${rows[@]}"
echo
printf -- '- %s\n' "${notes[@]}"
