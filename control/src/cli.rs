//! The command lines of `flowgate` and `flowctl` (clap definitions), kept in the library so
//! that one place renders their man pages and shell completions from them ([`generate`],
//! run by `flowgate generate` when the Debian package is built).

use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// The levels `--log-level` takes (most severe first).
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// `--log-level`'s parser: one of [`LOG_LEVELS`].
fn log_level() -> impl clap::builder::TypedValueParser<Value = flowgate_config::appliance::LogLevel>
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(LOG_LEVELS)
        .try_map(|s| s.parse::<flowgate_config::appliance::LogLevel>())
}

/// `flowgate`: the daemon and its offline tools.
pub mod flowgate {
    use std::path::PathBuf;

    use clap::{Parser, Subcommand};
    use flowgate_config::appliance::LogLevel;

    #[derive(Debug, Parser)]
    #[command(
        name = "flowgate",
        version,
        about = "flowgate: a DPDK dataplane for flows and outflows",
        long_about = "flowgate: a DPDK userspace dataplane that classifies every packet against \
                      compiled flows and outflows (permit to the kernel through TAPs, deny, \
                      route by table, or load-balance through an L4 director). `flowgate run` \
                      is the daemon; `check` and `classify` work offline."
    )]
    pub struct Cli {
        /// Log level of flowgate's own messages (overrides `[log] level` of the config).
        #[arg(long, global = true, value_parser = super::log_level())]
        pub log_level: Option<LogLevel>,
        #[command(subcommand)]
        pub command: Command,
    }

    #[derive(Debug, Subcommand)]
    pub enum Command {
        /// Run the dataplane: ports, TAPs, pinned poll-mode workers, control socket, metrics.
        ///
        /// Signals: SIGHUP re-reads the flows file (as `flowctl apply`: refused whole if
        /// wrong), SIGUSR1 prints the counters, SIGINT/SIGTERM stop cleanly. Under systemd
        /// (`$NOTIFY_SOCKET`) it notifies READY=1 once ports, TAPs and workers are up.
        Run {
            /// The appliance config (TOML).
            #[arg(long)]
            config: PathBuf,
            /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
            #[arg(long)]
            duration: Option<f64>,
            /// Write the final counters to this file as JSON.
            #[arg(long)]
            stats_json: Option<PathBuf>,
        },
        /// Check a flows file: exit 0 with its warnings, or exit 1 with every error.
        ///
        /// With `--config` and no FILE, checks the config and the flows file it names (what
        /// `flowgate run` would load; systemd's ExecStartPre).
        Check {
            /// The flows file (default: the one the config names).
            #[arg(required_unless_present = "config")]
            file: Option<PathBuf>,
            /// Check references (iface, director, table) against this appliance config.
            #[arg(long)]
            config: Option<PathBuf>,
        },
        /// Classify packet lines (from PACKETS or stdin) with the compiled flows: one verdict
        /// line per packet line, `<verdict> <flow> <rule>`.
        Classify {
            /// The flows file.
            #[arg(long)]
            flows: PathBuf,
            /// An appliance config: references are checked, its default policies apply.
            #[arg(long)]
            config: Option<PathBuf>,
            /// Classify with the outflows (`iface` is then the output port).
            #[arg(long)]
            outflows: bool,
            /// Output form.
            #[arg(long, value_enum, default_value = "text")]
            format: Format,
            /// Packet lines; stdin when absent.
            packets: Option<PathBuf>,
        },
        /// Benchmarks.
        Bench {
            #[command(subcommand)]
            what: BenchCommand,
        },
        /// Write the man pages and shell completions of flowgate and flowctl into DIR
        /// (`man1/`, `bash/`, `zsh/`, `fish/`); used to build the Debian package.
        #[command(hide = true)]
        Generate {
            /// The output directory.
            #[arg(long)]
            out: PathBuf,
        },
    }

    #[derive(Debug, Subcommand)]
    pub enum BenchCommand {
        /// The classifier on a ClassBench rule set and trace (every trace line is verified).
        Classbench {
            /// ClassBench rules file.
            #[arg(long)]
            rules: PathBuf,
            /// ClassBench trace file (last column: expected 1-based first match).
            #[arg(long)]
            trace: PathBuf,
            /// Passes over the trace for each timing.
            #[arg(long, default_value_t = 100)]
            iters: u32,
        },
    }

    /// Output form of `classify`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
    pub enum Format {
        /// `<verdict> <flow> <rule>` (the stable contract of flows.md).
        Text,
        /// One JSON object per packet line.
        Json,
    }
}

/// `flowctl`: the control client.
pub mod flowctl {
    use std::path::PathBuf;

    use clap::{Parser, Subcommand};
    use flowgate_config::appliance::DEFAULT_CONTROL_SOCKET;

