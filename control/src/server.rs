//! The control socket: a Unix stream socket, one JSON request per line, one reply per line.
//!
//! One thread per client (at most [`MAX_CLIENTS`]); each parses its lines into
//! [`Request`]s and hands them to the control thread over the channel. Lines are bounded by
//! [`MAX_REQUEST`]: a longer one gets an error reply and the connection is closed. Garbage,
//! invalid JSON or an unknown op gets an error reply and the connection stays usable; a client
//! that half-closes or vanishes only ends its own thread.
//!
//! Slow and silent clients cannot hold the slots: a client has [`REQUEST_DEADLINE`] to send a
//! whole request line (from its connection, or from the previous reply; the clock does not
//! restart on each byte), and when every slot is taken a new client evicts the connection
//! that has waited longest for its request line (a connection whose request the control
//! side is working on is never evicted).
//!
//! The socket is bound inside a private directory (mode 0700) and given mode 0660 there,
//! then renamed to its path: whatever the umask, it is never connectable by others.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::{ask, Command};
use crate::protocol::{encode, ErrorReply, Request, MAX_REQUEST};

/// Clients served at once; past it, a new client evicts the one waiting longest for its
/// request line, or (every one busy) is answered with an error and closed.
pub const MAX_CLIENTS: usize = 64;
/// A client must send a whole request line within this long (after connecting, or after the
/// previous reply), else it is answered with an error and disconnected.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// A client that does not take its reply within this long is disconnected.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(10);
/// Request lines up to this size are always read; the bytes of longer ones count against
/// [`LARGE_LINES_BUDGET`], shared by all clients.
pub const SMALL_LINE: usize = 64 << 10;
/// The bytes of large request lines (past [`SMALL_LINE`] each) all clients may hold at once,
/// from their reading to their reply: four 16 MiB pushes. Past it, a large request is refused
/// ("busy"); small ones (`status`) never are.
pub const LARGE_LINES_BUDGET: usize = 64 << 20;

/// The shared budget of large request lines.
#[derive(Debug, Default)]
pub struct LineBudget {
    used: AtomicUsize,
}

/// What one request holds of a [`LineBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    budget: &'a LineBudget,
    bytes: usize,
}

impl<'a> Held<'a> {
    pub fn new(budget: &'a LineBudget) -> Held<'a> {
        Held { budget, bytes: 0 }
    }

    /// Holds enough for a line of `len` bytes; false when the budget cannot cover it.
    pub fn grow_to(&mut self, len: usize) -> bool {
        let want = len.saturating_sub(SMALL_LINE);
        if want <= self.bytes {
            return true;
        }
        let extra = want - self.bytes;
        let got = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + extra <= LARGE_LINES_BUDGET).then_some(u + extra)
            });
        if got.is_ok() {
            self.bytes = want;
        }
        got.is_ok()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Creates the socket's directory, removes a stale socket, binds with mode 0660 (inside a
/// private directory, then renamed into place). Refuses to take over a socket that a live
/// daemon still answers on.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir)?;
        }
    }
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another daemon is listening on it",
            ));
        }
        fs::remove_file(path)?;
    }
    // bound where only this user can reach it, given its final mode, then moved in place:
    // there is no moment when the umask's mode is visible at `path`
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let private = dir.join(format!(".fgbind.{}", std::process::id()));
    let _ = fs::remove_dir_all(&private);
    fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("s");
    let bound = (|| {
        let listener = UnixListener::bind(&staged)?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o660))?;
        fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = fs::remove_file(&staged);
    let _ = fs::remove_dir(&private);
    bound
}

/// The accept thread and how to stop it.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serve `listener`, sending requests to the control thread through `tx`.
    pub fn spawn(listener: UnixListener, path: PathBuf, tx: Sender<Command>) -> io::Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("flowgate-ctl-accept".into())
            .spawn(move || accept_loop(listener, tx, stop2))?;
        Ok(Server {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// Stop accepting (client threads end with their connections) and remove the socket.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the blocking accept
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// One connected client, as the accept thread sees it.
#[derive(Debug)]
struct Slot {
    id: u64,
    /// Since when it waits for its request line (connection or last reply).
    waiting_since: Instant,
    /// Its request is with the control side: not evictable.
    busy: bool,
    /// To disconnect it.
    stream: UnixStream,
}

/// The clients being served.
#[derive(Debug, Default)]
struct Slots {
    slots: Mutex<Vec<Slot>>,
    next: AtomicU64,
    large_lines: LineBudget,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `stream`: when all are taken, the client waiting longest for its request
    /// line is disconnected to make room; `None` when every client is busy.
    fn take(&self, stream: &UnixStream) -> Option<u64> {
        let mut slots = self.lock();
        if slots.len() >= MAX_CLIENTS {
            let oldest = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.busy)
                .min_by_key(|(_, s)| s.waiting_since)
                .map(|(i, _)| i)?;
            let evicted = slots.swap_remove(oldest);
            let _ = evicted.stream.shutdown(std::net::Shutdown::Both);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let stream = stream.try_clone().ok()?;
        slots.push(Slot {
            id,
            waiting_since: Instant::now(),
            busy: false,
            stream,
        });
        Some(id)
    }

    fn set_busy(&self, id: u64, busy: bool) {
        if let Some(s) = self.lock().iter_mut().find(|s| s.id == id) {
            s.busy = busy;
            if !busy {
                s.waiting_since = Instant::now();
            }
        }
    }

    fn release(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
    }
}

fn accept_loop(listener: UnixListener, tx: Sender<Command>, stop: Arc<AtomicBool>) {
    let slots = Arc::new(Slots::default());
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = conn else { continue };
        let Some(id) = slots.take(&stream) else {
            let _ = stream.set_write_timeout(Some(REPLY_DEADLINE));
            let _ = reply(
                &mut stream,
                &Err(ErrorReply::new(
                    "too many control clients, all busy; try again",
                )),
            );
            continue;
        };
        let tx = tx.clone();
        let s = Arc::clone(&slots);
        let spawned = std::thread::Builder::new()
            .name("flowgate-ctl-client".into())
            .spawn(move || {
                serve_client(stream, &tx, &s, id);
                s.release(id);
            });
        if spawned.is_err() {
            slots.release(id);
        }
    }
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("request longer than {0} bytes")]
    TooLong(usize),
    #[error("no complete request line within {0:?}")]
    Deadline(Duration),
    #[error("the control side holds {} MiB of other large requests; try again", LARGE_LINES_BUDGET >> 20)]
    Busy,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads one line (without its `\n`) of at most `max` bytes. `Ok(None)` at end of stream; a
/// last line without `\n` before the end is still a line.
pub fn read_line_bounded(r: &mut impl BufRead, max: usize) -> Result<Option<Vec<u8>>, LineError> {
    read_line_with(r, max, |_| Ok(()))
}

/// [`read_line_bounded`] from a socket, the whole line due by `deadline`: before each read,
/// the socket's receive timeout is set to the time left (`sock` shares the reader's socket).
/// A line past [`SMALL_LINE`] must also fit in what `held` can take of its budget.
pub fn read_line_by(
    r: &mut impl BufRead,
    sock: &UnixStream,
    max: usize,
    deadline: Instant,
    held: &mut Held<'_>,
) -> Result<Option<Vec<u8>>, LineError> {
    let allowed = deadline.saturating_duration_since(Instant::now());
    let res = read_line_with(r, max, |len| {
        if !held.grow_to(len) {
            return Err(LineError::Busy);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LineError::Deadline(allowed));
        }
        sock.set_read_timeout(Some(left)).map_err(LineError::Io)
    });
    match res {
        Err(LineError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(LineError::Deadline(allowed))
        }
        other => other,
    }
}

