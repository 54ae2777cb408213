//! Reading a config or flows file: regular files only, and at most a cap of bytes.
//!
//! A device (`/dev/zero`), a FIFO with no writer or a socket would make a plain
//! `read_to_string` grow without bound or block for ever. The file is opened with
//! `O_NONBLOCK` (so opening a FIFO does not wait for a writer), checked with `fstat` to be a
//! regular file, then read for at most `cap + 1` bytes, so a file that grows while it is read
//! is still refused instead of read whole.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest flows file read (a 100K-rule file is about 9 MB).
pub const MAX_FLOWS_FILE: u64 = 256 << 20;

/// The largest appliance config read.
pub const MAX_CONFIG_FILE: u64 = 64 << 20;

/// `O_NONBLOCK` on Linux (x86_64, aarch64 and the other generic-ABI targets).
const O_NONBLOCK: i32 = 0o4000;

/// Reads the regular file at `path` as UTF-8, refusing anything else and anything larger than
/// `cap` bytes. The errors say which (`InvalidInput`: not a regular file; `FileTooLarge`).
pub fn read_regular(path: &Path, cap: u64) -> io::Result<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO, socket or directory)",
        ));
    }
    let too_large = || {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {cap} bytes"),
        )
    };
    if meta.len() > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_up_to_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, "flow a permit\n").expect("write");
        assert_eq!(read_regular(&p, 100).expect("read"), "flow a permit\n");
        assert_eq!(read_regular(&p, 14).expect("exact cap"), "flow a permit\n");
        let e = read_regular(&p, 13).expect_err("over the cap");
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn refuses_devices_directories_and_fifos_without_blocking() {
        let e = read_regular(Path::new("/dev/zero"), 1 << 20).expect_err("device");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read_regular(dir.path(), 1 << 20).expect_err("directory");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        // no writer: a blocking open would hang here
        let e = read_regular(&fifo, 1 << 20).expect_err("fifo");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
