//! The determinism profile: every engine setting that can change a result,
//! and its digest.
//!
//! | concern | choice |
//! |---|---|
//! | NaN bit patterns | `cranelift_nan_canonicalization(true)` |
//! | relaxed SIMD | deterministic lowering (`relaxed_simd_deterministic(true)`) |
//! | threads, shared memory | off (`wasm_threads(false)`, no shared-everything threads) |
//! | memory64, GC, exceptions, stack switching, component model | off |
//! | fuel | on, with wasmtime's default per-operator table pinned explicitly ([`cost_table_digest`]) |
//! | host calls | [`HOST_CALL_FUEL`] fuel each, counted against the host-call limit |
//! | stack | [`MAX_WASM_STACK`]; an overflow is classified *not deterministic* (its depth differs between targets) |
//! | clocks | fixed virtual wall clock [`VIRTUAL_WALL_CLOCK_NS`] and monotonic clock [`VIRTUAL_MONOTONIC_NS`] |
//! | randomness | blake3 XOF streams keyed by the run seed, stage and stream name |
//! | env, args | only from the manifest |
//! | filesystem | read-only `/pkg` holding the stage's granted files, nothing else |
//! | sockets | none: TCP, UDP and name lookup denied |
//! | wall time | epoch interruption; hitting it is *not deterministic* |
//!
//! The profile digest ([`tally_receipt::EngineInfo::profile`]) hashes all of
//! the above with the wasmtime version; the target digest adds wasmtime's
//! precompile compatibility hash (target, CPU features, compiler flags).

use tally_digest::{digest_hash, Canon, Digest};
use tally_receipt::EngineInfo;
use wasmtime::{Config, OperatorCost};

use crate::{SandboxConfig, SandboxError, Target};

/// The wasmtime version this build links (pinned in the workspace).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Maximum wasm stack in bytes: 512 KiB.
pub const MAX_WASM_STACK: usize = 512 << 10;

/// Fuel charged for every host call, before it runs.
pub const HOST_CALL_FUEL: u64 = 1_000;

/// The virtual wall clock every guest sees: 2000-01-01T00:00:00Z, in
/// nanoseconds since the Unix epoch.
pub const VIRTUAL_WALL_CLOCK_NS: u64 = 946_684_800_000_000_000;

/// The virtual monotonic clock every guest sees (it does not advance).
pub const VIRTUAL_MONOTONIC_NS: u64 = 1_000_000_000;

/// Most graphs a stage may load (`load_by_name` calls).
pub const NN_MAX_GRAPHS: usize = 16;
/// Most wasi-nn execution contexts a stage may create.
pub const NN_MAX_CONTEXTS: usize = 64;
/// Largest tensor a guest may pass to `set_input`: 256 MiB.
pub const NN_MAX_TENSOR_BYTES: usize = 256 << 20;
/// Largest tensor an inference may return: 256 MiB.
pub const NN_MAX_OUTPUT_BYTES: usize = 256 << 20;
/// Most bytes of tensor data a stage's execution contexts may hold at once
/// (inputs set and outputs kept): 512 MiB. Beyond it `set_input` and
/// `compute` answer `too_large`.
pub const NN_MAX_HELD_BYTES: usize = 512 << 20;
/// Most bytes of inference outputs a run may record (they are kept for the
/// receipt): 1 GiB. Beyond it `compute` answers `too_large`.
pub const NN_MAX_RECORDED_BYTES: usize = 1 << 30;
/// Fuel per byte of tensor data copied across the wasi-nn boundary
/// (`set_input`, `get_output`), charged before the copy.
pub const NN_FUEL_PER_BYTE: u64 = 1;
/// Fuel for the first `compute` of a run on a (graph, input shapes) pair:
/// the host analyses the graph for those shapes before it can price the
/// call. Charged whether or not the host has the analysis cached.
pub const NN_SIGNATURE_FUEL: u64 = 10_000_000;
/// Domain tag of the inference cost model (`tally_nn_tract` static cost).
pub const NN_COST_TAG: &str =
    "tally.NnCost.v2:fma+div+output-elements;scan=body*iterations;if=max(branches)";

