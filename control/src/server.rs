//! The control socket: a Unix stream socket, one JSON request per line, one reply per line.
//!
//! One thread per client (at most [`MAX_CLIENTS`]); each parses its lines into
//! [`Request`]s and hands them to the control thread over the channel. Lines are bounded by
//! [`MAX_REQUEST`]: a longer one gets an error reply and the connection is closed. Garbage,
//! invalid JSON or an unknown op gets an error reply and the connection stays usable; a client
//! that half-closes or vanishes only ends its own thread.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::{ask, Command};
use crate::protocol::{encode, ErrorReply, Request, MAX_REQUEST};

/// Clients served at once; more are answered with an error and closed.
pub const MAX_CLIENTS: usize = 64;
/// A client silent this long is disconnected.
pub const IDLE: Duration = Duration::from_secs(300);

/// Creates the socket's directory, removes a stale socket, binds, sets mode 0660.
/// Refuses to take over a socket that a live daemon still answers on.
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
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))?;
    Ok(listener)
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

fn accept_loop(listener: UnixListener, tx: Sender<Command>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = conn else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
            let _ = reply(
                &mut stream,
                &Err(ErrorReply::new("too many control clients; try again")),
            );
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let tx = tx.clone();
        let a = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name("flowgate-ctl-client".into())
            .spawn(move || {
                serve_client(stream, &tx);
                a.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("request longer than {0} bytes")]
    TooLong(usize),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads one line (without its `\n`) of at most `max` bytes. `Ok(None)` at end of stream; a
/// last line without `\n` before the end is still a line.
pub fn read_line_bounded(r: &mut impl BufRead, max: usize) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    loop {
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

fn serve_client(stream: UnixStream, tx: &Sender<Command>) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_write_timeout(Some(IDLE));
    let Ok(read) = stream.try_clone() else { return };
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut writer = stream;
    loop {
        let line = match read_line_bounded(&mut reader, MAX_REQUEST) {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(LineError::TooLong(max)) => {
                let _ = reply(
                    &mut writer,
                    &Err(ErrorReply::new(format!(
                        "request longer than {max} bytes; closing"
                    ))),
                );
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
            Err(LineError::Io(_)) => return,
        };
        let arrived = Instant::now();
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let r = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => ask(tx, req, arrived),
            Err(e) => Err(ErrorReply::new(format!("bad request: {e}"))),
        };
        if reply(&mut writer, &r).is_err() {
            return;
        }
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
}
