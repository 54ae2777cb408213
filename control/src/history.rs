//! The rollback history: the flows texts `rollback` can go back to, most recent last, bounded
//! by count ([`ROLLBACK_DEPTH`]) and bytes ([`ROLLBACK_BYTES`]), and kept on disk beside the
//! flows file so that a restart keeps it: `FLOWS.history/NNNNNNNNNNNN.flows`, one file per
//! text, numbered in the order they were pushed (for the packaged daemon,
//! `/var/lib/flowgate/flows.history/`).
//!
//! A push saves the text it replaces in two steps: [`History::save`] writes the file
//! (atomically, [`write_atomic`]) before the new flows file is written, and
//! [`History::keep`] adds it to the history once the new set is published (dropping the
//! oldest texts beyond the bounds, files included); a push that fails in between calls
//! [`History::discard`], so a refused push leaves the history as it was. A rollback publishes
//! the newest text, then [`History::pop`]s it. A daemon killed between the two steps leaves
//! at most one extra file, whose text is the running one: [`History::open`] drops it.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::persist::{remove_stale_temps_in, write_atomic};

/// How many earlier applied sets `rollback` can go back through.
pub const ROLLBACK_DEPTH: usize = 32;

/// The bytes of flows text the rollback history keeps at most (the oldest texts are dropped
/// first; the newest is kept whatever its size).
pub const ROLLBACK_BYTES: usize = 64 << 20;

/// The files' suffix.
const SUFFIX: &str = ".flows";

/// The history directory of a flows file: `FLOWS.history` beside it.
pub fn dir_for(flows_path: &Path) -> PathBuf {
    let mut name = flows_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "flows".into());
    name.push(".history");
    flows_path.with_file_name(name)
}

/// The texts `rollback` can go back to, in memory and (unless [`History::in_memory`]) on
/// disk.
#[derive(Debug, Default)]
pub struct History {
    /// (file number, text), oldest first.
    texts: VecDeque<(u64, String)>,
    bytes: usize,
    /// Where the texts are kept; `None`: memory only.
    dir: Option<PathBuf>,
    /// The number of the next file.
    next: u64,
}

/// A text written by [`History::save`], not yet kept.
#[derive(Debug)]
#[must_use = "keep or discard a saved text"]
pub struct Saved(u64);

impl History {
    /// A history kept in memory only (lost at a restart).
    pub fn in_memory() -> History {
        History::default()
    }

