//! flowgate's log: one line per message, `TIMESTAMP LEVEL COMPONENT: message`, on stderr
//! (journald keeps it under systemd).
//!
//! ```text
//! 2026-12-04T17:45:00.123Z INFO  flowgate: running: 2 ports, 1 workers on lcores [1], generation 1
//! 2026-12-04T17:45:03.001Z WARN  health: director maildirect/mail2: down (connect timeout)
//! 2026-12-04T17:45:09.420Z ERROR dpdk: EAL: Cannot create lock on '/var/run/dpdk/...'
//! ```
//!
//! The timestamp is UTC with milliseconds (RFC 3339). The component is the `log` target
//! (`log::info!(target: "control", ...)`), or the last segment of the module path for a
//! message logged without one. DPDK's own messages arrive through
//! [`flowgate_dataplane::dpdk::route_log`] and are logged as component `dpdk`.
//!
//! Levels come from `[log] level` in the config and `--log-level` on the command line (which
//! wins); see `docs/appliance.md`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use flowgate_config::appliance::LogLevel;

/// The logger behind the `log` facade.
#[derive(Debug)]
struct LineLogger;

static LOGGER: LineLogger = LineLogger;

/// The `log` crate's filter for one of our levels.
pub fn filter(level: LogLevel) -> log::LevelFilter {
    match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    }
}

/// Installs the line logger (once; later calls only change the level).
pub fn init(level: LogLevel) {
    // a second `set_logger` fails harmlessly: the logger is already ours
    let _ = log::set_logger(&LOGGER);
    set_level(level);
}

/// Changes the level of flowgate's own messages.
pub fn set_level(level: LogLevel) {
    log::set_max_level(filter(level));
}

impl log::Log for LineLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(
            SystemTime::now(),
            record.level(),
            component(record.target()),
            &record.args().to_string(),
        );
        // one write per line, so lines of different threads never interleave
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// A target as a component: explicit targets as given, module paths by their last segment.
fn component(target: &str) -> &str {
    target.rsplit("::").next().unwrap_or(target)
}

/// One log line (with its newline). A multi-line message keeps one line per physical line,
/// each with the prefix, so every line of the log parses the same way.
pub fn format_line(at: SystemTime, level: log::Level, component: &str, msg: &str) -> String {
    let prefix = format!("{} {:<5} {component}: ", timestamp(at), level.as_str());
    let mut out = String::with_capacity(prefix.len() + msg.len() + 1);
    for l in msg.trim_end_matches('\n').split('\n') {
        out.push_str(&prefix);
        out.push_str(l.trim_end_matches('\r'));
        out.push('\n');
    }
    out
}

/// RFC 3339 UTC with milliseconds: `2026-12-04T17:45:00.123Z`.
pub fn timestamp(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Routes DPDK's log into ours, as component `dpdk`. Call before the EAL starts, so its
/// start-up messages are routed too; [`eal_log_args`] sets what DPDK emits.
pub fn route_dpdk() -> Result<(), flowgate_dataplane::dpdk::DpdkError> {
    use flowgate_dataplane::dpdk::LogLevel as Dpdk;
    flowgate_dataplane::dpdk::route_log(|level, msg| {
        let level = match level {
            Dpdk::Error => log::Level::Error,
            Dpdk::Warning => log::Level::Warn,
            Dpdk::Info => log::Level::Info,
            Dpdk::Debug => log::Level::Debug,
        };
        for line in msg.lines().filter(|l| !l.trim().is_empty()) {
            log::log!(target: "dpdk", level, "{}", line.trim_end());
        }
    })
}

/// DPDK log types quieter than the rest below `[log] dpdk = "info"`: the TAP driver reports
/// as errors that the kernel lacks the `multiq` qdisc and that rte_flow on the TAP is
/// therefore off (flowgate uses neither), and that it has no secondary process to tell about
/// queue starts (flowgate runs none); telemetry warns that it has no legacy clients.
pub const QUIET_DPDK_TYPES: &[&str] = &["pmd.net.tap", "lib.telemetry"];

/// The EAL arguments that set DPDK's log level from `[log] dpdk`: the global level, and
/// [`QUIET_DPDK_TYPES`] at `critical` unless DPDK's info messages are asked for. None when the
/// config's own EAL arguments already set `--log-level` (the operator's choice wins).
pub fn eal_log_args(level: LogLevel, given: &[String]) -> Vec<String> {
    if given
        .iter()
        .any(|a| a == "--log-level" || a.starts_with("--log-level="))
    {
        return Vec::new();
    }
    let global = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warning",
        LogLevel::Info => "info",
        LogLevel::Debug | LogLevel::Trace => "debug",
    };
    let mut args = vec![format!("--log-level={global}")];
    if level < LogLevel::Info {
        args.extend(
            QUIET_DPDK_TYPES
                .iter()
                .map(|t| format!("--log-level={t}:critical")),
        );
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day) 12:34:56.789
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789);
        assert_eq!(timestamp(t), "2000-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_342_400); // 2026-12-04
        assert_eq!(timestamp(t), "2026-12-04T00:00:00.000Z");
    }

    #[test]
    fn one_prefix_per_line() {
        let s = format_line(UNIX_EPOCH, log::Level::Warn, "health", "a\nb\n");
        assert_eq!(
            s,
            "1970-01-01T00:00:00.000Z WARN  health: a\n1970-01-01T00:00:00.000Z WARN  health: b\n"
        );
        assert_eq!(component("flowgate_control::control"), "control");
        assert_eq!(component("dpdk"), "dpdk");
    }

    #[test]
    fn dpdk_levels_from_the_config() {
        assert_eq!(
            eal_log_args(LogLevel::Warn, &[]),
            [
                "--log-level=warning",
                "--log-level=pmd.net.tap:critical",
                "--log-level=lib.telemetry:critical"
            ]
        );
        assert_eq!(eal_log_args(LogLevel::Debug, &[]), ["--log-level=debug"]);
        assert!(eal_log_args(LogLevel::Warn, &["--log-level=8".to_string()]).is_empty());
    }
}
