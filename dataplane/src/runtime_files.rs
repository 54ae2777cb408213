//! The EAL's runtime directory (`/var/run/dpdk/PREFIX` for root, else
//! `$XDG_RUNTIME_DIR/dpdk/PREFIX` or `/tmp/dpdk/PREFIX`): DPDK creates it at `rte_eal_init`,
//! even with `--no-shconf` or `--in-memory`, and never removes it. The daemon removes its own
//! at exit ([`remove_runtime_dir`]) and those of dead daemons at start ([`remove_stale`]);
//! the tests do the same with theirs.

use std::path::{Path, PathBuf};

/// The `--file-prefix` among EAL arguments, if one is given.
pub fn given_prefix(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(p) = a.strip_prefix("--file-prefix=") {
            return Some(p.to_string());
        }
        if a == "--file-prefix" {
            return it.next().cloned();
        }
    }
    None
}

/// The file prefix DPDK uses with these EAL arguments (`rte`, DPDK's default, without one).
pub fn file_prefix(args: &[String]) -> String {
    given_prefix(args).unwrap_or_else(|| "rte".to_string())
}

/// The real uid of this process (from `/proc/self/status`).
fn uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Where DPDK keeps the runtime files of `prefix` (as `eal_create_runtime_dir` decides).
pub fn runtime_dir(prefix: &str) -> PathBuf {
    let base = if uid() == Some(0) {
        PathBuf::from("/var/run")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
    };
    base.join("dpdk").join(prefix)
}

/// Removes the runtime directory of `prefix` and what it holds.
pub fn remove_runtime_dir(prefix: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(runtime_dir(prefix)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the runtime directories named `STEM<pid>` of processes that are gone (left by a
/// `kill -9`). Returns the directories removed.
pub fn remove_stale(stem: &str) -> Vec<PathBuf> {
    let Some(parent) = runtime_dir(stem).parent().map(Path::to_path_buf) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(stem))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// The runtime directory of one prefix, removed when this guard drops (by any path out of
/// the code that holds it; a failure to remove it is logged).
#[derive(Debug)]
pub struct RuntimeDir(String);

impl RuntimeDir {
    /// Guards the runtime directory of `prefix`.
    pub fn new(prefix: impl Into<String>) -> RuntimeDir {
        RuntimeDir(prefix.into())
    }

    /// The guarded prefix.
    pub fn prefix(&self) -> &str {
        &self.0
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        if let Err(e) = remove_runtime_dir(&self.0) {
            log::warn!(
                target: "flowgate",
                "cannot remove {}: {e}",
                runtime_dir(&self.0).display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(file_prefix(&args(&["--no-huge"])), "rte");
        assert_eq!(given_prefix(&args(&["--no-huge", "--no-shconf"])), None);
        assert_eq!(file_prefix(&args(&["--file-prefix=fg1", "-l", "0"])), "fg1");
        assert_eq!(file_prefix(&args(&["--file-prefix", "fg2"])), "fg2");
        assert!(runtime_dir("x").ends_with("dpdk/x"));
    }

    #[test]
    fn stale_directories_of_dead_processes_are_removed() {
        let stem = format!("fgunit-stale-{}-", std::process::id());
        let base = runtime_dir(&stem).parent().expect("parent").to_path_buf();
        if std::fs::create_dir_all(&base).is_err() {
            return; // no runtime base writable here: nothing DPDK could have left either
        }
        // above the kernel's pid_max (2^22): never alive; our own pid: alive
        let dead = base.join(format!("{stem}4194305"));
        let alive = base.join(format!("{stem}{}", std::process::id()));
        std::fs::create_dir_all(dead.join("sub")).expect("dead dir");
        std::fs::create_dir_all(&alive).expect("alive dir");
        assert_eq!(remove_stale(&stem), vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(alive.exists());
        std::fs::remove_dir_all(&alive).expect("cleanup");
    }

    #[test]
    fn the_guard_removes_its_directory_on_drop() {
        let prefix = format!("fgunit-guard-{}", std::process::id());
        let dir = runtime_dir(&prefix);
        if std::fs::create_dir_all(dir.join("sub")).is_err() {
            return; // no runtime base writable here
        }
        let guard = RuntimeDir::new(prefix.clone());
        assert_eq!(guard.prefix(), prefix);
        assert!(dir.exists());
        drop(guard);
        assert!(!dir.exists());
        drop(RuntimeDir::new(prefix)); // already gone: nothing to do, no panic
    }
}
