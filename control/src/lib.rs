//! flowgate-control: the control side of the `flowgate run` daemon, and `flowctl`'s protocol.
//!
//! - [`state`]: what the workers read ([`Shared::rules`], an `ArcSwap<RuleSet>`, one load per
//!   burst) and the generations the control thread remembers.
//! - [`control`]: the control, push and report threads, owners of the publication: apply,
//!   rollback, stats, trace.
//! - [`server`]: the Unix control socket (newline-delimited JSON), one thread per client.
//! - [`protocol`]: the request action enum and reply types.
//! - [`persist`]: atomic, durable writes of the applied flows file.
//! - [`metrics`]: the Prometheus exporter and what is published through it.
//! - [`trace`]: why a packet gets its verdict.
//! - [`cli`]: the command lines of `flowgate` and `flowctl`, their man pages and completions.
//! - [`logging`]: the one-line log format, DPDK's log routed through it.
//! - [`notify`]: systemd readiness notification (`sd_notify` protocol).
//! - [`sync`]: the connection sync between appliances (the sync thread, the wire format).
#![deny(unsafe_code)]

pub mod cli;
pub mod control;
pub mod editlog;
pub mod history;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod persist;
pub mod protocol;
pub mod server;
pub mod state;
pub mod sync;
pub mod trace;

pub use control::{initial_rules, start, ControlHandle, ControlOptions, Controller, StartError};
pub use state::{DirectorControl, NicStatsFn, Shared};
