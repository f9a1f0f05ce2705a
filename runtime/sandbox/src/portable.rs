//! The `portable` inference backend: tract compiled to wasm
//! (`tally-portable-module`), run by the host in its own wasmtime store.
//!
//! Its engine has the sandbox's float determinism settings (NaN
//! canonicalisation, deterministic relaxed SIMD, no threads), so a graph
//! computes the same bits on every host, whatever its CPU. The module is
//! compiled once per process (and cached on disk when the sandbox has a
//! cache directory). Each loaded graph owns one instance; a trap inside it
//! (a tract panic) becomes an error for the guest and the instance is
//! rebuilt on the next call. Its fuel is not the guest's: the guest pays the
//! backend-independent static cost; this store only has a memory cap, and
//! an epoch deadline: the run's wall-clock backstop stops a running graph
//! ([`NnError::WallTime`]), which native engines cannot offer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tally_digest::Digest;
use tally_manifest::ExecutionTarget;
use tally_nn::{
    decode_tensors, encode_signature, encode_tensors, Backend, BackendKind, LoadedGraph, NnError,
    Signature, Tensor,
};
use wasmtime::{
    Engine, Instance, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, TypedFunc,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::WasiCtxBuilder;

use crate::budget::{Caches, Key, Value};
use crate::host::{SeededStream, VirtualMonotonicClock, VirtualWallClock};

/// An epoch deadline no run reaches: loading, and runs without a deadline.
const NO_DEADLINE: u64 = u64::MAX / 2;

/// How often the portable engine's epoch advances.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest linear memory of a portable instance: 4 GiB, all wasm32 can address.
const MEMORY_BYTES: usize = 4 << 30;

/// The compiled module and its linker, shared by every sandbox in the
/// process; compiled on the first graph load, not before.
static COMPILED: OnceLock<Result<Compiled, String>> = OnceLock::new();

#[derive(Clone)]
struct Compiled {
    engine: Engine,
    module: Module,
    linker: Arc<Linker<PData>>,
}

/// The portable backend.
pub(crate) struct PortableBackend {
    cache_dir: Option<PathBuf>,
}

/// The digest of the portable module (hashed once per process).
fn module_digest() -> &'static Digest {
    static DIGEST: OnceLock<Digest> = OnceLock::new();
    DIGEST.get_or_init(|| Digest::of(tally_portable_module::WASM))
}

struct PData {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

fn engine() -> Result<Engine, String> {
    let mut c = crate::profile::semantic_config();
    // The run's wall-clock deadline interrupts a running graph: the
    // engine's epoch advances every EPOCH_TICK (see `ticker`).
    c.epoch_interruption(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    Engine::new(&c).map_err(|e| format!("{e:#}"))
}

/// Advances the portable engine's epoch every [`EPOCH_TICK`], for the life
/// of the process (one thread, started with the engine).
fn ticker(engine: &Engine) {
    let engine = engine.clone();
    std::thread::Builder::new()
        .name("tally-portable-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
        })
        .expect("spawning the portable backend's epoch thread");
}

/// Epoch ticks before `deadline` (at least one).
fn ticks_until(deadline: Instant) -> u64 {
    (deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        / EPOCH_TICK.as_millis()) as u64
        + 1
}

impl PortableBackend {
    /// The backend. The module is compiled (or loaded from `cache_dir`)
    /// when the first graph is loaded in this process.
    pub(crate) fn new(cache_dir: Option<&Path>) -> Result<Self, String> {
        Ok(PortableBackend {
            cache_dir: cache_dir.map(Path::to_path_buf),
        })
    }

    fn compiled(&self) -> Result<Compiled, NnError> {
        compiled(self.cache_dir.as_deref())
    }
}

/// The process's compiled portable module, compiled (or loaded from
/// `cache_dir`) on first use.
fn compiled(cache_dir: Option<&Path>) -> Result<Compiled, NnError> {
    COMPILED
        .get_or_init(|| {
            let engine = engine()?;
            let module = compile(&engine, module_digest(), cache_dir)?;
            ticker(&engine);
            let mut linker = Linker::new(&engine);
            wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |d: &mut PData| &mut d.wasi)
                .map_err(|e| format!("{e:#}"))?;
            Ok(Compiled {
                engine,
                module,
                linker: Arc::new(linker),
            })
        })
        .clone()
        .map_err(NnError::Plan)
}

