//! The appliance config: the example loads, and every class of error names its key path and
//! its line.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowgate_config::appliance::{
    self, check_workers, parse_with_cpus, CheckKind, ConfigError, DefaultPolicy, Device,
    Diagnostic, Mode, Scheduler,
};
use flowgate_config::flows::{Names, Prefix};

const FILE: &str = "conf/flowgate.toml";

/// A valid config; tests append to it or replace lines of it.
const BASE: &str = r#"flows = "seed.flows"

[dataplane]
workers = [1]

[[port]]
name = "eth0"
device = "net_af_packet0,iface=fg-eth0"
addresses = ["192.168.0.1/24"]

[[port]]
name = "eth1"
device = "0000:3b:00.0"
addresses = ["192.168.161.10/24", "2001:db8::10/64"]

[routes]
default = "192.168.0.254"

[[director]]
name = "maildirect"
scheduler = "wrr"
mode = "nat"
servers = [
  { name = "mail1", address = "10.0.0.11", weight = 10 },
  { name = "mail2", address = "10.0.0.12", weight = 10 },
  { name = "sorry", address = "10.0.0.99", sorry = true },
]
"#;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flowgate.toml")
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match parse_with_cpus(FILE, text, 4) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

/// The (path, line) of each error.
fn where_(text: &str) -> Vec<(String, usize)> {
    errors(text).into_iter().map(|d| (d.path, d.line)).collect()
}

fn one(text: &str, path: &str, line: usize) -> Diagnostic {
    let errs = errors(text);
    assert_eq!(
        errs.iter()
            .map(|d| (d.path.as_str(), d.line))
            .collect::<Vec<_>>(),
        vec![(path, line)],
        "{errs:#?}"
    );
    errs.into_iter().next().expect("one error")
}

fn replace(old: &str, new: &str) -> String {
    assert!(BASE.contains(old), "{old}");
    BASE.replacen(old, new, 1)
}

#[test]
fn example_loads() {
    let text = std::fs::read_to_string(example_path()).expect("example");
    let name = example_path().to_string_lossy().into_owned();
    let a = parse_with_cpus(&name, &text, 2).expect("example config");
    assert_eq!(
        a.flows,
        example_path().parent().expect("dir").join("seed.flows")
    );
    assert_eq!(a.dataplane.workers, vec![1]);
    assert_eq!(a.dataplane.eal, vec!["--no-huge", "-m", "1024", "--no-pci"]);
    assert_eq!(a.dataplane.burst, 32);
    assert_eq!(a.dataplane.default_flow, DefaultPolicy::Permit);
    assert_eq!(a.dataplane.default_outflow, DefaultPolicy::Permit);
    assert_eq!(
        a.control.metrics,
        Some("127.0.0.1:9469".parse().expect("addr"))
    );
    let names: Vec<_> = a.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["eth0", "eth1"]);
    assert_eq!(
        a.ports[0].device,
        Device::Vdev {
            name: "net_af_packet0".into(),
            args: "iface=fg-eth0".into()
        }
    );
    assert_eq!(
        a.ports[0].device.eal_args(),
        ["--vdev", "net_af_packet0,iface=fg-eth0"]
    );
    let addrs: Vec<_> = a.ports[0].addresses.iter().map(|x| x.to_string()).collect();
    assert_eq!(addrs, ["192.168.0.1/24", "192.168.0.2/24"]);
    assert_eq!(a.main.routes.len(), 2);
    let route = |p: Prefix| {
        a.main
            .routes
            .iter()
            .find(|r| r.prefix == p)
            .unwrap_or_else(|| panic!("route {p}"))
    };
    assert_eq!(route(Prefix::new(Ipv4Addr::UNSPECIFIED.into(), 0)).port, 0);
    let farm = route(Prefix::new(Ipv4Addr::new(10, 0, 0, 0).into(), 24));
    assert_eq!(farm.port, 1, "the mail farm is behind eth1's gateway");
    assert_eq!(farm.via, Some(IpAddr::from([192, 168, 161, 1])));
    let t200 = a.table(200).expect("table 200");
    assert_eq!(t200.routes[0].via, Some(IpAddr::from([192, 168, 161, 1])));
    assert_eq!(t200.routes[0].port, 1, "192.168.161.1 is on eth1's subnet");
    let d = a.director("maildirect").expect("director");
    assert_eq!((d.scheduler, d.mode), (Scheduler::Wrr, Mode::Nat));
    assert_eq!(d.check.kind, CheckKind::Tcp);
    assert_eq!(d.check.interval, Duration::from_millis(2000));
    assert_eq!(d.servers.len(), 3);
    assert_eq!((d.servers[0].weight, d.servers[0].port), (10, None));
    assert!(d.servers[2].sorry);
    assert_eq!(d.servers[2].weight, 1, "weight defaults to 1");
    assert_eq!(d.persistence.expect("persistence").netmask_len, 32);
}

