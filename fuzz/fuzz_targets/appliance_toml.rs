//! The appliance config (TOML) on any text: never a panic; errors render; a config that
//! validates builds its directors' snapshots (schedulers' tables) without a panic.
#![no_main]

use flowgate_config::appliance::parse_with_cpus;
use flowgate_dataplane::director::DirectorSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_with_cpus("fuzz.toml", text, 4) {
        Ok(app) => {
            let _ = DirectorSet::build(&app.directors);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