fn compile(engine: &Engine, digest: &Digest, cache_dir: Option<&Path>) -> Result<Module, String> {
    let path = cache_dir.map(|d| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        d.join(format!(
            "portable-{}-{:016x}.cwasm",
            digest,
            std::hash::Hasher::finish(&h)
        ))
    });
    if let Some(p) = &path {
        if p.exists() {
            // SAFETY: the file is this host's own compilation artifact, named
            // by the module digest and the engine's compatibility hash.
            if let Ok(m) = unsafe { Module::deserialize_file(engine, p) } {
                return Ok(m);
            }
        }
    }
    let module = Module::new(engine, tally_portable_module::WASM)
        .map_err(|e| format!("compiling the portable backend: {e:#}"))?;
    if let (Some(p), Ok(bytes)) = (&path, module.serialize()) {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = p.with_extension("tmp");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    Ok(module)
}

/// How this host's Cranelift lowers a relaxed multiply-add: `native` (an
/// FMA instruction) or `libcall` (x86-64 without AVX and FMA: a correctly
/// rounded software call). Both fuse, so finite results are the same bits;
/// but NaN canonicalisation rewrites FMA instructions and not calls, so a
/// NaN one of them makes may carry another sign or payload. Hosts that
/// differ here replay each other's receipts as on another backend (within
/// the manifest's tolerances, NaN matched by position), not bit for bit.
fn fma() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx") && std::is_x86_feature_detected!("fma") {
            "native"
        } else {
            "libcall"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "native"
    }
}

impl Backend for PortableBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Portable
    }
    fn detail(&self) -> String {
        format!(
            "tract-onnx {} wasm32-wasip1+simd128+relaxed-simd module={} semantics={} fma={}",
            tally_nn::TRACT_ONNX_VERSION,
            module_digest(),
            crate::profile::semantics_digest(),
            fma()
        )
    }
    fn warm(&self) -> Result<(), NnError> {
        self.compiled().map(drop)
    }
    fn load(&self, bytes: &[u8], target: ExecutionTarget) -> Result<Arc<dyn LoadedGraph>, NnError> {
        if target != ExecutionTarget::Cpu {
            return Err(NnError::Plan(format!(
                "the portable backend runs on the CPU only, not {target:?}"
            )));
        }
        let graph = PortableGraph {
            compiled: self.compiled()?,
            bytes: bytes.to_vec(),
            instance: Mutex::new(None),
            resident: AtomicU64::new(0),
        };
        // Load now, so a bad graph fails at load time.
        let inst = graph.instantiate()?;
        graph.keep(inst);
        Ok(Arc::new(graph))
    }
}

struct PortableGraph {
    compiled: Compiled,
    bytes: Vec<u8>,
    instance: Mutex<Option<PInstance>>,
    /// The graph's bytes plus its instance's linear memory, as of the last
    /// time the instance was put back (memory only grows).
    resident: AtomicU64,
}

struct PInstance {
    store: Store<PData>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    free: TypedFunc<(u32, u32), ()>,
    run: TypedFunc<(i32, u32, u32, u32), i32>,
    cost: TypedFunc<(i32, u32, u32), i32>,
    fold: TypedFunc<i32, i32>,
    result_ptr: TypedFunc<(), u32>,
    result_len: TypedFunc<(), u32>,
    handle: i32,
}

fn werr(e: wasmtime::Error) -> NnError {
    if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return NnError::WallTime;
    }
    NnError::Run(format!("the portable backend trapped: {e:#}"))
}

