//! The edit log: incremental updates (`insert`, `delete`, `replace`) made durable by one
//! small append instead of a rewrite of the whole flows file before publication.
//!
//! `NAME.edits` beside the flows file `NAME` holds a header naming the flows file it extends
//! (its [`FileStamp`]: device, inode, size, change time) and then one edit a line, oldest
//! first. An edit is appended and `fdatasync`ed before it is published; after publication the
//! flows file is rewritten whole ([`crate::persist::write_atomic`]) and the log emptied, so
//! the log holds at most the edits whose rewrite has not happened yet (a crash, a full disk).
//! At start the daemon replays the log on top of the flows file if the header names that very
//! file; a flows file replaced since (by a push, or by hand) has another inode or change time,
//! and the log is then stale and ignored. A last line without its newline is an append cut
//! short: that edit was never published, and is ignored.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::persist::{dir_of, FileStamp};

/// First word of the header line.
const MAGIC: &str = "flowgate-edits 1";

/// An edit log, open for appending.
#[derive(Debug)]
pub struct EditLog {
    path: PathBuf,
    file: Option<File>,
    /// The flows file the entries extend (when there are entries).
    base: Option<FileStamp>,
    entries: usize,
}

/// What [`EditLog::open`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Entries to replay on top of the flows file, oldest first.
    pub entries: Vec<String>,
    /// What an operator should know (a stale log ignored, an append cut short).
    pub notes: Vec<String>,
}

impl EditLog {
    /// Where the log of `flows` is: `NAME.edits` beside it.
    pub fn path_for(flows: &Path) -> PathBuf {
        let mut name = flows
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "flows".into());
        name.push(".edits");
        dir_of(flows).join(name)
    }

    /// The log of `flows` and the entries it holds for the flows file as it is now (none if
    /// the log is missing, empty, or written against another version of the file). The log
    /// keeps them until [`EditLog::clear`].
    pub fn open(flows: &Path) -> (EditLog, Pending) {
        let path = Self::path_for(flows);
        let mut log = EditLog {
            path,
            file: None,
            base: None,
            entries: 0,
        };
        let mut pending = Pending::default();
        // a regular file of bounded size, as the flows file (never a FIFO or a device)
        let text = match flowgate_config::source::read_regular(
            &log.path,
            flowgate_config::source::MAX_FLOWS_FILE,
        ) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (log, pending),
            Err(e) => {
                pending.notes.push(format!(
                    "cannot read {}: {e}; nothing replayed",
                    log.path.display()
                ));
                return (log, pending);
            }
        };
        let mut lines = text.split_inclusive('\n');
        let Some(header) = lines.next() else {
            return (log, pending);
        };
        let base = parse_header(header);
        let now = FileStamp::of(flows);
        let mut entries = Vec::new();
        for line in lines {
            match line.strip_suffix('\n') {
                Some(l) if !l.is_empty() => entries.push(l.to_string()),
                Some(_) => {}
                None => pending.notes.push(format!(
                    "{}: its last edit was cut short (never published); ignored",
                    log.path.display()
                )),
            }
        }
        if entries.is_empty() {
            return (log, pending);
        }
        match base {
            Some(b) if Some(b) == now && header.ends_with('\n') => {
                log.base = Some(b);
                log.entries = entries.len();
                pending.entries = entries;
            }
            _ => pending.notes.push(format!(
                "{}: {} edit(s) written against another version of the flows file; ignored",
                log.path.display(),
                entries.len()
            )),
        }
        (log, pending)
    }

    /// Entries held (appended or found at [`EditLog::open`], not cleared).
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Whether an edit may be appended on top of the flows file as it is (`now`): the log
    /// is empty (the caller knows the file holds the running text) or extends that file.
    pub fn extends(&self, now: Option<FileStamp>) -> bool {
        self.entries == 0 || (now.is_some() && self.base == now)
    }

    /// Appends `entry` (one line, no newline) and makes it durable. An empty log starts
    /// over with a header naming `base`, the flows file the entry extends. On failure the log
    /// holds what it held (what was written of the line is cut off again; a partial line left
    /// by a crash is ignored at [`EditLog::open`]).
    pub fn append(&mut self, base: FileStamp, entry: &str) -> io::Result<()> {
        debug_assert!(!entry.contains('\n'));
        if self.file.is_none() {
            let existed = self.path.exists();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            if !existed {
                File::open(dir_of(&self.path))?.sync_all()?;
            }
            self.file = Some(f);
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("edit log not open"));
        };
        let mut buf = String::with_capacity(entry.len() + 96);
        if self.entries == 0 {
            f.set_len(0)?;
            buf.push_str(&header(base));
        }
        buf.push_str(entry);
        buf.push('\n');
        let before = f.metadata()?.len();
        if let Err(e) = f.write_all(buf.as_bytes()).and_then(|()| f.sync_data()) {
            // a part written (a full disk) would run into the next entry: cut it off
            let _ = f.set_len(before);
            return Err(e);
        }
        if self.entries == 0 {
            self.base = Some(base);
        }
        self.entries += 1;
        Ok(())
    }

    /// Empties the log (its edits are in the flows file now). Not made durable: if the
    /// emptying is lost in a crash, the entries name a flows file that was replaced since
    /// and are ignored at [`EditLog::open`].
    pub fn clear(&mut self) {
        if self.entries == 0 {
            return;
        }
        let done = match self.file.as_ref() {
            Some(f) => f.set_len(0).is_ok(),
            None => OpenOptions::new()
                .write(true)
                .open(&self.path)
                .and_then(|f| f.set_len(0))
                .is_ok(),
        };
        if !done {
            // the next append starts over anyway; a stale log is ignored at start
            log::warn!(target: "control", "cannot empty {}", self.path.display());
        }
        self.entries = 0;
        self.base = None;
    }
}

