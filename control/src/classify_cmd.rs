//! `flowgate check` and `flowgate classify`: the offline tools over the flows language, with
//! the dataplane's own compiled classifier answering (no second implementation).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use flowgate_config::appliance::{self, Appliance};
use flowgate_config::flows::{self, Action, ListKind, Loaded, Names};
use flowgate_dataplane::classify::Classifier;
use flowgate_dataplane::ruleset::{default_action, RuleSet};

/// What went wrong, already rendered for a person; the process exits 1.
#[derive(Debug)]
pub struct Refused(pub String);

fn color() -> bool {
    std::io::stderr().is_terminal()
}

/// Load the appliance config, if one is given.
pub fn load_config(path: Option<&Path>) -> Result<Option<Appliance>, Refused> {
    match path {
        None => Ok(None),
        Some(p) => appliance::load(p)
            .map(Some)
            .map_err(|e| Refused(e.to_string())),
    }
}

/// Load a flows file, checked against `config` when given; errors rendered.
pub fn load_flows(path: &Path, config: Option<&Appliance>) -> Result<Loaded, Refused> {
    let names = config.map(|c| c as &dyn Names);
    flows::load_file(path, names).map_err(|e| match e {
        flows::LoadError::Invalid(report) => Refused(report.render(color())),
        other => Refused(other.to_string()),
    })
}

/// `flowgate check --config FILE`: the config, and the flows file it names, as `flowgate run`
/// would load them.
pub fn check_config(config: Option<&Path>) -> Result<(), Refused> {
    let app = load_config(config)?.ok_or_else(|| Refused("no config given".into()))?;
    let flows = app.flows.clone();
    check(&flows, config)
}

/// `flowgate check FILE [--config FILE]`: warnings and exit 0, or every error and exit 1.
/// The file is also compiled as `flowgate run` compiles it (with the config: the whole rule
/// set; without: each list), so what `run` refuses, `check` refuses.
pub fn check(path: &Path, config: Option<&Path>) -> Result<(), Refused> {
    let config = load_config(config)?;
    let loaded = load_flows(path, config.as_ref())?;
    let compiled = match &config {
        Some(app) => RuleSet::compile(loaded.file.clone(), app, 1).map(drop),
        None => [ListKind::Flow, ListKind::Outflow]
            .into_iter()
            .try_for_each(|kind| {
                Classifier::new(loaded.file.list(kind), &Action::Permit).map(drop)
            }),
    };
    compiled.map_err(|e| Refused(format!("{}: error: {e}", path.display())))?;
    eprint!("{}", loaded.render_warnings(color()));
    let n_flows = loaded.file.flows().count();
    let n_out = loaded.file.outflows().count();
    let rules: usize = loaded.file.items.iter().map(|f| f.rules.len()).sum();
    println!(
        "{}: ok: {n_flows} flows, {n_out} outflows, {rules} rules, {} warnings",
        path.display(),
        loaded.warnings.len()
    );
    Ok(())
}

pub use flowgate_control::cli::flowgate::Format;

/// `flowgate classify`: one verdict line per packet line, in order.
pub fn classify(
    flows_path: &Path,
    config: Option<&Path>,
    outflows: bool,
    packets: Option<&Path>,
    format: Format,
) -> Result<(), Refused> {
    let config = load_config(config)?;
    let loaded = load_flows(flows_path, config.as_ref())?;
    let kind = if outflows {
        ListKind::Outflow
    } else {
        ListKind::Flow
    };
    let default = match &config {
        Some(c) if outflows => default_action(c.dataplane.default_outflow),
        Some(c) => default_action(c.dataplane.default_flow),
        None => Action::Permit,
    };
    let classifier = Classifier::new(loaded.file.list(kind), &default)
        .map_err(|e| Refused(format!("{}: {e}", flows_path.display())))?;

    let input: Box<dyn BufRead> = match packets {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).map_err(|e| Refused(format!("{}: {e}", p.display())))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let shown = packets
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<stdin>".into());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| Refused(format!("{shown}: {e}")))?;
        if flows::packet::is_skipped_line(&line) {
            continue;
        }
        let pkt = flows::parse_packet_line(&line)
            .map_err(|e| Refused(format!("{shown}:{}: error: {e}", n + 1)))?;
        let decision = classifier.decide(&pkt);
        let written = match format {
            Format::Text => writeln!(out, "{decision}"),
            Format::Json => {
                let (flow, rule) = match &decision.by {
                    Some((f, r)) => (serde_json::json!(f), serde_json::json!(r)),
                    None => (serde_json::Value::Null, serde_json::Value::Null),
                };
                let v = serde_json::json!({
                    "line": n + 1,
                    "verdict": decision.action.to_string(),
                    "flow": flow,
                    "rule": rule,
                });
                writeln!(out, "{v}")
            }
        };
        written.map_err(|e| Refused(format!("stdout: {e}")))?;
    }
    out.flush().map_err(|e| Refused(format!("stdout: {e}")))?;
    Ok(())
}
