#!/usr/bin/env bash
# The HA demo: two flowgate appliances in a keepalived VRRP pair, one killed mid-traffic.
#
#   client ns        switch ns            appliance A (master): flowgate + keepalived
#   cli0 .100 -- br0 192.168.0.0/24 --+-- eth0 .11    eth1 10.0.0.2 --+
#                                     |   sync0 10.50.0.1 --+         |
#                                     |                     | sync    +-- br1 10.0.0.0/24 -- srv0
#                                     |   sync0 10.50.0.2 --+         |   servers 10.0.0.11, .12
#                                     +-- eth0 .12    eth1 10.0.0.3 --+
#                                         appliance B (backup): flowgate + keepalived
#
# The VRRP instance owns the VIP 192.168.0.2 (client side) and the servers' gateway 10.0.0.1
# (server side) on flowgate's TAPs eth0/eth1 of whichever appliance is master. A NAT director
# (persistence per client address) on each appliance spreads 192.168.0.2:8080 over the two
# servers, and the two sync their connections over sync0 ([sync]). A client loop talks to the
# VIP over one connection; the master's flowgate is killed (SIGKILL); the backup takes the VIP
# over and the loop goes on, on the same connection; the master's flowgate is started again
# and keepalived gives the VIP back to it, the connection still going. With --no-sync the
# connection breaks at each switch and the loop has to reconnect. Everything is removed on
# exit. Run as root (docs/ha.md).
set -euo pipefail
SYNC=1
case "${1:-}" in
  --no-sync) SYNC=0 ;;
  "") ;;
  *) echo "usage: $0 [--no-sync]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ "$(id -u)" -ne 0 ]; then
  echo "demo-ha: needs root (network namespaces, TAPs)" >&2
  exit 1
fi
command -v keepalived >/dev/null || { echo "demo-ha: needs keepalived (scripts/setup.sh)" >&2; exit 1; }

P=${FLOWGATE_DEMO_PREFIX:-fgha}
CLI=$P-cli SW=$P-sw A=$P-a B=$P-b SRV=$P-srv
TMP=$(mktemp -d /tmp/flowgate-demo-ha.XXXXXX)

