//! Shared helpers for the test programs in `src/bin/`: each binary is one
//! guest, named after what it does (`spin`, `membomb`, `escape`…).

/// Raw WASI preview-1 imports that std does not expose.
pub mod wasi {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        /// `random_get(buf, len) -> errno`.
        pub fn random_get(buf: *mut u8, len: usize) -> u16;
        /// `clock_time_get(id, precision, *time) -> errno`.
        pub fn clock_time_get(id: u32, precision: u64, time: *mut u64) -> u16;
        /// `sock_accept(fd, flags, *newfd) -> errno`.
        pub fn sock_accept(fd: u32, flags: u16, newfd: *mut u32) -> u16;
        /// `fd_filestat_get(fd, *filestat) -> errno`.
        pub fn fd_filestat_get(fd: u32, filestat: *mut u8) -> u16;
        /// `path_filestat_get(fd, flags, path, path_len, *filestat) -> errno`.
        pub fn path_filestat_get(
            fd: u32,
            flags: u32,
            path: *const u8,
            path_len: usize,
            filestat: *mut u8,
        ) -> u16;
    }
}

/// The raw wasi-nn imports (`wasi_ephemeral_nn`), as a hostile guest calls
/// them: every argument is a plain `i32` the guest may make up.
pub mod nn {
    #[link(wasm_import_module = "wasi_ephemeral_nn")]
    extern "C" {
        /// `load(builders, count, encoding, target, *graph) -> errno`.
        pub fn load(builders: i32, count: i32, encoding: i32, target: i32, out: i32) -> i32;
        /// `load_by_name(name, len, *graph) -> errno`.
        pub fn load_by_name(name: i32, len: i32, out: i32) -> i32;
        /// `init_execution_context(graph, *ctx) -> errno`.
        pub fn init_execution_context(graph: i32, out: i32) -> i32;
        /// `set_input(ctx, index, *tensor) -> errno`.
        pub fn set_input(ctx: i32, index: i32, tensor: i32) -> i32;
        /// `compute(ctx) -> errno`.
        pub fn compute(ctx: i32) -> i32;
        /// `get_output(ctx, index, out, max, *written) -> errno`.
        pub fn get_output(ctx: i32, index: i32, out: i32, max: i32, written: i32) -> i32;
    }

    /// The wasi-nn `tensor` record as wasm32 lays it out.
    #[repr(C)]
    pub struct RawTensor {
        /// Pointer to `rank` dimensions.
        pub dims: *const u32,
        /// How many dimensions.
        pub rank: u32,
        /// The element type (1 = f32).
        pub ty: u8,
        /// Pointer to the data.
        pub data: *const u8,
        /// Bytes of data.
        pub len: u32,
    }

    /// An f32 tensor over `dims` and `data`.
    pub fn f32_tensor(dims: &[u32], data: &[u8]) -> RawTensor {
        RawTensor {
            dims: dims.as_ptr(),
            rank: dims.len() as u32,
            ty: 1,
            data: data.as_ptr(),
            len: data.len() as u32,
        }
    }
}

/// Fills `n` bytes from the host's `random_get`.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let errno = unsafe { wasi::random_get(buf.as_mut_ptr(), n) };
    assert_eq!(errno, 0, "random_get failed");
    buf
}

/// Reads clock `id` (0 realtime, 1 monotonic) through `clock_time_get`.
pub fn clock(id: u32) -> u64 {
    let mut t = 0u64;
    let errno = unsafe { wasi::clock_time_get(id, 1, &mut t) };
    assert_eq!(errno, 0, "clock_time_get failed");
    t
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