fn header(s: FileStamp) -> String {
    format!(
        "{MAGIC} dev={} ino={} len={} ctime={}\n",
        s.dev, s.ino, s.len, s.ctime_ns
    )
}

fn parse_header(line: &str) -> Option<FileStamp> {
    let rest = line.trim_end().strip_prefix(MAGIC)?;
    let mut f = rest.split_whitespace();
    let mut field = |key: &str| f.next()?.strip_prefix(key)?.strip_prefix('=');
    Some(FileStamp {
        dev: field("dev")?.parse().ok()?,
        ino: field("ino")?.parse().ok()?,
        len: field("len")?.parse().ok()?,
        ctime_ns: field("ctime")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::write_atomic;
    use std::fs;

    fn flows(dir: &Path) -> PathBuf {
        let p = dir.join("flows.conf");
        write_atomic(&p, b"flow a permit\n").expect("flows");
        p
    }

    #[test]
    fn entries_come_back_for_the_file_they_extend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = flows(dir.path());
        let (mut log, pending) = EditLog::open(&p);
        assert_eq!(pending, Pending::default());
        assert_eq!(EditLog::path_for(&p), dir.path().join("flows.conf.edits"));
        let base = FileStamp::of(&p).expect("stamp");
        assert!(log.extends(Some(base)));
        log.append(base, r#"{"a":1}"#).expect("append");
        log.append(base, r#"{"b":2}"#).expect("append");
        assert_eq!(log.len(), 2);
        let (log2, pending) = EditLog::open(&p);
        assert_eq!(pending.entries, vec![r#"{"a":1}"#, r#"{"b":2}"#]);
        assert!(pending.notes.is_empty());
        assert_eq!(log2.len(), 2);
        assert!(log2.extends(Some(base)));
        // emptied: nothing to replay, and a new first entry starts a new header
        log.clear();
        assert!(log.is_empty());
        assert_eq!(EditLog::open(&p).1, Pending::default());
        log.append(base, "x").expect("append");
        assert_eq!(EditLog::open(&p).1.entries, vec!["x"]);
    }

    #[test]
    fn a_log_against_another_version_of_the_file_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = flows(dir.path());
        let (mut log, _) = EditLog::open(&p);
        let base = FileStamp::of(&p).expect("stamp");
        log.append(base, "e1").expect("append");
        // the flows file replaced (a push, or an operator's editor): the log is stale
        write_atomic(&p, b"flow b deny\n").expect("rewrite");
        let (log, pending) = EditLog::open(&p);
        assert!(pending.entries.is_empty());
        assert!(log.is_empty());
        assert!(pending.notes[0].contains("another version"), "{pending:?}");
        assert!(!log.extends(FileStamp::of(&p)) || log.is_empty());
    }

    #[test]
    fn an_append_cut_short_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = flows(dir.path());
        let (mut log, _) = EditLog::open(&p);
        let base = FileStamp::of(&p).expect("stamp");
        log.append(base, "whole").expect("append");
        let mut f = OpenOptions::new()
            .append(true)
            .open(EditLog::path_for(&p))
            .expect("open");
        f.write_all(b"{\"cut").expect("partial");
        let (_, pending) = EditLog::open(&p);
        assert_eq!(pending.entries, vec!["whole"]);
        assert!(pending.notes[0].contains("cut short"), "{pending:?}");
        // a header cut short: nothing
        fs::write(EditLog::path_for(&p), "flowgate-edits 1 dev=1").expect("write");
        assert_eq!(EditLog::open(&p).1, Pending::default());
        // garbage: nothing replayed, said
        fs::write(EditLog::path_for(&p), "garbage\nentry\n").expect("write");
        let (_, pending) = EditLog::open(&p);
        assert!(pending.entries.is_empty());
        assert_eq!(pending.notes.len(), 1);
    }

    #[test]
    fn a_log_that_is_no_regular_file_is_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = flows(dir.path());
        fs::create_dir(EditLog::path_for(&p)).expect("a directory in its place");
        let (log, pending) = EditLog::open(&p);
        assert!(log.is_empty());
        assert!(pending.entries.is_empty());
        assert!(
            pending.notes[0].contains("not a regular file"),
            "{pending:?}"
        );
    }

    /// A full disk in the middle of an append: what was written is cut off, so the next
    /// append after space is freed makes a clean line (root only: a small tmpfs).
    #[test]
    fn an_append_on_a_full_disk_leaves_no_part_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: needs root to mount a small tmpfs");
            return;
        }
        let result = std::panic::catch_unwind(|| {
            let p = flows(dir.path());
            let (mut log, _) = EditLog::open(&p);
            let base = FileStamp::of(&p).expect("stamp");
            log.append(base, "first").expect("append");
            let len = || fs::metadata(EditLog::path_for(&p)).expect("log").len();
            let before = len();
            // fill the file system but for a few bytes
            let filler = dir.path().join("filler");
            let mut f = File::create(&filler).expect("filler");
            let block = vec![0u8; 1024];
            while f.write_all(&block).is_ok() {}
            let _ = f.sync_all();
            let big = "x".repeat(16 * 1024);
            assert!(log.append(base, &big).is_err(), "the disk is full");
            assert_eq!(len(), before, "nothing of the failed line stays");
            drop(f);
            fs::remove_file(&filler).expect("free");
            log.append(base, "second").expect("append");
            let (_, pending) = EditLog::open(&p);
            assert_eq!(pending.entries, vec!["first", "second"]);
            assert!(pending.notes.is_empty(), "{pending:?}");
        });
        let _ = std::process::Command::new("umount")
            .arg(dir.path())
            .status();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    #[test]
    fn extends_only_its_own_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = flows(dir.path());
        let (mut log, _) = EditLog::open(&p);
        let base = FileStamp::of(&p).expect("stamp");
        log.append(base, "e1").expect("append");
        write_atomic(&p, b"flow c permit\n").expect("rewrite");
        assert!(!log.extends(FileStamp::of(&p)));
        assert!(!log.extends(None));
        assert!(log.extends(Some(base)));
    }

    #[test]
    fn a_log_that_cannot_be_made_fails_to_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("missing").join("flows.conf");
        let (mut log, pending) = EditLog::open(&p);
        assert_eq!(pending, Pending::default());
        let base = FileStamp {
            dev: 1,
            ino: 2,
            len: 3,
            ctime_ns: 4,
        };
        assert!(log.append(base, "e").is_err());
        assert!(log.is_empty());
    }
}
