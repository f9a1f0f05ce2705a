//! Sandbox integration tests: one binary, one module per topic. Every guest
//! in `guests/` must have a test here named after it (`foreach_guest!`).

mod adversarial;
mod determinism;
mod nn;
mod ocr;
mod pipeline;
mod util;

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use crate::guest_tests::$name as _;
    };
}

/// Re-exports one test per guest, so that a guest without a test fails to
/// compile.
mod guest_tests {
    pub use crate::adversarial::{chatter, escape, flood, membomb, recurse, sockets, spin, trap};
    pub use crate::determinism::{entropy, stat_files};
    pub use crate::nn::{nn_abuse, nn_fuzz, nn_run, vad_probs, vad_segments};
    pub use crate::ocr::{ocr_detect, ocr_recognize};
    pub use crate::pipeline::{cat_file, echo, exit, preprocess, tensor_stats, upper};
}

tally_test_artifacts::foreach_guest!(assert_test_exists);