/// Domain tag of the profile digest.
pub const PROFILE_TAG: &str = "tally.EngineProfile.v1";

/// Digest of the per-operator fuel cost table in force.
pub fn cost_table_digest() -> Digest {
    let table = serde_json::to_vec(&OperatorCost::new()).expect("the cost table serializes");
    Digest::of(&table)
}

/// The wasmtime configuration for `config`.
pub fn wasmtime_config(config: &SandboxConfig) -> Result<Config, SandboxError> {
    let engine_err = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
    let mut c = Config::new();
    if config.target == Target::Pulley {
        c.target("pulley64").map_err(engine_err)?;
    }
    c.consume_fuel(!config.unmetered)
        .operator_cost(OperatorCost::new())
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .wasm_simd(true)
        .wasm_relaxed_simd(true)
        .wasm_threads(false)
        .wasm_shared_everything_threads(false)
        .wasm_memory64(false)
        .wasm_gc(false)
        .wasm_function_references(false)
        .wasm_exceptions(false)
        .wasm_stack_switching(false)
        .wasm_component_model(false)
        .wasm_custom_page_sizes(false)
        .wasm_wide_arithmetic(false)
        .max_wasm_stack(MAX_WASM_STACK)
        .parallel_compilation(true);
    if config.pooling {
        let caps = &config.policy.caps;
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_core_instances(16)
            .total_memories(16)
            .total_tables(16)
            .total_component_instances(0)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(caps.memory_bytes as usize)
            .table_elements(caps.table_elements as usize);
        c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    Ok(c)
}

/// The profile digest (host-independent) and the target digest.
pub fn engine_info(engine: &wasmtime::Engine, unmetered: bool) -> EngineInfo {
    let mut c = Canon::new(PROFILE_TAG);
    c.str(WASMTIME_VERSION)
        .digest(&cost_table_digest())
        .u64(HOST_CALL_FUEL)
        .u32(crate::host::MAX_RANDOM_BYTES)
        .u64(MAX_WASM_STACK as u64)
        .u64(VIRTUAL_WALL_CLOCK_NS)
        .u64(VIRTUAL_MONOTONIC_NS)
        .str(crate::host::RANDOM_TAG)
        .str(crate::host::SEED_TAG)
        .str(crate::host::FILESTAT_TAG)
        .str(if unmetered { "fuel=off" } else { "fuel=on" })
        .u64(NN_MAX_GRAPHS as u64)
        .u64(NN_MAX_CONTEXTS as u64)
        .u64(NN_MAX_TENSOR_BYTES as u64)
        .u64(NN_MAX_OUTPUT_BYTES as u64)
        .u64(NN_MAX_HELD_BYTES as u64)
        .u64(NN_MAX_RECORDED_BYTES as u64)
        .u64(NN_FUEL_PER_BYTE)
        .u64(NN_SIGNATURE_FUEL)
        .str(NN_COST_TAG);
    for knob in [
        "nan_canonicalization=on",
        "relaxed_simd=deterministic",
        "simd=on",
        "threads=off",
        "shared_everything_threads=off",
        "memory64=off",
        "gc=off",
        "function_references=off",
        "exceptions=off",
        "stack_switching=off",
        "component_model=off",
        "custom_page_sizes=off",
        "wide_arithmetic=off",
        "stack_overflow=nondeterministic",
        "fuel_on_trap=remaining_budget",
        "wasi=preview1:read-only-pkg,no-sockets,manifest-env",
    ] {
        c.str(knob);
    }
    let profile = c.finish();
    let compat = digest_hash(
        "tally.EngineCompat.v1",
        &engine.precompile_compatibility_hash(),
    );
    let target = Canon::new("tally.EngineTarget.v1")
        .digest(&profile)
        .digest(&compat)
        .finish();
    EngineInfo {
        wasmtime_version: WASMTIME_VERSION.into(),
        profile,
        target,
    }
}
