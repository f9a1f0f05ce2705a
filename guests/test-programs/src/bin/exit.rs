//! Exits with the code given as its first argument (default 7), after a line
//! on stderr.
fn main() {
    let code = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    eprintln!("exiting with {code}");
    std::process::exit(code)
}
