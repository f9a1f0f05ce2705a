//! Adversarial: an infinite loop. Must end in fuel exhaustion.
fn main() {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}
