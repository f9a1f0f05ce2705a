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

/// One wasmtime setting that can change what a module computes: its name,
/// as hashed into the profile, and how it is applied.
struct Semantic {
    name: &'static str,
    apply: fn(&mut Config),
}

/// The WebAssembly semantics of every engine Tally creates: the guests'
/// engine and the portable backend's. Both are configured from this table
/// and the profile digest hashes its names, so a setting cannot be applied
/// without being hashed, nor hashed without being applied.
const SEMANTICS: &[Semantic] = &[
    Semantic {
        name: "nan_canonicalization=on",
        apply: |c| {
            c.cranelift_nan_canonicalization(true);
        },
    },
    Semantic {
        name: "relaxed_simd=deterministic",
        apply: |c| {
            c.relaxed_simd_deterministic(true).wasm_relaxed_simd(true);
        },
    },
    Semantic {
        name: "simd=on",
        apply: |c| {
            c.wasm_simd(true);
        },
    },
    Semantic {
        name: "threads=off",
        apply: |c| {
            c.wasm_threads(false);
        },
    },
    Semantic {
        name: "shared_everything_threads=off",
        apply: |c| {
            c.wasm_shared_everything_threads(false);
        },
    },
    Semantic {
        name: "memory64=off",
        apply: |c| {
            c.wasm_memory64(false);
        },
    },
    Semantic {
        name: "gc=off",
        apply: |c| {
            c.wasm_gc(false);
        },
    },
    Semantic {
        name: "function_references=off",
        apply: |c| {
            c.wasm_function_references(false);
        },
    },
    Semantic {
        name: "exceptions=off",
        apply: |c| {
            c.wasm_exceptions(false);
        },
    },
    Semantic {
        name: "stack_switching=off",
        apply: |c| {
            c.wasm_stack_switching(false);
        },
    },
    Semantic {
        name: "component_model=off",
        apply: |c| {
            c.wasm_component_model(false);
        },
    },
    Semantic {
        name: "custom_page_sizes=off",
        apply: |c| {
            c.wasm_custom_page_sizes(false);
        },
    },
    Semantic {
        name: "wide_arithmetic=off",
        apply: |c| {
            c.wasm_wide_arithmetic(false);
        },
    },
];

/// What the sandbox's own code guarantees about a run (no engine setting
/// expresses them); named here so that changing one changes the profile.
const RULES: &[&str] = &[
    "stack_overflow=nondeterministic",
    "fuel_on_trap=remaining_budget",
    "wasi=preview1:read-only-pkg,no-sockets,manifest-env",
];

/// A wasmtime configuration with [`SEMANTICS`] applied.
pub(crate) fn semantic_config() -> Config {
    let mut c = Config::new();
    for s in SEMANTICS {
        (s.apply)(&mut c);
    }
    c
}

/// The digest of [`SEMANTICS`] alone: what the portable backend's engine
/// promises (it reports it in its backend detail).
pub(crate) fn semantics_digest() -> Digest {
    let mut c = Canon::new("tally.EngineSemantics.v1");
    for s in SEMANTICS {
        c.str(s.name);
    }
    c.finish()
}

/// The wasmtime configuration of the guests' engine for `config`.
pub fn wasmtime_config(config: &SandboxConfig) -> Result<Config, SandboxError> {
    let engine_err = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
    let mut c = semantic_config();
    if config.target == Target::Pulley {
        c.target("pulley64").map_err(engine_err)?;
    }
    c.consume_fuel(!config.unmetered)
        .operator_cost(OperatorCost::new())
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .parallel_compilation(true);
    if config.pooling {
        let caps = &config.policy.caps;
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        let n = crate::POOL_INSTANCES as u32;
        pool.total_core_instances(n)
            .total_memories(n)
            .total_tables(n)
            .total_component_instances(0)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(caps.memory_bytes as usize)
            .table_elements(caps.table_elements as usize);
        c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    Ok(c)
}

/// The profile digest: host-independent, it must match for a replay to
/// verify.
pub fn profile_digest(unmetered: bool) -> Digest {
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
    for name in SEMANTICS
        .iter()
        .map(|s| s.name)
        .chain(RULES.iter().copied())
    {
        c.str(name);
    }
    c.finish()
}

/// The profile digest (host-independent) and the target digest.
pub fn engine_info(engine: &wasmtime::Engine, unmetered: bool) -> EngineInfo {
    let profile = profile_digest(unmetered);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_digest_is_pinned() {
        // Any change here changes every claim: a replay on an older host then
        // reports a profile mismatch. Update the value deliberately.
        assert_eq!(
            profile_digest(false).to_string(),
            "d436f93fc26d00ece6a76b163cb4169a06fa8798eca7a64a5adc829a7f9c7359"
        );
        assert_ne!(profile_digest(false), profile_digest(true));
    }

    /// The versions a claim names are the ones the lock file builds.
    #[test]
    fn named_versions_are_the_locked_ones() {
        let lock: toml::Value =
            toml::from_str(include_str!("../../../Cargo.lock")).expect("Cargo.lock parses");
        let locked = |name: &str| -> String {
            let packages = lock["package"].as_array().expect("packages");
            let found: Vec<&str> = packages
                .iter()
                .filter(|p| p["name"].as_str() == Some(name))
                .filter_map(|p| p["version"].as_str())
                .collect();
            assert_eq!(found.len(), 1, "one {name} in Cargo.lock: {found:?}");
            found[0].to_string()
        };
        assert_eq!(WASMTIME_VERSION, locked("wasmtime"));
        assert_eq!(tally_nn::TRACT_ONNX_VERSION, locked("tract-onnx"));
    }
}
