//! The host side of a guest: store data, resource limiter, virtual clocks,
//! seeded randomness, and the recording shim around every WASI call.
//!
//! Modules may import only `wasi_snapshot_preview1` functions, with the
//! types WASI gives them ([`link`]). Every call into the host passes the
//! store's call hook, which counts it against the host-call limit and
//! charges [`HOST_CALL_FUEL`]. The calls that bring outside information into
//! a guest are Tally's own and append a [`HostCall`] to the transcript:
//! `random_get` (a seeded stream) and `clock_time_get`/`clock_res_get`
//! (virtual clocks). The run records the rest of what a guest can observe
//! as transcript entries of its own: each stage's start (module digest),
//! every file granted to it (path and digest: the only files it can open),
//! and its end (host calls made). stdin, stdout and stderr are bound by
//! their digests in the stage claims.

use std::convert::Infallible;
use std::time::Duration;

use tally_digest::{Canon, Digest};
use tally_receipt::{HostCall, Limit, Transcript};
use wasmtime::AsContextMut;
use wasmtime::{CallHook, Caller, Engine, ExternType, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use crate::profile::{HOST_CALL_FUEL, VIRTUAL_MONOTONIC_NS, VIRTUAL_WALL_CLOCK_NS};

/// The only import module a guest may use.
pub(crate) const WASI_MODULE: &str = "wasi_snapshot_preview1";
/// Domain tag of a random stream's key.
pub(crate) const RANDOM_TAG: &str = "tally.RandomStream.v1";
/// Domain tag of the default seed (package id ‖ input digest).
pub(crate) const SEED_TAG: &str = "tally.DefaultSeed.v1";

/// Everything a store holds.
pub(crate) struct StoreData {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: Limiter,
    pub(crate) rec: Recorder,
    pub(crate) nn: crate::nn::NnRun,
    /// Host file identities, numbered 1, 2, … in the order the stage first
    /// sees them (see [`filestat`]).
    pub(crate) inodes: std::collections::HashMap<u64, u64>,
}

/// Memory and table caps, remembering which one was hit.
pub(crate) struct Limiter {
    pub(crate) memory_bytes: usize,
    pub(crate) table_elements: usize,
    pub(crate) hit: Option<Limit>,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = Some(Limit::MemoryBytes);
            wasmtime::bail!(
                "memory limit of {} bytes reached (asked for {desired})",
                self.memory_bytes
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit = Some(Limit::TableElements);
            wasmtime::bail!(
                "table limit of {} elements reached (asked for {desired})",
                self.table_elements
            );
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }
    fn memories(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        4
    }
}

/// Per-stage recording state.
pub(crate) struct Recorder {
    pub(crate) stage: u32,
    pub(crate) transcript: Transcript,
    /// Host calls the run may still make.
    pub(crate) calls_left: u64,
    pub(crate) stage_calls: u64,
    /// The stage's `random_get` stream.
    pub(crate) random: SeededStream,
    pub(crate) limit_hit: Option<Limit>,
}

impl Recorder {
    pub(crate) fn push(
        &mut self,
        func: &str,
        params: Vec<i64>,
        results: Vec<i64>,
        data: Option<Digest>,
        detail: Option<String>,
    ) {
        let call = HostCall {
            stage: self.stage,
            func: func.to_string(),
            params,
            results,
            data,
            detail,
        };
        self.transcript.push(call);
    }
}

/// A limit reached in a host call: the error unwinds the guest, and
/// [`Recorder::limit_hit`] says which limit it was.
#[derive(Debug)]
pub(crate) struct LimitReached(pub(crate) Limit);

impl std::fmt::Display for LimitReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} limit reached", self.0)
    }
}

impl std::error::Error for LimitReached {}

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: i32 = 58;

/// Largest `random_get` request served: 1 MiB (more is `EINVAL`).
pub(crate) const MAX_RANDOM_BYTES: u32 = 1 << 20;