#[test]
fn example_loads_from_disk() {
    match appliance::load(example_path()) {
        Ok(a) => assert_eq!(a.ports.len(), 2),
        // A one-CPU machine has no lcore 1.
        Err(e) => {
            assert!(appliance::online_cpus() < 2, "{e}");
            assert_eq!(e.diagnostics()[0].path, "dataplane.workers[0]");
        }
    }
}

#[test]
fn names_impl() {
    let a = parse_with_cpus(FILE, BASE, 4).expect("base");
    let names: &dyn Names = &a;
    assert!(names.has_port("eth0") && names.has_port("eth1"));
    assert!(!names.has_port("eth2") && !names.has_port("ETH0"));
    assert!(names.has_director("maildirect"));
    assert!(!names.has_director("mail"));
    assert!(!names.has_table(200));
    let with_table =
        format!("{BASE}\n[[table]]\nid = 200\nroutes = {{ default = \"192.168.161.1\" }}\n");
    let a = parse_with_cpus(FILE, &with_table, 4).expect("table");
    assert!(a.has_table(200));
    assert!(
        !a.has_table(254),
        "the main table is not a `table` policy target"
    );
    assert_eq!(a.port_id("eth1"), Some(1));
}

#[test]
fn defaults() {
    let a = parse_with_cpus(FILE, "flows = \"f\"\n", 4).expect("minimal");
    assert_eq!(a.flows, PathBuf::from("conf/f"));
    assert_eq!(a.dataplane.workers, vec![1]);
    assert_eq!(a.dataplane.burst, 32);
    assert_eq!(a.dataplane.default_flow, DefaultPolicy::Permit);
    assert_eq!(
        a.control.socket,
        PathBuf::from("/run/flowgate/control.sock")
    );
    assert_eq!(a.control.metrics, None);
    let a = parse_with_cpus(FILE, BASE, 4).expect("base");
    assert_eq!(a.ports[1].rx_queues, 1);
    assert!(a.ports[1].kernel);
    assert_eq!(a.directors[0].check.kind, CheckKind::None);
    let abs = parse_with_cpus(FILE, "flows = \"/etc/flowgate/f\"\n", 4).expect("abs");
    assert_eq!(abs.flows, PathBuf::from("/etc/flowgate/f"));
}

#[test]
fn display_format() {
    let text = replace("workers = [1]", "workers = [1]\nburst = 0");
    let e = parse_with_cpus(FILE, &text, 4).expect_err("burst 0");
    assert_eq!(
        e.to_string(),
        "conf/flowgate.toml:5:9: error: dataplane.burst: burst 0 is out of range: expected 1..=512"
    );
    assert!(matches!(e, ConfigError::Invalid(_)));
}

#[test]
fn unknown_keys_refused() {
    let d = one(
        &replace("workers = [1]", "workers = [1]\nthreads = 4"),
        "dataplane.threads",
        5,
    );
    assert!(
        d.message.contains("unknown field `threads`"),
        "{}",
        d.message
    );
    assert_eq!(d.col, 1);
    one(&format!("extra = 1\n{BASE}"), "extra", 1);
    one(
        &replace("addresses = [\"192.168.0.1/24\"]", "adresses = []"),
        "port[0].adresses",
        9,
    );
    one(
        &replace(
            "weight = 10 },\n  { name = \"mail2\"",
            "weigth = 10 },\n  { name = \"mail2\"",
        ),
        "director.maildirect.servers[0].weigth",
        24,
    );
    one(
        &replace(
            "default = \"192.168.0.254\"",
            "default = { via = \"192.168.0.254\", dev = \"eth0\" }",
        ),
        "routes.default.dev",
        17,
    );
}

