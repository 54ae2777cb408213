//! The connection sync through the worker API: what one [`DirectorWorker`] exports, applied
//! on another (as a peer appliance's would be), makes the second use the same server for the
//! connection's next packets (NAT replies included) and, through a persistence template,
//! for a new connection of the same client.

use std::time::Duration;

use flowgate_config::appliance::{Persistence, Scheduler};

use super::conntrack::{ConnState, TCP_ACK, TCP_FIN, TCP_SYN};
use super::sync::{Export, SyncEntry, BATCH};
use super::tests::{facts, ip, ports, send, server_of, servers, set, state, with, worker};
use super::*;
use crate::director::tests::packet;

const VIP: &str = "192.168.0.100";

/// What `w` exported since the last call.
fn exported(w: &mut DirectorWorker) -> Vec<SyncEntry> {
    let mut ex = Export::default();
    w.drain_sync(&mut ex);
    ex.batch
}

/// SYN then ACK from `client:port` to the VIP port 25: the server index.
fn connect(w: &mut DirectorWorker, st: &DirectorState, client: &str, port: u16, now: u64) -> u16 {
    let mut p = packet(6, client, port, VIP, 25, TCP_SYN);
    let s = server_of(send(w, st, &mut p, now));
    let mut p = packet(6, client, port, VIP, 25, TCP_ACK);
    assert_eq!(server_of(send(w, st, &mut p, now)), s);
    s
}

#[test]
fn a_synced_nat_connection_keeps_its_server_on_the_backup_both_ways() {
    let st = state(with(Scheduler::Rr, &servers(&[1, 1, 1])));
    let mut a = worker(&st, 64);
    a.enable_sync(0);
    // rr: the third connection goes to server 2
    for port in [1000, 1001, 1002] {
        connect(&mut a, &st, "1.1.1.1", port, 10);
    }
    let entries = exported(&mut a);
    // each connection: new (SYN_RECV), then established
    assert_eq!(entries.len(), 6, "{entries:?}");
    let last = entries
        .iter()
        .rev()
        .find(|e| e.cport == 1002)
        .expect("exported");
    assert_eq!(
        (last.server, last.state, last.nat),
        (2, ConnState::Established, true)
    );
    assert_eq!(last.timeout_ms, 900_000);

    // the peer applies them (a fresh worker: its rr would start at server 0)
    let mut b = worker(&st, 64);
    b.enable_sync(0);
    for e in &entries {
        assert!(b.apply(&st, e, 5000));
    }
    assert_eq!(b.table().backups(), 3);
    // backup entries are not counted for the least-connection schedulers
    assert!(b
        .table()
        .loads()
        .iter()
        .all(|l| l.active == 0 && l.inactive == 0));
    assert_eq!(b.counters().backup, 3);
    // applying changes nothing to export
    assert!(exported(&mut b).is_empty());

    // the connection's next packet (no SYN: without the sync it would be dropped)
    let mut p = packet(6, "1.1.1.1", 1002, VIP, 25, TCP_ACK);
    let v = send(&mut b, &st, &mut p, 6000);
    assert_eq!(
        v,
        Verdict::Forward {
            server: 2,
            to: ip("10.0.0.3"),
            new: false
        }
    );
    assert_eq!(facts(&p).dst, ip("10.0.0.3"));
    // used: a normal entry now, counted, and exported back
    assert_eq!(b.table().backups(), 2);
    assert_eq!(b.table().loads()[2].active, 1);
    assert_eq!(exported(&mut b).len(), 1);

    // a NAT reply of another synced connection finds it by its reply key
    let mut r = packet(6, "10.0.0.2", 25, "1.1.1.1", 1001, TCP_ACK);
    let rx = facts(&r);
    let v = b
        .reply(&st, &mut r, &rx, 6000)
        .expect("a synced connection");
    assert_eq!(server_of(v), 1);
    assert_eq!(facts(&r).src, ip(VIP));
    assert_eq!(ports(&r), (25, 1001));

    // a later state change on the master updates the backup entry in place
    let mut fin = packet(6, "1.1.1.1", 1000, VIP, 25, TCP_FIN | TCP_ACK);
    assert_eq!(server_of(send(&mut a, &st, &mut fin, 20)), 0);
    let change = exported(&mut a);
    assert_eq!(change.len(), 1);
    assert_eq!(change[0].state, ConnState::FinWait);
    assert!(b.apply(&st, &change[0], 7000));
    let c = entry(&b, 6, 1000).expect("still there");
    assert_eq!(c.state, ConnState::FinWait);
    assert_eq!(c.expires, 7000 + 120_000);
    assert!(c.backup);
}

