//! Adversarial: writes to stdout forever. Must end at the output limit.
//!
//! With `once [stdout|stderr]`, it writes one 64 KiB chunk to that stream,
//! ignores the refusal and exits 0: a refused write must still be the
//! stream's limit, never a silently truncated `ok`.
use std::io::Write;
fn main() {
    let chunk = vec![b'x'; 64 << 10];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("once") {
        let _ = match args.get(1).map(String::as_str) {
            Some("stderr") => std::io::stderr().write_all(&chunk),
            _ => std::io::stdout().write_all(&chunk),
        };
        std::process::exit(0);
    }
    let mut out = std::io::stdout().lock();
    loop {
        if out.write_all(&chunk).is_err() {
            // The host refused the write: keep trying, as a hostile guest would.
            continue;
        }
    }
}
