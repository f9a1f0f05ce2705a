//! Adversarial: writes to stdout forever. Must end at the output limit.
use std::io::Write;
fn main() {
    let chunk = vec![b'x'; 64 << 10];
    let mut out = std::io::stdout().lock();
    loop {
        if out.write_all(&chunk).is_err() {
            // The host refused the write: keep trying, as a hostile guest would.
            continue;
        }
    }
}