#[test]
fn bad_values_from_serde() {
    one(
        &replace("scheduler = \"wrr\"", "scheduler = \"fair\""),
        "director.maildirect.scheduler",
        21,
    );
    one(
        &replace("workers = [1]", "workers = [-1]"),
        "dataplane.workers[0]",
        4,
    );
    one(
        &replace("workers = [1]", "workers = [1]\ndefault_flow = \"drop\""),
        "dataplane.default_flow",
        5,
    );
    one(
        &replace("weight = 10 }", "weight = \"ten\" }"),
        "director.maildirect.servers[0].weight",
        24,
    );
    let d = one("flows = \n", "", 1);
    assert!(!d.message.is_empty());
    let d = one("[dataplane]\n", "", 1);
    assert!(d.message.contains("flows"), "{}", d.message);
}

#[test]
fn bad_values_from_validation() {
    one(
        &replace("192.168.0.1/24", "192.168.0.1"),
        "port[0].addresses[0]",
        9,
    );
    one(
        &replace("\"2001:db8::10/64\"", "\"2001:db8::10/129\""),
        "port[1].addresses[1]",
        14,
    );
    one(&replace("0000:3b:00.0", "eth3"), "port[1].device", 13);
    one(
        &replace("name = \"eth1\"", "name = \"a-very-long-port-name\""),
        "port[1].name",
        12,
    );
    one(
        &replace("name = \"eth1\"", "name = \"eth 1\""),
        "port[1].name",
        12,
    );
    one(
        &replace("workers = [1]", "workers = [1]\nburst = 1024"),
        "dataplane.burst",
        5,
    );
    one(
        &replace("weight = 10 }", "weight = 70000 }"),
        "director.maildirect.servers[0].weight",
        24,
    );
    one(
        &replace("\"10.0.0.12\"", "\"10.0.0.300\""),
        "director.maildirect.servers[1].address",
        25,
    );
    one(
        &format!("{BASE}[control]\nmetrics = \"localhost\"\n"),
        "control.metrics",
        29,
    );
    one(
        &replace("name = \"maildirect\"", "name = \"mail.direct\""),
        "director[0].name",
        20,
    );
}

#[test]
fn duplicates() {
    let d = one(
        &replace("name = \"eth1\"", "name = \"eth0\""),
        "port[1].name",
        12,
    );
    assert!(d.message.contains("line 7"), "{}", d.message);
    one(
        &replace("0000:3b:00.0", "net_af_packet0,iface=fg-eth0"),
        "port[1].device",
        13,
    );
    one(
        &replace("\"192.168.161.10/24\"", "\"192.168.0.1/24\""),
        "port[1].addresses[0]",
        14,
    );
    let d = one(
        &replace("name = \"mail2\"", "name = \"mail1\""),
        "director.maildirect.servers[1].name",
        25,
    );
    assert!(d.message.contains("line 24"), "{}", d.message);
    let dup = format!("{BASE}\n[[director]]\nname = \"maildirect\"\nscheduler = \"rr\"\nmode = \"nat\"\nservers = [{{ name = \"a\", address = \"10.0.0.1\" }}]\n");
    let d = one(&dup, "director[1].name", 30);
    assert!(d.message.contains("line 20"), "{}", d.message);
    let tables = format!("{BASE}\n[[table]]\nid = 200\n\n[[table]]\nid = 200\n");
    one(&tables, "table[1].id", 33);
    let routes = replace(
        "default = \"192.168.0.254\"",
        "default = \"192.168.0.254\"\n\"0.0.0.0/0\" = \"192.168.0.253\"",
    );
    one(&routes, "routes.\"0.0.0.0/0\"", 18);
}

#[test]
fn reserved_table_ids() {
    for id in [0, 253, 254, 255] {
        let text = format!("{BASE}\n[[table]]\nid = {id}\n");
        let d = one(&text, "table[0].id", 30);
        assert!(d.message.contains("reserved"), "{}", d.message);
    }
    one(
        &format!("{BASE}\n[[table]]\nid = 4294967296\n"),
        "table[0].id",
        30,
    );
    parse_with_cpus(FILE, &format!("{BASE}\n[[table]]\nid = 4294967295\n"), 4).expect("max id");
}