impl PInstance {
    fn put(&mut self, bytes: &[u8]) -> Result<u32, NnError> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| NnError::BadTensor("more than 4 GiB of input".into()))?;
        let ptr = self.alloc.call(&mut self.store, len).map_err(werr)?;
        self.memory
            .write(&mut self.store, ptr as usize, bytes)
            .map_err(|e| NnError::Run(format!("writing into the portable backend: {e}")))?;
        Ok(ptr)
    }

    fn result(&mut self) -> Result<Vec<u8>, NnError> {
        let ptr = self.result_ptr.call(&mut self.store, ()).map_err(werr)? as usize;
        let len = self.result_len.call(&mut self.store, ()).map_err(werr)? as usize;
        self.memory
            .data(&self.store)
            .get(ptr..ptr + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                NnError::Run("the portable backend returned an out-of-bounds result".into())
            })
    }
}

impl PortableGraph {
    fn instantiate(&self) -> Result<PInstance, NnError> {
        instantiate(&self.compiled, &self.bytes, MEMORY_BYTES)
    }

    /// Keeps `inst` for the next call.
    fn keep(&self, inst: PInstance) {
        self.note_resident(&inst);
        *self.instance.lock().unwrap_or_else(|p| p.into_inner()) = Some(inst);
    }

    /// Notes what the graph holds with `inst` as its instance.
    fn note_resident(&self, inst: &PInstance) {
        let memory = inst.memory.data_size(&inst.store) as u64;
        self.resident
            .store(self.bytes.len() as u64 + memory, Ordering::Relaxed);
    }
}

/// A new instance of the portable module with graph `bytes` loaded, its
/// memory capped at `memory_bytes`.
fn instantiate(c: &Compiled, bytes: &[u8], memory_bytes: usize) -> Result<PInstance, NnError> {
    let wasi = WasiCtxBuilder::new()
        .wall_clock(VirtualWallClock)
        .monotonic_clock(VirtualMonotonicClock)
        .secure_random(SeededStream::new(&Digest::of(b"portable"), 0, "secure"))
        .insecure_random(SeededStream::new(&Digest::of(b"portable"), 0, "insecure"))
        .insecure_random_seed(0)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build_p1();
    let limits = StoreLimitsBuilder::new()
        .memory_size(memory_bytes)
        .instances(1)
        .trap_on_grow_failure(false)
        .build();
    let mut store = Store::new(&c.engine, PData { wasi, limits });
    store.limiter(|d| &mut d.limits);
    // Loading a graph is not bounded by a run's deadline.
    store.set_epoch_deadline(NO_DEADLINE);
    store.epoch_deadline_trap();
    let instance: Instance = c.linker.instantiate(&mut store, &c.module).map_err(werr)?;
    let get = |store: &mut Store<PData>, name: &str| {
        instance
            .get_export(&mut *store, name)
            .ok_or_else(|| NnError::Run(format!("the portable module lacks `{name}`")))
    };
    let memory = get(&mut store, "memory")?
        .into_memory()
        .ok_or_else(|| NnError::Run("`memory` is not a memory".into()))?;
    macro_rules! func {
        ($name:literal) => {
            instance.get_typed_func(&mut store, $name).map_err(werr)?
        };
    }
    let mut inst = PInstance {
        alloc: func!("tally_alloc"),
        free: func!("tally_free"),
        run: func!("tally_run"),
        cost: func!("tally_cost"),
        fold: func!("tally_fold"),
        result_ptr: func!("tally_result_ptr"),
        result_len: func!("tally_result_len"),
        memory,
        store,
        handle: -1,
    };
    let load: TypedFunc<(u32, u32), i32> = instance
        .get_typed_func(&mut inst.store, "tally_load")
        .map_err(werr)?;
    let ptr = inst.put(bytes)?;
    let handle = load
        .call(&mut inst.store, (ptr, bytes.len() as u32))
        .map_err(werr)?;
    inst.free
        .call(&mut inst.store, (ptr, bytes.len() as u32))
        .map_err(werr)?;
    if handle < 0 {
        let msg = String::from_utf8_lossy(&inst.result()?).into_owned();
        return Err(NnError::Plan(msg));
    }
    inst.handle = handle;
    Ok(inst)
}

