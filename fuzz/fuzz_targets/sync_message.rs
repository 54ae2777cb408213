//! Connection sync messages (`control::sync::wire`) from any bytes: never a panic, with the
//! key or without. The bytes are tried as a whole datagram (almost always refused at the
//! HMAC), then as a body tagged with the key, so that decoding goes past the HMAC into the
//! header and entries; a body that decodes encodes back to the same bytes.
#![no_main]

use flowgate_control::sync::wire::{decode, tag, Encoder};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"flowgate fuzz sync key";

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, KEY);
    let mut msg = data.to_vec();
    msg.extend_from_slice(&tag(KEY, data));
    let Ok((h, entries)) = decode(&msg, KEY) else {
        return;
    };
    let mut enc = Encoder::new(65_535);
    for e in &entries {
        enc.push(e);
    }
    let again = enc.finish(h.kind, h.sender, h.boot, h.seq, KEY);
    assert_eq!(again, &msg[..], "{h:?}");
});
