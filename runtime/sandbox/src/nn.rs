//! wasi-nn (`wasi_ephemeral_nn`, the preview-1 witx ABI of the `wasi-nn`
//! 0.6 crate) for guests, implemented here rather than with
//! `wasmtime-wasi-nn`'s witx glue: that glue panics on a guest pointer out
//! of bounds (its conversion of guest memory errors is left unimplemented),
//! which would let any guest kill the host, and it has no place for fuel or a transcript.
//!
//! Every call is validated at this boundary (handles, pointers, tensor
//! type, dimensions, `data.len() == product(dims) × element size` with
//! checked arithmetic, byte caps, live graph and context caps), charged
//! fuel, and appended to the transcript with digests of the tensors.
//! `compute` costs the static cost of the graph for the input shapes
//! (computed by tract inside the portable engine under a memory cap, see
//! `portable::BoundedCosts`), the same whatever backend runs; a call the
//! guest cannot pay for is refused before it runs and ends the stage with
//! the `fuel` limit. A backend's error or panic becomes the guest-visible
//! errno `runtime_error` (logged on the host), never a dead host.
//!
//! In a cross-backend replay the run carries the outputs the original host
//! recorded: each `compute` still runs on this host's backend, is compared
//! with the recording under the manifest's tolerance, and the guest is
//! handed the *recorded* outputs, so every guest stage must then replay
//! bit-exactly.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tally_digest::Digest;
use tally_manifest::{ExecutionTarget, Limit, Manifest};
use tally_nn::{
    byte_len, compare, encode_tensors, Backend, ElemType, LoadedGraph, NnError, Tensor,
};
use tally_receipt::InferenceCheck;
use wasmtime::{Caller, Linker};

use crate::budget::{Caches, Key, Value};
use crate::host::{LimitReached, StoreData};
use crate::profile::{
    NN_FUEL_PER_BYTE, NN_MAX_CONTEXTS, NN_MAX_GRAPHS, NN_MAX_HELD_BYTES, NN_MAX_OUTPUT_BYTES,
    NN_MAX_RECORDED_BYTES, NN_MAX_TENSOR_BYTES, NN_SIGNATURE_FUEL,
};

/// The wasi-nn import module.
pub(crate) const NN_MODULE: &str = "wasi_ephemeral_nn";

// wasi-nn `nn_errno` values.
const SUCCESS: i32 = 0;
const INVALID_ARGUMENT: i32 = 1;
const INVALID_ENCODING: i32 = 2;
const MISSING_MEMORY: i32 = 3;
const BUSY: i32 = 4;
const RUNTIME_ERROR: i32 = 5;
const TOO_LARGE: i32 = 7;
const NOT_FOUND: i32 = 8;

/// A graph of the package, as a run may load it.
pub(crate) struct GraphSource {
    pub(crate) digest: Digest,
    pub(crate) bytes: Arc<[u8]>,
    pub(crate) target: ExecutionTarget,
    /// The loaded graph, once this run has it: pinned for the run's
    /// lifetime, whatever the caches evict meanwhile.
    pub(crate) loaded: OnceLock<Arc<dyn LoadedGraph>>,
}

/// What the sandbox shares with every run: the backend, its caches (loaded
/// graphs, graph bytes; see [`Caches`]) and the cost model.
pub(crate) struct NnShared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) costs: crate::portable::BoundedCosts,
    pub(crate) caches: Arc<Caches>,
}

impl NnShared {
    /// The shared copy of graph `digest`, made from `bytes` unless cached.
    pub(crate) fn graph_bytes(&self, digest: &Digest, bytes: &[u8]) -> Arc<[u8]> {
        let key = Key::GraphBytes(*digest);
        if let Some(Value::GraphBytes(b)) = self.caches.get(&key) {
            return b;
        }
        let b: Arc<[u8]> = Arc::from(bytes);
        self.caches.insert(key, Value::GraphBytes(b.clone()));
        b
    }

    /// Loads `src` ahead of a run (see `Sandbox::prepare`), giving its
    /// checks until `deadline`.
    pub(crate) fn preload(&self, src: &GraphSource, deadline: Instant) -> Result<(), NnError> {
        self.load(src, deadline).map(drop)
    }

