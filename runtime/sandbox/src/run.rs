//! Running a package's pipeline and building its claim.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tally_digest::Digest;
use tally_manifest::{ExecutionTarget, Limit, ResolvedLimits, Stage};
use tally_nn::decode_tensors;
use tally_package::Package;
use tally_receipt::{
    AbortReason, Claim, InferenceCheck, Outcome, RecordedCompute, RecordedComputes, StageClaim,
    Transcript, FORMAT_VERSION,
};
use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::cache::Compiled;
use crate::host::{
    self, Limiter, Recorder, SeededStream, StoreData, VirtualMonotonicClock, VirtualWallClock,
};
use crate::nn::{ComputeRecord, GraphSource, NnRun, Original};
use crate::{Sandbox, SandboxError, EPOCH_TICK};

/// What to run a package on.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunRequest<'a> {
    /// The run input (stdin of the first stage).
    pub input: &'a [u8],
    /// Fuel for the run, instead of the manifest's (still capped by the
    /// host policy). Default: `None`, the manifest's limit.
    pub fuel: Option<u64>,
    /// The seed of the random streams. Default: `None`, derived from the
    /// package id and the input digest.
    pub seed: Option<Digest>,
    /// Exact limits to run under (a verifier replays with the claim's).
    /// Default: `None`, the manifest's limits capped by policy.
    pub limits: Option<ResolvedLimits>,
    /// The original run's `compute` calls with their recorded outputs (a
    /// cross-backend replay): each compute call is checked against the
    /// original's call at the same position and the guest gets what the
    /// original guest got. Default: `None`, guests get this host's outputs.
    pub recorded: Option<&'a RecordedComputes>,
}

