//! Build script for flowgate-dpdk-sys.
//!
//! 1. `pkg-config libdpdk` (Debian: `libdpdk-dev`, DPDK 22.11) gives the include paths and
//!    emits the `cargo:rustc-link-lib` lines for the shared `librte_*.so` libraries.
//! 2. `bindgen` (needs `libclang-dev`) turns `csrc/shim.h` into `$OUT_DIR/bindings.rs`, with
//!    allowlists so only what the dataplane uses is generated.
//! 3. `cc` compiles `csrc/shim.c`, out-of-line copies of DPDK's `static inline` fast-path
//!    functions. The pkg-config cflags carry `-march=corei7` on Debian; we never pass any
//!    `-march`/`-mtune` to the shim (only include paths and defines are taken over).

use std::env;
use std::path::PathBuf;

/// Functions bound directly (real exported symbols in the DPDK shared libraries).
const FUNCTIONS: &[&str] = &[
    "fg_.*",
    "rte_eal_init",
    "rte_eal_cleanup",
    "rte_eal_process_type",
    "rte_eal_remote_launch",
    "rte_eal_wait_lcore",
    "rte_eal_mp_wait_lcore",
    "rte_lcore_count",
    "rte_lcore_is_enabled",
    "rte_lcore_to_socket_id",
    "rte_get_main_lcore",
    "rte_get_next_lcore",
    "rte_socket_id",
    "rte_thread_register",
    "rte_thread_unregister",
    "rte_get_tsc_hz",
    "rte_strerror",
    "rte_pktmbuf_pool_create",
    "rte_mempool_free",
    "rte_mempool_lookup",
    "rte_mempool_avail_count",
    "rte_mempool_in_use_count",
    "rte_eth_dev_configure",
    "rte_eth_dev_info_get",
    "rte_eth_dev_count_avail",
    "rte_eth_dev_is_valid_port",
    "rte_eth_dev_socket_id",
    "rte_eth_dev_get_port_by_name",
    "rte_eth_dev_get_name_by_port",
    "rte_eth_dev_adjust_nb_rx_tx_desc",
    "rte_eth_rx_queue_setup",
    "rte_eth_tx_queue_setup",
    "rte_eth_dev_start",
    "rte_eth_dev_stop",
    "rte_eth_dev_close",
    "rte_eth_promiscuous_enable",
    "rte_eth_promiscuous_disable",
    "rte_eth_promiscuous_get",
    "rte_eth_macaddr_get",
    "rte_eth_link_get_nowait",
    "rte_eth_stats_get",
    "rte_eth_stats_reset",
    "rte_eth_dev_set_mtu",
    "rte_eth_dev_get_mtu",
    "rte_eth_find_next_owned_by",
    "rte_dev_probe",
    "rte_dev_remove",
    "rte_vdev_init",
    "rte_vdev_uninit",
];

/// Types generated with their real layout (everything else reachable from them is pulled in
/// by bindgen automatically; big internal structs are made opaque below).
const TYPES: &[&str] = &[
    "rte_eth_conf",
    "rte_eth_dev_info",
    "rte_eth_rxconf",
    "rte_eth_txconf",
    "rte_eth_stats",
    "rte_eth_link",
    "rte_ether_addr",
    "rte_proc_type_t",
    "rte_eth_rx_mq_mode",
    "rte_eth_tx_mq_mode",
    "fg_rss_hf",
    "fg_consts",
    "fg_log_sink_t",
    "rte_mbuf",
];

/// Types only ever handled through pointers: opaque blobs of the right size and alignment.
const OPAQUE: &[&str] = &[
    "rte_mempool",
    "rte_device",
    "rte_eth_dev_portconf",
    "rte_ring",
];

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let dpdk = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!("pkg-config could not find libdpdk >= 22.11 (install libdpdk-dev): {e}")
        });

    // Compile the shim: include paths and defines only, never -march/-mtune. DPDK's x86
    // headers (rte_memcpy.h) need SSE4.2, DPDK's own minimum ISA, so we ask for exactly that
    // ISA extension instead of Debian's `-march=corei7` (which also implies a tuning) or a
    // host-specific `-march=native`.
    let mut shim = cc::Build::new();
    shim.file("csrc/shim.c")
        .include("csrc")
        .opt_level(3)
        .warnings(true)
        .flag_if_supported("-Wno-deprecated-declarations");
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        shim.flag("-msse4.2");
    }
    for path in &dpdk.include_paths {
        shim.include(path);
    }
    for (key, value) in &dpdk.defines {
        shim.define(key, value.as_deref());
    }
    shim.define("ALLOW_EXPERIMENTAL_API", None);
    shim.compile("flowgate_dpdk_shim");

    // Generate the bindings.
    let mut builder = bindgen::Builder::default()
        .header("csrc/shim.h")
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .derive_debug(true)
        .impl_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        .allowlist_var("RTE_ETH_.*|RTE_ETHDEV_.*|RTE_MAX_ETHPORTS|RTE_MAX_LCORE|LCORE_ID_ANY|SOCKET_ID_ANY|FG_.*|RTE_ETHER_.*");
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in TYPES {
        builder = builder.allowlist_type(t);
    }
    for t in OPAQUE {
        builder = builder.opaque_type(t);
    }
    for path in &dpdk.include_paths {
        builder = builder.clang_arg(format!("-I{}", path.display()));
    }
    for (key, value) in &dpdk.defines {
        builder = builder.clang_arg(match value {
            Some(v) => format!("-D{key}={v}"),
            None => format!("-D{key}"),
        });
    }
    let bindings = builder.generate().unwrap_or_else(|e| {
        panic!("bindgen failed on csrc/shim.h (is libclang-dev installed?): {e}")
    });
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| panic!("OUT_DIR not set")));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| panic!("cannot write bindings.rs: {e}"));

    // The shim references DPDK symbols, so it must precede the DPDK libs on the link line:
    // re-emit the libraries after the shim's own link-lib line (cc emitted it above).
    for lib in &dpdk.libs {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}