    /// `src` loaded: pinned by this run, or cached, or loaded now.
    fn load(&self, src: &GraphSource, deadline: Instant) -> Result<Arc<dyn LoadedGraph>, NnError> {
        if let Some(g) = src.loaded.get() {
            return Ok(g.clone());
        }
        let key = Key::Graph(src.digest);
        let g = match self.caches.get(&key) {
            Some(Value::Graph(g)) => g,
            _ => {
                guard(|| self.costs.check_load(&src.digest, &src.bytes, deadline))?;
                let g = guard(|| self.backend.load(&src.bytes, src.target))?;
                self.caches.insert(key, Value::Graph(g.clone()));
                g
            }
        };
        Ok(src.loaded.get_or_init(|| g).clone())
    }

    /// Weighs graph `digest` again after it ran (its memory may have
    /// grown), if the cache holds this very graph.
    pub(crate) fn reweigh(&self, digest: &Digest, graph: &Arc<dyn LoadedGraph>) {
        self.caches.reweigh_graph(&Key::Graph(*digest), graph);
    }
}

/// Runs backend code, turning a panic into an error.
fn guard<T>(f: impl FnOnce() -> Result<T, NnError>) -> Result<T, NnError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(NnError::Run(format!("the backend panicked: {msg}")))
    })
}

struct LiveGraph {
    name: String,
    digest: Digest,
    graph: Arc<dyn LoadedGraph>,
}

struct Context {
    graph: usize,
    inputs: Vec<Option<Tensor>>,
    outputs: Option<Vec<Tensor>>,
}

/// What the original run's `compute` call gave its guest (a cross-backend
/// replay hands the replaying guest the same).
pub(crate) enum Original {
    /// The recorded outputs (their digests are bound by the transcript).
    Computed(Vec<Tensor>),
    /// The call failed with this errno and detail.
    Failed { errno: i64, detail: Option<String> },
}

/// One successful `compute`: the outputs handed to the guest.
#[derive(Debug, Clone)]
pub struct ComputeRecord {
    /// The graph's name in the manifest.
    pub graph: String,
    /// The outputs, encoded with [`tally_nn::encode_tensors`].
    pub encoded: Vec<u8>,
    /// The digest of `encoded`, as the transcript records it.
    pub digest: Digest,
}

/// wasi-nn state of one run (graphs and contexts are per stage).
pub(crate) struct NnRun {
    shared: Arc<NnShared>,
    graphs: Arc<BTreeMap<String, GraphSource>>,
    tolerances: Arc<Manifest>,
    granted: Vec<String>,
    live: Vec<LiveGraph>,
    contexts: Vec<Context>,
    /// Every successful compute, in order.
    pub(crate) records: Vec<ComputeRecord>,
    /// The original run's compute calls, to replay against
    /// (cross-backend verification), indexed by compute call.
    recorded: Option<Vec<Original>>,
    /// `compute` calls so far, whatever their fate: the index into
    /// `recorded` (the transcript's own count of `compute` calls).
    compute_calls: usize,
    /// Bytes of tensor data in `records` (capped by
    /// [`NN_MAX_RECORDED_BYTES`]).
    recorded_bytes: usize,
    /// The (graph, input signature) pairs this run has paid
    /// [`NN_SIGNATURE_FUEL`] for, with their costs (or deterministic
    /// refusals) once analysed: pinned for the run, so that an eviction
    /// from the shared cache never makes it analyse again against its own
    /// clock. `None`: paid for, not yet analysed (the analysis was
    /// interrupted or failed on the host's side).
    signatures:
        std::collections::HashMap<(Digest, tally_nn::Signature), Option<Result<u64, String>>>,
    /// The run's wall-clock backstop, passed to backends that can stop.
    deadline: Instant,
    /// Per (graph, output): the comparison so far.
    pub(crate) checks: BTreeMap<(String, u32), InferenceCheck>,
}

impl NnRun {
    pub(crate) fn new(
        shared: Arc<NnShared>,
        graphs: Arc<BTreeMap<String, GraphSource>>,
        manifest: Arc<Manifest>,
        recorded: Option<Vec<Original>>,
        deadline: Instant,
    ) -> Self {
        NnRun {
            deadline,
            shared,
            graphs,
            tolerances: manifest,
            granted: Vec::new(),
            live: Vec::new(),
            contexts: Vec::new(),
            records: Vec::new(),
            recorded,
            compute_calls: 0,
            recorded_bytes: 0,
            signatures: Default::default(),
            checks: BTreeMap::new(),
        }
    }

