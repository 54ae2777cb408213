//! Control socket requests (one JSON line, `control::protocol::Request`) from any bytes: never
//! a panic, and a request that parses serializes to JSON that parses to the same request. The
//! text a request carries goes where the control thread sends it: a `trace` packet line to the
//! packet-line parser, the flows of `check`/`diff`/`apply` to the flows loader.
#![no_main]

use flowgate_config::flows::{load, parse_packet_line, render};
use flowgate_control::protocol::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let text = serde_json::to_string(&req).expect("a request serializes");
    let again: Request = serde_json::from_str(&text).expect("its JSON parses");
    assert_eq!(again, req, "{text}");
    match &req {
        Request::Trace { packet, .. } => {
            let _ = parse_packet_line(packet);
        }
        Request::Check { flows, name }
        | Request::Diff { flows, name }
        | Request::Apply { flows, name } => {
            let name = name.as_deref().unwrap_or("request");
            if let Err(r) = load(name, flows, None) {
                let _ = render(&r.path, &r.source, &r.diagnostics, false);
            }
        }
        _ => {}
    }
});
