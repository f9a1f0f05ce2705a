//! Adversarial: unbounded, non-tail recursion. Ends in a stack overflow,
//! which Tally classifies as not deterministic.
#[inline(never)]
#[allow(unconditional_recursion)]
fn down(n: u64, pad: &mut [u64; 16]) -> u64 {
    pad[(n % 16) as usize] = n;
    let mut next = [n; 16];
    std::hint::black_box(&mut next);
    down(n + 1, &mut next) + pad[0]
}
fn main() {
    let mut pad = [0u64; 16];
    println!("{}", down(0, &mut pad));
}
