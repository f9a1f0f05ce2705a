//! Prints what WASI says about each path given (relative to `/pkg`): the
//! raw `filestat` fields from `path_filestat_get` on the `/pkg` directory,
//! and from `fd_filestat_get` on the opened path, one line each:
//! `PATH via dev ino filetype nlink size atim mtim ctim`. Then the same for
//! the `/pkg` directory itself. Every field must be the same on every host.

use std::os::fd::AsRawFd;

use tally_test_programs::wasi::{fd_filestat_get, path_filestat_get};

/// The `/pkg` preopen (after stdin, stdout and stderr).
const PKG_FD: u32 = 3;

fn fields(stat: &[u8; 64]) -> String {
    let u64_at = |at: usize| u64::from_le_bytes(stat[at..at + 8].try_into().unwrap());
    format!(
        "{} {} {} {} {} {} {} {}",
        u64_at(0),
        u64_at(8),
        stat[16],
        u64_at(24),
        u64_at(32),
        u64_at(40),
        u64_at(48),
        u64_at(56)
    )
}

fn main() {
    let mut out = String::new();
    for path in std::env::args().skip(1) {
        let mut stat = [0u8; 64];
        let errno =
            unsafe { path_filestat_get(PKG_FD, 0, path.as_ptr(), path.len(), stat.as_mut_ptr()) };
        assert_eq!(errno, 0, "path_filestat_get {path}");
        out.push_str(&format!("{path} path {}\n", fields(&stat)));
        match std::fs::File::open(format!("/pkg/{path}")) {
            Ok(file) => {
                let fd = file.as_raw_fd() as u32;
                let errno = unsafe { fd_filestat_get(fd, stat.as_mut_ptr()) };
                assert_eq!(errno, 0, "fd_filestat_get {path}");
                out.push_str(&format!("{path} fd {}\n", fields(&stat)));
            }
            Err(e) => out.push_str(&format!("{path} fd cannot open: {e}\n")),
        }
    }
    let mut stat = [0u8; 64];
    let errno = unsafe { fd_filestat_get(PKG_FD, stat.as_mut_ptr()) };
    assert_eq!(errno, 0, "fd_filestat_get /pkg");
    out.push_str(&format!("/pkg fd {}\n", fields(&stat)));
    print!("{out}");
}
