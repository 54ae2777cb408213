//! The calling thread's on-CPU time, for the examples that charge a loop by CPU time rather
//! than wall clock (`classbench_cpu`, `pipeline_profile`).

/// This thread's on-CPU time so far, in nanoseconds (first field of
/// `/proc/thread-self/schedstat`).
pub fn thread_cpu_ns() -> Result<u64, String> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .map_err(|e| format!("/proc/thread-self/schedstat: {e}"))?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("/proc/thread-self/schedstat: unexpected {s:?}"))
}