    /// Starts a stage: its grants, no live graphs or contexts.
    pub(crate) fn start_stage(&mut self, granted: &[String]) {
        self.granted = granted.to_vec();
        self.live.clear();
        self.contexts.clear();
    }

    /// Bytes of tensor data this stage's contexts hold (inputs and
    /// outputs), capped by [`NN_MAX_HELD_BYTES`].
    fn held_bytes(&self) -> usize {
        self.contexts
            .iter()
            .map(|c| {
                c.inputs
                    .iter()
                    .flatten()
                    .map(|t| t.data().len())
                    .sum::<usize>()
                    + tensors_bytes(c.outputs.as_deref().unwrap_or_default())
            })
            .sum()
    }

    /// Whether context `slot` may keep `outputs`: within the stage's held
    /// bytes and the run's recorded bytes.
    fn admit(&self, slot: usize, outputs: &[Tensor]) -> Result<(), Failed> {
        let new = tensors_bytes(outputs);
        let old = tensors_bytes(self.contexts[slot].outputs.as_deref().unwrap_or_default());
        let held = self.held_bytes() - old + new;
        if held > NN_MAX_HELD_BYTES {
            return Err((
                TOO_LARGE,
                format!("the outputs ({new} bytes) would make the stage hold {held} bytes of tensors, over its cap of {NN_MAX_HELD_BYTES}"),
            ));
        }
        let recorded = self.recorded_bytes + new;
        if recorded > NN_MAX_RECORDED_BYTES {
            return Err((
                TOO_LARGE,
                format!("the outputs ({new} bytes) would make the run's recorded outputs {recorded} bytes, over its cap of {NN_MAX_RECORDED_BYTES}"),
            ));
        }
        Ok(())
    }

    /// The replay's inference checks, and a failing one (graph `*`) when
    /// the receipt records compute calls the replay never made.
    pub(crate) fn into_checks(self) -> Vec<InferenceCheck> {
        let mut checks: Vec<InferenceCheck> = self.checks.into_values().collect();
        let recorded = self.recorded.as_ref().map_or(0, Vec::len);
        if recorded > self.compute_calls {
            let mut c = InferenceCheck::new("*", 0, 0.0, 0.0, false);
            c.add(
                self.compute_calls as u64,
                f64::INFINITY,
                f64::INFINITY,
                false,
                Some(format!(
                    "the receipt records {recorded} compute calls, the replay made {}",
                    self.compute_calls
                )),
            );
            checks.push(c);
        }
        checks
    }

    /// Whether this run replays recorded outputs.
    pub(crate) fn replaying(&self) -> bool {
        self.recorded.is_some()
    }
}

/// Adds the wasi-nn functions to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    linker.func_wrap(NN_MODULE, "load", load)?;
    linker.func_wrap(NN_MODULE, "load_by_name", load_by_name)?;
    linker.func_wrap(NN_MODULE, "init_execution_context", init_execution_context)?;
    linker.func_wrap(NN_MODULE, "set_input", set_input)?;
    linker.func_wrap(NN_MODULE, "compute", compute)?;
    linker.func_wrap(NN_MODULE, "get_output", get_output)?;
    Ok(())
}

fn memory(caller: &mut Caller<'_, StoreData>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(|e| e.into_memory())
}

fn read(caller: &mut Caller<'_, StoreData>, ptr: u32, len: u32) -> Result<Vec<u8>, i32> {
    let mem = memory(caller).ok_or(MISSING_MEMORY)?;
    let start = ptr as usize;
    mem.data(&*caller)
        .get(start..start.checked_add(len as usize).ok_or(INVALID_ARGUMENT)?)
        .map(<[u8]>::to_vec)
        .ok_or(INVALID_ARGUMENT)
}

