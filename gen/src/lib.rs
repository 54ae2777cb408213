//! flowgate-gen: the traffic generator of flowgate's throughput lab (`scripts/pktgen.sh`).
//!
//! A DPDK program apart from the appliance: it sends a traffic profile at a set rate on one
//! port, stamps every frame with the TSC, receives the frames back on another port, and
//! reports offered and received frames, loss and latency percentiles; it searches for the
//! NDR and PDR (RFC 2544 throughput, FD.io CSIT's loss thresholds) per frame size. It also
//! turns ClassBench rules into nftables rulesets for the kernel comparison.
//!
//! - [`hist`]: the HDR-style latency histogram.
//! - [`sizes`]: frame sizes and the IMIX cycle.
//! - [`pace`]: rate pacing arithmetic against the TSC.
//! - [`search`]: the NDR/PDR binary search.
//! - [`stamp`]: where frames carry their timestamp.
//! - [`profile`]: synthetic, ClassBench-trace and pcap profiles as stamped templates.
//! - [`engine`]: the DPDK send/receive loop (the only part that needs the EAL).
//! - [`report`]: JSON records and the DUT counters' differences.
//! - [`nft`]: ClassBench rules as nftables rulesets (linear chain, sets and verdict maps).

pub mod engine;
pub mod hist;
pub mod nft;
pub mod pace;
pub mod profile;
pub mod report;
pub mod search;
pub mod sizes;
pub mod stamp;
