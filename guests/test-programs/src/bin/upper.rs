//! Uppercases stdin (ASCII) and appends the stage's args and env: a second
//! stage for pipeline tests.
fn main() {
    let mut out = tally_guest::read_input().to_ascii_uppercase();
    let args: Vec<String> = std::env::args().collect();
    let mut env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    out.extend_from_slice(format!("\nargs={args:?}\nenv={env:?}\n").as_bytes());
    tally_guest::write_output(&out);
}
