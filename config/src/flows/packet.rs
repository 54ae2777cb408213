//! A packet as the flows language sees it: what `holds` reads, nothing more.
//!
//! This is the input of the reference interpreter and of `flowgate classify`'s packet lines;
//! the dataplane builds the same facts from real headers. [`parse_packet_line`] reads the
//! `key=value` packet lines of `flowgate classify` (flows.md "Packet line" and Clarifications).

use std::net::IpAddr;

use super::parser::{dec, icmp_type_name};

use super::ast::{Family, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// What the L4 header of a packet gave the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP or UDP ports.
    Ports { sport: u16, dport: u16 },
    /// ICMP (ICMPv6 in IPv6) type.
    Icmp { icmptype: u8 },
    /// A non-first fragment: no L4 header at all.
    Fragment,
    /// Another protocol, or no header the classifier reads.
    Other,
}

/// The facts of one packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Input port (flows) or output port chosen by routing (outflows).
    pub iface: String,
    /// IP protocol number as carried by the packet.
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
}

impl Packet {
    pub fn family(&self) -> Family {
        match self.src {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn is_fragment(&self) -> bool {
        self.l4 == L4::Fragment
    }

    /// TCP or UDP ports, if the packet carries them (not a non-first fragment).
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Ports { sport, dport } if self.proto == PROTO_TCP || self.proto == PROTO_UDP => {
                Some((sport, dport))
            }
            _ => None,
        }
    }

    /// The ICMP type, if the packet is ICMP of its family and not a non-first fragment.
    pub fn icmp_type(&self) -> Option<u8> {
        let icmp = match self.family() {
            Family::V4 => PROTO_ICMP,
            Family::V6 => PROTO_ICMPV6,
        };
        match self.l4 {
            L4::Icmp { icmptype } if self.proto == icmp => Some(icmptype),
            _ => None,
        }
    }
}

/// The keys of a packet line.
const KEYS: [&str; 8] = [
    "iface", "proto", "src", "dst", "sport", "dport", "icmptype", "frag",
];

/// Whether `classify` skips this input line: blank, or a `#` comment (first non-blank `#`).
pub fn is_skipped_line(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// The packet lines of a whole input with their 1-based physical line numbers, skipping blank
/// and comment lines (which still count for the numbering).
pub fn parse_packet_lines(
    input: &str,
) -> impl Iterator<Item = (usize, Result<Packet, String>)> + '_ {
    input
        .lines()
        .enumerate()
        .filter(|(_, l)| !is_skipped_line(l))
        .map(|(i, l)| (i + 1, parse_packet_line(l)))
}

/// One packet line: space-separated `key=value` in any order, e.g.
/// `iface=eth0 proto=tcp src=192.168.0.5 dst=192.168.0.1 sport=40000 dport=22`.
///
/// `iface`, `proto`, `src`, `dst` are required; `sport`/`dport` are required for tcp/udp and
/// `icmptype` for ICMP of the packet's family, unless `frag=1` (a non-first fragment), in which
/// case L4 keys are ignored. An unknown or repeated key, or an L4 key the protocol does not
/// have, is an error; the message names the key. Blank and comment lines are errors here:
/// filter them with [`is_skipped_line`] first.
pub fn parse_packet_line(line: &str) -> Result<Packet, String> {
    let mut values: [Option<&str>; KEYS.len()] = [None; KEYS.len()];
    for word in line.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!("`{word}` is not key=value"));
        };
        let Some(slot) = KEYS.iter().position(|k| *k == key) else {
            return Err(format!(
                "unknown key `{key}` (expected one of {})",
                KEYS.join(", ")
            ));
        };
        if values[slot].is_some() {
            return Err(format!("key `{key}` given twice"));
        }
        if value.is_empty() {
            return Err(format!("key `{key}` has an empty value"));
        }
        values[slot] = Some(value);
    }
    let [iface, proto, src, dst, sport, dport, icmptype, frag] = values;
    if values.iter().all(Option::is_none) {
        return Err("empty packet line".to_string());
    }
    let iface = required("iface", iface)?;
    let proto_s = required("proto", proto)?;
    let src = addr("src", required("src", src)?)?;
    let dst = addr("dst", required("dst", dst)?)?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(
            "keys `src` and `dst`: addresses of different families (IPv4 and IPv6)".to_string(),
        );
    }
    let family = if src.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let icmp = match family {
        Family::V4 => PROTO_ICMP,
        Family::V6 => PROTO_ICMPV6,
    };
    let proto = match proto_s {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "icmp" => icmp,
        _ => match dec(proto_s).map(u8::try_from) {
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                return Err(format!(
                    "key `proto`: {proto_s} out of range (expected 0..=255)"
                ))
            }
            None => {
                return Err(format!(
                    "key `proto`: unknown protocol `{proto_s}` (expected tcp, udp, icmp or 0..=255)"
                ))
            }
        },
    };
    let fragment = match frag {
        None | Some("0") => false,
        Some("1") => true,
        Some(f) => return Err(format!("key `frag`: `{f}` (expected 0 or 1)")),
    };
    let l4 = if fragment {
        L4::Fragment
    } else if proto == PROTO_TCP || proto == PROTO_UDP {
        if icmptype.is_some() {
            return Err(format!(
                "key `icmptype` given for proto {proto_s} (only for icmp)"
            ));
        }
        let sport = port("sport", required("sport", sport)?)?;
        let dport = port("dport", required("dport", dport)?)?;
        L4::Ports { sport, dport }
    } else {
        for (key, v) in [("sport", sport), ("dport", dport)] {
            if v.is_some() {
                return Err(format!(
                    "key `{key}` given for proto {proto_s} (only for tcp and udp)"
                ));
            }
        }
        if proto == icmp {
            let t = required("icmptype", icmptype)?;
            let icmptype = match dec(t).map(u8::try_from) {
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    return Err(format!(
                        "key `icmptype`: {t} out of range (expected 0..=255)"
                    ))
                }
                None => icmp_type_name(t, family).ok_or_else(|| {
                    format!("key `icmptype`: unknown ICMP type `{t}` (expected 0..=255)")
                })?,
            };
            L4::Icmp { icmptype }
        } else {
            if icmptype.is_some() {
                return Err(format!(
                    "key `icmptype` given for proto {proto_s} (only for icmp)"
                ));
            }
            L4::Other
        }
    };
    Ok(Packet {
        iface: iface.to_string(),
        proto,
        src,
        dst,
        l4,
    })
}

fn required<'a>(key: &str, v: Option<&'a str>) -> Result<&'a str, String> {
    v.ok_or_else(|| format!("missing key `{key}`"))
}

fn addr(key: &str, v: &str) -> Result<IpAddr, String> {
    v.parse()
        .map_err(|_| format!("key `{key}`: malformed address `{v}` (expected IPv4 or IPv6)"))
}

fn port(key: &str, v: &str) -> Result<u16, String> {
    match dec(v).map(u16::try_from) {
        Some(Ok(p)) => Ok(p),
        Some(Err(_)) => Err(format!(
            "key `{key}`: port {v} out of range (expected 0..=65535)"
        )),
        None => Err(format!(
            "key `{key}`: malformed port `{v}` (expected 0..=65535)"
        )),
    }
}
