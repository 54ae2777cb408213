//! Tests of the health checks: the rise/fall state machine as a pure function, the probes and
//! the checker against real servers on 127.0.0.1.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use flowgate_config::appliance::{
    Check, Director, Mode, Scheduler as Sched, Server, Timeouts, VirtualService,
};

use super::*;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long a test waits for an event before failing (the machine is shared and slow).
const WAIT: Duration = Duration::from_secs(10);

// ---- the state machine, without sockets ----

#[test]
fn rise_fall_over_a_sequence() {
    let (t, f) = (true, false);
    // fall 3: two failures are not enough, a success resets the count.
    assert_eq!(
        rise_fall(true, 2, 3, [f, f, t, f, f, f, f]),
        [t, t, t, t, t, f, f]
    );
    // rise 2 from down: one success is not enough, a failure resets.
    assert_eq!(rise_fall(false, 2, 3, [t, f, t, t, t]), [f, f, f, t, t]);
    // A full cycle: down after 3, up after 2, down again after 3.
    assert_eq!(
        rise_fall(true, 2, 3, [f, f, f, t, t, f, f, f]),
        [t, t, f, f, t, t, t, f]
    );
    // rise = fall = 1 follows every result.
    assert_eq!(rise_fall(true, 1, 1, [f, t, f]), [f, t, f]);
    // 0 counts as 1.
    assert_eq!(rise_fall(true, 0, 0, [f, t]), [f, t]);
    assert!(rise_fall(true, 2, 3, []).is_empty());
}

#[test]
fn record_reports_changes_only() {
    let mut rf = RiseFall::new(true, 2, 2);
    assert_eq!(rf.record(true), None);
    assert_eq!(rf.record(false), None);
    assert_eq!(rf.streak(), 1);
    assert_eq!(rf.record(false), Some(false));
    assert!(!rf.is_up());
    assert_eq!(rf.streak(), 0);
    assert_eq!(rf.record(false), None);
    assert_eq!(rf.record(true), None);
    assert_eq!(rf.record(true), Some(true));
    assert!(rf.is_up());
}

#[test]
fn status_lines() {
    assert_eq!(status_code(b"HTTP/1.0 200 OK\r"), Ok(200));
    assert_eq!(status_code(b"HTTP/1.1 503 Service Unavailable"), Ok(503));
    assert_eq!(status_code(b"HTTP/1.1 204"), Ok(204));
    assert!(status_code(b"SSH-2.0-OpenSSH_9.6").is_err());
    assert!(status_code(b"HTTP/1.1 2000 OK").is_err());
    assert!(status_code(b"HTTP/1.1 abc OK").is_err());
    assert!(status_code(b"").is_err());
}

