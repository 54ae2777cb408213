# Sourced by the scripts that start DPDK programs of their own (testpmd, dpdk-test-acl,
# dpdk-test, the rte_lpm reference): an EAL file prefix of this run, so that the runtime
# directory the EAL makes (even with --no-shconf, and never removes) is this run's and not
# DPDK's shared default `rte`, and is removed at exit. Add "--file-prefix=$DPDK_PREFIX" to the
# EAL arguments and call dpdk_prefix_cleanup from the script's EXIT trap.
DPDK_PREFIX="fg-$(basename "$0" .sh)-$$"

dpdk_prefix_cleanup() {
    local base=/var/run/dpdk
    [ "$(id -u)" = 0 ] || base="${XDG_RUNTIME_DIR:-/tmp}/dpdk"
    rm -rf "${base:?}/${DPDK_PREFIX:?}"
}