fn write(caller: &mut Caller<'_, StoreData>, ptr: u32, bytes: &[u8]) -> Result<(), i32> {
    let mem = memory(caller).ok_or(MISSING_MEMORY)?;
    let start = ptr as usize;
    let end = start.checked_add(bytes.len()).ok_or(INVALID_ARGUMENT)?;
    mem.data_mut(&mut *caller)
        .get_mut(start..end)
        .ok_or(INVALID_ARGUMENT)?
        .copy_from_slice(bytes);
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// What a successful call adds to its transcript entry: results after the
/// errno, a data digest, a detail.
type Recorded = (Vec<i64>, Option<Digest>, Option<String>);
/// A failed call: its errno and why.
type Failed = (i32, String);

/// Records a call and logs a failure.
fn finish(
    caller: &mut Caller<'_, StoreData>,
    func: &str,
    params: Vec<i64>,
    result: Result<Recorded, Failed>,
) -> i32 {
    let (errno, results, data, detail) = match result {
        Ok((mut extra, data, detail)) => {
            let mut r = vec![SUCCESS as i64];
            r.append(&mut extra);
            (SUCCESS, r, data, detail)
        }
        Err((errno, why)) => {
            tracing::warn!(stage = caller.data().rec.stage, "wasi-nn {func}: {why}");
            (errno, vec![errno as i64], None, Some(why))
        }
    };
    caller.data_mut().rec.push(
        &format!("{NN_MODULE}.{func}"),
        params,
        results,
        data,
        detail,
    );
    errno
}

fn load(
    mut caller: Caller<'_, StoreData>,
    _builders: i32,
    _count: i32,
    encoding: i32,
    target: i32,
    _out: i32,
) -> i32 {
    finish(
        &mut caller,
        "load",
        vec![encoding as i64, target as i64],
        Err((
            INVALID_ENCODING,
            "loading guest-supplied graph bytes is refused; declare the graph in the manifest and open it with load_by_name".into(),
        )),
    )
}

/// Records call `func` as stopped at the run's wall-clock deadline and
/// ends the stage as an epoch interrupt in guest code would: `aborted:
/// wall_time` (not deterministic).
fn interrupted(
    caller: &mut Caller<'_, StoreData>,
    func: &str,
    params: Vec<i64>,
    what: String,
) -> wasmtime::Error {
    let detail = format!("{what}: interrupted at the wall-clock deadline");
    record_stop(caller, func, params, detail);
    wasmtime::Trap::Interrupt.into()
}

/// Records call `func` as one that ends the stage (it answers
/// `runtime_error` to no one: the stage stops here).
fn record_stop(caller: &mut Caller<'_, StoreData>, func: &str, params: Vec<i64>, detail: String) {
    caller.data_mut().rec.push(
        &format!("{NN_MODULE}.{func}"),
        params,
        vec![RUNTIME_ERROR as i64],
        None,
        Some(detail),
    );
}

fn load_by_name(
    mut caller: Caller<'_, StoreData>,
    name_ptr: i32,
    name_len: i32,
    out: i32,
) -> wasmtime::Result<i32> {
    let params = vec![name_len as i64];
    let mut interrupted = false;
    let result = (|| {
        let raw = read(&mut caller, name_ptr as u32, name_len as u32)
            .map_err(|e| (e, "the name is out of bounds".to_string()))?;
        let name = String::from_utf8(raw)
            .map_err(|_| (INVALID_ARGUMENT, "the name is not UTF-8".to_string()))?;
        let nn = &caller.data().nn;
        if !nn.granted.contains(&name) {
            return Err((
                NOT_FOUND,
                format!("no graph `{name}` is granted to this stage (add it to the stage's `graphs` in tally.toml)"),
            ));
        }
        if nn.live.len() >= NN_MAX_GRAPHS {
            return Err((
                BUSY,
                format!("a stage may load at most {NN_MAX_GRAPHS} graphs"),
            ));
        }
        let src = &nn.graphs[&name];
        let digest = src.digest;
        let graph = nn.shared.load(src, nn.deadline).map_err(|e| {
            interrupted = matches!(e, NnError::WallTime);
            (RUNTIME_ERROR, format!("loading graph `{name}`: {e}"))
        })?;
        // Hand out the handle first: a call that fails holds no slot.
        let handle = caller.data().nn.live.len() as u32;
        write(&mut caller, out as u32, &handle.to_le_bytes())
            .map_err(|e| (e, "the graph handle pointer is out of bounds".to_string()))?;
        caller.data_mut().nn.live.push(LiveGraph {
            name: name.clone(),
            digest,
            graph,
        });
        Ok((vec![handle as i64], Some(digest), Some(name)))
    })();
    if interrupted {
        let what = "checking the graph".to_string();
        return Err(self::interrupted(&mut caller, "load_by_name", params, what));
    }
    Ok(finish(&mut caller, "load_by_name", params, result))
}

fn init_execution_context(mut caller: Caller<'_, StoreData>, graph: i32, out: i32) -> i32 {
    let params = vec![graph as i64];
    let result = (|| {
        let nn = &mut caller.data_mut().nn;
        if graph as u32 as usize >= nn.live.len() {
            return Err((INVALID_ARGUMENT, format!("no graph with handle {graph}")));
        }
        if nn.contexts.len() >= NN_MAX_CONTEXTS {
            return Err((
                BUSY,
                format!("a stage may create at most {NN_MAX_CONTEXTS} execution contexts"),
            ));
        }
        let handle = nn.contexts.len() as u32;
        write(&mut caller, out as u32, &handle.to_le_bytes())
            .map_err(|e| (e, "the context handle pointer is out of bounds".to_string()))?;
        caller.data_mut().nn.contexts.push(Context {
            graph: graph as usize,
            inputs: Vec::new(),
            outputs: None,
        });
        Ok((vec![handle as i64], None, None))
    })();
    finish(&mut caller, "init_execution_context", params, result)
}

fn describe(t: &Tensor) -> String {
    format!("{}{:?}", t.ty().name(), t.dims())
}

/// Charges `cost` fuel for work a call is about to do, before it does it.
/// A call the guest cannot afford is recorded as refused and ends the
/// stage with the `fuel` limit.
fn pay(
    caller: &mut Caller<'_, StoreData>,
    func: &str,
    params: &[i64],
    cost: u64,
    what: impl FnOnce() -> String,
) -> wasmtime::Result<()> {
    if let Ok(left) = caller.get_fuel() {
        if left < cost {
            caller.set_fuel(0)?;
            let detail = format!("{} costs {cost} fuel, {left} left", what());
            record_stop(caller, func, params.to_vec(), detail);
            caller.data_mut().rec.limit_hit = Some(Limit::Fuel);
            return Err(LimitReached(Limit::Fuel).into());
        }
        caller.set_fuel(left - cost)?;
    }
    Ok(())
}

fn set_input(
    mut caller: Caller<'_, StoreData>,
    ctx: i32,
    index: i32,
    tensor: i32,
) -> wasmtime::Result<i32> {
    let params = vec![ctx as i64, index as i64];
    // Everything is checked before a byte of tensor data is copied.
    let checked = (|| {
        let oob = |e| (e, "the tensor descriptor is out of bounds".to_string());
        let desc = read(&mut caller, tensor as u32, 20).map_err(oob)?;
        let (dims_ptr, rank, code, data_ptr, data_len) = (
            u32_at(&desc, 0),
            u32_at(&desc, 4),
            desc[8],
            u32_at(&desc, 12),
            u32_at(&desc, 16),
        );
        let ty = ElemType::from_code(code)
            .ok_or_else(|| (INVALID_ARGUMENT, format!("unknown tensor type {code}")))?;
        if rank > 16 {
            return Err((INVALID_ARGUMENT, format!("rank {rank} exceeds 16")));
        }
        let dims: Vec<u32> = read(&mut caller, dims_ptr, rank * 4)
            .map_err(|e| (e, "the dimensions are out of bounds".to_string()))?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let n = match byte_len(ty, &dims) {
            Some(n) if n <= NN_MAX_TENSOR_BYTES => n,
            _ => {
                return Err((
                    TOO_LARGE,
                    format!(
                        "{}{dims:?} exceeds the tensor cap of {NN_MAX_TENSOR_BYTES} bytes",
                        ty.name()
                    ),
                ))
            }
        };
        if data_len as usize != n {
            return Err((
                INVALID_ARGUMENT,
                format!(
                    "{}{dims:?} is {n} bytes, but the data is {data_len} bytes",
                    ty.name()
                ),
            ));
        }
        let i = index as u32 as usize;
        if i >= 64 {
            return Err((
                INVALID_ARGUMENT,
                format!("input index {index} is out of range"),
            ));
        }
        let nn = &caller.data().nn;
        let c = nn
            .contexts
            .get(ctx as u32 as usize)
            .ok_or_else(|| (INVALID_ARGUMENT, format!("no execution context {ctx}")))?;
        // Setting an input drops the old one and the context's outputs.
        let freed = c
            .inputs
            .get(i)
            .and_then(Option::as_ref)
            .map_or(0, |t| t.data().len())
            + tensors_bytes(c.outputs.as_deref().unwrap_or_default());
        let held = nn.held_bytes() - freed + n;
        if held > NN_MAX_HELD_BYTES {
            return Err((
                TOO_LARGE,
                format!(
                    "holding {n} more bytes of tensors would make {held}, over the stage's cap of {NN_MAX_HELD_BYTES}"
                ),
            ));
        }
        Ok((ty, dims, data_ptr, n))
    })();
    let (ty, dims, data_ptr, n) = match checked {
        Ok(c) => c,
        Err(e) => return Ok(finish(&mut caller, "set_input", params, Err(e))),
    };
    pay(
        &mut caller,
        "set_input",
        &params,
        n as u64 * NN_FUEL_PER_BYTE,
        || format!("copying {n} bytes of tensor data"),
    )?;
    let result = (|| {
        let data = read(&mut caller, data_ptr, n as u32)
            .map_err(|e| (e, "the tensor data is out of bounds".to_string()))?;
        let t = Tensor::new(ty, dims, data, NN_MAX_TENSOR_BYTES)
            .map_err(|e| (INVALID_ARGUMENT, e.to_string()))?;
        let digest = Digest::of(&encode_tensors(std::slice::from_ref(&t)));
        let detail = describe(&t);
        let c = &mut caller.data_mut().nn.contexts[ctx as u32 as usize];
        let i = index as u32 as usize;
        if c.inputs.len() <= i {
            c.inputs.resize(i + 1, None);
        }
        c.inputs[i] = Some(t);
        c.outputs = None;
        Ok((Vec::new(), Some(digest), Some(detail)))
    })();
    Ok(finish(&mut caller, "set_input", params, result))
}

/// Bytes of tensor data in `ts`.
fn tensors_bytes(ts: &[Tensor]) -> usize {
    ts.iter().map(|t| t.data().len()).sum()
}

fn compute(mut caller: Caller<'_, StoreData>, ctx: i32) -> wasmtime::Result<i32> {
    let params = vec![ctx as i64];
    let call = {
        let nn = &mut caller.data_mut().nn;
        nn.compute_calls += 1;
        nn.compute_calls - 1
    };
    let prepared = (|| {
        let nn = &caller.data().nn;
        let c = nn
            .contexts
            .get(ctx as u32 as usize)
            .ok_or_else(|| (INVALID_ARGUMENT, format!("no execution context {ctx}")))?;
        if c.inputs.is_empty() {
            return Err((INVALID_ARGUMENT, "no input was set".to_string()));
        }
        let sig: tally_nn::Signature = c
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.as_ref()
                    .map(|t| (t.ty(), t.dims().to_vec()))
                    .ok_or_else(|| (INVALID_ARGUMENT, format!("input {i} was not set")))
            })
            .collect::<Result<_, _>>()?;
        let live = &nn.live[c.graph];
        Ok((sig, live.digest, live.name.clone(), live.graph.clone()))
    })();
    let (sig, digest, name, graph) = match prepared {
        Ok(p) => p,
        Err(e) => return Ok(finish(&mut caller, "compute", params, Err(e))),
    };
    // A signature this run has not used yet is analysed by the host (see
    // `portable::BoundedCosts`): the guest pays for that first, whether or
    // not the host has it cached (the charge must not depend on host state).
    let key = (digest, sig);
    let pinned = match caller.data().nn.signatures.get(&key) {
        Some(known) => known.clone(),
        None => {
            pay(&mut caller, "compute", &params, NN_SIGNATURE_FUEL, || {
                format!("analysing graph `{name}` for new input shapes")
            })?;
            caller.data_mut().nn.signatures.insert(key.clone(), None);
            None
        }
    };
    let cost = match pinned {
        Some(c) => c.map_err(NnError::Plan),
        None => {
            let nn = &caller.data().nn;
            let src = &nn.graphs[&name];
            let cost = guard(|| {
                nn.shared
                    .costs
                    .cost(&key.0, &src.bytes, &key.1, nn.deadline)
            });
            let keep = match &cost {
                Ok(c) => Some(Ok(*c)),
                Err(NnError::Plan(why)) => Some(Err(why.clone())),
                Err(_) => None,
            };
            if let Some(k) = keep {
                caller.data_mut().nn.signatures.insert(key.clone(), Some(k));
            }
            cost
        }
    };
    let cost = match cost {
        Ok(cost) => cost,
        Err(NnError::WallTime) => {
            let what = format!("graph `{name}`: cost analysis");
            return Err(interrupted(&mut caller, "compute", params, what));
        }
        Err(e) => {
            let why = format!("graph `{name}` rejects these inputs: {e}");
            return Ok(finish(
                &mut caller,
                "compute",
                params,
                Err((RUNTIME_ERROR, why)),
            ));
        }
    };
    // Pay first: a call the guest cannot afford never runs.
    pay(&mut caller, "compute", &params, cost, || {
        format!("graph `{name}`")
    })?;
    let deadline = caller.data().nn.deadline;
    // The inputs move out of the context for the call (never copied) and
    // back after it.
    let slot = ctx as u32 as usize;
    let inputs: Vec<Tensor> = std::mem::take(&mut caller.data_mut().nn.contexts[slot].inputs)
        .into_iter()
        .map(|t| t.expect("checked above: every input is set"))
        .collect();
    let computed = guard(|| graph.run_until(&inputs, NN_MAX_OUTPUT_BYTES, deadline));
    caller.data_mut().nn.contexts[slot].inputs = inputs.into_iter().map(Some).collect();
    caller.data().nn.shared.reweigh(&digest, &graph);
    if matches!(computed, Err(NnError::WallTime)) {
        // The run's wall-clock backstop, reached inside inference.
        let what = format!("graph `{name}`");
        return Err(interrupted(&mut caller, "compute", params, what));
    }
    let nn = &mut caller.data_mut().nn;
    // What the host keeps is bounded, deterministically: output sizes follow
    // from the graph and the input shapes, whatever the backend.
    let computed = computed
        .map_err(|e| (RUNTIME_ERROR, format!("graph `{name}`: {e}")))
        .and_then(|outputs| nn.admit(slot, &outputs).map(|()| outputs));
    let outputs = match nn.recorded.as_ref().map(|r| r.get(call)) {
        None => computed,
        Some(original) => {
            let graph_decl = &nn.tolerances.graphs[&name];
            let mut check = |output: u32, abs: f64, rel: f64, within: bool, why: Option<String>| {
                let tol = graph_decl.tolerance_of(output);
                nn.checks
                    .entry((name.clone(), output))
                    .or_insert_with(|| {
                        InferenceCheck::new(&name, output, tol.abs, tol.rel, tol.argmax)
                    })
                    .add(call as u64, abs, rel, within, why);
            };
            match original {
                Some(Original::Computed(recorded)) => {
                    // A recorded success this host cannot reproduce fails,
                    // even when the recording has no outputs to compare.
                    if let Err((_, e)) = &computed {
                        check(
                            0,
                            f64::INFINITY,
                            f64::INFINITY,
                            false,
                            Some(format!(
                                "the receipt records this compute as a success, but this host's failed: {e}"
                            )),
                        );
                    }
                    let n = recorded.len().max(computed.as_ref().map_or(0, Vec::len));
                    for i in 0..n {
                        let tol = graph_decl.tolerance_of(i as u32);
                        match (
                            recorded.get(i),
                            computed.as_ref().ok().and_then(|c| c.get(i)),
                        ) {
                            (Some(r), Some(c)) => {
                                let c = compare(r, c, &tol);
                                check(i as u32, c.max_abs, c.max_rel, c.within, c.reason);
                            }
                            (r, _) => check(
                                i as u32,
                                f64::INFINITY,
                                f64::INFINITY,
                                false,
                                Some(match (r, &computed) {
                                    (None, _) => "the receipt recorded no such output".into(),
                                    (_, Err((_, e))) => format!("recomputing failed: {e}"),
                                    _ => "the recomputation produced no such output".into(),
                                }),
                            ),
                        }
                    }
                    Ok(recorded.clone())
                }
                // The original call failed: the guest sees the same
                // failure, which stands only if this host's fails too
                // (and the errno is the one a backend failure gives).
                // Compute-level findings are reported on output 0.
                Some(Original::Failed { errno, detail }) => {
                    let (errno, detail) = (*errno, detail.clone().unwrap_or_default());
                    match &computed {
                        Ok(_) => check(
                            0,
                            f64::INFINITY,
                            f64::INFINITY,
                            false,
                            Some(format!(
                                "the receipt records this compute as failed ({detail}), but this host computed it"
                            )),
                        ),
                        Err((mine, why)) if *mine as i64 != errno => check(
                            0,
                            f64::INFINITY,
                            f64::INFINITY,
                            false,
                            Some(format!(
                                "the receipt records errno {errno} for this compute, this host failed with {mine}: {why}"
                            )),
                        ),
                        Err(_) => check(0, 0.0, 0.0, true, None),
                    }
                    Err((i32::try_from(errno).unwrap_or(RUNTIME_ERROR), detail))
                }
                None => {
                    check(
                        0,
                        f64::INFINITY,
                        f64::INFINITY,
                        false,
                        Some(format!("the receipt has no compute call #{call}")),
                    );
                    Err((
                        RUNTIME_ERROR,
                        format!("the receipt has no compute call #{call}"),
                    ))
                }
            }
        }
    };
    let result = outputs.map(|outputs| {
        let encoded = encode_tensors(&outputs);
        let digest = Digest::of(&encoded);
        let nn = &mut caller.data_mut().nn;
        nn.recorded_bytes += tensors_bytes(&outputs);
        nn.records.push(ComputeRecord {
            graph: name.clone(),
            encoded,
            digest,
        });
        nn.contexts[slot].outputs = Some(outputs);
        (
            Vec::new(),
            Some(digest),
            Some(format!("{name} cost={cost}")),
        )
    });
    Ok(finish(&mut caller, "compute", params, result))
}

