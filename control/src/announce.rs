//! Route health injection: a director with `announce = "PORT"` has its VIP added to that
//! port's TAP as a host address (`/32`, `/128`) while at least one of its regular servers can
//! take connections (up, weight > 0), and removed when none can (health checks, `flowctl
//! director disable|weight`). A routing daemon beside flowgate (BIRD's `protocol direct`)
//! exports the address into BGP, so the upstream router sends the VIP to this box only while
//! it can serve it (`docs/ha.md`).
//!
//! The kernel ties the announcement to the process: when flowgate stops, cleanly or killed,
//! its TAPs go and their addresses with them, and the daemon withdraws the route at once. A
//! clean stop withdraws first, before the ports stop.
//!
//! The data path never reads kernel addresses: the VIP on the TAP changes nothing in how
//! flowgate handles VIP traffic (the flows decide); the kernel answers ARP / ND for it with
//! the port's MAC, which is the box's.
//!
//! A thread of its own polls the published director set every [`POLL`] (one `ArcSwap`
//! load) and runs `ip addr` only on a change; nothing here touches the packet path.

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowgate_config::appliance::Appliance;
use flowgate_dataplane::director::{DirectorState, SharedDirectors};

/// How often the director set is looked at.
pub const POLL: Duration = Duration::from_millis(20);
/// How long a failed `ip` command waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// One announced VIP: which director decides it, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub director: usize,
    pub name: String,
    pub vip: IpAddr,
    /// The TAP (the port's name).
    pub port: String,
}

impl Target {
    /// The host address on the TAP: `VIP/32` or `VIP/128`.
    fn host(&self) -> String {
        match self.vip {
            IpAddr::V4(_) => format!("{}/32", self.vip),
            IpAddr::V6(_) => format!("{}/128", self.vip),
        }
    }

    /// `ip addr add|del` arguments for this target (`nodad`: an IPv6 VIP is usable, and
    /// announced, at once).
    fn args(&self, add: bool) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if self.vip.is_ipv6() {
            v.push("-6".into());
        }
        v.extend(["addr".into(), if add { "replace" } else { "del" }.into()]);
        v.extend([self.host(), "dev".into(), self.port.clone()]);
        if add && self.vip.is_ipv6() {
            v.push("nodad".into());
        }
        v
    }
}

/// The directors of `app` that announce their VIP.
pub fn targets(app: &Appliance) -> Vec<Target> {
    app.directors
        .iter()
        .enumerate()
        .filter_map(|(d, dir)| {
            let port = app.ports.get(dir.announce?)?;
            Some(Target {
                director: d,
                name: dir.name.clone(),
                vip: dir.virtual_service?.address,
                port: port.name.clone(),
            })
        })
        .collect()
}

/// Whether a director's VIP is announced: a regular server can take new connections. A
/// sorry server alone does not count: while another box has real servers, the router
/// should send the clients there.
pub fn wanted(st: &DirectorState) -> bool {
    st.servers.iter().any(|s| s.available())
}

