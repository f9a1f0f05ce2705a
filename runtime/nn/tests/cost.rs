//! The static cost of hand-built hostile graphs: control flow is paid for.

use tally_digest::Digest;
use tally_nn::{CostModel, ElemType};
use tally_test_artifacts::onnx::lstm;

#[test]
fn a_scan_costs_its_body_times_its_iterations() {
    // tract runs an LSTM as a Scan whose body holds the recurrent product:
    // 4 gates × 64 units × (64 inputs + 64 hidden) multiply-adds per step.
    let bytes = lstm(64, 64);
    let costs = CostModel::new();
    let digest = Digest::of(&bytes);
    for n in [1u32, 100, 10_000] {
        let cost = costs
            .cost(&digest, &bytes, &vec![(ElemType::F32, vec![n, 1, 64])])
            .unwrap();
        // Before, the body was free and only the input product was paid.
        assert!(
            cost >= n as u64 * 4 * 64 * 128,
            "{n} steps of {} multiply-adds cost only {cost}",
            4 * 64 * 128
        );
        assert!(cost <= n as u64 * 4 * 64 * 128 * 2 + 100_000, "{n}: {cost}");
    }
}