/// Most memory the cost analysis of one graph may use: 1 GiB. Analysing a
/// graph types and declutters it, which evaluates its constant subgraphs:
/// a few hundred bytes of ONNX can describe gigabytes of constants.
pub const ANALYSIS_MEMORY_BYTES: usize = 1 << 30;

/// The static cost of inference calls, computed by tract *inside the
/// portable engine*, whatever backend runs the call: the same source as
/// the native `tally_nn::CostModel` (so the same numbers), but its memory
/// is capped at [`ANALYSIS_MEMORY_BYTES`] and it stops at the run's
/// deadline, so a hostile graph cannot make the host fold constants
/// without bound before it has paid any fuel. Each analysis gets a fresh
/// instance, dropped after it: nothing stays resident but the cached cost
/// (costs, deterministic refusals and load checks live in the sandbox's
/// byte budget, [`Caches`]).
pub(crate) struct BoundedCosts {
    cache_dir: Option<PathBuf>,
    caches: Arc<Caches>,
    /// The results kept on disk, when the sandbox has a cache directory.
    disk: Option<DiskAnalyses>,
}

/// Most analysis results kept on disk per portable module: a guest that
/// varies its input shapes must not fill the host's disk (about 100 bytes
/// each; past the cap results are kept in memory only).
pub const MAX_DISK_ANALYSES: usize = 4096;

/// Longest refusal kept on disk, in bytes.
const MAX_DISK_REFUSAL_BYTES: usize = 1024;

/// Analysis results (costs, refusals, load checks) on disk, under
/// `CACHE/analyses/MODULE/`, so that a fresh process — every `tally run`
/// and `tally verify` — does not load each graph into the portable engine
/// again to analyse it (a PP-OCRv4 graph takes tract in wasm a second or
/// more to load). Keyed by the portable module's digest (it computes
/// them), the graph's digest and the input signature; only what the module
/// decided is kept ([`Analysed`]), written atomically; a file that does not
/// parse is ignored. The directory is the host's own, as trusted as its compiled
/// modules: a verifier's costs come from its own.
struct DiskAnalyses {
    dir: PathBuf,
    /// Files written or found, once counted.
    count: OnceLock<AtomicU64>,
}

impl DiskAnalyses {
    fn new(cache_dir: &Path) -> Self {
        DiskAnalyses {
            dir: cache_dir.join("analyses").join(module_digest().to_string()),
            count: OnceLock::new(),
        }
    }

    fn cost_name(digest: &Digest, sig: &Signature) -> String {
        // The whole digest: a guest picks its shapes, and must not be able
        // to find one whose name is that of a cheaper signature.
        format!("cost-{digest}-{}", Digest::of(&encode_signature(sig)))
    }

    fn load_name(digest: &Digest) -> String {
        format!("load-{digest}")
    }

    /// A kept result: `Ok(value)` or a refusal.
    fn get(&self, name: &str) -> Option<Result<u64, String>> {
        let bytes = std::fs::read(self.dir.join(name)).ok()?;
        match bytes.split_first()? {
            (b'O', v) => Some(Ok(u64::from_le_bytes(v.try_into().ok()?))),
            (b'E', why) => Some(Err(String::from_utf8(why.to_vec()).ok()?)),
            _ => None,
        }
    }

