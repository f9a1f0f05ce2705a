//! Reads the clocks and randomness, through std and through raw WASI calls,
//! and prints all of it: the output must be identical on every run with the
//! same seed.
use std::time::{SystemTime, UNIX_EPOCH};
fn main() {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let t0 = std::time::Instant::now();
    let mono = tally_test_programs::clock(1);
    let rnd = tally_test_programs::random_bytes(32);
    let mut map = std::collections::HashMap::new();
    map.insert("k", 1);
    let elapsed = t0.elapsed().as_nanos();
    let out = format!(
        "wall={wall}\nmonotonic={mono}\nelapsed={elapsed}\nrandom={}\nhashmap_seeded={}\n",
        tally_test_programs::hex(&rnd),
        map.len()
    );
    tally_guest::write_output(out.as_bytes());
}
