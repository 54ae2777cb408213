#!/usr/bin/env bash
# The active/active demo (docs/ha.md): two flowgate appliances announce the VIP 192.0.2.80 to
# a BIRD 2 router over BGP; the router spreads clients over both (ECMP). Shown: the multipath
# route, the withdraw when one appliance's servers are all disabled and when its flowgate is
# killed, and long-lived connections that keep their server through the failover (`mh`
# director, `sloppy`).
#
#   client ns (10.9.0.2, AnyIP 10.10.0.0/16) -- rt ns (BIRD 2) --br0-- app1, app2 (flowgate + BIRD)
#                                               rt br1 10.0.0.254 --- app eth1, servers .21 .22
#
# Everything it creates is removed on exit, also when interrupted. Run as root; needs bird2
# (scripts/setup.sh). FLOWGATE_BIN / FLOWCTL_BIN: use these binaries instead of building.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ "$(id -u)" -ne 0 ]; then
  echo "demo-ecmp: needs root (network namespaces, TAPs)" >&2
  exit 1
fi
command -v bird >/dev/null || { echo "demo-ecmp: needs bird2 (scripts/setup.sh)" >&2; exit 1; }

P=${FLOWGATE_DEMO_PREFIX:-fgecmp}
RT=$P-rt CL=$P-cl A1=$P-a1 A2=$P-a2 S1=$P-s1 S2=$P-s2
VIP=192.0.2.80
TMP=$(mktemp -d /tmp/flowgate-demo-ecmp.XXXXXX)
declare -A FG_PID=()

cleanup() {
  set +e
  for ns in "$A1" "$A2" "$S1" "$S2" "$CL" "$RT"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
hops() { ip -n "$RT" route show "$VIP/32" | grep -o 'via [0-9.]*' | sort | tr '\n' ' '; }
await_hops() { # await_hops "via A via B " TIMEOUT_S: print the time it took
  local want=$1 t0 i
  t0=$(date +%s%N)
  for ((i = 0; i < $2 * 100; i++)); do
    if [ "$(hops)" = "$want" ]; then
      printf '  route: %s(after %d ms)\n' "${want:-none }" $((($(date +%s%N) - t0) / 1000000))
      return 0
    fi
    sleep 0.01
  done
  echo "  route: $(hops) -- expected $want" >&2
  return 1
}

if [ -n "${FLOWGATE_BIN:-}" ]; then
  BIN=$FLOWGATE_BIN FLOWCTL=${FLOWCTL_BIN:?set FLOWCTL_BIN with FLOWGATE_BIN}
else
  step "building flowgate (release)"
  cargo build --release -q -p flowgate-control
  BIN=$ROOT/target/release/flowgate FLOWCTL=$ROOT/target/release/flowctl
fi

step "the lab: router, client, two appliances, two servers"
for ns in "$RT" "$CL" "$A1" "$A2" "$S1" "$S2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip netns exec "$RT" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
  net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
for br in br0 br1; do ip -n "$RT" link add $br type bridge; ip -n "$RT" link set $br up; done
ip -n "$RT" addr add 192.168.1.1/24 dev br0
ip -n "$RT" addr add 10.0.0.254/24 dev br1
ip link add rc netns "$RT" type veth peer name cc netns "$CL"
ip -n "$RT" link set rc up; ip -n "$CL" link set cc up
ip -n "$RT" addr add 10.9.0.1/24 dev rc; ip -n "$CL" addr add 10.9.0.2/24 dev cc
ip -n "$CL" route add default via 10.9.0.1
ip -n "$CL" route add local 10.10.0.0/16 dev lo
ip -n "$RT" route add 10.10.0.0/16 via 10.9.0.2
ip netns exec "$CL" ethtool -K cc tx off >/dev/null

cat >"$TMP/server.py" <<'EOF'
import socket, sys, threading
name = sys.argv[1].encode()
def serve(c):
    try:
        c.sendall(name + b'\n')
        for line in c.makefile('rb'):
            c.sendall(name + b':' + line)
    except OSError:
        pass
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 80)); s.listen(256)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
EOF
k=0
for s in "$S1" "$S2"; do
  k=$((k + 1))
  ip link add es netns "$s" type veth peer name bs$k netns "$RT"
  ip -n "$RT" link set bs$k master br1; ip -n "$RT" link set bs$k up; ip -n "$s" link set es up
  ip -n "$s" addr add 10.0.0.2$k/24 dev es
  ip -n "$s" addr add $VIP/32 dev lo
  ip -n "$s" route add default via 10.0.0.254
  ip netns exec "$s" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.es.rp_filter=0 \
    net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  ip netns exec "$s" ethtool -K es tx off >/dev/null
  ip netns exec "$s" python3 "$TMP/server.py" s$k >/dev/null 2>&1 &
  disown $!
