//! Adversarial: tries to read outside what the manifest grants and prints
//! what happened to each attempt, one line each.
fn attempt(path: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!("{path}: READ {} bytes", bytes.len()),
        Err(e) => format!("{path}: denied ({:?})", e.kind()),
    }
}
fn main() {
    let mut lines = Vec::new();
    for path in [
        "/etc/passwd",
        "/pkg/../../../../etc/passwd",
        "/pkg/../tally.toml",
        "/pkg/secret.txt",
        "../secret.txt",
        "/proc/self/environ",
    ] {
        lines.push(attempt(path));
    }
    match std::fs::write("/pkg/granted.txt", b"overwrite") {
        Ok(()) => lines.push("/pkg/granted.txt: WRITTEN".into()),
        Err(e) => lines.push(format!("/pkg/granted.txt: write denied ({:?})", e.kind())),
    }
    lines.push(attempt("/pkg/granted.txt"));
    let entries = std::fs::read_dir("/").map(|d| d.count()).unwrap_or(0);
    lines.push(format!("entries in /: {entries}"));
    tally_guest::write_output((lines.join("\n") + "\n").as_bytes());
}