#[test]
fn families() {
    // An IPv6 gateway for an IPv4 destination.
    let d = one(
        &replace(
            "default = \"192.168.0.254\"",
            "default = \"192.168.0.254\"\n\"10.0.0.0/8\" = { via = \"2001:db8::1\" }",
        ),
        "routes.\"10.0.0.0/8\".via",
        18,
    );
    assert!(d.message.contains("family"), "{}", d.message);
    // A string route.
    one(
        &replace(
            "default = \"192.168.0.254\"",
            "default = \"192.168.0.254\"\n\"2001:db8:1::/48\" = \"192.168.0.9\"",
        ),
        "routes.\"2001:db8:1::/48\"",
        18,
    );
    // An IPv6 default route takes the gateway's family.
    let a = parse_with_cpus(
        FILE,
        &replace(
            "default = \"192.168.0.254\"",
            "default = \"192.168.0.254\"\n\"::/0\" = \"2001:db8::1\"",
        ),
        4,
    )
    .expect("v6 default");
    assert_eq!(a.main.routes[1].port, 1);
    // Servers of two families in one director.
    one(
        &replace("\"10.0.0.12\"", "\"2001:db8::12\""),
        "director.maildirect.servers[1].address",
        25,
    );
    // Host bits in a destination.
    let d = one(
        &replace(
            "default = \"192.168.0.254\"",
            "default = \"192.168.0.254\"\n\"10.1.0.0/8\" = \"192.168.0.9\"",
        ),
        "routes.\"10.1.0.0/8\"",
        18,
    );
    assert!(d.message.contains("10.0.0.0/8"), "{}", d.message);
}

#[test]
fn route_ports_and_gateways() {
    let unknown = replace(
        "default = \"192.168.0.254\"",
        "default = { via = \"192.168.0.254\", port = \"eth9\" }",
    );
    let d = one(&unknown, "routes.default.port", 17);
    assert!(d.message.contains("eth9"), "{}", d.message);
    one(
        &replace("default = \"192.168.0.254\"", "default = \"172.16.0.1\""),
        "routes.default",
        17,
    );
    one(
        &replace(
            "default = \"192.168.0.254\"",
            "default = { via = \"192.168.0.254\", port = \"eth1\" }",
        ),
        "routes.default.via",
        17,
    );
    one(
        &replace("default = \"192.168.0.254\"", "default = {}"),
        "routes.default",
        17,
    );
    let table =
        format!("{BASE}\n[[table]]\nid = 7\nroutes = {{ default = {{ port = \"nope\" }} }}\n");
    one(&table, "table[0].routes.default.port", 31);
    let a = parse_with_cpus(
        FILE,
        &replace(
            "default = \"192.168.0.254\"",
            "default = \"192.168.0.254\"\n\"172.16.0.0/12\" = { port = \"eth1\" }",
        ),
        4,
    )
    .expect("connected route");
    assert_eq!((a.main.routes[1].via, a.main.routes[1].port), (None, 1));
}

#[test]
fn lcores() {
    assert!(check_workers(&[0, 1], 2).is_empty());
    assert_eq!(
        check_workers(&[1, 2], 2)
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        [1]
    );
    let text = replace("workers = [1]", "workers = [1, 7, 1]");
    let errs = errors(&text);
    let got: Vec<_> = errs
        .iter()
        .map(|d| (d.path.as_str(), d.line, d.col))
        .collect();
    assert_eq!(
        got,
        [
            ("dataplane.workers[1]", 4, 15),
            ("dataplane.workers[2]", 4, 18)
        ]
    );
    assert!(
        errs[0].message.contains("does not exist"),
        "{}",
        errs[0].message
    );
    parse_with_cpus(FILE, &text.replace("[1, 7, 1]", "[1, 7]"), 8).expect("8 CPUs");
    one(
        &replace("workers = [1]", "workers = []"),
        "dataplane.workers",
        4,
    );
    // One CPU: lcore 1 does not exist.
    assert!(parse_with_cpus(FILE, BASE, 1).is_err());
}

#[test]
fn max_connections_bounds_the_director() {
    let a = parse_with_cpus(FILE, BASE, 4).expect("base");
    assert_eq!(a.directors[0].max_connections, 65536, "the default");
    let big = replace(
        "mode = \"nat\"",
        "mode = \"nat\"\nmax_connections = 1000000",
    );
    let a = parse_with_cpus(FILE, &big, 4).expect("1M");
    assert_eq!(a.directors[0].max_connections, 1_000_000);
    for bad in ["0", "16777217"] {
        let text = replace(
            "mode = \"nat\"",
            &format!("mode = \"nat\"\nmax_connections = {bad}"),
        );
        let d = one(&text, "director.maildirect.max_connections", 23);
        assert!(d.message.contains("1..=16777216"), "{}", d.message);
    }
}

