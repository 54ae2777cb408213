//! The flows parser and linter on any text: never a panic, and a file that loads prints back
//! (`flows::print`, the canonical text `flowctl diff` and persistence use) to text that loads
//! to the same file. Rejected text renders its diagnostics.
#![no_main]

use flowgate_config::flows::{load, print, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match load("fuzz.flows", src, None) {
        Ok(loaded) => {
            let text = print(&loaded.file);
            match load("printed.flows", &text, None) {
                Ok(again) => assert_eq!(again.file, loaded.file, "printed as:\n{text}"),
                Err(r) => panic!(
                    "the printed file does not load:\n{text}\n{}",
                    render(&r.path, &r.source, &r.diagnostics, false)
                ),
            }
        }
        Err(r) => {
            let _ = render(&r.path, &r.source, &r.diagnostics, false);
        }
    }
});
