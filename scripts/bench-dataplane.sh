#!/usr/bin/env bash
# Dataplane throughput benchmark (docs/benchmarks.md, "Dataplane throughput"): one worker
# core, no kernel in the path. For each ClassBench set, in one run:
#
#   1. dpdk-testpmd --forward-mode=io    net_pcap0 (rx_pcap=F.pcap, infinite_rx=1) -> net_null0
#      (the I/O bound: what the vdevs cost with no work per packet);
#   2. flowgate bench classbench         the classifier alone on the same rules and trace lines
#      (the classifier bound, batched ns/packet: the worker classifies in batches), and the
#      `classbench_cpu` example: the same batched loop charged by thread CPU time;
#   3. flowgate run --duration           the same vdevs, port in0 inline to out0 (`peer`), the
#      rule set as one `cb permit` flow (every trace packet is permitted and forwarded).
#
# Time per packet: the machine is shared, so wall-clock packets/s mostly measure how much of
# the core the forwarding thread was given. Both forwarders are therefore also charged by the
# CPU time of their forwarding thread (testpmd `rte-worker-N`, flowgate `fg-worker-0`; first
# field of /proc/PID/task/TID/schedstat, sampled every 0.1 s until the process exits):
# CPU ns/pkt = thread CPU ns / packets sent out of the null port, and Mpps per core =
# 1000 / CPU ns/pkt; the classifier bound likewise comes from `classbench_cpu` (thread CPU
# time of the timed loop). Runs are started under `nice -n $NICE` (default -20, needs root),
# which helps only against competitors in the same CPU cgroup.
#
# Targets: flowgate CPU ns/pkt <= 1.2 x (testpmd CPU ns/pkt + classifier ns/pkt), and on
# acl1_1K flowgate Mpps per core >= 0.6 x testpmd's. Prints one markdown report on stdout.
#
# Then (EXTRA, default "table director") rows of routed and director traffic, each beside
# testpmd io on the same pcap, measured the same way (CPU time of the forwarding thread per
# packet out of the null port), in a second table:
#
#   table                  a `table 100` flow routes every frame (10.200.0.0/16 via 10.99.0.2
#                          out out0; the next hop a static neighbour, as net_null never answers
#                          ARP): TTL - 1, MAC rewrite, checksum update. `bench_pcap routed`.
#   director est N         a NAT director (Maglev, 4 servers behind out0, static neighbours, no
#                          health check) and a replayed pcap of one UDP datagram from each of N
#                          distinct clients (DIRECTOR_SIZES, default 65536 and 1048576): after
#                          the first pass every packet is a hit on a tracked connection of a
#                          table of N. The pcap PMD's infinite_rx keeps every frame in the pool,
#                          so the pool is sized for it (`[dataplane] mbufs`, testpmd
#                          --total-num-mbufs, EAL -m): 1M frames take about 5 GB per process
#                          (one 4 KB page per mbuf without hugepages).
#   director new           NEW_CLIENTS (2048) clients, each a TCP SYN then a RST, replayed: every
#                          SYN finds its tuple closed and opens a new connection (removed,
#                          scheduled, inserted), every RST is a hit that closes it again. Half the
#                          packets are new connections: new connections/s = packets/s / 2.
#
# For these rows flowgate runs until the warm-up is done (out0 has sent every frame of the pcap
# twice: every connection exists), then is measured over DURATION seconds from two snapshots of
# the control socket's counters and the worker thread's CPU time, then stopped (SIGINT). The
# published anchor for a director, Katran's 5.2 Mpps on one core, is printed beside the
# director rows, marked as published (not measured here).
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
#   NICE=-20                niceness of the measured processes (0: leave as is)
#   FLOWGATE=path           a flowgate binary (default: build target/release/flowgate here)
#   TESTPMD=dpdk-testpmd    KEEP=1   keep the temporary directory
#   EXTRA="table director"  the rows after the ClassBench sets ("" for none)
#   DIRECTOR_SIZES="65536 1048576"   clients (= tracked connections) of the director est rows
#   NEW_CLIENTS=2048        clients of the director new row (2 frames each)
#   WARM_MAX=300            seconds the warm-up of a table/director row may take at most
set -euo pipefail
cd "$(dirname "$0")/.."

