//! Drives wasi-nn with a program read from stdin, for the wasi-nn ABI fuzz
//! harness: each op is one raw call whose arguments the bytes choose —
//! handles and indices (valid, stale or made up), pointers (valid, out of
//! bounds, or anywhere in this guest's memory), lying lengths, any rank,
//! dimensions and element type. Prints `op errno` per call, at most
//! [`MAX_OPS`] calls. Graphs `g` and `h` are granted by the harness.
//!
//! The host must answer every call (or end the stage with a clean outcome),
//! stay within its limits, and seal the same claim on every replay.

use tally_test_programs::nn::{
    compute, get_output, init_execution_context, load, load_by_name, set_input, RawTensor,
};

/// Calls per program.
const MAX_OPS: usize = 256;

/// The program: bytes read front to back; zeros once they run out.
struct Program<'a>(&'a [u8]);

impl Program<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A handle or index: mostly one that exists, sometimes anything.
    fn handle(&mut self) -> i32 {
        match self.u8() {
            0..=191 => (self.u8() % 2) as i32,
            192..=247 => (self.u8() % 32) as i32,
            _ => self.u32() as i32,
        }
    }

    /// A pointer: mostly `valid`; else beyond memory, null, or any address.
    fn ptr(&mut self, valid: i32) -> i32 {
        match self.u8() % 16 {
            0..=12 => valid,
            13 => i32::MAX - 8,
            14 => 0,
            _ => self.u32() as i32,
        }
    }

    /// A length: mostly `exact`; else small, or anything.
    fn len(&mut self, exact: u32) -> u32 {
        match self.u8() % 16 {
            0..=12 => exact,
            13 => self.u8() as u32,
            _ => self.u32(),
        }
    }

    fn dim(&mut self) -> u32 {
        const DIMS: [u32; 10] = [0, 1, 2, 3, 4, 8, 16, 1024, 65_535, u32::MAX];
        match self.u8() {
            b @ 0..=249 => DIMS[b as usize % DIMS.len()],
            _ => self.u32(),
        }
    }
}

fn main() {
    let bytes = tally_guest::read_input();
    let mut p = Program(&bytes);
    let arena: Vec<u8> = (0..1u32 << 16)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut buf = vec![0u8; 1 << 12];
    let names: [&[u8]; 4] = [b"g", b"h", b"nope", b""];
    let (mut slot, mut written) = (0u32, 0u32);
    let mut out = String::new();
    for _ in 0..MAX_OPS {
        if p.0.is_empty() {
            break;
        }
        let op = p.u8() % 6;
        let slot_ptr = &mut slot as *mut u32 as i32;
        let errno = unsafe {
            match op {
                0 => {
                    let name = names[p.u8() as usize % names.len()];
                    let name_ptr = p.ptr(name.as_ptr() as i32);
                    let len = p.len(name.len() as u32);
                    load_by_name(name_ptr, len as i32, p.ptr(slot_ptr))
                }
                1 => init_execution_context(p.handle(), p.ptr(slot_ptr)),
                2 => {
                    // Half the tensors are well formed for one of the graphs
                    // (`g`: f32 [n]; `h`: f32 [steps, 1, 4]), so that
                    // programs get past `set_input` to compute and outputs.
                    let (dims, ty): (Vec<u32>, u8) = if p.u8() < 128 {
                        let n = 1 + (p.u8() % 16) as u32;
                        let dims = if p.u8() % 2 == 0 {
                            vec![n]
                        } else {
                            vec![n, 1, 4]
                        };
                        (dims, 1)
                    } else {
                        let rank = (p.u8() % 9) as usize;
                        ((0..rank).map(|_| p.dim()).collect(), p.u8() % 8)
                    };
                    let rank = dims.len();
                    let elems = dims.iter().try_fold(1u32, |a, d| a.checked_mul(*d));
                    let exact = elems.and_then(|e| e.checked_mul(4)).unwrap_or(u32::MAX);
                    let offset = (p.u8() as usize) * 256;
                    let t = RawTensor {
                        dims: p.ptr(dims.as_ptr() as i32) as *const u32,
                        rank: p.len(rank as u32),
                        ty,
                        data: p.ptr(arena[offset..].as_ptr() as i32) as *const u8,
                        len: p.len(exact),
                    };
                    let (ctx, index) = (p.handle(), p.handle());
                    set_input(ctx, index, p.ptr(&t as *const RawTensor as i32))
                }
                3 => compute(p.handle()),
                4 => {
                    let (ctx, index) = (p.handle(), p.handle());
                    let to = p.ptr(buf.as_mut_ptr() as i32);
                    let max = p.len(buf.len() as u32);
                    get_output(
                        ctx,
                        index,
                        to,
                        max as i32,
                        p.ptr(&mut written as *mut u32 as i32),
                    )
                }
                _ => {
                    // Guest-supplied graph bytes: refused whatever they say.
                    let builder = [arena.as_ptr() as u32, p.len(64)];
                    let count = p.len(1) as i32;
                    let (encoding, target) = (p.u8() as i32 % 8, p.u8() as i32 % 4);
                    load(
                        p.ptr(builder.as_ptr() as i32),
                        count,
                        encoding,
                        target,
                        p.ptr(slot_ptr),
                    )
                }
            }
        };
        out.push_str(&format!("{op} {errno}\n"));
    }
    print!("{out}");
}
