//! Inference backends for Tally's wasi-nn host, behind one trait.
//!
//! - [`Backend`]: loads a package's graph into a [`LoadedGraph`], which runs
//!   on checked [`Tensor`]s. Implemented here by [`TractBackend`] (native
//!   tract, no external library) and [`OrtBackend`] (ONNX Runtime, loaded
//!   at run time); the `portable` backend (tract compiled to wasm) lives in
//!   `tally-sandbox`, the only crate that knows wasmtime.
//! - [`BackendKind`]: the names a run selects a backend by (`portable`,
//!   `tract`, `onnxruntime`), as recorded in every claim.
//! - [`CostModel`]: the fuel an inference call costs, from the graph and the
//!   input shapes only (see `tally_nn_tract`), cached per graph and shape.
//!   Whatever backend runs, a call costs the same fuel.
//! - [`compare`]: checks a recomputed output against a recorded one under a
//!   manifest [`Tolerance`](tally_manifest::Tolerance), for verification
//!   across backends.
//!
//! Backends never see unchecked data: the sandbox validates every tensor
//! (type, dimensions, length, size caps) before it gets here, and catches a
//! backend's panic as an error for the guest.

mod compare;
mod cost;
mod ort_backend;
mod tract_backend;

use std::sync::Arc;

pub use compare::{compare, OutputCheck};
pub use cost::CostModel;
pub use ort_backend::{OrtBackend, OrtConfig};
use tally_manifest::ExecutionTarget;
pub use tally_nn_tract::{
    byte_len, decode_tensors, encode_signature, encode_tensors, ElemType, NnError, Signature,
    Tensor,
};
pub use tract_backend::TractBackend;

/// The tract-onnx version of the native and portable backends (the
/// workspace pins it; a test checks this against `Cargo.lock`).
pub const TRACT_ONNX_VERSION: &str = "0.23.9";

/// The backends a run can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BackendKind {
    /// tract compiled to wasm, run in a metered wasmtime instance: the same
    /// bits on every host (default).
    #[default]
    Portable,
    /// Native tract: fast, no external library; results depend on the CPU's
    /// kernels unless generic kernels are forced.
    Tract,
    /// ONNX Runtime, loaded from a shared library at run time.
    OnnxRuntime,
}

impl BackendKind {
    /// Every kind, in the order `tally run --help` lists them.
    pub const ALL: [BackendKind; 3] = [Self::Portable, Self::Tract, Self::OnnxRuntime];

    /// The name recorded in claims and accepted on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Tract => "tract",
            Self::OnnxRuntime => "onnxruntime",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown backend `{s}`; choose portable, tract or onnxruntime"))
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An inference engine.
pub trait Backend: Send + Sync {
    /// Which kind this is.
    fn kind(&self) -> BackendKind;
    /// What exactly computes: engine version, kernels, library — recorded
    /// in the claim next to the kind. Two runs with equal kind and detail
    /// must give bit-identical outputs.
    fn detail(&self) -> String;
    /// Loads a checked ONNX graph for `target`.
    fn load(&self, bytes: &[u8], target: ExecutionTarget) -> Result<Arc<dyn LoadedGraph>, NnError>;
    /// One-time set-up a host does before serving runs (the portable
    /// backend compiles its engine). Default: nothing to do.
    fn warm(&self) -> Result<(), NnError> {
        Ok(())
    }
}

/// A graph ready to run.
pub trait LoadedGraph: Send + Sync {
    /// Runs the graph on `inputs` (one per graph input, in order). Every
    /// output must fit in `max_output_bytes`.
    fn run(&self, inputs: &[Tensor], max_output_bytes: usize) -> Result<Vec<Tensor>, NnError>;

    /// [`LoadedGraph::run`], stopped with [`NnError::WallTime`] once
    /// `deadline` passes, by backends that can interrupt a running graph.
    /// Default: cannot; runs to the end (the static cost paid up front
    /// still bounds the work).
    fn run_until(
        &self,
        inputs: &[Tensor],
        max_output_bytes: usize,
        deadline: std::time::Instant,
    ) -> Result<Vec<Tensor>, NnError> {
        let _ = deadline;
        self.run(inputs, max_output_bytes)
    }

    /// Bytes of host memory the loaded graph holds between runs: measured
    /// where the backend can (the portable engine's linear memory),
    /// estimated where a native library owns it. A host's cache budget
    /// weighs the graph at this.
    fn resident_bytes(&self) -> u64;
}