/// The live entry of `w`'s table with protocol `proto` and client port `cport`.
fn entry(w: &DirectorWorker, proto: u8, cport: u16) -> Option<super::conntrack::Conn> {
    let t = w.table();
    (0..t.capacity())
        .filter_map(|i| t.live_entry(i))
        .find(|c| c.proto == proto && c.cport == cport)
        .copied()
}

#[test]
fn a_synced_template_sends_a_new_connection_of_the_client_to_the_same_server() {
    let mut d = with(Scheduler::Rr, &servers(&[1, 1, 1]));
    d.persistence = Some(Persistence {
        timeout: Duration::from_secs(300),
        netmask_len: 32,
    });
    let s0 = set(d);
    let st = s0.get(0).expect("d");
    let mut a = worker(st, 64);
    a.enable_sync(0);
    // two other clients move the master's rr cursor: 1.1.1.1 gets server 2
    connect(&mut a, st, "9.9.9.1", 1000, 0);
    connect(&mut a, st, "9.9.9.2", 1000, 0);
    let _ = exported(&mut a);
    assert_eq!(connect(&mut a, st, "1.1.1.1", 1000, 10), 2);
    let entries = exported(&mut a);
    let templates: Vec<&SyncEntry> = entries.iter().filter(|e| e.proto == 0).collect();
    // the template, pending with the SYN, confirmed with the ACK
    assert_eq!(templates.len(), 2, "{entries:?}");
    assert_eq!(templates[1].state, ConnState::Template);
    assert_eq!(templates[1].timeout_ms, 300_000);

    let mut b = worker(st, 64);
    b.enable_sync(0);
    for e in &entries {
        assert!(b.apply(st, e, 100));
    }
    // a new connection from the client on the backup: the template's server, not rr's 0
    assert_eq!(connect(&mut b, st, "1.1.1.1", 2000, 200), 2);
    // another client is scheduled by the backup's own rr
    assert_eq!(connect(&mut b, st, "7.7.7.7", 2000, 200), 0);
}

#[test]
fn entries_that_do_not_fit_the_director_are_refused() {
    let st = state(with(Scheduler::Rr, &servers(&[1, 1])));
    let mut a = worker(&st, 64);
    a.enable_sync(0);
    connect(&mut a, &st, "1.1.1.1", 1000, 0);
    let e = exported(&mut a)[1];
    let mut b = worker(&st, 64);
    // a server index whose address is another
    let mut wrong = e;
    wrong.server = 1;
    assert!(!b.apply(&st, &wrong, 0));
    // an index beyond the servers
    wrong.server = 9;
    assert!(!b.apply(&st, &wrong, 0));
    // a NAT entry for a gateway director
    let mut gw = with(Scheduler::Rr, &servers(&[1, 1]));
    gw.mode = flowgate_config::appliance::Mode::Gateway;
    let gst = state(gw);
    assert!(!b.apply(&gst, &e, 0));
    // a template state on a connection
    let mut odd = e;
    odd.state = ConnState::Template;
    assert!(!b.apply(&st, &odd, 0));
    assert!(b.table().is_empty());
    assert!(b.apply(&st, &e, 0));
}

#[test]
fn long_lived_connections_are_refreshed_and_a_dump_exports_the_table() {
    let st = state(with(Scheduler::Rr, &servers(&[1, 1])));
    let mut a = worker(&st, 64);
    a.enable_sync(0);
    connect(&mut a, &st, "1.1.1.1", 1000, 0);
    connect(&mut a, &st, "1.1.1.1", 1001, 0);
    assert_eq!(exported(&mut a).len(), 4);
    // packets well within half the timeout: nothing new to say
    let mut p = packet(6, "1.1.1.1", 1000, VIP, 25, TCP_ACK);
    send(&mut a, &st, &mut p, 60_000);
    assert!(exported(&mut a).is_empty());
    // past half of the 900 s: a refresh, with the full timeout again
    let mut p = packet(6, "1.1.1.1", 1000, VIP, 25, TCP_ACK);
    send(&mut a, &st, &mut p, 451_000);
    let r = exported(&mut a);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].cport, r[0].timeout_ms), (1000, 900_000));

    // a full dump: every live entry, in bounded steps
    let mut ex = Export::default();
    let (next, visited) = a.dump(0, 10, &mut ex, 451_000);
    assert_eq!((next, visited), (Some(10), 10));
    let (next, _) = a.dump(10, 100, &mut ex, 451_000);
    assert_eq!(next, None);
    let mut ports: Vec<u16> = ex.batch.iter().map(|e| e.cport).collect();
    ports.sort_unstable();
    assert_eq!(ports, [1000, 1001]);
    // a full batch stops the dump where it is
    let mut full = Export::default();
    full.batch.resize(BATCH, ex.batch[0]);
    assert_eq!(a.dump(0, 100, &mut full, 451_000), (Some(0), 0));
}