done

cat >"$TMP/rt.conf" <<EOF
router id 172.16.0.1;
protocol device { scan time 10; }
protocol kernel { ipv4 { import none; export all; }; merge paths on; }
template bgp appliance {
  local as 65000; hold time 3; keepalive time 1; connect retry time 1;
  ipv4 { import all; export none; };
}
protocol bgp app1 from appliance { local 172.16.1.1; neighbor 172.16.1.2 as 65001; }
protocol bgp app2 from appliance { local 172.16.2.1; neighbor 172.16.2.2 as 65001; }
EOF
ip netns exec "$RT" bird -c "$TMP/rt.conf" -s "$TMP/rt.ctl" -P "$TMP/rt.pid"

printf 'flow web director web\n    match proto tcp dst %s dstport 80\nflow rest permit\n    match\n' \
  "$VIP" >"$TMP/web.flows"
for k in 1 2; do
  a=$P-a$k
  for side in 0 1; do
    ip link add fg$side netns "$a" type veth peer name b$k$side netns "$RT"
    ip -n "$RT" link set b$k$side master br$side; ip -n "$RT" link set b$k$side up
    ip -n "$a" link set fg$side up
    ip netns exec "$a" sysctl -qw "net.ipv6.conf.fg$side.disable_ipv6=1"
    ip netns exec "$a" nft "table netdev nic$side { chain in { type filter hook ingress device \"fg$side\" priority 0; policy drop; }; }"
  done
  ip netns exec "$a" sysctl -qw net.ipv4.conf.all.rp_filter=0
  ip link add mg netns "$a" type veth peer name m$k netns "$RT"
  ip -n "$a" link set mg up; ip -n "$RT" link set m$k up
  ip -n "$a" addr add 172.16.$k.2/30 dev mg; ip -n "$RT" addr add 172.16.$k.1/30 dev m$k
  cat >"$TMP/a$k.conf" <<EOF
router id 172.16.$k.2;
protocol device { scan time 10; }
protocol direct vips { ipv4; interface "eth0"; }   # the VIP flowgate puts on its eth0 TAP
protocol bgp upstream {
  local 172.16.$k.2 as 65001; neighbor 172.16.$k.1 as 65000;
  hold time 3; keepalive time 1; connect retry time 1;
  ipv4 { import none; export where net ~ [ $VIP/32 ]; next hop address 192.168.1.1$k; };
}
EOF
  ip netns exec "$a" bird -c "$TMP/a$k.conf" -s "$TMP/a$k.ctl" -P "$TMP/a$k.pid"
  # servers listed in another order on each box: mh does not care
  servers='{ name = "s1", address = "10.0.0.21" }, { name = "s2", address = "10.0.0.22" }'
  [ $k = 2 ] && servers='{ name = "s2", address = "10.0.0.22" }, { name = "s1", address = "10.0.0.21" }'
  cat >"$TMP/a$k.toml" <<EOF