fn read_line_with(
    r: &mut impl BufRead,
    max: usize,
    mut before_read: impl FnMut(usize) -> Result<(), LineError>,
) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    loop {
        before_read(line.len())?;
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if buf.is_empty() {
            return Ok(if line.is_empty() { None } else { Some(line) });
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                if line.len() + i > max {
                    return Err(LineError::TooLong(max));
                }
                line.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                return Ok(Some(line));
            }
            None => {
                let n = buf.len();
                if line.len() + n > max {
                    return Err(LineError::TooLong(max));
                }
                line.extend_from_slice(buf);
                r.consume(n);
            }
        }
    }
}

fn reply(stream: &mut UnixStream, r: &crate::control::Reply) -> io::Result<()> {
    let mut s = encode(r);
    s.push('\n');
    stream.write_all(s.as_bytes())?;
    stream.flush()
}

fn serve_client(stream: UnixStream, tx: &Sender<Command>, slots: &Slots, id: u64) {
    let _ = stream.set_write_timeout(Some(REPLY_DEADLINE));
    let Ok(read) = stream.try_clone() else { return };
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut writer = stream;
    let mut deadline = Instant::now() + REQUEST_DEADLINE;
    loop {
        let mut held = Held::new(&slots.large_lines);
        let line = match read_line_by(&mut reader, &writer, MAX_REQUEST, deadline, &mut held) {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e @ (LineError::TooLong(_) | LineError::Deadline(_) | LineError::Busy)) => {
                let _ = reply(&mut writer, &Err(ErrorReply::new(format!("{e}; closing"))));
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
            Err(LineError::Io(_)) => return,
        };
        let arrived = Instant::now();
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        slots.set_busy(id, true);
        let r = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => ask(tx, req, arrived),
            Err(e) => Err(ErrorReply::new(format!("bad request: {e}"))),
        };
        drop(line);
        slots.set_busy(id, false);
        drop(held);
        if reply(&mut writer, &r).is_err() {
            return;
        }
        deadline = Instant::now() + REQUEST_DEADLINE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lines() {
        let mut r = io::Cursor::new(b"ab\ncd\nlast".to_vec());
        assert_eq!(
            read_line_bounded(&mut r, 10).expect("l1"),
            Some(b"ab".to_vec())
        );
        assert_eq!(
            read_line_bounded(&mut r, 10).expect("l2"),
            Some(b"cd".to_vec())
        );
        assert_eq!(
            read_line_bounded(&mut r, 10).expect("l3"),
            Some(b"last".to_vec())
        );
        assert_eq!(read_line_bounded(&mut r, 10).expect("eof"), None);
        let mut r = BufReader::with_capacity(4, io::Cursor::new(vec![b'x'; 100]));
        assert!(matches!(
            read_line_bounded(&mut r, 10),
            Err(LineError::TooLong(10))
        ));
    }

    #[test]
    fn large_lines_share_one_budget_and_small_ones_are_free() {
        let budget = LineBudget::default();
        let mut a = Held::new(&budget);
        assert!(a.grow_to(SMALL_LINE), "small lines take nothing");
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
        assert!(a.grow_to(SMALL_LINE + LARGE_LINES_BUDGET / 2));
        let mut b = Held::new(&budget);
        assert!(b.grow_to(SMALL_LINE + LARGE_LINES_BUDGET / 2));
        let mut c = Held::new(&budget);
        assert!(!c.grow_to(SMALL_LINE + 1), "the budget is spent");
        assert!(c.grow_to(100), "a small line still is read");
        drop(a);
        assert!(c.grow_to(SMALL_LINE + 1));
        drop(b);
        drop(c);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }
}