CB=${FLOWGATE_CLASSBENCH:-../shared/classbench}
SETS=${SETS:-acl1_1K fw1_10K}
DURATION=${DURATION:-10}
LIMIT=${LIMIT:-4096}
ITERS=${ITERS:-200}
ROUNDS=${ROUNDS:-3}
WORKER=${WORKER:-1}
NICE=${NICE:--20}
TESTPMD=${TESTPMD:-dpdk-testpmd}
KEEP=${KEEP:-0}
EXTRA=${EXTRA-table director}
DIRECTOR_SIZES=${DIRECTOR_SIZES:-65536 1048576}
NEW_CLIENTS=${NEW_CLIENTS:-2048}
WARM_MAX=${WARM_MAX:-300}

if [[ ! -d $CB ]]; then
    echo "bench-dataplane: ClassBench directory $CB not found (set FLOWGATE_CLASSBENCH)" >&2
    exit 1
fi
CB=$(cd "$CB" && pwd)

tmp=$(mktemp -d /tmp/fg-dpbench.XXXXXX)
# shellcheck source=scripts/lib/dpdk-prefix.sh
. scripts/lib/dpdk-prefix.sh
bg_pid=""
sampler_pid=""
cleanup() {
    if [[ -n $bg_pid ]] && kill -0 "$bg_pid" 2>/dev/null; then
        kill -INT "$bg_pid" 2>/dev/null || true
        sleep 2
        kill -KILL "$bg_pid" 2>/dev/null || true
    fi
    if [[ -n $sampler_pid ]]; then
        kill "$sampler_pid" 2>/dev/null || true
    fi
    dpdk_prefix_cleanup
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
cargo build --release --quiet -p flowgate-dataplane \
    --example classbench_pcap --example classbench_flows --example classbench_cpu \
    --example bench_pcap
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

EAL_COMMON=(--no-huge -m 1024 --no-pci --no-shconf --file-prefix="$DPDK_PREFIX")
RUN=(nice -n "$NICE")

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

# Follow the thread named $2 of process $1: every 0.1 s, write its on-CPU nanoseconds (first
# field of its schedstat) to file $3, until the process is gone. Sets sampler_pid.
start_sampler() {
    local pid=$1 name=$2 out=$3
    (
        while kill -0 "$pid" 2>/dev/null; do
            for t in /proc/"$pid"/task/*; do
                { comm=$(<"$t/comm"); } 2>/dev/null || continue
                if [[ $comm == "$name" ]]; then
                    { read -r v _ <"$t/schedstat" && echo "$v" >"$out.new" && mv "$out.new" "$out"; } \
                        2>/dev/null || true
                fi
            done
            sleep 0.1
        done
    ) &
    sampler_pid=$!
}

stop_sampler() {
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=""
}

# testpmd io: started with --stats-period 1, stopped with SIGINT after DURATION seconds of
# forwarding (optional: total mbufs, default 8192, and EAL memory in MB, default 1024). Prints "wall_pps packets cpu_ns": the mean Tx-pps of port 1 (the null port) over
# the full one-second periods, port 1's total TX packets, the forwarding thread's CPU time.
run_testpmd() {
    local pcap=$1 logf=$2 mbufs=${3:-8192} mem=${4:-1024}
    rm -f "$logf.cpu"
    "${RUN[@]}" "$TESTPMD" --no-huge -m "$mem" --no-pci --no-shconf --file-prefix="$DPDK_PREFIX" -l "0,$WORKER" \
        --vdev="net_pcap0,rx_pcap=$pcap,infinite_rx=1" --vdev=net_null0,no-rx=1 -- \
        --forward-mode=io --total-num-mbufs="$mbufs" --nb-cores=1 --stats-period 1 \
        </dev/null >"$logf" 2>&1 &
    bg_pid=$!
    start_sampler "$bg_pid" "rte-worker-$WORKER" "$logf.cpu"
    if ! wait_for "$logf" "Tx-pps"; then
        log "testpmd did not start forwarding; log:"
        tail -30 "$logf" >&2
        exit 1
    fi
    sleep "$((DURATION + 1))"
    kill -INT "$bg_pid"
    wait "$bg_pid" || true
    bg_pid=""
    stop_sampler
    python3 - "$logf" <<'EOF'
import re, sys
log = sys.argv[1]
port, samples, tx_total = None, [], None
section = None
for line in open(log, errors="replace"):
    m = re.search(r"NIC statistics for port (\d+)", line)
    if m:
        port = int(m.group(1))
    m = re.search(r"Tx-pps:\s*(\d+)", line)
    if m and port == 1:
        samples.append(int(m.group(1)))
    m = re.search(r"Forward statistics for port (\d+)", line)
    if m:
        section = int(m.group(1))
    m = re.search(r"TX-packets:\s*(\d+)", line)
    if m and section == 1:
        tx_total = int(m.group(1))
        section = None
# the first period includes the start of forwarding; the last may be cut short by SIGINT
steady = samples[1:] if len(samples) > 2 else samples
if not steady or max(steady) == 0 or not tx_total:
    sys.exit(f"testpmd: no forwarding figures in {log}")
try:
    cpu = int(open(log + ".cpu").read())
except (OSError, ValueError):
    sys.exit(f"testpmd: no CPU time sampled for its forwarding thread ({log}.cpu)")
print(f"{sum(steady) / len(steady):.0f} {tx_total} {cpu}")
EOF
}

# flowgate run. Prints "wall_pps out_tx cpu_ns in_rx permit deny drops elapsed".
run_flowgate() {
    local cfg=$1 json=$2 logf=$3
    rm -f "$logf.cpu"
    "${RUN[@]}" "$FLOWGATE" run --config "$cfg" --duration "$DURATION" --stats-json "$json" \
        </dev/null >"$logf" 2>&1 &
    bg_pid=$!
    start_sampler "$bg_pid" "fg-worker-0" "$logf.cpu"
    if ! wait "$bg_pid"; then
        bg_pid=""
        log "flowgate run failed; log:"
        tail -30 "$logf" >&2
        exit 1
    fi
    bg_pid=""
    stop_sampler
    python3 - "$json" "$logf.cpu" <<'EOF'
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
try:
    cpu = int(open(sys.argv[2]).read())
except (OSError, ValueError):
    sys.exit(f"flowgate: no CPU time sampled for its worker thread ({sys.argv[2]})")
if tx == 0:
    sys.exit(f"flowgate: nothing forwarded ({sys.argv[1]})")
print(f"{tx / el:.0f} {tx} {cpu} {rx} {v.get('permit', 0)} {v.get('deny', 0)} {drops} {el:.3f}")
EOF
}

# flowgate run measured over a window: started, warmed up until out0 has sent $4 packets
# (read from the control socket $3), then two snapshots DURATION seconds apart of out0's tx
# counter and the worker thread's CPU time; then stopped with SIGINT (stats JSON $2).
# Prints "wall_pps out_tx cpu_ns in_rx drops elapsed warm_s" for the window.
run_flowgate_window() {
    local cfg=$1 json=$2 sock=$3 warm=$4 logf=$5
    "${RUN[@]}" "$FLOWGATE" run --config "$cfg" --duration "$((DURATION + WARM_MAX + 60))" \
        --stats-json "$json" </dev/null >"$logf" 2>&1 &
    bg_pid=$!
    if ! python3 - "$bg_pid" "$sock" "$warm" "$DURATION" "$WARM_MAX" >"$logf.window" \
        2>&1 <<'EOF'; then
import json, os, socket, sys, time
pid, sock, warm = sys.argv[1], sys.argv[2], int(sys.argv[3])
dur, warm_max = float(sys.argv[4]), float(sys.argv[5])

def cpu():
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            if open(f"/proc/{pid}/task/{t}/comm").read().strip() == "fg-worker-0":
                return int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
        except OSError:
            pass
    return None

def counters():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock)
    s.sendall(b'{"op":"stats"}\n')
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
    s.close()
    r = json.loads(buf)
    ports = {p["name"]: dict(p["counters"]) for p in r["ports"]}
    return ports["out0"]["tx"], ports["in0"]["rx"], sum(n for _, n in r.get("drops", []))

start = time.time()
snap = None
while time.time() - start < warm_max:
    if not os.path.exists(f"/proc/{pid}"):
        sys.exit("flowgate exited during the warm-up")
    try:
        tx, rx, drops = counters()
    except (OSError, ValueError, KeyError):
        time.sleep(0.2)
        continue
    if tx >= warm:
        snap = (time.time(), cpu(), tx, rx, drops)
        break
    time.sleep(0.2)
if snap is None:
    sys.exit(f"warm-up not done in {warm_max:.0f} s ({warm} packets out of out0 wanted)")
warm_s = snap[0] - start
time.sleep(dur)
t1, c1 = time.time(), cpu()
tx1, rx1, drops1 = counters()
t0, c0, tx0, rx0, drops0 = snap
if c0 is None or c1 is None:
    sys.exit("no CPU time sampled for the worker thread fg-worker-0")
if tx1 == tx0:
    sys.exit("nothing forwarded in the window")
el = t1 - t0
print(f"{(tx1 - tx0) / el:.0f} {tx1 - tx0} {c1 - c0} {rx1 - rx0} {drops1 - drops0} {el:.3f} {warm_s:.1f}")
EOF
        log "flowgate window failed: $(tail -1 "$logf.window" 2>/dev/null); log:"
        kill -INT "$bg_pid" 2>/dev/null || true
        wait "$bg_pid" || true
        bg_pid=""
        tail -30 "$logf" >&2
        exit 1
    fi
    kill -INT "$bg_pid"
    if ! wait "$bg_pid"; then
        bg_pid=""
        log "flowgate run failed; log:"
        tail -30 "$logf" >&2
        exit 1
    fi
    bg_pid=""
    cat "$logf.window"
}

# The appliance config of a table/director row: $1 dir, $2 pcap, $3 mbufs, $4 EAL MB; the
# rest (out0's neighbours, tables, directors) comes on stdin.
extra_config() {
    local d=$1 pcap=$2 mbufs=$3 mem=$4
    cat <<EOF
flows = "bench.flows"

[dataplane]
workers = [$WORKER]
eal = ["--no-huge", "-m", "$mem", "--no-pci", "--no-shconf"]
mbufs = $mbufs

[control]
socket = "$d/control.sock"

[[port]]
name = "in0"
device = "net_pcap0,rx_pcap=$pcap,infinite_rx=1"
kernel = false

[[port]]
name = "out0"
device = "net_null0,no-rx=1"
kernel = false
mac = "02:00:00:00:99:01"
addresses = ["10.99.0.1/24"]
EOF
    cat
}

# Pool and EAL memory for a pcap of $1 frames kept in the pool (infinite_rx): the frames plus
# the 8192 the ports need; without hugepages a 2176-byte mbuf takes a 4 KB page of its own
# (mempool objects do not cross pages), so 4.5 KB each, plus 512 MB for the rest. Prints
# "mbufs MB".
pool_for() {
    local mbufs=$(($1 + 8192))
    echo "$mbufs $((mbufs * 9 / 2 / 1024 + 512))"
}

MODEL=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
NOW=$(date -u '+%Y-%m-%d %H:%M UTC')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# the commit of the tree the flowgate binary was built in (target/release/flowgate)
FG_TREE=$(dirname "$(dirname "$(dirname "$FLOWGATE")")")
FG_COMMIT=$(git -C "$FG_TREE" rev-parse --short HEAD 2>/dev/null || echo unknown)
FG_BUILT=$(date -u -r "$FLOWGATE" '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
notes=()

for SET in $SETS; do
    rules="$CB/$SET.rules"
    d="$tmp/$SET"
    mkdir -p "$d"
    head -n "$LIMIT" "$CB/$SET.trace" >"$d/trace"
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

    results="$d/rounds.txt"
    : >"$results"
    for ((round = 1; round <= ROUNDS; round++)); do
        log "$SET: round $round/$ROUNDS: dpdk-testpmd io, ${DURATION} s"
        run_testpmd "$d/bench.pcap" "$d/testpmd.$round.log" >"$d/testpmd.res"
        read -r tp_pps tp_pkts tp_cpu <"$d/testpmd.res"

        log "$SET: round $round/$ROUNDS: flowgate bench classbench"
        "${RUN[@]}" "$FLOWGATE" bench classbench --rules "$rules" --trace "$d/trace" \
            --iters "$ITERS" >"$d/classbench.$round.log" 2>&1
        cls_ns=$(sed -n 's/^batched ([0-9]*):[[:space:]]*\([0-9.]*\) ns\/pkt.*/\1/p' \
            "$d/classbench.$round.log")
        cls_single=$(sed -n 's/^single:[[:space:]]*\([0-9.]*\) ns\/pkt.*/\1/p' \
            "$d/classbench.$round.log")
        if [[ -z $cls_ns ]]; then
            log "could not read the classifier's ns/pkt; log:"
            cat "$d/classbench.$round.log" >&2
            exit 1
        fi
        "${RUN[@]}" "$EX/classbench_cpu" --rules "$rules" --trace "$d/trace" --iters "$ITERS" \
            >"$d/classbench_cpu.$round.res"
        read -r cls_cpu _ _ <"$d/classbench_cpu.$round.res"

        log "$SET: round $round/$ROUNDS: flowgate run, ${DURATION} s"
        run_flowgate "$d/bench.toml" "$d/stats.$round.json" "$d/flowgate.$round.log" \
            >"$d/flowgate.res"
        read -r fg_pps fg_pkts fg_cpu fg_rx fg_permit fg_deny fg_drops fg_el <"$d/flowgate.res"
        echo "$tp_pps $tp_pkts $tp_cpu $cls_ns $fg_pps $fg_pkts $fg_cpu $cls_cpu" >>"$results"
        notes+=("$(python3 -c '
import sys
a = sys.argv[1:]
print(f"{a[0]} round {a[1]}: testpmd {int(a[2])/1e6:.2f} Mpps wall, {int(a[3])} pkts in {int(a[4])/1e9:.2f} s CPU = {int(a[4])/int(a[3]):.1f} ns/pkt; "
      f"classifier {a[5]} ns/pkt batched, {a[6]} single (wall, flowgate bench), {a[15]} batched (CPU); "
      f"flowgate {int(a[7])/1e6:.2f} Mpps wall, {int(a[8])} pkts in {int(a[9])/1e9:.2f} s CPU = {int(a[9])/int(a[8]):.1f} ns/pkt "
      f"(in0 rx {a[10]}, permit {a[11]}, deny {a[12]}, drops {a[13]}, {a[14]} s)")
' "$SET" "$round" "$tp_pps" "$tp_pkts" "$tp_cpu" "$cls_ns" "$cls_single" \
            "$fg_pps" "$fg_pkts" "$fg_cpu" "$fg_rx" "$fg_permit" "$fg_deny" "$fg_drops" "$fg_el" \
            "$cls_cpu")")
    done

    # best of the rounds for each (noise on a shared machine only ever slows a run down)
    row=$(python3 - "$SET" "$frames" "$results" <<'EOF'
import sys
s, frames = sys.argv[1], int(sys.argv[2])
r = [list(map(float, l.split())) for l in open(sys.argv[3]) if l.strip()]
tp_wall = max(x[0] for x in r)
tp_ns = min(x[2] / x[1] for x in r)
cls_wall = min(x[3] for x in r)
cls = min(x[7] for x in r)
fg_wall = max(x[4] for x in r)
fg_ns = min(x[6] / x[5] for x in r)
bound = 1.2 * (tp_ns + cls)
ratio = tp_ns / fg_ns  # packets per CPU-second, flowgate / testpmd
t1 = "yes" if fg_ns <= bound else "**no**"
t2 = ("yes" if ratio >= 0.6 else "**no**") if s == "acl1_1K" else "-"
print(f"| {s} | {frames} | {tp_wall/1e6:.2f} | {tp_ns:.1f} | {1e3/tp_ns:.1f} | {cls_wall:.1f} | {cls:.1f} "
      f"| {fg_wall/1e6:.2f} | {fg_ns:.1f} | {1e3/fg_ns:.1f} | {bound:.1f} | {t1} | {ratio:.0%} | {t2} |")
EOF
)
    rows+=("$row")
    notes+=("$SET: $(sed "s#$d/##g" "$d/gen.log" | tr '\n' ' ')")
done

# --- routed and director rows -------------------------------------------------------------
extra_rows=()
extra_kinds=()
for kind in $EXTRA; do
    case $kind in
    table) extra_kinds+=("table") ;;
    director)
        for n in $DIRECTOR_SIZES; do extra_kinds+=("director-est-$n"); done
        extra_kinds+=("director-new")
        ;;
    *)
        echo "bench-dataplane: unknown EXTRA row kind $kind (table, director)" >&2
        exit 1
        ;;
    esac
done
for row in "${extra_kinds[@]}"; do
    d="$tmp/$row"
    mkdir -p "$d"
    case $row in
    table)
        frames=$LIMIT
        "$EX/bench_pcap" routed --out "$d/bench.pcap" --frames "$frames" 2>>"$d/gen.log"
        label="table (routed: TTL, MACs, checksum)"
        printf 'flow routed table 100\n    match dst 10.200.0.0/16\n' >"$d/bench.flows"
        read -r mbufs mem <<<"$(pool_for "$frames")"
        extra_config "$d" "$d/bench.pcap" "$mbufs" "$mem" >"$d/bench.toml" <<'EOF'
neighbours = { "10.99.0.2" = "02:00:00:00:99:02" }

[[table]]
id = 100
routes = { "10.200.0.0/16" = "10.99.0.2" }
EOF
        ;;
    director-*)
        if [[ $row == director-new ]]; then
            conns=$NEW_CLIENTS
            frames=$((2 * conns))
            "$EX/bench_pcap" director --kind new --clients "$conns" --out "$d/bench.pcap" \
                2>>"$d/gen.log"
            label="director NAT, new connections ($conns clients: SYN, RST)"
        else
            conns=${row#director-est-}
            frames=$conns
            "$EX/bench_pcap" director --kind established --clients "$conns" \
                --out "$d/bench.pcap" 2>>"$d/gen.log"
            label="director NAT, established, $conns entries"
        fi
        printf 'flow lb director bench\n    match dst 10.100.0.1\n' >"$d/bench.flows"
        read -r mbufs mem <<<"$(pool_for "$frames")"
        extra_config "$d" "$d/bench.pcap" "$mbufs" "$mem" >"$d/bench.toml" <<EOF
neighbours = { "10.99.0.11" = "02:00:00:00:99:11", "10.99.0.12" = "02:00:00:00:99:12", "10.99.0.13" = "02:00:00:00:99:13", "10.99.0.14" = "02:00:00:00:99:14" }

[[director]]
name = "bench"
scheduler = "mh"
mode = "nat"
virtual = { address = "10.100.0.1", port = 80 }
max_connections = $((conns + conns / 2 + 4096))
servers = [
  { name = "s1", address = "10.99.0.11" },
  { name = "s2", address = "10.99.0.12" },
  { name = "s3", address = "10.99.0.13" },
  { name = "s4", address = "10.99.0.14" },
]
EOF
        ;;
    esac
    results="$d/rounds.txt"
    : >"$results"
    for ((round = 1; round <= ROUNDS; round++)); do
        log "$row: round $round/$ROUNDS: dpdk-testpmd io, ${DURATION} s ($frames frames)"
        run_testpmd "$d/bench.pcap" "$d/testpmd.$round.log" "$mbufs" "$mem" >"$d/testpmd.res"
        read -r tp_pps tp_pkts tp_cpu <"$d/testpmd.res"
        log "$row: round $round/$ROUNDS: flowgate run, warm-up then ${DURATION} s"
        run_flowgate_window "$d/bench.toml" "$d/stats.$round.json" "$d/control.sock" \
            "$((2 * frames))" "$d/flowgate.$round.log" >"$d/flowgate.res"
        read -r fg_pps fg_pkts fg_cpu fg_rx fg_drops fg_el fg_warm <"$d/flowgate.res"
        echo "$tp_pps $tp_pkts $tp_cpu $fg_pps $fg_pkts $fg_cpu" >>"$results"
        notes+=("$(python3 -c '
import sys
a = sys.argv[1:]
print(f"{a[0]} round {a[1]}: testpmd {int(a[2])/1e6:.2f} Mpps wall, {int(a[3])} pkts in {int(a[4])/1e9:.2f} s CPU = {int(a[4])/int(a[3]):.1f} ns/pkt; "
      f"flowgate (after a {a[11]} s warm-up) {int(a[5])/1e6:.2f} Mpps wall, {int(a[6])} pkts in {int(a[7])/1e9:.2f} s CPU = {int(a[7])/int(a[6]):.1f} ns/pkt "
      f"(in0 rx {a[8]}, drops {a[9]}, window {a[10]} s)")
' "$row" "$round" "$tp_pps" "$tp_pkts" "$tp_cpu" "$fg_pps" "$fg_pkts" "$fg_cpu" "$fg_rx" \
            "$fg_drops" "$fg_el" "$fg_warm")")
        if [[ $row == director-* ]]; then
            notes+=("$row round $round: director counters at exit: $(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(json.dumps(s.get("directors"), separators=(",", ":"))[:400])
' "$d/stats.$round.json")")
        fi
    done
    anchor="-"
    if [[ $row == director-* ]]; then
        anchor="Katran 5.2 Mpps/core (published, not measured)"
    fi
    extra_rows+=("$(python3 - "$label" "$frames" "$results" "$anchor" "$row" <<'EOF'
import sys
label, frames, anchor, row = sys.argv[1], int(sys.argv[2]), sys.argv[4], sys.argv[5]
r = [list(map(float, l.split())) for l in open(sys.argv[3]) if l.strip()]
tp_wall = max(x[0] for x in r)
tp_ns = min(x[2] / x[1] for x in r)
fg_wall = max(x[3] for x in r)
fg_ns = min(x[5] / x[4] for x in r)
ratio = tp_ns / fg_ns
extra = f" ({1e3 / fg_ns / 2:.2f} M new conn/s)" if row == "director-new" else ""
print(f"| {label} | {frames} | {tp_wall/1e6:.2f} | {tp_ns:.1f} | {1e3/tp_ns:.1f} | {fg_wall/1e6:.2f} "
      f"| {fg_ns:.1f} | {1e3/fg_ns:.2f}{extra} | {fg_ns - tp_ns:.1f} | {ratio:.0%} | {anchor} |")
EOF
)")
    notes+=("$row: $(sed "s#$d/##g" "$d/gen.log" | tr '\n' ' ')")
    if [[ $KEEP != 1 ]]; then
        rm -f "$d/bench.pcap"
    fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

cat <<EOF
### Dataplane throughput (scripts/bench-dataplane.sh)

- Machine: $MODEL, $(nproc) CPUs (shared; load average $LOAD_BEFORE before, $LOAD_AFTER after); forwarding lcore $WORKER; measured processes under \`nice -n $NICE\`
- Date: $NOW; script at commit $COMMIT; flowgate binary $FLOWGATE (built $FG_BUILT; its tree is now at $FG_COMMIT); $(dpkg-query -W -f='DPDK ${Version}' dpdk 2>/dev/null || echo 'DPDK ?')
- Data: ClassBench sets, first $LIMIT trace lines each as pcap frames (64 bytes min), rules as one \`cb permit\` flow
- testpmd: \`$TESTPMD ${EAL_COMMON[*]} -l 0,$WORKER --vdev=net_pcap0,rx_pcap=F.pcap,infinite_rx=1 --vdev=net_null0,no-rx=1 -- --forward-mode=io --total-num-mbufs=8192 --nb-cores=1 --stats-period 1\`, ${DURATION} s of forwarding then SIGINT
- classifier: \`flowgate bench classbench --rules R --trace T --iters $ITERS\` (batched ns/pkt, wall clock, the same $LIMIT trace lines) and \`classbench_cpu --rules R --trace T --iters $ITERS\` (the same batched loop, thread CPU time)
- flowgate: \`flowgate run --config BENCH.toml --duration $DURATION --stats-json OUT.json\` (in0 \`peer = "out0"\`, \`kernel = false\`, \`workers = [$WORKER]\`)
- Best of $ROUNDS rounds of (testpmd, classifier, flowgate) per set; every round is listed below the table.
  "wall" = packets out of the null port / wall time; "CPU" = forwarding-thread CPU time / those packets (schedstat), the figure the targets use.

| set | frames | testpmd io Mpps (wall) | testpmd ns/pkt (CPU) | testpmd Mpps/core | classifier ns/pkt (wall) | classifier ns/pkt (CPU) | flowgate Mpps (wall) | flowgate ns/pkt (CPU) | flowgate Mpps/core | 1.2 x (io + cls) ns | time target | flowgate / testpmd | >= 60% (acl1_1K) |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|
EOF
printf '%s\n' "${rows[@]}"
if ((${#extra_rows[@]} > 0)); then
    cat <<EOF

Routed and director traffic, each beside testpmd io on the same pcap (same vdevs, same CPU-time accounting; flowgate measured over ${DURATION} s after a warm-up in which every frame of the pcap went out twice, so every connection exists). Published anchor for a director: Katran, 5.2 Mpps on one core (published, not measured here).

| traffic | frames | testpmd io Mpps (wall) | testpmd ns/pkt (CPU) | testpmd Mpps/core | flowgate Mpps (wall) | flowgate ns/pkt (CPU) | flowgate Mpps/core | flowgate - io ns/pkt | flowgate / testpmd | anchor |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
EOF
    printf '%s\n' "${extra_rows[@]}"
fi
echo
printf -- '- %s\n' "${notes[@]}"
