//! Adversarial: allocates 16 MiB blocks, touching each, until memory runs out.
fn main() {
    let mut keep: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 16 << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        keep.push(std::hint::black_box(block));
    }
}
