//! systemd's service notification protocol (`sd_notify(3)`), without libsystemd: one
//! datagram of `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name written `@name`).
//!
//! `flowgate run` sends `READY=1` once the ports, the TAPs, the control socket and every
//! worker are up (`Type=notify` in `flowgate.service`), `RELOADING=1` then `READY=1` around a
//! SIGHUP reload, and `STOPPING=1` when it begins to stop. Without `$NOTIFY_SOCKET` (not
//! started by systemd) every call does nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`; a silent one when it is unset or empty.
    pub fn from_env() -> io::Result<Notifier> {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(v) if !v.is_empty() => Notifier::to(&v.to_string_lossy()),
            _ => Ok(Notifier { target: None }),
        }
    }

    /// A notifier for this socket address: a filesystem path, or `@name` for an abstract one.
    pub fn to(address: &str) -> io::Result<Notifier> {
        let addr = match address.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None if address.starts_with('/') => SocketAddr::from_pathname(address)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{NOTIFY_SOCKET}={address}: expected an absolute path or @name"),
                ))
            }
        };
        Ok(Notifier {
            target: Some((UnixDatagram::unbound()?, addr)),
        })
    }

    /// Whether notifications go anywhere.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification (newline-separated `KEY=VALUE` assignments).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some((sock, addr)) => sock.send_to_addr(state.as_bytes(), addr).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The service is up; `status` is shown by `systemctl status`.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// A reload (SIGHUP) begins; [`Notifier::ready`] ends it.
    pub fn reloading(&self) -> io::Result<()> {
        self.notify("RELOADING=1\nSTATUS=reloading the flows file")
    }

    /// The service begins to stop.
    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1\nSTATUS=stopping")
    }

    /// A status line for `systemctl status`.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("STATUS={}", one_line(status)))
    }
}

/// A value on one line (a newline would start another assignment).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::to(path.to_str().expect("utf-8")).expect("notifier");
        assert!(n.is_active());
        n.ready("running:\n2 ports").expect("send");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=running: 2 ports");
        n.stopping().expect("send");
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn datagrams_reach_an_abstract_socket() {
        let name = format!("flowgate-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind");
        let n = Notifier::to(&format!("@{name}")).expect("notifier");
        n.reloading().expect("send");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).expect("recv");
        assert!(buf[..len].starts_with(b"RELOADING=1\n"));
    }

    #[test]
    fn relative_paths_are_refused_and_no_socket_is_silent() {
        assert!(Notifier::to("relative/notify").is_err());
        let silent = Notifier { target: None };
        assert!(!silent.is_active());
        silent.ready("x").expect("no-op");
    }
}
