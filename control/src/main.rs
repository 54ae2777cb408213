//! `flowgate`: the daemon (`run`) and its offline tools (`check`, `classify`, `bench`).
//! The command line is defined in `flowgate_control::cli::flowgate`.

mod announce;
mod bench;
mod classify_cmd;
mod director_hook;
mod run;

use std::time::Duration;

use clap::Parser;
use flowgate_control::cli::flowgate::{BenchCommand, Cli, Command};

fn refused(r: classify_cmd::Refused) -> ! {
    eprint!("{}", r.0);
    if !r.0.ends_with('\n') {
        eprintln!();
    }
    std::process::exit(1)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            duration,
            stats_json,
        } => {
            let opts = run::RunOptions {
                config,
                duration: duration.map(Duration::from_secs_f64),
                stats_json,
                log_level: cli.log_level,
            };
            if let Err(e) = run::run(&opts) {
                log::error!(target: "flowgate", "{e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Check { file, config } => {
            match file {
                Some(file) => classify_cmd::check(&file, config.as_deref()),
                None => classify_cmd::check_config(config.as_deref()),
            }
            .unwrap_or_else(|e| refused(e));
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
        Command::Generate { out } => {
            let files = flowgate_control::cli::generate(&out)?;
            for f in files {
                println!("{}", f.display());
            }
            Ok(())
        }
    }
}
