#!/usr/bin/env bash
# Install everything flowgate needs on a Debian (bookworm) machine: system packages with
# apt-get, the Rust tools with cargo. Idempotent and non-interactive; run as root (or via sudo).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(
  build-essential pkg-config git curl ca-certificates
  # DPDK 22.11: headers + pkg-config (build), PMDs and dpdk-testpmd / dpdk-test-acl (run, bench)
  libdpdk-dev dpdk dpdk-dev librte-net-af-packet23 librte-net-pcap23 librte-net-tap23 librte-net-ring23 librte-net-null23 librte-net-af-xdp23 librte-mempool-ring23
  # the throughput lab (scripts/pktgen.sh): memif between generator and DUT, gnuplot for the plots
  librte-net-memif23 gnuplot-nox
  # bindgen needs libclang
  libclang-dev clang
  # the demo lab and integration tests: namespaces, veth, captures, nftables reference
  iproute2 iputils-ping netcat-openbsd tcpdump nftables ethtool procps psmisc
  libpcap-dev python3
  # the Debian package (scripts/package.sh) and its test: dpkg-buildpackage + debhelper, man
  debhelper dpkg-dev man-db
  # the monitoring lab test runs Debian's Prometheus (and promtool) itself
  prometheus
  # the HA labs (docs/ha.md): BIRD 2 speaks BGP for ECMP, keepalived runs VRRP pairs
  bird2 keepalived
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # tools only: no package's service (prometheus) is started on install (policy-rc.d 101)
  policy=/usr/sbin/policy-rc.d
  made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=1
  fi
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$made_policy" ]; then $SUDO rm -f "$policy"; fi
else
  echo "setup: system packages present"
fi

# Rust toolchain (rustup), if the machine has none.
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# cargo-nextest: EAL tests need one process per test.
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# cargo-fuzz: the libFuzzer targets in fuzz/ (scripts/fuzz.sh; stable toolchain with
# RUSTC_BOOTSTRAP=1, see docs/fuzzing.md).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

echo "setup: done ($(cargo --version), $(cargo nextest --version | head -1))"
