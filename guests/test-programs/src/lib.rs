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