    /// The history of `flows_path` as its directory holds it (the directory is made at the
    /// first save, so a daemon that is never pushed to leaves nothing beside its flows file),
    /// with what an operator should know about it: files that could not be read, or left
    /// over. `current` is the running text: a newest file holding it (a rollback interrupted
    /// between its publication and the removal of its file) is dropped.
    pub fn open(flows_path: &Path, current: &str) -> (History, Vec<String>) {
        let dir = dir_for(flows_path);
        let mut notes = Vec::new();
        let mut h = History {
            dir: Some(dir.clone()),
            ..History::default()
        };
        if dir.exists() && !dir.is_dir() {
            notes.push(format!(
                "{} is not a directory; the rollback history is kept in memory only",
                dir.display()
            ));
            h.dir = None;
            return (h, notes);
        }
        let mut numbered = Vec::new();
        match fs::read_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(n) = name
                        .to_str()
                        .and_then(|n| n.strip_suffix(SUFFIX))
                        .filter(|n| n.len() == 12 && n.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|n| n.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    numbered.push(n);
                }
            }
            Err(e) => notes.push(format!("cannot read {}: {e}", dir.display())),
        }
        numbered.sort_unstable();
        for n in numbered {
            let path = h.path(n);
            match flowgate_config::source::read_regular(&path, crate::control::MAX_FLOWS_FILE) {
                Ok(text) => {
                    h.bytes += text.len();
                    h.texts.push_back((n, text));
                }
                Err(e) => {
                    notes.push(format!("{}: {e}; dropped from the history", path.display()));
                    let _ = fs::remove_file(&path);
                }
            }
            h.next = n + 1;
        }
        if h.texts.back().is_some_and(|(_, t)| t == current) {
            h.pop();
        }
        h.trim();
        for removed in remove_stale_temps_in(&dir) {
            notes.push(format!(
                "removed {}, left by an interrupted push",
                removed.display()
            ));
        }
        (h, notes)
    }

    fn path(&self, n: u64) -> PathBuf {
        let dir = self.dir.as_deref().unwrap_or(Path::new("."));
        dir.join(format!("{n:012}{SUFFIX}"))
    }

    /// Writes `text` as the next history file (nothing for a memory-only history). Nothing
    /// changes if it fails. `same_as` is a file known to hold exactly `text` (the flows file
    /// as the daemon last wrote it): the history file is then a hard link to it, no copy and
    /// no second write of a large text (the flows file is replaced by rename, so the link
    /// keeps the old contents); if linking fails, the text is written.
    pub fn save(
        &mut self,
        text: &str,
        same_as: Option<&Path>,
    ) -> Result<Saved, (PathBuf, io::Error)> {
        let n = self.next;
        if let Some(dir) = self.dir.as_deref() {
            let path = self.path(n);
            fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
            let linked = same_as.is_some_and(|from| {
                fs::hard_link(from, &path).is_ok()
                    && match fs::File::open(dir).and_then(|d| d.sync_all()) {
                        Ok(()) => true,
                        Err(_) => {
                            let _ = fs::remove_file(&path);
                            false
                        }
                    }
            });
            if !linked {
                write_atomic(&path, text.as_bytes()).map_err(|e| (path, e))?;
            }
        }
        self.next += 1;
        Ok(Saved(n))
    }

    /// Adds the text [`History::save`]d as `saved` as the newest, dropping the oldest beyond
    /// the bounds.
    pub fn keep(&mut self, saved: Saved, text: String) {
        self.bytes += text.len();
        self.texts.push_back((saved.0, text));
        self.trim();
    }

    /// Forgets a text [`History::save`]d but not kept (the push failed).
    pub fn discard(&mut self, saved: Saved) {
        self.remove_file(saved.0);
    }

    /// Removes file `n` (nothing for a memory-only history).
    fn remove_file(&self, n: u64) {
        if self.dir.is_some() {
            let _ = fs::remove_file(self.path(n));
        }
    }

    fn trim(&mut self) {
        while self.texts.len() > ROLLBACK_DEPTH
            || (self.bytes > ROLLBACK_BYTES && self.texts.len() > 1)
        {
            if let Some((n, old)) = self.texts.pop_front() {
                self.bytes -= old.len();
                self.remove_file(n);
            }
        }
    }

    /// The newest text.
    pub fn last(&self) -> Option<&String> {
        self.texts.back().map(|(_, t)| t)
    }

    /// Drops the newest text (rolled back to), and its file.
    pub fn pop(&mut self) {
        if let Some((n, t)) = self.texts.pop_back() {
            self.bytes -= t.len();
            self.remove_file(n);
        }
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The bytes of text kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(h: &mut History, text: &str) {
        let s = h.save(text, None).expect("save");
        h.keep(s, text.to_string());
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_history_is_bounded_by_count_and_by_bytes() {
        let mut h = History::in_memory();
        for i in 0..100 {
            push(&mut h, &format!("flow f{i} permit\n"));
        }
        assert_eq!(h.len(), ROLLBACK_DEPTH);
        assert_eq!(h.last().map(String::as_str), Some("flow f99 permit\n"));
        // texts of a quarter of the byte bound: four fit, the fifth drops the oldest
        let big = |c: char| c.to_string().repeat(ROLLBACK_BYTES / 4);
        let mut h = History::in_memory();
        for c in ['a', 'b', 'c', 'd', 'e'] {
            push(&mut h, &big(c));
        }
        assert!(h.bytes <= ROLLBACK_BYTES, "{}", h.bytes);
        assert_eq!(h.len(), 4);
        assert_eq!(h.texts.front().map(|t| t.1.starts_with('b')), Some(true));
        // one text over the bound alone is still kept (the newest always is)
        push(&mut h, &"x".repeat(ROLLBACK_BYTES + 1));
        assert_eq!(h.len(), 1);
        h.pop();
        assert_eq!((h.len(), h.bytes), (0, 0));
    }

    #[test]
    fn a_reopened_history_has_the_same_texts_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flows = dir.path().join("flows");
        let (mut h, notes) = History::open(&flows, "flow now permit\n");
        assert!(notes.is_empty(), "{notes:?}");
        assert!(
            !dir_for(&flows).exists(),
            "made at the first save, not at open"
        );
        for i in 0..40 {
            push(&mut h, &format!("flow f{i} permit\n"));
        }
        h.pop(); // rolled back to f39
        let hist = dir_for(&flows);
        assert_eq!(hist, dir.path().join("flows.history"));
        assert_eq!(files(&hist).len(), ROLLBACK_DEPTH - 1);
        let (mut again, notes) = History::open(&flows, "flow f39 permit\n");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(again.len(), ROLLBACK_DEPTH - 1);
        assert_eq!(again.last().map(String::as_str), Some("flow f38 permit\n"));
        assert_eq!(
            again.texts.front().map(|t| t.1.as_str()),
            Some("flow f8 permit\n")
        );
        // numbering goes on after the newest file: a new push is the newest on disk too
        push(&mut again, "flow g permit\n");
        let (third, _) = History::open(&flows, "flow h permit\n");
        assert_eq!(third.last().map(String::as_str), Some("flow g permit\n"));
        assert_eq!(third.len(), ROLLBACK_DEPTH);
    }

    #[test]
    fn a_discarded_save_leaves_nothing_and_an_interrupted_rollback_is_undone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flows = dir.path().join("flows");
        let (mut h, _) = History::open(&flows, "flow a permit\n");
        push(&mut h, "flow a permit\n");
        let s = h.save("flow b permit\n", None).expect("save");
        assert_eq!(files(&dir_for(&flows)).len(), 2);
        h.discard(s);
        assert_eq!(files(&dir_for(&flows)).len(), 1);
        assert_eq!(h.len(), 1);
        // the daemon published the rollback to `a` and died before removing its file
        let (h, _) = History::open(&flows, "flow a permit\n");
        assert_eq!(h.len(), 0);
        assert!(files(&dir_for(&flows)).is_empty());
    }

    #[test]
    fn a_text_the_flows_file_holds_is_linked_not_copied() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let flows = dir.path().join("flows");
        fs::write(&flows, "flow a permit\n").expect("write");
        let (mut h, _) = History::open(&flows, "flow a permit\n");
        let s = h.save("flow a permit\n", Some(&flows)).expect("save");
        h.keep(s, "flow a permit\n".into());
        let saved = dir_for(&flows).join("000000000000.flows");
        let ino = |p: &Path| fs::metadata(p).expect("metadata").ino();
        assert_eq!(ino(&saved), ino(&flows));
        // the next push replaces the flows file by rename: the history keeps the old text
        write_atomic(&flows, b"flow b permit\n").expect("write");
        assert_eq!(fs::read_to_string(&saved).expect("read"), "flow a permit\n");
        // a file that cannot be linked (missing) falls back to writing the text
        let s = h
            .save("flow b permit\n", Some(&dir.path().join("gone")))
            .expect("save");
        h.keep(s, "flow b permit\n".into());
        let (again, _) = History::open(&flows, "flow c permit\n");
        assert_eq!(again.last().map(String::as_str), Some("flow b permit\n"));
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn unreadable_and_foreign_files_do_not_stop_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flows = dir.path().join("flows");
        let hist = dir_for(&flows);
        fs::create_dir_all(&hist).expect("mkdir");
        fs::write(hist.join("000000000001.flows"), "flow a permit\n").expect("write");
        fs::write(hist.join("000000000002.flows"), [0xff, 0xfe]).expect("write");
        fs::write(hist.join("notes.txt"), "kept").expect("write");
        fs::write(hist.join(".000000000003.flows.tmp.4194305"), "partial").expect("write");
        let (h, notes) = History::open(&flows, "flow b permit\n");
        assert_eq!(h.len(), 1);
        assert_eq!(h.last().map(String::as_str), Some("flow a permit\n"));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("000000000002.flows"), "{notes:?}");
        assert!(notes[1].contains("interrupted push"), "{notes:?}");
        assert_eq!(files(&hist), vec!["000000000001.flows", "notes.txt"]);
    }

    #[test]
    fn a_history_that_cannot_be_created_is_kept_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("flows.history");
        fs::write(&blocker, "a file where the directory should be").expect("write");
        let (mut h, notes) = History::open(&dir.path().join("flows"), "");
        assert_eq!(notes.len(), 1, "{notes:?}");
        push(&mut h, "flow a permit\n");
        assert_eq!(h.len(), 1);
    }
}
