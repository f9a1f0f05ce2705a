//! Intra-op threads are a host setting: with more threads, native tract
//! computes the same bits (matrix products are split by output tiles, each
//! element summed by one kernel in one order), and both native engines
//! record the count in their backend detail, so a replay with another count
//! is compared as one on another backend.

use tally_manifest::ExecutionTarget;
use tally_nn::{Backend, ElemType, OrtBackend, OrtConfig, Tensor, TractBackend};
use tally_test_artifacts::pkg::{asset, assets_dir};

/// A PP-OCRv4 recogniser input: one 48×320 line of deterministic pixels.
fn rec_input() -> Tensor {
    let mut x = 0x9e3779b9u32;
    let data: Vec<u8> = (0..3 * 48 * 320)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ((x >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0).to_le_bytes()
        })
        .collect();
    Tensor::new(ElemType::F32, vec![1, 3, 48, 320], data, 1 << 30).unwrap()
}

fn run(backend: &dyn Backend, graph: &[u8], input: &Tensor) -> Vec<Vec<u8>> {
    let g = backend.load(graph, ExecutionTarget::Cpu).unwrap();
    g.run(std::slice::from_ref(input), 1 << 30)
        .unwrap()
        .iter()
        .map(|t| t.data().to_vec())
        .collect()
}

#[test]
fn tract_threads_do_not_change_bits_and_are_in_the_detail() {
    let graph = asset("ch_PP-OCRv4_rec_infer.onnx");
    let input = rec_input();
    let one = TractBackend::new(false, 1).unwrap();
    let two = TractBackend::new(false, 2).unwrap();
    assert!(one.detail().ends_with("threads=1"), "{}", one.detail());
    assert!(two.detail().ends_with("threads=2"), "{}", two.detail());
    assert_ne!(one.detail(), two.detail());
    assert_eq!(run(&one, &graph, &input), run(&two, &graph, &input));
}

#[test]
fn onnxruntime_threads_are_in_the_detail() {
    let mut c = OrtConfig::default();
    c.library = assets_dir().join("libonnxruntime.so.1.31.1");
    let one = OrtBackend::new(&c).unwrap();
    c.threads = 2;
    let two = OrtBackend::new(&c).unwrap();
    assert!(one.detail().contains(" threads=1 "), "{}", one.detail());
    assert!(two.detail().contains(" threads=2 "), "{}", two.detail());
    // Both compute the recogniser; the two-thread session really runs.
    let graph = asset("ch_PP-OCRv4_rec_infer.onnx");
    let input = rec_input();
    let (a, b) = (run(&one, &graph, &input), run(&two, &graph, &input));
    assert_eq!(a.len(), b.len());
    assert_eq!(a[0].len(), b[0].len());
}
