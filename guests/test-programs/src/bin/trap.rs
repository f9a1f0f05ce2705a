//! Adversarial: executes `unreachable` after writing some output.
fn main() {
    tally_guest::write_output(b"before the trap\n");
    core::arch::wasm32::unreachable()
}
