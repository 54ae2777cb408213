//! A control side on a temp directory: appliance config, flows file, socket; and a client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flowgate_config::appliance::{parse_with_cpus, Appliance};
use flowgate_control::{initial_rules, start, ControlHandle, ControlOptions, Shared};
use serde_json::Value;

pub const SEED: &str = "\
flow ssh permit
    ignore not src 192.168.0.0/24
    match proto tcp dst 192.168.0.1 dstport 22
flow dns permit
    match proto udp dst 192.168.0.1 dstport 53
flow mail director maildirect
    match proto tcp dst 192.168.0.2 dstport 25
flow alltherest deny
    match
outflow back table 200
    match iface eth1
";

pub fn appliance_text(socket: &Path) -> String {
    format!(
        r#"
flows = "flows.conf"
[dataplane]
workers = [0, 1]
[control]
socket = "{}"
[[port]]
name = "eth0"
device = "net_null0"
addresses = ["192.168.0.1/24"]
[[port]]
name = "eth1"
device = "net_null1"
addresses = ["192.168.161.10/24"]
[routes]
default = "192.168.0.254"
[[table]]
id = 200
routes = {{ default = "192.168.161.1" }}
[[director]]
name = "maildirect"
scheduler = "wrr"
mode = "nat"
virtual = {{ address = "192.168.0.2" }}
servers = [ {{ name = "mail1", address = "10.0.0.11", weight = 10 }} ]
"#,
        socket.display()
    )
}

/// A running control side in its own temp dir.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub flows: PathBuf,
    pub shared: Arc<Shared>,
    pub handle: Option<ControlHandle>,
}

pub fn appliance(dir: &Path) -> Appliance {
    let socket = dir.join("run").join("control.sock");
    let name = dir.join("flowgate.toml");
    parse_with_cpus(&name.to_string_lossy(), &appliance_text(&socket), 4).expect("appliance")
}

impl Daemon {
    /// Starts on `dir`, writing `flows` as the flows file first if given.
    pub fn start(dir: &Path, flows: Option<&str>) -> Daemon {
        Daemon::start_with(dir, flows, |_| {})
    }

    pub fn start_with(
        dir: &Path,
        flows: Option<&str>,
        tweak: impl FnOnce(&mut ControlOptions),
    ) -> Daemon {
        let app = appliance(dir);
        if let Some(text) = flows {
            std::fs::write(&app.flows, text).expect("write flows");
        }
        let (set, text) = initial_rules(&app).expect("initial rules");
        let mut opts = ControlOptions::from_appliance(&app);
        opts.tick = Duration::from_millis(50);
        tweak(&mut opts);
        let socket = opts.socket.clone();
        let flows = app.flows.clone();
        let shared = Arc::new(Shared::new(app, set, None));
        let handle = start(Arc::clone(&shared), text, opts).expect("start control");
        Daemon {
            dir: dir.to_path_buf(),
            socket,
            flows,
            shared,
            handle: Some(handle),
        }
    }

    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }

    pub fn ask(&self, req: Value) -> Value {
        ask(&self.socket, &req.to_string())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request line, one reply.
pub fn ask(socket: &Path, line: &str) -> Value {
    let mut c = Client::connect(socket);
    c.send(line);
    c.recv().expect("a reply")
}

/// A connection that may send several lines.
pub struct Client {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    pub fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).expect("send");
        self.stream.write_all(b"\n").expect("send nl");
    }

    /// The next reply, or None at end of stream.
    pub fn recv(&mut self) -> Option<Value> {
        let mut s = String::new();
        match self.reader.read_line(&mut s) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&s).expect("reply is JSON")),
        }
    }
}

pub fn ok(v: &Value) -> bool {
    v["ok"] == Value::Bool(true)
}
