//! Copies stdin to stdout.
fn main() {
    tally_guest::write_output(&tally_guest::read_input());
}