remove_lab() {
  for ns in "$A" "$B" "$CLI" "$SW" "$SRV"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  return 0
}
cleanup() {
  set +e
  remove_lab
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
step() { printf '\n== %s\n' "$*"; }

if [ -z "${FLOWGATE_BIN:-}" ]; then
  step "building flowgate (release)"
  cargo build --release -q -p flowgate-control
fi
BIN=${FLOWGATE_BIN:-$ROOT/target/release/flowgate}

step "creating the lab: namespaces $CLI, $SW, $A, $B, $SRV"
remove_lab
for ns in "$CLI" "$SW" "$A" "$B" "$SRV"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
for br in br0 br1; do ip -n "$SW" link add "$br" type bridge; ip -n "$SW" link set "$br" up; done
link() { # link NS IF BRIDGE: a veth from NS (IF) to the switch's BRIDGE
  ip link add "$2" netns "$1" type veth peer name "$1-$2" netns "$SW"
  ip -n "$SW" link set "$1-$2" master "$3" up
  ip -n "$1" link set "$2" up
}
link "$CLI" cli0 br0
link "$SRV" srv0 br1
for app in "$A" "$B"; do
  link "$app" nic0 br0
  link "$app" nic1 br1
done
# the sync link: a cable between the two appliances, the kernels' own (not a flowgate port)
ip link add sync0 netns "$A" type veth peer name sync0 netns "$B"
ip -n "$A" addr add 10.50.0.1/24 dev sync0
ip -n "$B" addr add 10.50.0.2/24 dev sync0
for app in "$A" "$B"; do
  ip -n "$app" link set sync0 up
  # the veth ends are the appliance's "NICs" (DPDK reads them through af_packet): its kernel
  # must not answer on them itself (it owns the TAPs instead)
  for nic in nic0 nic1; do ip netns exec "$app" sysctl -qw "net.ipv6.conf.$nic.disable_ipv6=1"; done
  ip netns exec "$app" nft -f - <<NFT
table netdev nics {
  chain nic0 { type filter hook ingress device nic0 priority 0; policy drop; }
  chain nic1 { type filter hook ingress device nic1 priority 0; policy drop; }
}
NFT
done
ip -n "$CLI" addr add 192.168.0.100/24 dev cli0
ip -n "$SRV" addr add 10.0.0.11/24 dev srv0
ip -n "$SRV" addr add 10.0.0.12/24 dev srv0
ip -n "$SRV" route add default via 10.0.0.1
# veth leaves TCP checksums unfinished; the hosts compute them in software
ip netns exec "$CLI" ethtool -K cli0 tx off >/dev/null
ip netns exec "$SRV" ethtool -K srv0 tx off >/dev/null

# config NAME N EXTRA: appliance NAME's flows and flowgate.toml (its own addresses from N; its
# worker on CPU N-1, so that the two boxes do not share one), EXTRA appended ([sync])
config() {
  cat >"$TMP/$1.flows" <<'FLOWS'
# VRRP adverts (IP protocol 112 to 224.0.0.18) reach keepalived through the TAP
flow vrrp permit
    match proto 112 dst 224.0.0.18
flow web director web
    match proto tcp dst 192.168.0.2 dstport 8080
flow rest permit
    match
FLOWS
  cat >"$TMP/$1.toml" <<TOML
flows = "$1.flows"
[control]
socket = "$TMP/$1.sock"
[dataplane]
workers = [$(($2 - 1))]
eal = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf"]
[[port]]
name = "eth0"
device = "net_af_packet0,iface=nic0"
addresses = ["192.168.0.1$2/24"]
[[port]]
name = "eth1"
device = "net_af_packet1,iface=nic1"
addresses = ["10.0.0.$((1 + $2))/24"]
[[director]]
name = "web"
scheduler = "wrr"
mode = "nat"
virtual = { address = "192.168.0.2", port = 8080 }
persistence = { timeout = 300, netmask = "255.255.255.255" }
check = { kind = "tcp", interval_ms = 500, timeout_ms = 300, rise = 1, fall = 2 }
servers = [
  { name = "web1", address = "10.0.0.11", weight = 10 },
  { name = "web2", address = "10.0.0.12", weight = 10 },
]
$3
TOML
}
# keepalived_conf NAME PRIORITY: a VRRPv3 instance on eth0 owning the VIP and the gateway
keepalived_conf() {
  cat >"$TMP/$1.keepalived.conf" <<KA
global_defs {
    router_id flowgate-$1
    vrrp_version 3
    vrrp_priority -20
    # flowgate's TAPs vanish when flowgate stops and come back when it starts
    dynamic_interfaces
}
vrrp_instance web {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority $2
    advert_int 0.2
    preempt_delay 1
    track_interface {
        eth1
    }
    virtual_ipaddress {
        192.168.0.2/24 dev eth0
        10.0.0.1/24 dev eth1
    }
}
KA
}
sync_config() { # sync_config OWN PEER: the [sync] table, or nothing with --no-sync
  [ "$SYNC" = 1 ] || return 0
  printf '[sync]\nlisten = "10.50.0.%s:8848"\npeers = ["10.50.0.%s:8848"]\nkey_file = "%s"\n' \
    "$1" "$2" "$TMP/sync.key"
}
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/sync.key"
config a 1 "$(sync_config 1 2)"
config b 2 "$(sync_config 2 1)"
keepalived_conf a 150
keepalived_conf b 100

start_flowgate() { # start_flowgate NAME NS
  ip netns exec "$2" "$BIN" run --config "$TMP/$1.toml" >>"$TMP/$1.log" 2>&1 &
  echo $! >"$TMP/$1.fg.pid"
  disown $!
  for _ in $(seq 100); do
    if ip -n "$2" -br addr show dev eth1 2>/dev/null | grep -q 10.0.0; then return 0; fi
    sleep 0.1
  done
  cat "$TMP/$1.log"; exit 1
}
start_keepalived() { # start_keepalived NAME NS
  ip netns exec "$2" keepalived --dont-fork --log-console --vrrp --use-file "$TMP/$1.keepalived.conf" \
    --pid "$TMP/$1.keepalived.pid" --vrrp_pid "$TMP/$1.vrrp.pid" >>"$TMP/$1.keepalived.log" 2>&1 &
  disown $!
}
master() { # which appliance holds the VIP
  for app in "$A" "$B"; do
    if ip -n "$app" -br addr show dev eth0 2>/dev/null | grep -q 192.168.0.2/; then echo "$app"; return; fi
  done
  echo none
}

step "starting flowgate and keepalived on $A (priority 150) and $B (priority 100)"
start_flowgate a "$A"
start_flowgate b "$B"
start_keepalived a "$A"
start_keepalived b "$B"
ip netns exec "$SRV" python3 "$ROOT/scripts/lab/echo-server.py" &
disown $!
for _ in $(seq 100); do [ "$(master)" = "$A" ] && break; sleep 0.1; done
echo "master: $(master)"
sleep 1

step "a client loop: one connection to 192.168.0.2:8080, a line every 100 ms"
cat >"$TMP/loop.py" <<'PY'
import socket, time
t0 = time.monotonic()
def say(msg):
    print('  %6.2fs  %s' % (time.monotonic() - t0, msg), flush=True)
def connect():
    while True:
        try:
            s = socket.create_connection(('192.168.0.2', 8080), timeout=0.5)
            say('connected (client port %d)' % s.getsockname()[1])
            return s
        except OSError:
            time.sleep(0.1)
s, last, n = connect(), time.monotonic(), 0
while True:
    try:
        s.sendall(b'%d\n' % n); s.settimeout(3); server = s.recv(64).decode().split()[0]
        now = time.monotonic()
        if now - last > 0.4:
            say('line %d answered by %s after a gap of %.2fs' % (n, server, now - last))
        elif n % 20 == 0:
            say('line %d answered by %s' % (n, server))
        last, n = now, n + 1
        time.sleep(0.1)
    except OSError as e:
        say('no answer (%s): reconnecting' % e)
        s = connect()
PY
ip netns exec "$CLI" python3 "$TMP/loop.py" &
disown $!
sleep 3

step "SIGKILL to $A's flowgate"
kill -KILL "$(cat "$TMP/a.fg.pid")"
for _ in $(seq 50); do [ "$(master)" = "$B" ] && break; sleep 0.1; done
echo "master: $(master)"
sleep 4

step "$A's flowgate starts again: keepalived gives it the VIP back (preempt)"
start_flowgate a "$A"
for _ in $(seq 100); do [ "$(master)" = "$A" ] && break; sleep 0.1; done
echo "master: $(master)"
sleep 4

step "keepalived's view (state changes)"
for app in a b; do
  grep -h "Entering" "$TMP/$app.keepalived.log" | sed "s/^/  $app: /"
done
echo
if [ "$SYNC" = 1 ]; then
  echo "With connection sync the box taking over knew the connection: one client port from"
  echo "start to end, a gap of about a second at the crash. Try --no-sync (docs/ha.md)."
else
  echo "Without connection sync the box taking over knows none of the connections: the"
  echo "client's connection broke at each switch and it had to reconnect (docs/ha.md)."
fi
