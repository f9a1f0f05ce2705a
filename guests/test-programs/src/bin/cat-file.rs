//! Prints the file named by its first argument (a path under /pkg).
fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| tally_guest::fail(2, "usage: cat-file PATH"));
    match std::fs::read(&path) {
        Ok(bytes) => tally_guest::write_output(&bytes),
        Err(e) => tally_guest::fail(1, &format!("{path}: {e}")),
    }
}