#[test]
fn server_port_needs_nat() {
    let text = replace("mode = \"nat\"", "mode = \"gateway\"").replacen(
        "weight = 10 }",
        "weight = 10, port = 2525 }",
        1,
    );
    let d = one(&text, "director.maildirect.servers[0].port", 24);
    assert!(d.message.contains("nat"), "{}", d.message);
    let nat = replace("weight = 10 }", "weight = 10, port = 2525 }");
    let a = parse_with_cpus(FILE, &nat, 4).expect("nat port");
    assert_eq!(a.directors[0].servers[0].port, Some(2525));
}

#[test]
fn checks() {
    let with = |check: &str| {
        replace(
            "mode = \"nat\"",
            &format!("mode = \"nat\"\ncheck = {check}"),
        )
    };
    one(
        &with("{ kind = \"tcp\" }"),
        "director.maildirect.check.kind",
        23,
    );
    one(
        &with("{ kind = \"tcp\", port = 25, uri = \"/\" }"),
        "director.maildirect.check.uri",
        23,
    );
    one(
        &with("{ kind = \"icmp\", port = 25 }"),
        "director.maildirect.check.port",
        23,
    );
    one(
        &with("{ kind = \"tcp\", port = 25, interval_ms = 100, timeout_ms = 200 }"),
        "director.maildirect.check.timeout_ms",
        23,
    );
    one(
        &with("{ kind = \"http\", port = 80, uri = \"x\" }"),
        "director.maildirect.check.uri",
        23,
    );
    one(
        &with("{ kind = \"tcp\", port = 25, fall = 0 }"),
        "director.maildirect.check.fall",
        23,
    );
    one(
        &with("{ kind = \"ping\" }"),
        "director.maildirect.check.kind",
        23,
    );
    let a = parse_with_cpus(FILE, &with("{ kind = \"http\", port = 80 }"), 4).expect("http");
    assert_eq!(
        a.directors[0].check.kind,
        CheckKind::Http {
            uri: "/".into(),
            status: 200
        }
    );
}

#[test]
fn all_errors_reported_together() {
    let text = replace("192.168.0.1/24", "192.168.0.1")
        .replacen("name = \"eth1\"", "name = \"eth0\"", 1)
        .replacen("weight = 10 }", "weight = 70000 }", 1)
        + "\n[[table]]\nid = 255\n";
    let got = where_(&text);
    assert_eq!(
        got,
        [
            ("port[0].addresses[0]".to_string(), 9),
            ("port[1].name".to_string(), 12),
            ("director.maildirect.servers[0].weight".to_string(), 24),
            ("table[0].id".to_string(), 30),
        ]
    );
    let e = parse_with_cpus(FILE, &text, 4).expect_err("errors");
    assert_eq!(e.to_string().lines().count(), 4);
}

#[test]
fn io_error_names_file() {
    let e = appliance::load("/nonexistent/flowgate.toml").expect_err("no file");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/flowgate.toml: error: cannot read"),
        "{e}"
    );
}

#[test]
fn missing_keys_and_syntax() {
    let d = one("flows = \"x\"\n[[port]]\nname = \"eth0\"\n", "port[0]", 2);
    assert!(
        d.message.contains("missing field `device`"),
        "{}",
        d.message
    );
    let d = one(
        &replace("{ name = \"mail1\", ", "{ "),
        "director.maildirect.servers[0]",
        24,
    );
    assert!(d.message.contains("missing field `name`"), "{}", d.message);
    let d = one("flows = \"x\"\n[dataplane\n", "", 2);
    assert!(!d.message.contains('\n'), "{}", d.message);
}

/// The complete example in `docs/config.md` is the example file's config.
#[test]
fn docs_example_matches_the_example_file() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md"))
            .expect("docs/config.md");
    let tail = docs.split("## A complete example").nth(1).expect("section");
    let block = tail
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("block");
    let name = example_path().to_string_lossy().into_owned();
    let from_docs = parse_with_cpus(&name, block, 2).expect("docs example");
    let text = std::fs::read_to_string(example_path()).expect("example");
    let from_file = parse_with_cpus(&name, &text, 2).expect("example");
    assert_eq!(from_docs, from_file);
}

