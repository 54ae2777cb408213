//! `flowgate`: the daemon and its offline tools.

mod bench;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "flowgate", about = "flowgate dataplane and offline tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
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
