//! End-to-end tests: the real `tally` binary, real guests compiled to wasm,
//! a real store. One binary, one module per topic.

mod adversarial;
mod flow;
mod hostile;
mod inference;
mod serve;
mod tamper;
mod tidy;
mod util;