#[test]
fn port_peer_names_another_port() {
    let text = replace(
        "addresses = [\"192.168.0.1/24\"]\n",
        "addresses = [\"192.168.0.1/24\"]\npeer = \"eth1\"\n",
    );
    let a = parse_with_cpus(FILE, &text, 4).expect("peer eth1");
    assert_eq!(a.ports[0].peer, Some(1));
    assert_eq!(a.ports[1].peer, None);

    let text = replace(
        "addresses = [\"192.168.0.1/24\"]\n",
        "addresses = [\"192.168.0.1/24\"]\npeer = \"eth9\"\n",
    );
    let d = one(&text, "port[0].peer", 10);
    assert!(d.message.contains("unknown port `eth9`"), "{}", d.message);

    let text = replace(
        "addresses = [\"192.168.0.1/24\"]\n",
        "addresses = [\"192.168.0.1/24\"]\npeer = \"eth0\"\n",
    );
    one(&text, "port[0].peer", 10);
}

/// `flowgate run` refuses a director of 65,535 servers or more (issue 17): the config check
/// refuses it first, so `flowgate check --config` and `run` agree.
#[test]
fn more_servers_than_the_dataplane_numbers_are_refused() {
    let servers = |n: usize| {
        let mut s = String::from(
            "\n[[director]]\nname = \"big\"\nscheduler = \"wrr\"\nmode = \"nat\"\nservers = [\n",
        );
        for i in 0..n {
            s.push_str(&format!(
                "  {{ name = \"s{i}\", address = \"10.{}.{}.{}\" }},\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ));
        }
        s.push_str("]\n");
        s
    };
    let t = std::time::Instant::now();
    let d = one(
        &format!("{BASE}{}", servers(usize::from(u16::MAX))),
        "director.big.servers",
        33,
    );
    assert!(
        d.message
            .contains("65535 servers: a director has at most 65534"),
        "{d}"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

/// Many routes are checked in linear time; many duplicates give a bounded report.
#[test]
fn a_hundred_thousand_routes_load_fast_and_duplicates_are_bounded() {
    let mut routes = String::new();
    for i in 0..30_000u32 {
        routes.push_str(&format!(
            "\"10.{}.{}.0/24\" = \"192.168.0.254\"\n",
            i >> 8 & 255,
            i & 255
        ));
    }
    let text = BASE.replace("default = \"192.168.0.254\"\n", &routes);
    let t = std::time::Instant::now();
    let app = parse_with_cpus(FILE, &text, 4).expect("valid");
    assert_eq!(app.main.routes.len(), 30_000);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());

    // the same destinations twice, spelled differently: every second one a duplicate
    let mut dups = String::new();
    for i in 0..5_000u32 {
        dups.push_str(&format!("\"2001:db8:{i:x}::/48\" = \"2001:db8::1\"\n"));
        dups.push_str(&format!("\"2001:0db8:{i:x}::/48\" = \"2001:db8::1\"\n"));
    }
    let text = BASE.replace("default = \"192.168.0.254\"\n", &dups);
    let t = std::time::Instant::now();
    let diags = errors(&text);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(diags.len(), appliance::MAX_ERRORS + 1);
    assert!(
        diags[0].message.contains("is already routed at line"),
        "{}",
        diags[0]
    );
    let last = diags.last().expect("last");
    assert_eq!(
        last.message,
        format!("{} more errors not shown", 5_000 - appliance::MAX_ERRORS)
    );
}

#[test]
fn log_levels_default_parse_and_refuse() {
    use flowgate_config::appliance::{Log, LogLevel};
    let app = parse_with_cpus(FILE, BASE, 4).expect("base");
    assert_eq!(app.log, Log::default());
    assert_eq!(
        (app.log.level, app.log.dpdk),
        (LogLevel::Info, LogLevel::Warn)
    );
    let text = format!("{BASE}\n[log]\nlevel = \"debug\"\ndpdk = \"error\"\n");
    let app = parse_with_cpus(FILE, &text, 4).expect("log levels");
    assert_eq!(
        (app.log.level, app.log.dpdk),
        (LogLevel::Debug, LogLevel::Error)
    );
    let text = format!("{BASE}\n[log]\nlevel = \"loud\"\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let line = BASE.lines().count() + 3;
    assert_eq!(errs[0].line, line, "{errs:#?}");
    assert!(errs[0].message.contains("loud"), "{errs:#?}");
    assert_eq!("trace".parse::<LogLevel>(), Ok(LogLevel::Trace));
    assert!("verbose".parse::<LogLevel>().is_err());
}

#[test]
fn static_neighbours_are_checked_per_port() {
    let with = |n: &str| {
        replace(
            "addresses = [\"192.168.161.10/24\", \"2001:db8::10/64\"]\n",
            &format!(
                "addresses = [\"192.168.161.10/24\", \"2001:db8::10/64\"]\nneighbours = {n}\n"
            ),
        )
    };
    let a = parse_with_cpus(
        FILE,
        &with(r#"{ "192.168.161.1" = "02:00:00:00:01:01", "2001:db8::1" = "02:00:00:00:01:02" }"#),
        4,
    )
    .expect("two neighbours");
    assert_eq!(
        a.ports[1].neighbours,
        vec![
            (
                IpAddr::from([192, 168, 161, 1]),
                appliance::MacAddr([2, 0, 0, 0, 1, 1])
            ),
            (
                "2001:db8::1".parse().expect("v6"),
                appliance::MacAddr([2, 0, 0, 0, 1, 2])
            ),
        ]
    );
    assert!(a.ports[0].neighbours.is_empty(), "none by default");

    // every error names the neighbour's key path and line (line 15: the neighbours line)
    let d = one(
        &with(r#"{ "10.9.9.9" = "02:00:00:00:01:01" }"#),
        "port[1].neighbours.\"10.9.9.9\"",
        15,
    );
    assert!(
        d.message.contains("not on a subnet of port `eth1`"),
        "{}",
        d.message
    );
    let d = one(
        &with(r#"{ "192.168.161.300" = "02:00:00:00:01:01" }"#),
        "port[1].neighbours.\"192.168.161.300\"",
        15,
    );
    assert!(
        d.message.contains("not a neighbour address"),
        "{}",
        d.message
    );
    let d = one(
        &with(r#"{ "192.168.161.1" = "01:00:5e:00:00:01" }"#),
        "port[1].neighbours.\"192.168.161.1\"",
        15,
    );
    assert!(d.message.contains("unicast"), "{}", d.message);
    let d = one(
        &with(r#"{ "192.168.161.1" = "nope" }"#),
        "port[1].neighbours.\"192.168.161.1\"",
        15,
    );
    assert!(d.message.contains("not a MAC address"), "{}", d.message);
    let d = one(
        &with(r#"{ "192.168.161.10" = "02:00:00:00:01:01" }"#),
        "port[1].neighbours.\"192.168.161.10\"",
        15,
    );
    assert!(d.message.contains("port `eth1` itself"), "{}", d.message);
    // one address written twice
    let d = one(
        &with(r#"{ "2001:db8::1" = "02:00:00:00:01:01", "2001:DB8::1" = "02:00:00:00:01:02" }"#),
        "port[1].neighbours.\"2001:DB8::1\"",
        15,
    );
    assert!(d.message.contains("already given"), "{}", d.message);
    // a value of the wrong type is refused by the reader
    assert!(!errors(&with(r#"{ "192.168.161.1" = 5 }"#)).is_empty());
}

#[test]
fn mbufs_bounds_the_packet_pool() {
    let with = |n: &str| replace("workers = [1]\n", &format!("workers = [1]\nmbufs = {n}\n"));
    let a = parse_with_cpus(FILE, &with("1048576"), 4).expect("mbufs");
    assert_eq!(a.dataplane.mbufs, Some(1 << 20));
    let a = parse_with_cpus(FILE, BASE, 4).expect("default");
    assert_eq!(a.dataplane.mbufs, None);
    let d = one(&with("100"), "dataplane.mbufs", 5);
    assert!(d.message.contains("out of range"), "{}", d.message);
    one(&with("99999999999"), "dataplane.mbufs", 5);
}

#[test]
fn sync_section_loads_with_defaults() {
    let a = parse_with_cpus(
        FILE,
        &format!(
            "{BASE}[sync]\nlisten = \"10.50.0.1:8848\"\npeers = [\"10.50.0.2:8848\"]\nkey_file = \"sync.key\"\n"
        ),
        4,
    )
    .expect("valid");
    let s = a.sync.expect("sync on");
    assert_eq!(s.listen, "10.50.0.1:8848".parse().expect("addr"));
    assert_eq!(s.peers, vec!["10.50.0.2:8848".parse().expect("addr")]);
    assert_eq!(s.group, None);
    assert_eq!(s.mtu, appliance::DEFAULT_SYNC_MTU);
    assert_eq!(s.interval, Duration::from_millis(50));
    // the key file is resolved against the config's directory
    assert_eq!(
        s.key,
        appliance::SyncKey::File(PathBuf::from("conf/sync.key"))
    );
    // the secret is never printed
    let inline = parse_with_cpus(
        FILE,
        &format!(
            "{BASE}[sync]\nlisten = \"10.50.0.1:8848\"\npeers = [\"10.50.0.2:8848\"]\nkey = \"0123456789abcdef-secret\"\nmtu = 1400\ninterval_ms = 20\n"
        ),
        4,
    )
    .expect("valid")
    .sync
    .expect("sync on");
    assert_eq!(
        inline.key.read().expect("inline key"),
        b"0123456789abcdef-secret"
    );
    assert!(!format!("{inline:?}").contains("secret"));
    assert_eq!(
        (inline.mtu, inline.interval),
        (1400, Duration::from_millis(20))
    );
    assert!(parse_with_cpus(FILE, BASE, 4)
        .expect("valid")
        .sync
        .is_none());
}

#[test]
fn sync_errors_name_their_keys() {
    let head = format!("{BASE}[sync]\n");
    // line of the first [sync] key
    let l = BASE.lines().count() + 2;
    let key = "key = \"0123456789abcdef\"\n";
    let ok_peer = "peers = [\"10.50.0.2:8848\"]\n";
    let d = one(
        &format!("{head}listen = \"10.50.0.1\"\n{ok_peer}{key}"),
        "sync.listen",
        l,
    );
    assert!(d.message.contains("ADDRESS:PORT"), "{}", d.message);
    one(
        &format!("{head}listen = \"10.50.0.1:8848\"\npeers = [\"10.50.0.2:8848\", \"[fd00::2]:8848\"]\n{key}"),
        "sync.peers[1]",
        l + 1,
    );
    one(
        &format!("{head}listen = \"10.50.0.1:8848\"\npeers = [\"10.50.0.1:8848\"]\n{key}"),
        "sync.peers[0]",
        l + 1,
    );
    let d = one(
        &format!("{head}listen = \"10.50.0.1:8848\"\n{ok_peer}key = \"short\"\n"),
        "sync.key",
        l + 2,
    );
    assert!(d.message.contains("at least 16"), "{}", d.message);
    one(
        &format!("{head}listen = \"10.50.0.1:8848\"\n{ok_peer}"),
        "sync.listen",
        l,
    );
    one(
        &format!("{head}listen = \"10.50.0.1:8848\"\n{ok_peer}{key}key_file = \"k\"\n"),
        "sync.key",
        l + 2,
    );
    one(
        &format!("{head}listen = \"10.50.0.1:8848\"\n{ok_peer}{key}mtu = 100\n"),
        "sync.mtu",
        l + 3,
    );
    one(
        &format!("{head}listen = \"10.50.0.1:8848\"\n{ok_peer}{key}interval_ms = 0\n"),
        "sync.interval_ms",
        l + 3,
    );
    one(
        &format!("{head}listen = \"10.50.0.1:8848\"\n{ok_peer}{key}group = \"239.0.0.81:8848\"\n"),
        "sync.group",
        l + 3,
    );
    one(
        &format!("{head}listen = \"10.50.0.1:8848\"\n{ok_peer}{key}group = \"10.0.0.1:8848\"\ninterface = \"eth9\"\n"),
        "sync.group",
        l + 3,
    );
    // unknown keys are refused, with their path
    one(
        &format!("{head}listen = \"10.50.0.1:8848\"\n{ok_peer}{key}port = 1\n"),
        "sync.port",
        l + 3,
    );
    // nobody to talk to
    one(
        &format!("{head}listen = \"10.50.0.1:8848\"\n{key}"),
        "sync.listen",
        l,
    );
}
