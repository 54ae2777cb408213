//! `flowgate`: the daemon (`run`) and its offline tools (`check`, `classify`, `bench`).

mod bench;
mod classify_cmd;
mod director_hook;
mod run;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "flowgate",
    version,
    about = "flowgate: a DPDK dataplane for flows and outflows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the dataplane: ports, TAPs, pinned poll-mode workers.
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
    Check {
        /// The flows file.
        file: PathBuf,
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
        format: classify_cmd::Format,
        /// Packet lines; stdin when absent.
        packets: Option<PathBuf>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
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

fn refused(r: classify_cmd::Refused) -> ! {
    eprint!("{}", r.0);
    if !r.0.ends_with('\n') {
        eprintln!();
    }
    std::process::exit(1)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            config,
            duration,
            stats_json,
        } => run::run(&run::RunOptions {
            config,
            duration: duration.map(Duration::from_secs_f64),
            stats_json,
        }),
        Command::Check { file, config } => {
            classify_cmd::check(&file, config.as_deref()).unwrap_or_else(|e| refused(e));
            Ok(())
        }
        Command::Classify {
            flows,
            config,
            outflows,
            format,
            packets,
        } => {
            classify_cmd::classify(
                &flows,
                config.as_deref(),
                outflows,
                packets.as_deref(),
                format,
            )
            .unwrap_or_else(|e| refused(e));
            Ok(())
        }
        Command::Bench {
            what:
                BenchCommand::Classbench {
                    rules,
                    trace,
                    iters,
                },
        } => bench::classbench_command(&rules, &trace, iters),
    }
}