impl<'a> RunRequest<'a> {
    /// A request with every default.
    pub fn new(input: &'a [u8]) -> Self {
        RunRequest {
            input,
            fuel: None,
            seed: None,
            limits: None,
            recorded: None,
        }
    }
    /// Sets [`RunRequest::recorded`].
    pub fn recorded(mut self, recorded: Option<&'a RecordedComputes>) -> Self {
        self.recorded = recorded;
        self
    }
    /// Sets [`RunRequest::fuel`].
    pub fn fuel(mut self, fuel: Option<u64>) -> Self {
        self.fuel = fuel;
        self
    }
    /// Sets [`RunRequest::seed`].
    pub fn seed(mut self, seed: Option<Digest>) -> Self {
        self.seed = seed;
        self
    }
    /// Sets [`RunRequest::limits`].
    pub fn limits(mut self, limits: Option<ResolvedLimits>) -> Self {
        self.limits = limits;
        self
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunResult {
    /// The claim, ready to be sealed.
    pub claim: Claim,
    /// Every host call, in order; its root is `claim.transcript_root`.
    pub transcript: Transcript,
    /// The output (empty unless the outcome is `ok`).
    pub output: Vec<u8>,
    /// Each stage's stderr, by stage name.
    pub stderr: Vec<(String, Vec<u8>)>,
    /// How long the run took (not part of the claim).
    pub wall_time: Duration,
    /// The outputs of every successful inference, in order; each one's
    /// digest is in the transcript. A host stores them with the receipt so
    /// a verifier on another backend can replay against them.
    pub computes: Vec<ComputeRecord>,
    /// In a replay with recorded outputs: how this host's recomputation
    /// compares, per graph output.
    pub inference: Vec<InferenceCheck>,
}

impl Sandbox {
    fn limits_for(
        &self,
        package: &Package,
        req: &RunRequest<'_>,
    ) -> Result<ResolvedLimits, SandboxError> {
        let caps = &self.config.policy.caps;
        if let Some(l) = req.limits {
            for (limit, requested, cap) in [
                ("fuel", l.fuel, caps.fuel),
                ("memory_bytes", l.memory_bytes, caps.memory_bytes),
                ("table_elements", l.table_elements, caps.table_elements),
                ("module_bytes", l.module_bytes, caps.module_bytes),
                ("output_bytes", l.output_bytes, caps.output_bytes),
                ("stderr_bytes", l.stderr_bytes, caps.stderr_bytes),
                ("host_calls", l.host_calls, caps.host_calls),
                ("wall_time_ms", l.wall_time_ms, caps.wall_time_ms),
            ] {
                if requested > cap {
                    return Err(SandboxError::PolicyForbids {
                        limit,
                        requested,
                        cap,
                    });
                }
            }
            return Ok(l);
        }
        let mut l = package.manifest().limits.resolve().capped_by(caps);
        if let Some(fuel) = req.fuel {
            l.fuel = fuel.min(caps.fuel);
        }
        Ok(l)
    }

    /// One-time host work for `package`, done before a run's clock starts
    /// so that a cold host and a warm one seal the same outcome: compiling
    /// the stages' modules (within `module_bytes`) and loading the graphs
    /// its stages are granted (for the portable backend, compiling the
    /// engine too). Failures are left for the run to meet, where they
    /// become outcomes and errnos.
    /// Plans for new input shapes are still built inside `compute`.
    ///
    /// What it prepares is pinned for the run (the compiled modules
    /// returned, the graphs in their sources), so the caches' evictions
    /// cannot make the run redo it against its own clock.
    fn prepare(
        &self,
        package: &Package,
        limits: &ResolvedLimits,
        graphs: &BTreeMap<String, GraphSource>,
    ) -> BTreeMap<Digest, Arc<Compiled>> {
        let manifest = package.manifest();
        let mut modules = BTreeMap::new();
        for stage in &manifest.stages {
            let module = &manifest.modules[&stage.module];
            if let Some(bytes) = package.blob(&module.digest) {
                if bytes.len() as u64 <= limits.module_bytes {
                    if let Ok(c) = self.cache.get(&self.base, &module.digest, bytes) {
                        modules.insert(module.digest, c);
                    }
                }
            }
        }
        // Only graphs a stage may load: a graph no stage is granted is never
        // worth a host's time. The checks get as long as the run will have
        // (all of them together); one that does not finish is met again
        // inside the run, against its deadline.
        let deadline = Instant::now() + Duration::from_millis(limits.wall_time_ms);
        let granted: std::collections::BTreeSet<&String> =
            manifest.stages.iter().flat_map(|s| &s.graphs).collect();
        for name in granted {
            if let Some(src) = graphs.get(name) {
                let _ = self.nn.preload(src, deadline);
            }
        }
        modules
    }

    /// Replays the run `claim` describes: same seed, same limits. When the
    /// claim's backend differs from this sandbox's, `recorded` (the
    /// original host's inference outputs) makes it a cross-backend replay;
    /// on the same backend they are not needed and not used.
    pub fn replay(
        &self,
        package: &Package,
        claim: &Claim,
        input: &[u8],
        recorded: Option<&RecordedComputes>,
    ) -> Result<RunResult, SandboxError> {
        let cross = claim.backend != self.backend_info;
        self.run(
            package,
            &RunRequest::new(input)
                .seed(Some(claim.seed))
                .limits(Some(claim.limits))
                .recorded(recorded.filter(|_| cross)),
        )
    }

    /// Runs `package` on `req.input`. Guest failures are outcomes in the
    /// claim; an `Err` is a host problem.
    pub fn run(&self, package: &Package, req: &RunRequest<'_>) -> Result<RunResult, SandboxError> {
        let manifest = package.manifest();
        let limits = self.limits_for(package, req)?;
        let package_id = package.id();
        let input = Digest::of(req.input);
        let seed = req
            .seed
            .unwrap_or_else(|| host::default_seed(&package_id, &input));
        // Created on first use: most stages read no files.
        let mut views: Option<tempfile::TempDir> = None;
        let recorded = match req.recorded {
            None => None,
            // A run records at most NN_MAX_RECORDED_BYTES of tensor data;
            // more is not the recording of a run under this profile.
            Some(r)
                if r.calls()
                    .iter()
                    .map(|c| match c {
                        RecordedCompute::Computed(b) => b.len(),
                        _ => 0,
                    })
                    .sum::<usize>()
                    > crate::profile::NN_MAX_RECORDED_BYTES + (64 << 10) * r.calls().len() =>
            {
                return Err(SandboxError::Recorded(format!(
                    "more than the {} bytes of outputs a run may record",
                    crate::profile::NN_MAX_RECORDED_BYTES
                )));
            }
            Some(r) => Some(
                r.calls()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match c {
                        RecordedCompute::Computed(b) => {
                            decode_tensors(b, crate::profile::NN_MAX_OUTPUT_BYTES)
                                .map(Original::Computed)
                                .map_err(|e| {
                                    SandboxError::Recorded(format!("compute call #{i}: {e}"))
                                })
                        }
                        RecordedCompute::Failed { results, detail } => Ok(Original::Failed {
                            errno: results.first().copied().unwrap_or(-1),
                            detail: detail.clone(),
                        }),
                        _ => Err(SandboxError::Recorded(format!(
                            "compute call #{i}: a kind of record this host does not know"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let graphs: BTreeMap<String, GraphSource> = manifest
            .graphs
            .iter()
            .map(|(name, g)| {
                let bytes = package
                    .blob(&g.file.digest)
                    .expect("a checked package has every graph");
                let target = if self.config.gpu && g.targets.contains(&ExecutionTarget::Gpu) {
                    ExecutionTarget::Gpu
                } else {
                    ExecutionTarget::Cpu
                };
                let src = GraphSource {
                    digest: g.file.digest,
                    bytes: self.nn.graph_bytes(&g.file.digest, bytes),
                    target,
                    loaded: OnceLock::new(),
                };
                (name.clone(), src)
            })
            .collect();
        let prepared = self.prepare(package, &limits, &graphs);
        // The run's clock starts only now: one-time host work is never
        // charged to a guest's wall time.
        let started = Instant::now();
        let deadline = started + Duration::from_millis(limits.wall_time_ms);
        let mut nn_run = Some(NnRun::new(
            self.nn.clone(),
            Arc::new(graphs),
            Arc::new(manifest.clone()),
            recorded,
            deadline,
        ));

        let mut transcript = Transcript::new();
        let mut calls_left = limits.host_calls;
        let mut fuel_left = limits.fuel;
        let mut stdin = req.input.to_vec();
        let mut stages = Vec::new();
        let mut stderrs = Vec::new();
        let mut outcome = Outcome::Ok;

        for (index, stage) in manifest.stages.iter().enumerate() {
            let module = &manifest.modules[&stage.module];
            let bytes = package
                .blob(&module.digest)
                .expect("a checked package has every module");
            let mut claim = StageClaim {
                name: stage.name.clone(),
                module: module.digest,
                stdin: Digest::of(&stdin),
                stdout: Digest::of(b""),
                stderr: Digest::of(b""),
                fuel_consumed: 0,
                host_calls: 0,
            };
            let compiled = if bytes.len() as u64 > limits.module_bytes {
                Err(Outcome::LimitExceeded {
                    stage: stage.name.clone(),
                    limit: Limit::ModuleBytes,
                })
            } else if let Some(c) = prepared.get(&module.digest) {
                Ok(c.clone())
            } else {
                self.cache
                    .get(&self.base, &module.digest, bytes)
                    .map_err(|reason| Outcome::Rejected {
                        stage: stage.name.clone(),
                        reason,
                    })
            };
            let compiled = match compiled {
                Ok(c) => c,
                Err(o) => {
                    outcome = o;
                    stages.push(claim);
                    break;
                }
            };

            // One byte more than the limit: a guest that tried to write past
            // the limit leaves more than `limit` bytes, whatever it does next.
            let stdout = MemoryOutputPipe::new((limits.output_bytes as usize).saturating_add(1));
            let stderr = MemoryOutputPipe::new((limits.stderr_bytes as usize).saturating_add(1));
            let wasi = self.wasi_ctx(
                package,
                stage,
                index as u32,
                &seed,
                std::mem::take(&mut stdin),
                &stdout,
                &stderr,
                &mut views,
            )?;
            let mut nn = nn_run
                .take()
                .expect("the run's wasi-nn state is between stages");
            nn.start_stage(&stage.graphs);
            let mut data = StoreData {
                nn,
                wasi,
                limiter: Limiter {
                    memory_bytes: limits.memory_bytes as usize,
                    table_elements: limits.table_elements as usize,
                    hit: None,
                },
                rec: Recorder {
                    stage: index as u32,
                    transcript: std::mem::take(&mut transcript),
                    calls_left,
                    stage_calls: 0,
                    random: SeededStream::new(&seed, index as u32, "random_get"),
                    limit_hit: None,
                },
                inodes: Default::default(),
            };
            data.rec.push(
                "tally.stage_start",
                vec![index as i64],
                Vec::new(),
                Some(module.digest),
                Some(stage.name.clone()),
            );
            for path in &stage.read {
                let digest = manifest.file(path).map(|f| f.digest);
                data.rec.push(
                    "tally.grant",
                    Vec::new(),
                    Vec::new(),
                    digest,
                    Some(format!("/pkg/{path}")),
                );
            }
            let mut store = Store::new(&self.engine, data);
            store.limiter(|d| &mut d.limiter);
            if !self.config.unmetered {
                store
                    .set_fuel(fuel_left)
                    .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
            }
            let ticks = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                / EPOCH_TICK.as_millis()
                + 1;
            store.set_epoch_deadline(ticks as u64);
            store.epoch_deadline_trap();
            host::install_call_hook(&mut store);

            let stage_outcome = match compiled.pre.instantiate(&mut store) {
                Err(e) => Some(classify(&stage.name, &store, e).unwrap_or_else(|| Outcome::Rejected {
                    stage: stage.name.clone(),
                    reason: "instantiation failed".into(),
                })),
                Ok(instance) => match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                    Err(_) => Some(Outcome::Rejected {
                        stage: stage.name.clone(),
                        reason: "the module exports no `_start` function of type () -> (); build it as a WASI command".into(),
                    }),
                    Ok(start) => match start.call(&mut store, ()) {
                        Ok(()) => None,
                        Err(e) => classify(&stage.name, &store, e),
                    },
                },
            };
            // Fuel is exact when the guest returned or called `proc_exit`;
            // after a trap wasmtime's count is not, so the stage is charged
            // its whole remaining budget (a deterministic figure).
            let exact = matches!(stage_outcome, None | Some(Outcome::Exit { .. }));
            let consumed = match store.get_fuel() {
                Err(_) => 0, // unmetered
                Ok(left) if exact => fuel_left - left,
                Ok(_) => fuel_left,
            };
            fuel_left -= consumed;
            let mut data = store.into_data();
            let stage_calls = data.rec.stage_calls;
            data.rec.push(
                "tally.stage_end",
                vec![stage_calls as i64],
                Vec::new(),
                None,
                None,
            );
            transcript = data.rec.transcript;
            calls_left = data.rec.calls_left;
            nn_run = Some(data.nn);

            let (mut out, mut err) = (stdout.contents().to_vec(), stderr.contents().to_vec());
            // A write past a stream's limit is that limit, whatever the stage
            // did next (exit 0 included): its output is never truncated into
            // an `ok`, nor into the next stage's input. The bytes within the
            // limit are what the claim digests.
            let over = |b: &mut Vec<u8>, limit: u64| {
                let over = b.len() as u64 > limit;
                b.truncate(limit.min(b.len() as u64) as usize);
                over
            };
            let full = if over(&mut out, limits.output_bytes) {
                Some(Limit::OutputBytes)
            } else if over(&mut err, limits.stderr_bytes) {
                Some(Limit::StderrBytes)
            } else {
                None
            };
            let stage_outcome = match full {
                Some(limit) => Some(Outcome::LimitExceeded {
                    stage: stage.name.clone(),
                    limit,
                }),
                None => stage_outcome,
            };
            claim.stdout = Digest::of(&out);
            claim.stderr = Digest::of(&err);
            claim.fuel_consumed = consumed;
            claim.host_calls = stage_calls;
            stages.push(claim);
            stderrs.push((stage.name.clone(), err));
            match stage_outcome {
                None => stdin = out,
                Some(o) => {
                    outcome = o;
                    break;
                }
            }
        }

        let output = if outcome.is_ok() { stdin } else { Vec::new() };
        let mut nn = nn_run.expect("the run's wasi-nn state is back");
        let replaying = nn.replaying();
        let claim = Claim {
            format_version: FORMAT_VERSION,
            tally_version: env!("CARGO_PKG_VERSION").into(),
            engine: self.profile.clone(),
            backend: self.backend_info.clone(),
            package_id,
            input,
            output: Digest::of(&output),
            output_len: output.len() as u64,
            seed,
            limits,
            fuel_consumed: limits.fuel - fuel_left,
            stages,
            outcome,
            transcript_root: transcript.root(),
            host_calls: transcript.len() as u64,
        };
        Ok(RunResult {
            claim,
            transcript,
            output,
            stderr: stderrs,
            wall_time: started.elapsed(),
            computes: std::mem::take(&mut nn.records),
            inference: if replaying {
                nn.into_checks()
            } else {
                Vec::new()
            },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn wasi_ctx(
        &self,
        package: &Package,
        stage: &Stage,
        index: u32,
        seed: &Digest,
        stdin: Vec<u8>,
        stdout: &MemoryOutputPipe,
        stderr: &MemoryOutputPipe,
        views: &mut Option<tempfile::TempDir>,
    ) -> Result<wasmtime_wasi::p1::WasiP1Ctx, SandboxError> {
        let mut argv = vec![stage.name.clone()];
        argv.extend(stage.args.iter().cloned());
        let env: Vec<(&String, &String)> = stage.env.iter().collect();
        let mut insecure_seed = [0u8; 16];
        wasi_rand_core::Rng::fill_bytes(
            &mut SeededStream::new(seed, index, "insecure-seed"),
            &mut insecure_seed,
        );
        let mut b = WasiCtxBuilder::new();
        b.stdin(MemoryInputPipe::new(stdin))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&argv)
            .envs(&env)
            .wall_clock(VirtualWallClock)
            .monotonic_clock(VirtualMonotonicClock)
            .secure_random(SeededStream::new(seed, index, "secure"))
            .insecure_random(SeededStream::new(seed, index, "insecure"))
            .insecure_random_seed(u128::from_le_bytes(insecure_seed))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .allow_blocking_current_thread(true);
        if !stage.read.is_empty() {
            let io = |what: String| move |source| SandboxError::Io { what, source };
            let views = match views {
                Some(v) => v,
                None => views.insert(
                    tempfile::Builder::new()
                        .prefix(&format!("{RUN_DIR_PREFIX}{}-", std::process::id()))
                        .tempdir()
                        .map_err(io("creating the run's file view".into()))?,
                ),
            };
            // Each file is written once per run (by digest, read-only) and
            // each stage's view links to it: many stages granted one large
            // file cost one copy, not one per stage. Not shared across runs:
            // a file's link count is visible to the guest (`fd_filestat_get`),
            // and within one run it follows from the manifest alone.
            let dir = views.path().join(format!("stage-{index}"));
            for path in &stage.read {
                let file = package
                    .manifest()
                    .file(path)
                    .expect("a checked manifest grants declared files");
                let content = views.path().join("files").join(file.digest.to_string());
                if !content.exists() {
                    let bytes = package
                        .blob(&file.digest)
                        .expect("a checked package has every file");
                    std::fs::create_dir_all(content.parent().expect("joined paths have parents"))
                        .and_then(|()| std::fs::write(&content, bytes))
                        .and_then(|()| {
                            let mut perms = std::fs::metadata(&content)?.permissions();
                            perms.set_readonly(true);
                            std::fs::set_permissions(&content, perms)
                        })
                        .map_err(io(format!("writing the view of {path}")))?;
                }
                let host_path = dir.join(path);
                std::fs::create_dir_all(host_path.parent().expect("joined paths have parents"))
                    .and_then(|()| std::fs::hard_link(&content, &host_path))
                    .map_err(io(format!("linking the view of {path}")))?;
            }
            b.preopened_dir(&dir, "/pkg", FsPerms::ReadOnly)
                .map_err(|e| SandboxError::Engine(format!("preopening the package view: {e:#}")))?;
        }
        Ok(b.build_p1())
    }
}

/// Prefix of a run's file-view directory in the system's temporary
/// directory, followed by the owning process id.
pub(crate) const RUN_DIR_PREFIX: &str = "tally-run-";

/// Removes the file views of runs whose process is gone (killed before it
/// could clean up). Returns how many were removed.
pub(crate) fn sweep_stale_run_dirs(tmp: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(RUN_DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive =
            pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The outcome of a stage that returned `err`, or `None` when the error is
/// a clean `proc_exit(0)`.
fn classify(stage: &str, store: &Store<StoreData>, err: wasmtime::Error) -> Option<Outcome> {
    let stage = stage.to_string();
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return (exit.0 != 0).then_some(Outcome::Exit {
            stage,
            code: exit.0,
        });
    }
    if let Some(limit) = store.data().rec.limit_hit.or(store.data().limiter.hit) {
        return Some(Outcome::LimitExceeded { stage, limit });
    }
    Some(match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::LimitExceeded {
            stage,
            limit: Limit::Fuel,
        },
        Some(Trap::StackOverflow) => Outcome::Aborted {
            stage,
            reason: AbortReason::StackOverflow,
            detail: String::new(),
        },
        Some(Trap::Interrupt) => Outcome::Aborted {
            stage,
            reason: AbortReason::WallTime,
            detail: String::new(),
        },
        Some(trap) => Outcome::Trap {
            stage,
            trap: snake_case(&format!("{trap:?}")),
        },
        None => Outcome::Aborted {
            stage,
            reason: AbortReason::HostError,
            detail: format!("{err:#}"),
        },
    })
}

fn snake_case(name: &str) -> String {
    let mut s = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}
