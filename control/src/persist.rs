//! Atomic persistence of the applied flows file: a reader (or a restart) sees the old file or
//! the new one, whole, never a mix or a truncated file, even across a power cut.
//!
//! The steps: write a temp file in the same directory, fsync it, rename it over the target,
//! fsync the directory (so the rename itself is durable). The temp file is `.NAME.tmp.PID`;
//! one left by a process killed in the middle is removed at the next start
//! ([`remove_stale_temps`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What tells a file apart from another version of it: device, inode, size, change time
/// (a file replaced by [`write_atomic`] is a new inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of the file at `path` now (`None` if it cannot be read).
    pub fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = dir_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes the temp files of `path` (`.NAME.tmp.PID`) that no live process is writing: left
/// by a daemon killed while it persisted. Returns the files removed.
pub fn remove_stale_temps(path: &Path) -> Vec<PathBuf> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    remove_stale(&dir_of(path), Some(name))
}

/// Removes every stale temp file (`.NAME.tmp.PID`, whatever NAME) in `dir`, as
/// [`remove_stale_temps`] does for one file. Returns the files removed.
pub fn remove_stale_temps_in(dir: &Path) -> Vec<PathBuf> {
    remove_stale(dir, None)
}

/// The directory `path` is in (`.` for a bare name).
pub fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The temp files in `dir` of the file named `name` (of any file: `None`) whose writer is
/// gone, removed.
fn remove_stale(dir: &Path, name: Option<&str>) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix('.'))
            .and_then(|n| n.rsplit_once(".tmp."))
            .filter(|(target, _)| name.is_none_or(|name| *target == name))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let writer_alive = pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !writer_alive && is_file && fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("flows.conf");
        write_atomic(&p, b"flow a permit\n").expect("first write");
        assert_eq!(fs::read_to_string(&p).expect("read"), "flow a permit\n");
        write_atomic(&p, b"flow b deny\n").expect("second write");
        assert_eq!(fs::read_to_string(&p).expect("read"), "flow b deny\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn failure_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("missing-dir").join("flows.conf");
        assert!(write_atomic(&p, b"x").is_err());
        assert!(!p.exists());
    }

    #[test]
    fn stale_temps_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("flows.conf");
        fs::write(&p, "flow a permit\n").expect("write");
        // a pid that cannot be alive (above the kernel's pid_max of 2^22)
        let stale = dir.path().join(".flows.conf.tmp.4194305");
        let ours = dir
            .path()
            .join(format!(".flows.conf.tmp.{}", std::process::id()));
        let other = dir.path().join(".other.conf.tmp.4194305");
        let not_a_pid = dir.path().join(".flows.conf.tmp.x");
        for f in [&stale, &ours, &other, &not_a_pid] {
            fs::write(f, "partial").expect("write");
        }
        let mut removed = remove_stale_temps(&p);
        removed.sort();
        let mut expected = vec![stale.clone(), ours.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(!stale.exists() && !ours.exists());
        assert!(p.exists() && other.exists() && not_a_pid.exists());
    }
}