#[test]
fn http_requests() {
    assert_eq!(
        http_request("/health", LOCAL),
        "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    );
    assert_eq!(
        http_request("/", "2001:db8::1".parse().unwrap()),
        "GET / HTTP/1.0\r\nHost: [2001:db8::1]\r\n\r\n"
    );
}

// ---- targets from the config ----

fn server(name: &str, port: Option<u16>) -> Server {
    Server {
        name: name.to_string(),
        address: LOCAL,
        port,
        weight: 1,
        sorry: false,
    }
}

fn director(name: &str, kind: CheckKind, port: Option<u16>, vport: Option<u16>) -> Director {
    Director {
        name: name.to_string(),
        max_connections: 1 << 16,
        scheduler: Sched::Rr,
        mode: Mode::Nat,
        persistence: None,
        check: Check {
            kind,
            interval: Duration::from_millis(2000),
            timeout: Duration::from_millis(1000),
            rise: 2,
            fall: 3,
            port,
        },
        timeouts: Timeouts::default(),
        virtual_service: vport.map(|p| VirtualService {
            address: LOCAL,
            port: Some(p),
        }),
        hash_seed: None,
        sloppy: false,
        announce: None,
        servers: vec![server("a", Some(8080)), server("b", None)],
    }
}

#[test]
fn targets_take_the_check_port_then_the_server_port_then_the_virtual_port() {
    let ds = [
        director("none", CheckKind::None, None, None),
        director("tcp", CheckKind::Tcp, None, Some(25)),
        director(
            "http",
            CheckKind::Http {
                uri: "/h".into(),
                status: 204,
            },
            Some(81),
            Some(80),
        ),
        director("icmp", CheckKind::Icmp, None, None),
    ];
    let ts = targets(&ds).unwrap();
    let got: Vec<_> = ts
        .iter()
        .map(|t| (t.director, t.server, t.name.as_str(), t.port))
        .collect();
    assert_eq!(
        got,
        [
            (1, 0, "tcp/a", Some(8080)),
            (1, 1, "tcp/b", Some(25)),
            (2, 0, "http/a", Some(81)),
            (2, 1, "http/b", Some(81)),
            (3, 0, "icmp/a", None),
            (3, 1, "icmp/b", None),
        ]
    );
    assert_eq!(
        ts[2].probe,
        Probe::Http {
            uri: "/h".into(),
            status: 204
        }
    );
    assert_eq!((ts[0].rise, ts[0].fall), (2, 3));
    assert_eq!(ts[0].interval, Duration::from_secs(2));
    assert_eq!(ts[0].timeout, Duration::from_secs(1));

    let err = targets(&[director("x", CheckKind::Tcp, None, None)]).unwrap_err();
    assert!(matches!(err, HealthError::NoPort { ref server, .. } if server == "b"));
}

// ---- real servers on 127.0.0.1 ----

/// What a test server does with a connection.
#[derive(Clone, Copy)]
enum Answer {
    /// Accept and close (a TCP service).
    Close,
    /// Answer `HTTP/1.0 <status>` (the status can change while it runs).
    Http,
    /// Accept, read, never answer; the connection stays open.
    Silent,
}

/// A listener on 127.0.0.1 with an accept thread; closes on drop.
struct TestServer {
    port: u16,
    stop: Arc<AtomicBool>,
    status: Arc<AtomicU16>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn bind(port: u16, answer: Answer) -> TestServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(AtomicU16::new(200));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, status2, requests2) = (stop.clone(), status.clone(), requests.clone());
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                match answer {
                    Answer::Close => {}
                    Answer::Silent => held.push(conn),
                    Answer::Http => {
                        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut req = Vec::new();
                        let mut b = [0u8; 512];
                        while !req.ends_with(b"\r\n\r\n") {
                            match conn.read(&mut b) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => req.extend_from_slice(&b[..n]),
                            }
                        }
                        requests2
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&req).into_owned());
                        let code = status2.load(Ordering::SeqCst);
                        let reply = format!("HTTP/1.0 {code} X\r\nContent-Length: 0\r\n\r\n");
                        let _ = conn.write_all(reply.as_bytes());
                    }
                }
            }
        });
        TestServer {
            port,
            stop,
            status,
            requests,
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn target(
    probe: Probe,
    port: u16,
    interval_ms: u64,
    timeout_ms: u64,
    rise: u32,
    fall: u32,
) -> Target {
    Target {
        director: 3,
        server: 1,
        name: "d/s".to_string(),
        address: LOCAL,
        port: Some(port),
        probe,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        rise,
        fall,
    }
}

fn next(rx: &Receiver<Event>) -> Event {
    rx.recv_timeout(WAIT).expect("no health event in time")
}

#[test]
fn tcp_server_goes_down_when_closed_and_comes_back_on_the_same_port() {
    let srv = TestServer::bind(0, Answer::Close);
    let port = srv.port;
    let t = target(Probe::Tcp, port, 30, 500, 2, 3);
    let (checker, rx) = HealthChecker::start(vec![t], HealthOptions::default()).unwrap();
    // Up and answering: no event.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());

    drop(srv);
    let e = next(&rx);
    assert_eq!((e.director, e.server, e.up), (3, 1, false));
    assert!(
        e.reason.contains("tcp check failed 3 times"),
        "{}",
        e.reason
    );
    assert!(
        e.reason.contains(&format!("connect 127.0.0.1:{port}")),
        "{}",
        e.reason
    );

    let srv = TestServer::bind(port, Answer::Close);
    let e = next(&rx);
    assert_eq!((e.director, e.server, e.up), (3, 1, true));
    assert!(
        e.reason.contains("tcp check passed 2 times"),
        "{}",
        e.reason
    );
    checker.stop();
    drop(srv);
}

#[test]
fn http_status_is_compared_with_the_expected_one() {
    let srv = TestServer::bind(0, Answer::Http);
    let probe = Probe::Http {
        uri: "/health".into(),
        status: 200,
    };
    let opts = HealthOptions {
        start_up: false,
        ..HealthOptions::default()
    };
    let (checker, rx) =
        HealthChecker::start(vec![target(probe, srv.port, 30, 1000, 1, 2)], opts).unwrap();
    // Starting down: announced first, then the first passing check brings it up.
    let e = next(&rx);
    assert!(!e.up);
    assert!(e.reason.contains("starts down"), "{}", e.reason);
    let e = next(&rx);
    assert!(e.up, "{}", e.reason);
    assert!(e.reason.contains("status 200"), "{}", e.reason);

    srv.status.store(503, Ordering::SeqCst);
    let e = next(&rx);
    assert!(!e.up);
    assert!(
        e.reason.contains("status 503, expected 200"),
        "{}",
        e.reason
    );

    srv.status.store(200, Ordering::SeqCst);
    assert!(next(&rx).up);
    checker.stop();

    let req = srv.requests.lock().unwrap()[0].clone();
    assert_eq!(req, "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
}

#[test]
fn http_probe_accepts_any_configured_status() {
    let srv = TestServer::bind(0, Answer::Http);
    srv.status.store(503, Ordering::SeqCst);
    let t = Duration::from_secs(2);
    let p503 = Probe::Http {
        uri: "/".into(),
        status: 503,
    };
    let p200 = Probe::Http {
        uri: "/".into(),
        status: 200,
    };
    let ping = Path::new("ping");
    assert!(probe(&p503, LOCAL, Some(srv.port), t, ping).is_ok());
    assert!(probe(&p200, LOCAL, Some(srv.port), t, ping).is_err());
}

#[test]
fn http_check_times_out_on_a_server_that_never_answers() {
    let srv = TestServer::bind(0, Answer::Silent);
    let p = Probe::Http {
        uri: "/".into(),
        status: 200,
    };
    let timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    let err = probe(&p, LOCAL, Some(srv.port), timeout, Path::new("ping")).unwrap_err();
    let took = t0.elapsed();
    assert!(err.contains("timed out after 300 ms"), "{err}");
    assert!(took >= timeout, "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // A TCP check of the same server passes: it only connects.
    assert!(probe(
        &Probe::Tcp,
        LOCAL,
        Some(srv.port),
        timeout,
        Path::new("ping")
    )
    .is_ok());

    // Through the checker: down after `fall` timeouts; stopping waits for at most one.
    let (checker, rx) = HealthChecker::start(
        vec![target(p, srv.port, 50, 200, 1, 2)],
        HealthOptions::default(),
    )
    .unwrap();
    let e = next(&rx);
    assert!(!e.up);
    assert!(e.reason.contains("timed out after 200 ms"), "{}", e.reason);
    let t0 = Instant::now();
    checker.stop();
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[test]
fn icmp_runs_the_ping_program() {
    let t = Duration::from_millis(1500);
    let ok = probe(&Probe::Icmp, LOCAL, None, t, Path::new("true"));
    assert!(ok.is_ok(), "{ok:?}");
    let no = probe(&Probe::Icmp, LOCAL, None, t, Path::new("false")).unwrap_err();
    assert!(no.contains("no echo reply from 127.0.0.1"), "{no}");
    let missing = Path::new("/nonexistent/ping");
    let err = probe(&Probe::Icmp, LOCAL, None, t, missing).unwrap_err();
    assert!(err.contains("could not run /nonexistent/ping"), "{err}");
}

#[test]
fn checker_calls_the_sink_and_stops_promptly() {
    // One target per worker and more targets than workers: every server is checked.
    let servers: Vec<_> = (0..3).map(|_| TestServer::bind(0, Answer::Close)).collect();
    let mut ts: Vec<_> = servers
        .iter()
        .map(|s| target(Probe::Tcp, s.port, 20, 500, 1, 1))
        .collect();
    for (i, t) in ts.iter_mut().enumerate() {
        t.server = i;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let opts = HealthOptions {
        workers: 2,
        start_up: false,
        ..HealthOptions::default()
    };
    let checker = HealthChecker::start_with(ts, opts, move |e| {
        sink_seen.lock().unwrap().push((e.server, e.up));
    })
    .unwrap();
    let t0 = Instant::now();
    while seen.lock().unwrap().len() < 6 && t0.elapsed() < WAIT {
        thread::sleep(Duration::from_millis(10));
    }
    let t0 = Instant::now();
    drop(checker);
    assert!(t0.elapsed() < Duration::from_secs(2));
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        [
            (0, false),
            (0, true),
            (1, false),
            (1, true),
            (2, false),
            (2, true)
        ]
    );

    // No targets: starts and stops.
    let (c, _rx) = HealthChecker::start(Vec::new(), HealthOptions::default()).unwrap();
    c.stop();
}