/// The linker every module is linked against: wasmtime-wasi's preview-1
/// functions, with `random_get`, `clock_time_get` and `clock_res_get`
/// replaced by Tally's recorded, virtual implementations, and
/// `fd_filestat_get` / `path_filestat_get` pinned (see [`filestat`]).
pub(crate) fn base_linker(engine: &Engine) -> Linker<StoreData> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |d: &mut StoreData| &mut d.wasi)
        .expect("wasmtime-wasi links into an empty linker");
    linker.allow_shadowing(true);
    linker
        .func_wrap(WASI_MODULE, "random_get", random_get)
        .and_then(|l| l.func_wrap(WASI_MODULE, "clock_time_get", clock_time_get))
        .and_then(|l| l.func_wrap(WASI_MODULE, "clock_res_get", clock_res_get))
        .and_then(|l| {
            l.func_wrap(
                WASI_MODULE,
                "fd_filestat_get",
                |c: Caller<'_, StoreData>, fd: i32, buf: i32| {
                    filestat(c, buf, |ctx, mem| {
                        wasmtime_wasi::runtime::in_tokio(p1::fd_filestat_get(ctx, mem, fd, buf))
                    })
                },
            )
        })
        .and_then(|l| {
            l.func_wrap(
                WASI_MODULE,
                "path_filestat_get",
                |c: Caller<'_, StoreData>, fd: i32, flags: i32, path: i32, len: i32, buf: i32| {
                    filestat(c, buf, |ctx, mem| {
                        let stat = p1::path_filestat_get(ctx, mem, fd, flags, path, len, buf);
                        wasmtime_wasi::runtime::in_tokio(stat)
                    })
                },
            )
        })
        .expect("shadowing WASI functions");
    linker.allow_shadowing(false);
    crate::nn::add_to_linker(&mut linker).expect("wasi-nn links");
    linker
}

/// Pre-links `module`, or says why it is rejected (imports outside WASI
/// preview 1 and wasi-nn, or with the wrong types).
pub(crate) fn link(
    base: &Linker<StoreData>,
    module: &Module,
) -> Result<InstancePre<StoreData>, String> {
    for import in module.imports() {
        let (m, n) = (import.module(), import.name());
        if m != WASI_MODULE && m != crate::nn::NN_MODULE {
            return Err(format!(
                "imports `{m}.{n}`, but only `{WASI_MODULE}` and `{}` functions are provided",
                crate::nn::NN_MODULE
            ));
        }
        if !matches!(import.ty(), ExternType::Func(_)) {
            return Err(format!(
                "imports `{m}.{n}` as a non-function; only functions are provided"
            ));
        }
    }
    base.instantiate_pre(module).map_err(|e| {
        let msg = format!("{e:#}");
        if msg.contains("unknown import") {
            format!("imports a function WASI preview 1 and wasi-nn do not define: {msg}")
        } else if msg.contains("incompatible import type") || msg.contains("type mismatch") {
            format!("imports a WASI function with the wrong type: {msg}")
        } else {
            format!("cannot link: {msg}")
        }
    })
}

/// Installs the call hook: every call into the host counts against the
/// host-call limit and costs [`HOST_CALL_FUEL`].
pub(crate) fn install_call_hook(store: &mut Store<StoreData>) {
    store.call_hook(|mut cx, hook| {
        if !matches!(hook, CallHook::CallingHost) {
            return Ok(());
        }
        let rec = &mut cx.data_mut().rec;
        if rec.calls_left == 0 {
            rec.limit_hit = Some(Limit::HostCalls);
            return Err(LimitReached(Limit::HostCalls).into());
        }
        rec.calls_left -= 1;
        rec.stage_calls += 1;
        let Ok(left) = cx.get_fuel() else {
            return Ok(()); // an unmetered sandbox (benchmarks only)
        };
        if left < HOST_CALL_FUEL {
            cx.set_fuel(0)?;
            cx.data_mut().rec.limit_hit = Some(Limit::Fuel);
            return Err(LimitReached(Limit::Fuel).into());
        }
        cx.set_fuel(left - HOST_CALL_FUEL)?;
        Ok(())
    });
}