/// The running announcer; [`Announcer::stop`] (or drop) withdraws everything it announced.
#[derive(Debug)]
pub struct Announcer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Start announcing the VIPs of `app`'s directors with `announce` (none: `None`).
pub fn start(app: &Appliance, directors: &Arc<SharedDirectors>) -> Option<Announcer> {
    let targets = targets(app);
    if targets.is_empty() {
        return None;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let shared = Arc::clone(directors);
    let thread = std::thread::Builder::new()
        .name("fg-announce".into())
        .spawn(move || run(&targets, &shared, &flag))
        .map_err(|e| log::error!(target: "announce", "cannot start the announcer: {e}"))
        .ok()?;
    Some(Announcer {
        stop,
        thread: Some(thread),
    })
}

impl Announcer {
    /// Withdraw every announced VIP and stop.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Per target: what the kernel has (as far as we know) and when a failed change may be
/// tried again.
struct Slot {
    announced: bool,
    retry_at: Option<Instant>,
}

fn run(targets: &[Target], shared: &SharedDirectors, stop: &AtomicBool) {
    let mut slots: Vec<Slot> = targets
        .iter()
        .map(|_| Slot {
            announced: false,
            retry_at: None,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let set = shared.set.load();
        let now = Instant::now();
        for (t, slot) in targets.iter().zip(slots.iter_mut()) {
            let want = set.get(t.director).is_some_and(|st| wanted(st));
            if want == slot.announced || slot.retry_at.is_some_and(|at| now < at) {
                continue;
            }
            match ip(&t.args(want)) {
                Ok(()) => {
                    slot.announced = want;
                    slot.retry_at = None;
                    if want {
                        log::info!(target: "announce", "director {}: announcing {} on {} (a server is up)", t.name, t.vip, t.port);
                    } else {
                        log::warn!(target: "announce", "director {}: withdrawing {} from {} (no server can take connections)", t.name, t.vip, t.port);
                    }
                }
                Err(e) => {
                    slot.retry_at = Some(now + RETRY);
                    log::warn!(target: "announce", "director {}: {e} (tried again in {} s)", t.name, RETRY.as_secs());
                }
            }
        }
        drop(set);
        std::thread::sleep(POLL);
    }
    // a clean stop withdraws before the ports stop
    for (t, slot) in targets.iter().zip(&slots) {
        if slot.announced {
            match ip(&t.args(false)) {
                Ok(()) => {
                    log::info!(target: "announce", "director {}: withdrew {} from {} (stopping)", t.name, t.vip, t.port)
                }
                Err(e) => log::warn!(target: "announce", "director {}: {e}", t.name),
            }
        }
    }
}

/// Run `ip ARGS`; the error says the command and what `ip` said.
fn ip(args: &[String]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // removing an address that is gone already (by hand, with its TAP) is done
    let gone = args.iter().any(|a| a == "del")
        && ["Address not found", "Cannot assign requested address"]
            .iter()
            .any(|m| stderr.contains(m));
    if out.status.success() || gone {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), stderr.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_dataplane::director::DirectorSet;

    const CONFIG: &str = r#"flows = "f.flows"
[[port]]
name = "eth0"
device = "net_null0"
addresses = ["192.168.1.11/24"]
[[port]]
name = "eth1"
device = "net_null1"
addresses = ["10.0.0.1/24"]
[[director]]
name = "quiet"
scheduler = "mh"
mode = "gateway"
servers = [{ name = "a", address = "10.0.0.21" }]
[[director]]
name = "web"
scheduler = "mh"
mode = "gateway"
virtual = { address = "192.0.2.80" }
announce = "eth0"
servers = [
  { name = "a", address = "10.0.0.21" },
  { name = "b", address = "10.0.0.22" },
  { name = "sorry", address = "10.0.0.99", sorry = true },
]
[[director]]
name = "web6"
scheduler = "mh"
mode = "tunnel"
virtual = { address = "2001:db8::80" }
announce = "eth1"
servers = [{ name = "a", address = "2001:db8:1::21" }]
"#;

    fn app() -> Appliance {
        flowgate_config::appliance::parse_with_cpus("/x/f.toml", CONFIG, 4).expect("config")
    }

    #[test]
    fn targets_are_the_announcing_directors_with_their_host_address() {
        let t = targets(&app());
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].director, t[0].name.as_str()), (1, "web"));
        assert_eq!(
            t[0].args(true),
            ["addr", "replace", "192.0.2.80/32", "dev", "eth0"]
        );
        assert_eq!(
            t[0].args(false),
            ["addr", "del", "192.0.2.80/32", "dev", "eth0"]
        );
        assert_eq!(
            t[1].args(true),
            [
                "-6",
                "addr",
                "replace",
                "2001:db8::80/128",
                "dev",
                "eth1",
                "nodad"
            ]
        );
    }

    #[test]
    fn announced_while_a_regular_server_can_take_connections() {
        let app = app();
        let set = DirectorSet::build(&app.directors).expect("set");
        let st = |s: &DirectorSet| wanted(s.get(1).expect("web"));
        assert!(st(&set), "every server up");
        let one_down = set.with_server_up(1, 0, false).expect("down");
        assert!(st(&one_down), "b still up");
        let both_down = one_down.with_server_up(1, 1, false).expect("down");
        assert!(!st(&both_down), "only the sorry server is up");
        // `flowctl director disable` drains: weight 0
        let disabled = set
            .with_weight(1, 0, 0)
            .and_then(|s| s.with_weight(1, 1, 0))
            .expect("weights");
        assert!(!st(&disabled), "every regular server disabled");
        let back = both_down.with_server_up(1, 1, true).expect("up");
        assert!(st(&back));
    }
}