    #[derive(Debug, Parser)]
    #[command(
        name = "flowctl",
        version,
        about = "Control a running flowgate daemon",
        after_help = "Exit status: 0 ok; 1 refused (the daemon, or an offline check, said no); \
                      2 usage error; 3 unreachable (no daemon answers on the socket).\n\
                      `--json` output is versioned (`json_version`), see docs/control.md."
    )]
    pub struct Cli {
        /// The daemon's control socket.
        #[arg(long, global = true, default_value = DEFAULT_CONTROL_SOCKET)]
        pub socket: PathBuf,
        /// Print the reply as JSON (one object, with `json_version`; see docs/control.md).
        #[arg(long, global = true)]
        pub json: bool,
        #[command(subcommand)]
        pub cmd: Cmd,
    }

    #[derive(Debug, Subcommand)]
    pub enum Cmd {
        /// Generation, uptime, workers, ports, flow counts.
        Status,
        /// Check a flows file (against the daemon's config, or offline).
        Check {
            file: PathBuf,
            /// Check without a daemon; with `--config`, references are checked against it.
            #[arg(long)]
            offline: bool,
            #[arg(long)]
            config: Option<PathBuf>,
        },
        /// Flows added, removed and changed between the applied set and FILE.
        Diff { file: PathBuf },
        /// Compile, publish and persist FILE.
        Apply { file: PathBuf },
        /// Go back to the previously applied set.
        Rollback,
        /// Show the applied set.
        Show {
            #[command(subcommand)]
            what: ShowWhat,
        },
        /// Counters per flow, rule, port and server.
        Stats,
        /// Live rates per rule, per port and per director server, refreshed in the terminal.
        Watch {
            /// Seconds between refreshes.
            #[arg(long, default_value_t = 1.0)]
            interval: f64,
            /// Stop after this many refreshes (default: until interrupted).
            #[arg(long)]
            count: Option<u32>,
            /// Show every row, also those with no traffic.
            #[arg(long)]
            all: bool,
        },
        /// Which flow and rule decide a packet (`iface=eth0 proto=tcp src=... dst=... sport=.. dport=..`).
        Trace {
            /// Trace the outflows.
            #[arg(long)]
            outflows: bool,
            #[arg(required = true, num_args = 1..)]
            packet: Vec<String>,
        },
        /// L4 director servers.
        Director {
            #[command(subcommand)]
            cmd: DirectorCmd,
        },
    }

    #[derive(Debug, Subcommand)]
    pub enum ShowWhat {
        /// The applied flows, printed canonically.
        Flows,
    }

    #[derive(Debug, Subcommand)]
    pub enum DirectorCmd {
        /// Directors and their servers.
        List,
        /// Let a server take new connections again.
        Enable { director: String, server: String },
        /// Take a server out of scheduling (its connections continue).
        Disable { director: String, server: String },
        /// Set a server's weight (0 drains it).
        Weight {
            director: String,
            server: String,
            weight: u32,
        },
    }
}

/// Writes the man pages (`man1/flowgate.1`, `man1/flowgate-run.1`, ..., `man1/flowctl.1`,
/// ...) and the bash, zsh and fish completions of both programs under `out`. Returns the
/// files written.
pub fn generate(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for cmd in [flowgate::Cli::command(), flowctl::Cli::command()] {
        let mut cmd = cmd;
        cmd.build();
        man_pages(&cmd, &out.join("man1"), &mut written)?;
        let name = cmd.get_name().to_string();
        for (shell, dir, file) in [
            (Shell::Bash, "bash", name.clone()),
            (Shell::Zsh, "zsh", format!("_{name}")),
            (Shell::Fish, "fish", format!("{name}.fish")),
        ] {
            let dir = out.join(dir);
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(file);
            let mut f = std::fs::File::create(&path)?;
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut f);
            written.push(path);
        }
    }
    Ok(written)
}

/// One page for `cmd` and one per visible subcommand, named `cmd-sub-...`.
fn man_pages(cmd: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    // the page's title is the display name (`flowctl-director-weight`)
    let page = cmd.clone().display_name(name.clone());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    std::fs::write(&path, buf)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub = sub.clone().display_name(sub_name);
        man_pages(&sub, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clis_are_consistent() {
        flowgate::Cli::command().debug_assert();
        flowctl::Cli::command().debug_assert();
    }

    #[test]
    fn generates_pages_and_completions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = generate(dir.path()).expect("generate");
        let man = std::fs::read_to_string(dir.path().join("man1/flowgate-run.1")).expect("page");
        assert!(man.contains("\\-\\-config"), "{man}");
        assert!(man.contains("SIGHUP"), "{man}");
        let ctl = std::fs::read_to_string(dir.path().join("man1/flowctl.1")).expect("page");
        assert!(ctl.contains("unreachable"), "{ctl}");
        assert!(dir.path().join("man1/flowctl-director-weight.1").exists());
        // hidden subcommands have no page and no completion
        assert!(!dir.path().join("man1/flowgate-generate.1").exists());
        let bash = std::fs::read_to_string(dir.path().join("bash/flowctl")).expect("bash");
        assert!(
            bash.contains("watch") && !bash.contains("generate"),
            "{bash}"
        );
        assert!(dir.path().join("zsh/_flowgate").exists());
        assert!(dir.path().join("fish/flowctl.fish").exists());
        assert!(files.len() > 10);
    }
}