    /// Keeps `result`, unless [`MAX_DISK_ANALYSES`] are kept already.
    fn put(&self, name: &str, result: &Result<u64, String>) {
        let count = self.count.get_or_init(|| {
            let n = std::fs::read_dir(&self.dir).map_or(0, |d| d.count());
            AtomicU64::new(n as u64)
        });
        if count.fetch_add(1, Ordering::Relaxed) >= MAX_DISK_ANALYSES as u64 {
            return;
        }
        let bytes = match result {
            Ok(v) => [&b"O"[..], &v.to_le_bytes()].concat(),
            // A refusal names the graph's nodes, which its publisher
            // chose: a long one is kept in memory only.
            Err(why) if why.len() > MAX_DISK_REFUSAL_BYTES => return,
            Err(why) => [&b"E"[..], why.as_bytes()].concat(),
        };
        static TMP: AtomicU64 = AtomicU64::new(0);
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::create_dir_all(&self.dir);
        if std::fs::write(&tmp, bytes).is_err() || std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

impl BoundedCosts {
    pub(crate) fn new(cache_dir: Option<&Path>, caches: Arc<Caches>) -> Self {
        BoundedCosts {
            cache_dir: cache_dir.map(Path::to_path_buf),
            caches,
            disk: cache_dir.map(DiskAnalyses::new),
        }
    }

    /// The cost of running graph `digest` (`bytes`) on inputs of `sig`.
    /// [`NnError::WallTime`] when the analysis reaches `deadline`; a
    /// deterministic error when the graph is refused or the analysis
    /// exceeds its memory. Refusals are remembered like costs, so a guest
    /// that retries a refused call does not make the host analyse it again.
    pub(crate) fn cost(
        &self,
        digest: &Digest,
        bytes: &[u8],
        sig: &Signature,
        deadline: Instant,
    ) -> Result<u64, NnError> {
        let key = Key::Cost(*digest, sig.clone());
        if let Some(Value::Cost(c)) = self.caches.get(&key) {
            return c.map_err(NnError::Plan);
        }
        let name = DiskAnalyses::cost_name(digest, sig);
        if let Some(kept) = self.disk.as_ref().and_then(|d| d.get(&name)) {
            self.caches.insert(key, Value::Cost(kept.clone()));
            return kept.map_err(NnError::Plan);
        }
        let Analysed { result: cost, keep } = self.analyse(bytes, sig, deadline);
        let remembered = match &cost {
            Ok(c) => Ok(*c),
            Err(NnError::Plan(why)) => Err(why.clone()),
            // The deadline and host faults are not the graph's doing.
            Err(_) => return cost,
        };
        if let (Some(d), true) = (&self.disk, keep) {
            d.put(&name, &remembered);
        }
        self.caches.insert(key, Value::Cost(remembered));
        cost
    }

    fn analyse(&self, bytes: &[u8], sig: &Signature, deadline: Instant) -> Analysed<u64> {
        let mut inst = match self.analysis_instance(bytes, deadline) {
            Ok(inst) => inst,
            Err(failed) => return Analysed::failed(failed),
        };
        let encoded = encode_signature(sig);
        let status = match inst.put(&encoded).and_then(|ptr| {
            inst.cost
                .call(&mut inst.store, (inst.handle, ptr, encoded.len() as u32))
                .map_err(werr)
        }) {
            Ok(status) => status,
            Err(e) => return Analysed::trapped(e),
        };
        let result = match inst.result() {
            Ok(r) => r,
            Err(e) => return Analysed::trapped(e),
        };
        let result = if status != 0 {
            Err(NnError::Plan(String::from_utf8_lossy(&result).into_owned()))
        } else {
            result
                .try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| NnError::Plan("the cost analysis returned no cost".into()))
        };
        Analysed { result, keep: true }
    }

    /// A fresh analysis instance with `bytes` loaded, stopped at
    /// `deadline`; the module's refusal of the graph is its decision.
    fn analysis_instance(
        &self,
        bytes: &[u8],
        deadline: Instant,
    ) -> Result<PInstance, (NnError, bool)> {
        let c = compiled(self.cache_dir.as_deref()).map_err(|e| (e, false))?;
        let mut inst = instantiate(&c, bytes, ANALYSIS_MEMORY_BYTES).map_err(|e| match e {
            NnError::Plan(_) => (e, true),
            e => (analysis_error(e), false),
        })?;
        inst.store.set_epoch_deadline(ticks_until(deadline));
        Ok(inst)
    }

    /// Checks, once per graph, that folding `bytes`' input-independent
    /// constants fits the analysis's memory: before any backend loads it
    /// (ONNX Runtime folds constants when it creates a session, natively
    /// and without a bound). A graph whose folding does not fit the memory
    /// cap, or holds a constant tract refuses to materialise (in wasm32, one
    /// of 2 GiB or more), is refused on every backend alike, and the
    /// refusal is remembered. A graph tract cannot type with its declared
    /// inputs passes here: its calls are analysed per input signature.
    ///
    /// [`NnError::WallTime`] when the check reaches `deadline` (tract's
    /// optimiser does not finish on every graph).
    pub(crate) fn check_load(
        &self,
        digest: &Digest,
        bytes: &[u8],
        deadline: Instant,
    ) -> Result<(), NnError> {
        let key = Key::LoadCheck(*digest);
        if let Some(Value::LoadCheck(r)) = self.caches.get(&key) {
            return r.map_err(NnError::Plan);
        }
        let name = DiskAnalyses::load_name(digest);
        if let Some(kept) = self.disk.as_ref().and_then(|d| d.get(&name)) {
            let kept = kept.map(drop);
            self.caches.insert(key, Value::LoadCheck(kept.clone()));
            return kept.map_err(NnError::Plan);
        }
        let Analysed {
            result: checked,
            keep,
        } = self.fold(bytes, deadline);
        let remembered = match &checked {
            Ok(()) => Ok(()),
            Err(NnError::Plan(why)) => Err(why.clone()),
            Err(_) => return checked,
        };
        if let (Some(d), true) = (&self.disk, keep) {
            d.put(&name, &remembered.clone().map(|()| 0));
        }
        self.caches.insert(key, Value::LoadCheck(remembered));
        checked
    }

    fn fold(&self, bytes: &[u8], deadline: Instant) -> Analysed<()> {
        let mut inst = match self.analysis_instance(bytes, deadline) {
            Ok(inst) => inst,
            Err(failed) => return Analysed::failed(failed),
        };
        let status = match inst.fold.call(&mut inst.store, inst.handle) {
            Ok(status) => status,
            Err(e) => return Analysed::trapped(werr(e)),
        };
        if status != 0 {
            // tract could not type the graph with its declared inputs (it
            // cannot always do so symbolically; its calls are analysed per
            // signature), or it refused to materialise a constant: only
            // the latter is about folding, and it is refused.
            let why = match inst.result() {
                Ok(r) => String::from_utf8_lossy(&r).into_owned(),
                Err(e) => return Analysed::trapped(e),
            };
            if why.contains("too large") {
                return Analysed {
                    result: Err(NnError::Plan(format!(
                        "folding the graph's constants: {why}"
                    ))),
                    keep: true,
                };
            }
        }
        Analysed {
            result: Ok(()),
            keep: true,
        }
    }
}

/// An analysis's result, and whether it may be kept on disk: only what the
/// module itself decided (a cost, or its refusal of the graph). A trap (the
/// memory cap, the wasm stack, a tract panic: its message is deterministic,
/// but a host's failure to map memory is not, nor is the stack depth one
/// compiler allows), the deadline and host faults are kept in memory at
/// most, for the life of the process.
struct Analysed<T> {
    result: Result<T, NnError>,
    keep: bool,
}

impl<T> Analysed<T> {
    fn trapped(e: NnError) -> Self {
        Analysed {
            result: Err(analysis_error(e)),
            keep: false,
        }
    }

