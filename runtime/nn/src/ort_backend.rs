//! ONNX Runtime, through `ort` with `load-dynamic`.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::tensor::TensorElementType;
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};
use tally_digest::Digest;
use tally_manifest::ExecutionTarget;
use tally_nn_tract::{check_onnx, ElemType, NnError, Tensor};

use crate::{Backend, BackendKind, LoadedGraph};

/// How to start ONNX Runtime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OrtConfig {
    /// The shared library (`libonnxruntime.so.1.31.1` from the PyPI wheel
    /// `onnxruntime==1.31.1`; `scripts/fetch-assets.sh` fetches it).
    /// Default: `$ORT_DYLIB_PATH`, else `.assets/libonnxruntime.so.1.31.1`.
    pub library: PathBuf,
    /// Intra-op threads per session (at least 1). Default: 1. Recorded in
    /// the backend detail: ONNX Runtime may split a reduction differently
    /// with another count, so a replay with another count is a replay on
    /// another backend (under the manifest's tolerances).
    pub threads: usize,
}

impl Default for OrtConfig {
    fn default() -> Self {
        let library = std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".assets/libonnxruntime.so.1.31.1"));
        OrtConfig {
            library,
            threads: 1,
        }
    }
}

/// ONNX Runtime with everything that could vary pinned: a fixed number of
/// intra-op threads ([`OrtConfig::threads`], in the detail), one inter-op
/// thread, sequential execution, basic (level 1) graph
/// optimisation, deterministic compute. The CPU execution provider serves
/// the `cpu` target; the `gpu` target registers the CUDA provider, which
/// only a library built with CUDA provides (the PyPI wheel does not).
pub struct OrtBackend {
    detail: String,
    threads: usize,
}

impl OrtBackend {
    /// Loads the library, or explains how to get it.
    pub fn new(config: &OrtConfig) -> Result<Self, NnError> {
        let lib = &config.library;
        let bytes = std::fs::read(lib).map_err(|e| {
            NnError::Plan(format!(
                "cannot read the ONNX Runtime library {}: {e}; run scripts/fetch-assets.sh (it fetches libonnxruntime.so.1.31.1 from the onnxruntime==1.31.1 wheel) and point ORT_DYLIB_PATH or --ort-lib at it",
                lib.display()
            ))
        })?;
        let digest = Digest::of(&bytes);
        drop(bytes);
        let path = lib
            .canonicalize()
            .map_err(|e| NnError::Plan(format!("{}: {e}", lib.display())))?;
        ort::init_from(path.display().to_string())
            .with_name("tally")
            .commit()
            .map_err(|e| {
                NnError::Plan(format!(
                    "cannot start ONNX Runtime from {}: {e}",
                    lib.display()
                ))
            })?;
        let name = lib
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let threads = config.threads.max(1);
        Ok(OrtBackend {
            detail: format!(
                "onnxruntime {name} blake3={} threads={threads} opt=basic deterministic",
                digest.short()
            ),
            threads,
        })
    }
}

impl Backend for OrtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::OnnxRuntime
    }
    fn detail(&self) -> String {
        self.detail.clone()
    }
    fn load(&self, bytes: &[u8], target: ExecutionTarget) -> Result<Arc<dyn LoadedGraph>, NnError> {
        check_onnx(bytes)?;
        let err = |e: ort::Error| NnError::Plan(format!("ONNX Runtime: {e}"));
        let mut builder = Session::builder()
            .map_err(err)?
            .with_intra_threads(self.threads)
            .map_err(err)?
            .with_inter_threads(1)
            .map_err(err)?
            .with_parallel_execution(false)
            .map_err(err)?
            .with_optimization_level(GraphOptimizationLevel::Level1)
            .map_err(err)?
            .with_deterministic_compute(true)
            .map_err(err)?;
        if target == ExecutionTarget::Gpu {
            builder = builder
                .with_execution_providers([
                    ort::execution_providers::CUDAExecutionProvider::default()
                        .build()
                        .error_on_failure(),
                ])
                .map_err(err)?;
        }
        let session = builder.commit_from_memory(bytes).map_err(err)?;
        Ok(Arc::new(OrtGraph {
            session: Mutex::new(session),
            bytes: bytes.len() as u64,
            watch: Arc::default(),
            watchdog: OnceLock::new(),
        }))
    }
}