flows = "web.flows"
[control]
socket = "$TMP/a$k.sock"
[dataplane]
workers = [1]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]
[[port]]
name = "eth0"
device = "net_af_packet0,iface=fg0"
addresses = ["192.168.1.1$k/24"]
[[port]]
name = "eth1"
device = "net_af_packet1,iface=fg1"
addresses = ["10.0.0.$k/24"]
[[director]]
name = "web"
scheduler = "mh"
mode = "gateway"
virtual = { address = "$VIP" }
announce = "eth0"
hash_seed = 20261204
check = { kind = "tcp", port = 80, interval_ms = 200, timeout_ms = 150, rise = 1, fall = 2 }
servers = [ $servers ]
EOF
done
start() {
  ip netns exec "$P-a$1" "$BIN" run --config "$TMP/a$1.toml" >"$TMP/a$1.log" 2>&1 &
  FG_PID[$1]=$!
  disown "${FG_PID[$1]}"
}
start 1
start 2

step "both appliances announce $VIP: one route, two next hops"
await_hops "via 192.168.1.11 via 192.168.1.12 " 40
ip -n "$RT" route show "$VIP/32" | sed 's/^/  /'

step "60 long-lived connections through the router's ECMP (from 60 client addresses)"
cat >"$TMP/client.py" <<'EOF'
import os, socket, sys, time
d = sys.argv[1]
conns = []
for i in range(60):
    s = socket.create_connection(('192.0.2.80', 80), timeout=5, source_address=('10.10.0.%d' % (i + 1), 0))
    f = s.makefile('rb')
    conns.append((s, f, f.readline().strip().decode()))
open(d + '/opened', 'w').write('')
r = 0
while not os.path.exists(d + '/stop'):
    if not os.path.exists(d + '/go%d' % (r + 1)):
        time.sleep(0.05); continue
    r += 1
    kept = 0
    for i, (s, f, name) in enumerate(conns):
        try:
            s.sendall(b'r%d\n' % r)
            kept += f.readline().strip().decode() == '%s:r%d' % (name, r)
        except OSError:
            pass
    open(d + '/res%d' % r, 'w').write('%d' % kept)
EOF
ip netns exec "$CL" python3 "$TMP/client.py" "$TMP" &
disown $!
for _ in $(seq 100); do [ -e "$TMP/opened" ] && break; sleep 0.1; done
round() {
  touch "$TMP/go$1"
  for _ in $(seq 200); do [ -e "$TMP/res$1" ] && break; sleep 0.05; done
  echo "  $(cat "$TMP/res$1" 2>/dev/null || echo 0) of 60 connections answered by their own server"
}
round 1

step "flowctl director disable: every server of appliance 1 -> it withdraws"
for s in s1 s2; do "$FLOWCTL" --socket "$TMP/a1.sock" director disable web $s; done
await_hops "via 192.168.1.12 " 5
grep -h 'announce' "$TMP/a1.log" | tail -1 | sed 's/^/  log: /'
for s in s1 s2; do "$FLOWCTL" --socket "$TMP/a1.sock" director enable web $s; done
await_hops "via 192.168.1.11 via 192.168.1.12 " 5
round 2

step "appliance 2's flowgate killed (SIGKILL): its TAP and the VIP vanish, BIRD withdraws"
kill -KILL "${FG_PID[2]}"
await_hops "via 192.168.1.11 " 5
step "the connections appliance 2 carried are picked up mid-stream by appliance 1 (mh + sloppy)"
round 3
sleep 0.3 # the workers copy their counters out every 100 ms
"$FLOWCTL" --socket "$TMP/a1.sock" --json stats \
  | python3 -c 'import json,sys; d=json.load(sys.stdin)["directors"][0]; print("  appliance 1: sloppy_connections", dict(d["counters"])["sloppy_connections"])'

step "appliance 2 back: announced again"
start 2
await_hops "via 192.168.1.11 via 192.168.1.12 " 40
round 4
touch "$TMP/stop"
echo
echo "demo-ecmp: done (docs/ha.md)"