    fn failed((e, keep): (NnError, bool)) -> Self {
        Analysed {
            result: Err(e),
            keep,
        }
    }
}

/// A failed analysis, as a deterministic message: a trap's text depends on
/// nothing but the module and the graph (the wall-clock deadline stays
/// [`NnError::WallTime`]).
fn analysis_error(e: NnError) -> NnError {
    match e {
        NnError::WallTime => NnError::WallTime,
        NnError::Run(_) => NnError::Plan(format!(
            "the cost analysis failed within its {} MiB of memory (a graph whose constants fold into more, or a tract panic)",
            ANALYSIS_MEMORY_BYTES >> 20
        )),
        other => other,
    }
}

impl LoadedGraph for PortableGraph {
    fn run(&self, inputs: &[Tensor], max_output_bytes: usize) -> Result<Vec<Tensor>, NnError> {
        self.run_ticks(inputs, max_output_bytes, NO_DEADLINE)
    }

    fn run_until(
        &self,
        inputs: &[Tensor],
        max_output_bytes: usize,
        deadline: Instant,
    ) -> Result<Vec<Tensor>, NnError> {
        self.run_ticks(inputs, max_output_bytes, ticks_until(deadline))
    }

    /// Measured: the graph's bytes and its instance's linear memory.
    fn resident_bytes(&self) -> u64 {
        self.resident.load(Ordering::Relaxed)
    }
}

impl PortableGraph {
    /// Runs with an epoch deadline `ticks` from now; an interrupted run is
    /// [`NnError::WallTime`] and its instance is dropped.
    fn run_ticks(
        &self,
        inputs: &[Tensor],
        max_output_bytes: usize,
        ticks: u64,
    ) -> Result<Vec<Tensor>, NnError> {
        let mut slot = self.instance.lock().unwrap_or_else(|p| p.into_inner());
        let mut inst = match slot.take() {
            Some(i) => i,
            None => self.instantiate()?,
        };
        inst.store.set_epoch_deadline(ticks);
        let encoded = encode_tensors(inputs);
        let ptr = inst.put(&encoded)?;
        let max = u32::try_from(max_output_bytes).unwrap_or(u32::MAX);
        let status = inst
            .run
            .call(
                &mut inst.store,
                (inst.handle, ptr, encoded.len() as u32, max),
            )
            .map_err(werr)?;
        inst.free
            .call(&mut inst.store, (ptr, encoded.len() as u32))
            .map_err(werr)?;
        let result = inst.result()?;
        // Only a healthy instance goes back; a trapped one was dropped above.
        self.note_resident(&inst);
        *slot = Some(inst);
        if status != 0 {
            return Err(NnError::Run(String::from_utf8_lossy(&result).into_owned()));
        }
        Ok(decode_tensors(&result, max_output_bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_nn::ElemType;

    /// The portable module compiled for Pulley (wasmtime's interpreter)
    /// instead of this CPU.
    fn pulley() -> Compiled {
        let mut c = crate::profile::semantic_config();
        c.target("pulley64").unwrap();
        c.epoch_interruption(true);
        let engine = Engine::new(&c).unwrap();
        let module = Module::new(&engine, tally_portable_module::WASM).unwrap();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |d: &mut PData| &mut d.wasi).unwrap();
        Compiled {
            engine,
            module,
            linker: Arc::new(linker),
        }
    }

    /// silero VAD, `steps` steps on deterministic noise, on `compiled`:
    /// every output's bytes.
    fn silero(compiled: Compiled, steps: usize) -> Vec<Vec<u8>> {
        let bytes = tally_test_artifacts::pkg::asset("silero_vad_openvino_16k.onnx");
        let graph = PortableGraph {
            compiled,
            bytes,
            instance: Mutex::new(None),
            resident: AtomicU64::new(0),
        };
        let f32s = |dims: &[u32], v: &[f32]| {
            let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Tensor::new(ElemType::F32, dims.to_vec(), data, 1 << 20).unwrap()
        };
        let mut x = 0x2545f491u32;
        let mut state = f32s(&[2, 1, 128], &[0.0; 256]);
        let mut out = Vec::new();
        for _ in 0..steps {
            let audio: Vec<f32> = (0..576)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x as f32 / u32::MAX as f32 - 0.5) * 0.6
                })
                .collect();
            let o = graph
                .run(&[f32s(&[1, 576], &audio), state.clone()], 1 << 20)
                .unwrap();
            out.extend(o.iter().map(|t| t.data().to_vec()));
            state = o[1].clone();
        }
        out
    }

    /// The same bits under Cranelift on this CPU and under Pulley: the
    /// module's relaxed-SIMD fused multiply-adds (the profile makes them
    /// fused everywhere) and its NaN canonicalisation included.
    #[test]
    fn the_portable_module_computes_the_same_bits_under_pulley() {
        let native = silero(compiled(None).unwrap(), 3);
        let interpreted = silero(pulley(), 3);
        assert_eq!(native.len(), 6);
        assert_eq!(native, interpreted);
    }
}
