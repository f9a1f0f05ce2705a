//! Adversarial: makes host calls (clock reads) forever. Must end at the
//! host-call limit or fuel, whichever comes first.
fn main() {
    let mut acc = 0u64;
    loop {
        acc = acc.wrapping_add(tally_test_programs::clock(1));
        std::hint::black_box(acc);
    }
}