/// What [`filestat`] pins, in the profile digest.
pub(crate) const FILESTAT_TAG: &str = "tally.Filestat.v1:times=0;nlink=1;ino=first-seen;dir-size=0";

/// Byte offsets in a preview-1 `filestat`.
const FILESTAT_INO: usize = 8;
const FILESTAT_FILETYPE: usize = 16;
const FILESTAT_NLINK: usize = 24;
const FILESTAT_SIZE: usize = 32;
const FILESTAT_TIMES: usize = 40;
const FILESTAT_LEN: usize = 64;
/// The preview-1 filetype of a directory.
const FILETYPE_DIRECTORY: u8 = 3;

/// `fd_filestat_get` / `path_filestat_get`: wasmtime-wasi's own ABI
/// function (`call`), then what would differ between hosts is pinned in
/// the `filestat` it wrote at `buf`: access, modification and change times
/// are 0, the link count is 1, a directory's size is 0, and the inode is
/// numbered by first sight in the stage (1, 2, …), so a file keeps its
/// identity and the host's inode numbers stay hidden. (`dev` is already a
/// constant; a file's type and size follow from the package.)
fn filestat(
    mut caller: Caller<'_, StoreData>,
    buf: i32,
    call: impl FnOnce(&mut WasiP1Ctx, &mut wiggle::GuestMemory<'_>) -> wasmtime::Result<i32>,
) -> wasmtime::Result<i32> {
    let Some(wasmtime::Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("missing required memory export");
    };
    let fuel = caller.as_context_mut().hostcall_fuel();
    let errno = {
        let (bytes, data) = memory.data_and_store_mut(&mut caller);
        p1::WasiSnapshotPreview1::set_hostcall_fuel(&mut data.wasi, fuel);
        call(&mut data.wasi, &mut wiggle::GuestMemory::Unshared(bytes))?
    };
    if errno != 0 {
        return Ok(errno);
    }
    let (bytes, data) = memory.data_and_store_mut(&mut caller);
    let start = buf as u32 as usize;
    let Some(stat) = start
        .checked_add(FILESTAT_LEN)
        .and_then(|end| bytes.get_mut(start..end))
    else {
        return Ok(errno);
    };
    let host_ino = u64::from_le_bytes(stat[FILESTAT_INO..FILESTAT_INO + 8].try_into()?);
    let next = data.inodes.len() as u64 + 1;
    let ino = *data.inodes.entry(host_ino).or_insert(next);
    stat[FILESTAT_INO..FILESTAT_INO + 8].copy_from_slice(&ino.to_le_bytes());
    stat[FILESTAT_NLINK..FILESTAT_NLINK + 8].copy_from_slice(&1u64.to_le_bytes());
    if stat[FILESTAT_FILETYPE] == FILETYPE_DIRECTORY {
        stat[FILESTAT_SIZE..FILESTAT_SIZE + 8].fill(0);
    }
    stat[FILESTAT_TIMES..].fill(0);
    Ok(errno)
}

fn memory(caller: &mut Caller<'_, StoreData>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(|e| e.into_memory())
}

/// Writes `bytes` at guest address `ptr`, or `None` if out of bounds.
fn write_guest(caller: &mut Caller<'_, StoreData>, ptr: i32, bytes: &[u8]) -> Option<()> {
    let mem = memory(caller)?;
    let start = ptr as u32 as usize;
    let dst = mem
        .data_mut(&mut *caller)
        .get_mut(start..start.checked_add(bytes.len())?)?;
    dst.copy_from_slice(bytes);
    Some(())
}

fn random_get(mut caller: Caller<'_, StoreData>, buf: i32, len: i32) -> i32 {
    let params = vec![buf as i64, len as i64];
    if len as u32 > MAX_RANDOM_BYTES {
        caller.data_mut().rec.push(
            "wasi_snapshot_preview1.random_get",
            params,
            vec![ERRNO_INVAL as i64],
            None,
            None,
        );
        return ERRNO_INVAL;
    }
    let mut bytes = vec![0u8; len as u32 as usize];
    let rec = &mut caller.data_mut().rec;
    wasi_rand_core::Rng::fill_bytes(&mut rec.random, &mut bytes);
    let errno = if write_guest(&mut caller, buf, &bytes).is_some() {
        ERRNO_SUCCESS
    } else {
        ERRNO_FAULT
    };
    let data = (errno == ERRNO_SUCCESS).then(|| Digest::of(&bytes));
    caller.data_mut().rec.push(
        "wasi_snapshot_preview1.random_get",
        params,
        vec![errno as i64],
        data,
        None,
    );
    errno
}

fn clock_value(id: i32) -> Result<u64, i32> {
    match id {
        0 => Ok(VIRTUAL_WALL_CLOCK_NS),
        1 => Ok(VIRTUAL_MONOTONIC_NS),
        2 | 3 => Err(ERRNO_NOTSUP),
        _ => Err(ERRNO_INVAL),
    }
}

fn clock_time_get(mut caller: Caller<'_, StoreData>, id: i32, precision: i64, out: i32) -> i32 {
    let params = vec![id as i64, precision, out as i64];
    let (errno, data) = match clock_value(id) {
        Ok(ns) => match write_guest(&mut caller, out, &ns.to_le_bytes()) {
            Some(()) => (ERRNO_SUCCESS, Some(Digest::of(&ns.to_le_bytes()))),
            None => (ERRNO_FAULT, None),
        },
        Err(errno) => (errno, None),
    };
    caller.data_mut().rec.push(
        "wasi_snapshot_preview1.clock_time_get",
        params,
        vec![errno as i64],
        data,
        None,
    );
    errno
}

fn clock_res_get(mut caller: Caller<'_, StoreData>, id: i32, out: i32) -> i32 {
    let params = vec![id as i64, out as i64];
    let errno = match clock_value(id) {
        Ok(_) => write_guest(&mut caller, out, &1u64.to_le_bytes())
            .map_or(ERRNO_FAULT, |_| ERRNO_SUCCESS),
        Err(errno) => errno,
    };
    caller.data_mut().rec.push(
        "wasi_snapshot_preview1.clock_res_get",
        params,
        vec![errno as i64],
        None,
        None,
    );
    errno
}

/// The fixed virtual wall clock.
pub(crate) struct VirtualWallClock;

impl HostWallClock for VirtualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(VIRTUAL_WALL_CLOCK_NS)
    }
}

/// The fixed virtual monotonic clock.
pub(crate) struct VirtualMonotonicClock;

impl HostMonotonicClock for VirtualMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        VIRTUAL_MONOTONIC_NS
    }
}

/// A named random stream: the blake3 XOF keyed by
/// `H[tally.RandomStream.v1](seed ‖ stage ‖ name)`.
pub(crate) struct SeededStream(blake3::OutputReader);

impl SeededStream {
    pub(crate) fn new(seed: &Digest, stage: u32, name: &str) -> Self {
        let key = Canon::new(RANDOM_TAG)
            .digest(seed)
            .u32(stage)
            .str(name)
            .finish();
        SeededStream(blake3::Hasher::new_keyed(key.as_bytes()).finalize_xof())
    }
}

impl wasi_rand_core::TryRng for SeededStream {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

/// The seed used when a run does not name one.
pub(crate) fn default_seed(package_id: &Digest, input: &Digest) -> Digest {
    Canon::new(SEED_TAG)
        .digest(package_id)
        .digest(input)
        .finish()
}
