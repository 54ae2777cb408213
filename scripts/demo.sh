#!/usr/bin/env bash
# The demo lab: flowgate on a machine without NICs.
#
#   client ns (cli0 192.168.0.100, 10.9.9.9)  <-veth->  fg-eth0 ]  appliance ns: flowgate on
#   server ns (srv0 192.168.161.1,            <-veth->  fg-eth1 ]  net_af_packet vdevs, TAPs
#              mail1 10.0.0.11, mail2 10.0.0.12)                   eth0/eth1 for its kernel
#
# flowgate runs examples/flowgate.toml with examples/seed.flows inside the appliance
# namespace; the kernel there owns 192.168.0.1/.2 and 192.168.161.10 on the TAPs. The demo
# shows permitted traffic getting through (ping answered by the kernel through the TAP, a TCP
# service reachable), denied traffic dropped, the `mail` flow's NAT director (persistence,
# draining a server from flowctl), a rule push and rollback, and the counters. Everything it
# creates is removed on exit, also when interrupted. Run as root.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (network namespaces, TAPs)" >&2
  exit 1
fi

P=${FLOWGATE_DEMO_PREFIX:-fgdemo}
APP=$P-app CLI=$P-cli SRV=$P-srv
TMP=$(mktemp -d /tmp/flowgate-demo.XXXXXX)
FG_PID=""

