//! Native tract.

use std::sync::{Arc, Mutex};

use tally_manifest::ExecutionTarget;
use tally_nn_tract::{Model, NnError, Tensor};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::tract_core::{knobs, tract_linalg};

use crate::{Backend, BackendKind, LoadedGraph};

/// Distinct input signatures planned per loaded graph.
pub(crate) const MAX_PLANS: usize = 8;

/// Native tract. tract picks kernels for the CPU (AVX2, AVX-512, NEON…), so
/// its bits differ between CPUs; [`TractBackend::new`] with `generic` forces
/// the portable scalar kernels, the same on every x86-64 host.
///
/// With more than one thread, matrix products are split by output tiles
/// over a pool owned by the backend; each output element is still summed
/// by one kernel in one order, so the bits do not depend on the thread
/// count (the `threads_do_not_change_bits` test holds this). The count is
/// in the detail all the same, as ONNX Runtime's is.
pub struct TractBackend {
    isa: String,
    threads: usize,
    executor: Executor,
}

impl TractBackend {
    /// A native tract backend. `generic` forces generic kernels. tract
    /// probes the CPU once per process, so the first backend built decides;
    /// asking for the other setting later is an error. `threads` is the
    /// size of the pool matrix products are split over (at least one); one
    /// runs everything on the calling thread.
    pub fn new(generic: bool, threads: usize) -> Result<Self, NnError> {
        if generic && !knobs::set_str("TRACT_CPU_ISA", &format!("-{}", std::env::consts::ARCH)) {
            return Err(NnError::Plan("tract has no TRACT_CPU_ISA knob".into()));
        }
        let isa = format!("{:?}", tract_linalg::isa::native());
        let is_generic = isa == "-";
        if generic != is_generic {
            return Err(NnError::Plan(format!(
                "tract already chose its kernels in this process ({isa}); run generic and native tract in separate processes"
            )));
        }
        let threads = threads.max(1);
        let executor = if threads == 1 {
            Executor::SingleThread
        } else {
            Executor::multithread_with_name(threads, "tally-tract")
        };
        Ok(TractBackend {
            isa,
            threads,
            executor,
        })
    }
}

impl Backend for TractBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }
    fn detail(&self) -> String {
        format!(
            "tract-onnx {} {} isa={} threads={}",
            crate::TRACT_ONNX_VERSION,
            std::env::consts::ARCH,
            self.isa,
            self.threads
        )
    }
    fn load(&self, bytes: &[u8], target: ExecutionTarget) -> Result<Arc<dyn LoadedGraph>, NnError> {
        if target != ExecutionTarget::Cpu {
            return Err(NnError::Plan(format!(
                "tract runs on the CPU only, not {target:?}"
            )));
        }
        Ok(Arc::new(TractGraph {
            model: Mutex::new(Model::load(bytes, MAX_PLANS)?),
            bytes: bytes.len() as u64,
            executor: self.executor.clone(),
        }))
    }
}

struct TractGraph {
    model: Mutex<Model>,
    /// The graph's size in bytes.
    bytes: u64,
    /// The backend's thread pool (or the calling thread).
    executor: Executor,
}

impl LoadedGraph for TractGraph {
    fn run(&self, inputs: &[Tensor], max_output_bytes: usize) -> Result<Vec<Tensor>, NnError> {
        let sig = inputs.iter().map(|t| (t.ty(), t.dims().to_vec())).collect();
        let plan = self
            .model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plan(&sig)?;
        // A panic (caught by the sandbox) is carried out of the scope, so
        // tract restores this thread's executor; unwinding through it would
        // leave the pool in the thread's local storage.
        let ran = multithread_tract_scope(self.executor.clone(), || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                plan.run(inputs, max_output_bytes)
            }))
        });
        ran.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// An estimate: the parsed graph, and its weights once more per plan
    /// kept (up to `MAX_PLANS`), as packed for the kernels.
    fn resident_bytes(&self) -> u64 {
        let plans = self
            .model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plan_count() as u64;
        self.bytes.saturating_mul(1 + plans)
    }
}