fn get_output(
    mut caller: Caller<'_, StoreData>,
    ctx: i32,
    index: i32,
    out: i32,
    max: i32,
    written: i32,
) -> wasmtime::Result<i32> {
    let params = vec![ctx as i64, index as i64, max as u32 as i64];
    // The copy is paid for before it is made.
    let size = caller
        .data()
        .nn
        .contexts
        .get(ctx as u32 as usize)
        .and_then(|c| c.outputs.as_ref())
        .and_then(|o| o.get(index as u32 as usize))
        .map(|t| t.data().len())
        .filter(|&n| n <= max as u32 as usize);
    if let Some(n) = size {
        pay(
            &mut caller,
            "get_output",
            &params,
            n as u64 * NN_FUEL_PER_BYTE,
            || format!("copying {n} bytes of tensor data"),
        )?;
    }
    let result = (|| {
        let nn = &caller.data().nn;
        let c = nn
            .contexts
            .get(ctx as u32 as usize)
            .ok_or_else(|| (INVALID_ARGUMENT, format!("no execution context {ctx}")))?;
        let outputs = c.outputs.as_ref().ok_or_else(|| {
            (
                INVALID_ARGUMENT,
                "compute has not run on this context".to_string(),
            )
        })?;
        let t = outputs.get(index as u32 as usize).ok_or_else(|| {
            (
                INVALID_ARGUMENT,
                format!("the graph has {} outputs, not {}", outputs.len(), index + 1),
            )
        })?;
        if t.data().len() > max as u32 as usize {
            return Err((
                TOO_LARGE,
                format!(
                    "output {index} ({}) needs {} bytes, the buffer holds {}",
                    describe(t),
                    t.data().len(),
                    max as u32
                ),
            ));
        }
        let (bytes, detail) = (t.data().to_vec(), describe(t));
        write(&mut caller, out as u32, &bytes)
            .map_err(|e| (e, "the output buffer is out of bounds".to_string()))?;
        write(
            &mut caller,
            written as u32,
            &(bytes.len() as u32).to_le_bytes(),
        )
        .map_err(|e| (e, "the size pointer is out of bounds".to_string()))?;
        Ok((
            vec![bytes.len() as i64],
            Some(Digest::of(&bytes)),
            Some(detail),
        ))
    })();
    Ok(finish(&mut caller, "get_output", params, result))
}