remove_lab() {
  for ns in "$APP" "$CLI" "$SRV"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  return 0
}
cleanup() {
  set +e
  if [ -n "$FG_PID" ] && kill -0 "$FG_PID" 2>/dev/null; then
    kill -TERM "$FG_PID"; sleep 1; kill -KILL "$FG_PID" 2>/dev/null
  fi
  remove_lab
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
pass=0 fail=0
check() { # check NAME EXPECT(ok|fail) CMD...
  local name=$1 expect=$2; shift 2
  if "$@" >"$TMP/out" 2>&1; then got=ok; else got=fail; fi
  if [ "$got" = "$expect" ]; then
    printf '  PASS  %s\n' "$name"; pass=$((pass + 1))
  else
    printf '  FAIL  %s (expected %s, got %s)\n' "$name" "$expect" "$got"; sed 's/^/        /' "$TMP/out"
    fail=$((fail + 1))
  fi
}

step "building flowgate (release)"
cargo build --release -q -p flowgate-control
BIN=$ROOT/target/release/flowgate
FLOWCTL=$ROOT/target/release/flowctl
# run from a copy: `flowctl apply` persists the applied flows file next to the config
cp examples/flowgate.toml examples/seed.flows "$TMP/"
sed -i "s#/run/flowgate/control.sock#$TMP/control.sock#" "$TMP/flowgate.toml"
# the seed denies all the rest, the appliance's own health checks' answers included: let the
# mail farm answer the appliance (as an ALOHA admin would, before `alltherest`)
awk '/^flow alltherest deny/ { print "# The mail farm answers the appliance'"'"'s health checks.\nflow farm permit\n    match proto tcp src 10.0.0.0/24 dst 192.168.161.10\n" } { print }' \
  examples/seed.flows >"$TMP/seed.flows"
"$BIN" check "$TMP/seed.flows" --config "$TMP/flowgate.toml"

step "creating the lab: namespaces $APP, $CLI, $SRV and two veth pairs"
remove_lab
for ns in "$APP" "$CLI" "$SRV"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add fg-eth0 netns "$APP" type veth peer name cli0 netns "$CLI"
ip link add fg-eth1 netns "$APP" type veth peer name srv0 netns "$SRV"
for ifc in fg-eth0 fg-eth1; do
  # these veth ends are the appliance's "NICs": DPDK drives them through af_packet; the
  # appliance kernel must not answer on them itself (it owns the TAPs instead)
  ip netns exec "$APP" sysctl -qw "net.ipv6.conf.$ifc.disable_ipv6=1"
  ip -n "$APP" link set "$ifc" up
done
ip netns exec "$APP" nft -f - <<NFT
table netdev flowgate_demo {
  chain eth0 { type filter hook ingress device fg-eth0 priority 0; policy drop; }
  chain eth1 { type filter hook ingress device fg-eth1 priority 0; policy drop; }
}
NFT
ip -n "$CLI" addr add 192.168.0.100/24 dev cli0
ip -n "$CLI" addr add 10.9.9.9/32 dev cli0
ip -n "$CLI" link set cli0 up
# veth leaves TCP/UDP checksums to "hardware" (CHECKSUM_PARTIAL): frames captured by
# af_packet would carry unfinished checksums, which the appliance kernel then refuses.
# Real NICs finish them; here the hosts compute them in software.
ip netns exec "$CLI" ethtool -K cli0 tx off >/dev/null
ip netns exec "$SRV" ethtool -K srv0 tx off >/dev/null
ip -n "$SRV" addr add 192.168.161.1/24 dev srv0
ip -n "$SRV" link set srv0 up
# the mail farm of the maildirect director: two servers' addresses in the server namespace,
# reached through the appliance's main route 10.0.0.0/24 via 192.168.161.1; NAT replies to
# clients go back through the appliance
ip -n "$SRV" addr add 10.0.0.11/32 dev lo
ip -n "$SRV" addr add 10.0.0.12/32 dev lo
ip -n "$SRV" route add 192.168.0.0/24 via 192.168.161.10

step "starting flowgate in $APP (examples/flowgate.toml, examples/seed.flows)"
ip netns exec "$APP" "$BIN" run --config "$TMP/flowgate.toml" >"$TMP/flowgate.log" 2>&1 &
FG_PID=$!
for _ in $(seq 100); do
  if ip -n "$APP" -br addr show dev eth0 2>/dev/null | grep -q 192.168.0.1; then break; fi
  if ! kill -0 "$FG_PID" 2>/dev/null; then cat "$TMP/flowgate.log"; exit 1; fi
  sleep 0.1
done
ip -n "$APP" -br addr show dev eth0 || { cat "$TMP/flowgate.log"; exit 1; }
ip -n "$APP" -br addr show dev eth1

# services of the appliance's kernel: a TCP echo on 192.168.0.1 ports 22 and 23
cat >"$TMP/echo.py" <<'PY'
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("192.168.0.1", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.settimeout(3)
        try:
            c.sendall(c.recv(1024))
        except OSError:
            pass
        c.close()
for p in (22, 23):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
threading.Event().wait()
PY
ip netns exec "$APP" python3 "$TMP/echo.py" &
disown $!
# the mail servers: each greets with its name on ports 25, 110 and 143
cat >"$TMP/mail.py" <<'PY'
import socket, threading
def serve(addr, name, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(16)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(name + b"\n")
        except OSError:
            pass
        c.close()
for addr, name in (("10.0.0.11", b"mail1"), ("10.0.0.12", b"mail2")):
    for port in (25, 110, 143):
        threading.Thread(target=serve, args=(addr, name, port), daemon=True).start()
threading.Event().wait()
PY
ip netns exec "$SRV" python3 "$TMP/mail.py" &
disown $!
sleep 0.5

tcp() { # tcp SRC PORT: send a line to 192.168.0.1:PORT from SRC and expect it echoed
  ip netns exec "$CLI" python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(2)
s.bind((sys.argv[1], 0)); s.connect(("192.168.0.1", int(sys.argv[2])))
s.sendall(b"hello flowgate\n")
assert s.recv(64) == b"hello flowgate\n"
PY
}

step "traffic"
check "ping 192.168.0.1 from 192.168.0.100: permitted (flow ping, rule 3), kernel answers" ok \
  ip netns exec "$CLI" ping -c 3 -i 0.2 -W 2 192.168.0.1
check "tcp 192.168.0.100 -> 192.168.0.1:22: permitted (flow ssh, rule 2)" ok tcp 192.168.0.100 22
check "tcp 10.9.9.9 -> 192.168.0.1:22: denied (ssh ignores foreign sources, alltherest denies)" fail \
  tcp 10.9.9.9 22
check "tcp 192.168.0.100 -> 192.168.0.1:23: denied (flow alltherest)" fail tcp 192.168.0.100 23
check "ping 192.168.161.10 from 192.168.161.1: denied (flow ping covers only 192.168.0.1; alltherest)" fail \
  ip netns exec "$SRV" ping -c 2 -i 0.2 -W 1 192.168.161.10

mail() { # mail PORT...: the greeting of one connection to 192.168.0.2:PORT per port, a line each
  ip netns exec "$CLI" python3 - "$@" <<'PY'
import socket, sys
for port in sys.argv[1:]:
    s = socket.create_connection(("192.168.0.2", int(port)), timeout=3)
    print(s.makefile().readline().strip())
    s.close()
PY
}
same_server() { # same_server EXPECT(any|mail1|mail2) PORT...: every connection reached one server
  mail "${@:2}" >"$TMP/mail.out" || return 1
  tr '\n' ' ' <"$TMP/mail.out"; echo
  local got; got=$(sort -u "$TMP/mail.out")
  [ "$got" = mail1 ] || [ "$got" = mail2 ] || return 1
  [ "$1" = any ] || [ "$got" = "$1" ] || return 1
  echo "$got" >"$TMP/mail.server"
}

step "director: the mail flow to maildirect (NAT, wrr, persistence per client address)"
check "9 connections to 192.168.0.2:25/110/143 all reach one mail server (persistence)" ok \
  same_server any 25 110 143 25 110 143 25 110 143
sed 's/^/        /' "$TMP/out"
FIRST=$(cat "$TMP/mail.server" 2>/dev/null || echo mail1)
OTHER=$([ "$FIRST" = mail1 ] && echo mail2 || echo mail1)
"$FLOWCTL" --socket "$TMP/control.sock" director disable maildirect "$FIRST"
check "after flowctl director disable $FIRST (drain): new connections go to $OTHER" ok \
  same_server "$OTHER" 25 110 143
"$FLOWCTL" --socket "$TMP/control.sock" director enable maildirect "$FIRST"
sleep 0.3  # the workers publish their director counters every 100 ms
"$FLOWCTL" --socket "$TMP/control.sock" director list

step "control socket: a rule push under traffic, then a rollback"
"$FLOWCTL" --socket "$TMP/control.sock" status
awk '/^flow alltherest deny/ { print "flow telnet permit\n    match proto tcp dst 192.168.0.1 dstport 23\n" } { print }' \
  "$TMP/seed.flows" >"$TMP/with-telnet.flows"
"$FLOWCTL" --socket "$TMP/control.sock" diff "$TMP/with-telnet.flows"
"$FLOWCTL" --socket "$TMP/control.sock" apply "$TMP/with-telnet.flows"
check "after apply: tcp 192.168.0.100 -> 192.168.0.1:23 permitted (flow telnet)" ok tcp 192.168.0.100 23
printf 'flow broken permit\n    match proto tcp dstport 23 dstport 24\n' >"$TMP/broken.flows"
check "a broken push is refused whole, with its errors" fail \
  "$FLOWCTL" --socket "$TMP/control.sock" apply "$TMP/broken.flows"
sed 's/^/        /' "$TMP/out"
check "after the refused push: tcp :23 still permitted" ok tcp 192.168.0.100 23
"$FLOWCTL" --socket "$TMP/control.sock" rollback
check "after rollback: tcp :23 denied again (flow alltherest)" fail tcp 192.168.0.100 23
"$FLOWCTL" --socket "$TMP/control.sock" trace iface=eth0 proto=tcp src=10.9.9.9 dst=192.168.0.1 sport=4000 dport=22

step "counters (SIGUSR1 while running)"
kill -USR1 "$FG_PID"; sleep 0.3
step "stopping flowgate (SIGTERM): final counters"
kill -TERM "$FG_PID"; wait "$FG_PID" || true; FG_PID=""
cat "$TMP/flowgate.log"
if ip -n "$APP" link show eth0 >/dev/null 2>&1; then
  echo "  FAIL  TAP eth0 still present after shutdown"; fail=$((fail + 1))
else
  echo "  PASS  TAPs removed on shutdown"; pass=$((pass + 1))
fi

step "result: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