/// A session, run one call at a time, and the watchdog that stops a call
/// at its deadline.
struct OrtGraph {
    session: Mutex<Session>,
    /// The graph's size in bytes.
    bytes: u64,
    watch: Arc<Watch>,
    /// Started by the first call with a deadline; lives as long as the
    /// graph (a thread per call would cost more than a small graph's run).
    watchdog: OnceLock<()>,
}

/// What the watchdog watches: the running call's deadline and options.
#[derive(Default)]
struct Watch {
    state: Mutex<WatchState>,
    wake: Condvar,
}

#[derive(Default)]
struct WatchState {
    /// The call running now, if it has a deadline.
    armed: Option<(Instant, Arc<RunOptions>)>,
    /// Whether the watchdog terminated it.
    fired: bool,
    /// When the watchdog wakes by itself (`None`: only when notified).
    /// Calls of one run share its deadline, so arming one rarely needs to
    /// wake the watchdog: a notify per call cost a context switch per
    /// inference, which small graphs (silero: ~0.2 ms) feel.
    sleeping_until: Option<Instant>,
    /// The graph is gone: the watchdog ends.
    closed: bool,
}

impl Watch {
    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watchdog's loop: sleeps until the armed deadline (or a
    /// notify), and terminates the armed call when it passes. A call that
    /// ended leaves the watchdog asleep until its deadline.
    fn watch(&self) {
        let mut s = self.lock();
        while !s.closed {
            let deadline = s.armed.as_ref().map(|(d, _)| *d);
            let now = Instant::now();
            match deadline {
                Some(d) if d <= now => {
                    if let Some((_, options)) = s.armed.take() {
                        let _ = options.terminate();
                    }
                    s.fired = true;
                }
                Some(d) => {
                    s.sleeping_until = Some(d);
                    s = self
                        .wake
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                None => {
                    s.sleeping_until = None;
                    s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }

    /// Arms `deadline` for the call about to run, waking the watchdog only
    /// when it would not wake by `deadline` by itself.
    fn arm(&self, deadline: Instant, options: Arc<RunOptions>) {
        let mut s = self.lock();
        s.armed = Some((deadline, options));
        s.fired = false;
        let asleep_past = s.sleeping_until.is_none_or(|t| t > deadline);
        drop(s);
        if asleep_past {
            self.wake.notify_all();
        }
    }
}

impl Drop for OrtGraph {
    fn drop(&mut self) {
        self.watch.lock().closed = true;
        self.watch.wake.notify_all();
    }
}

fn to_ort(t: &Tensor) -> Result<DynValue, NnError> {
    let shape: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
    let err = |e: ort::Error| NnError::BadTensor(format!("ONNX Runtime: {e}"));
    macro_rules! make {
        ($ty:ty, $n:expr) => {{
            let v: Vec<$ty> = t
                .data()
                .chunks_exact($n)
                .map(|c| <$ty>::from_le_bytes(c.try_into().unwrap()))
                .collect();
            OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn()
        }};
    }
    Ok(match t.ty() {
        ElemType::F16 => make!(half::f16, 2),
        ElemType::F32 => make!(f32, 4),
        ElemType::F64 => make!(f64, 8),
        ElemType::U8 => make!(u8, 1),
        ElemType::I32 => make!(i32, 4),
        ElemType::I64 => make!(i64, 8),
        other => {
            return Err(NnError::BadTensor(format!(
                "{} tensors are not supported by this ONNX Runtime build of Tally",
                other.name()
            )))
        }
    })
}

fn from_ort(v: &DynValue, max: usize) -> Result<Tensor, NnError> {
    let err = |e: ort::Error| NnError::Run(format!("ONNX Runtime: {e}"));
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        return Err(NnError::Run(
            "the graph produced a non-tensor output".into(),
        ));
    };
    macro_rules! take {
        ($ty:ty, $elem:expr) => {{
            let (shape, data) = v.try_extract_tensor::<$ty>().map_err(err)?;
            let dims = shape
                .iter()
                .map(|&d| u32::try_from(d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| NnError::Run("an output dimension is out of range".into()))?;
            let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            Tensor::new($elem, dims, bytes, max)?
        }};
    }
    Ok(match ty {
        TensorElementType::Float16 => take!(half::f16, ElemType::F16),
        TensorElementType::Float32 => take!(f32, ElemType::F32),
        TensorElementType::Float64 => take!(f64, ElemType::F64),
        TensorElementType::Uint8 => take!(u8, ElemType::U8),
        TensorElementType::Int32 => take!(i32, ElemType::I32),
        TensorElementType::Int64 => take!(i64, ElemType::I64),
        other => {
            return Err(NnError::Run(format!(
                "the graph produced a {other:?} tensor, which wasi-nn cannot carry"
            )))
        }
    })
}

impl LoadedGraph for OrtGraph {
    fn run(&self, inputs: &[Tensor], max_output_bytes: usize) -> Result<Vec<Tensor>, NnError> {
        self.run_with(inputs, max_output_bytes, None)
    }

    /// Stops ONNX Runtime at `deadline` with `RunOptions::terminate`, from
    /// the graph's watchdog thread.
    fn run_until(
        &self,
        inputs: &[Tensor],
        max_output_bytes: usize,
        deadline: Instant,
    ) -> Result<Vec<Tensor>, NnError> {
        self.run_with(inputs, max_output_bytes, Some(deadline))
    }

    /// An estimate: the session's weights, and as much again for its
    /// arena (ONNX Runtime owns the memory and does not report it).
    fn resident_bytes(&self) -> u64 {
        self.bytes.saturating_mul(2)
    }
}

impl OrtGraph {
    fn run_with(
        &self,
        inputs: &[Tensor],
        max_output_bytes: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<Tensor>, NnError> {
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if inputs.len() != session.inputs.len() {
            return Err(NnError::Plan(format!(
                "the graph takes {} inputs, {} were set",
                session.inputs.len(),
                inputs.len()
            )));
        }
        let names: Vec<String> = session.inputs.iter().map(|i| i.name.clone()).collect();
        let out_names: Vec<String> = session.outputs.iter().map(|o| o.name.clone()).collect();
        let mut values = Vec::with_capacity(inputs.len());
        for (name, t) in names.into_iter().zip(inputs) {
            values.push((name, to_ort(t)?));
        }
        let options =
            Arc::new(RunOptions::new().map_err(|e| NnError::Run(format!("ONNX Runtime: {e}")))?);
        if let Some(deadline) = deadline {
            self.watchdog.get_or_init(|| {
                let watch = self.watch.clone();
                // Without a watchdog the call still ends: its static cost
                // was paid up front.
                let _ = std::thread::Builder::new()
                    .name("tally-ort-watchdog".into())
                    .spawn(move || watch.watch());
            });
            self.watch.arm(deadline, options.clone());
        }
        let outputs = session.run_with_options(values, &options);
        let terminated = {
            let mut s = self.watch.lock();
            s.armed = None;
            std::mem::take(&mut s.fired)
        };
        if terminated {
            return Err(NnError::WallTime);
        }
        let outputs = outputs.map_err(|e| NnError::Run(format!("ONNX Runtime: {e}")))?;
        out_names
            .iter()
            .map(|n| from_ort(&outputs[n.as_str()], max_output_bytes))
            .collect()
    }
}
