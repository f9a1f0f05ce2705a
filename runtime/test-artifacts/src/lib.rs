//! Build-time artifacts: the guest programs compiled for wasm32-wasip1.
