//! `flowgate bench ...`: benchmarks of the packet path that print a report.

use std::path::Path;

use anyhow::Context;
use flowgate_dataplane::classify::classbench::run_classbench;

/// `flowgate bench classbench --rules R --trace T [--iters N]`: build the classifier from a
/// ClassBench rule set, verify every trace line's expected first match (any mismatch fails),
/// and print build time, memory, ns and cycles per packet (batched and single) and Mpps.
pub fn classbench_command(rules: &Path, trace: &Path, iters: u32) -> anyhow::Result<()> {
    let report = run_classbench(rules, trace, iters)
        .with_context(|| format!("classbench run on {}", rules.display()))?;
    println!("{report}");
    Ok(())
}
