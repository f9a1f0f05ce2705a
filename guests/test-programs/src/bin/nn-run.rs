//! Runs one graph on one f32 tensor: `nn-run [--contexts K] GRAPH DIM...`
//! reads the tensor's little-endian f32 data from stdin, sets it as input 0
//! with the given dimensions (in each of K execution contexts, default 1),
//! computes on the first, and writes output 0's bytes to stdout. Each
//! wasi-nn errno ends the stage with exit code 10 + errno.
//!
//! A probe for the host's inference bounds (costs, wall time, tensor bytes)
//! with hand-built graphs.

use tally_test_programs::nn::{
    compute, f32_tensor, get_output, init_execution_context, load_by_name, set_input,
};

fn check(errno: i32) {
    if errno != 0 {
        std::process::exit(10 + errno);
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut contexts = 1;
    if args.first().map(String::as_str) == Some("--contexts") {
        contexts = args.get(1).and_then(|k| k.parse().ok()).unwrap_or(1);
        args.drain(..2);
    }
    let name = args.first().cloned().unwrap_or_default();
    let dims: Vec<u32> = args[1..].iter().map(|d| d.parse().unwrap_or(0)).collect();
    let data = tally_guest::read_input();
    let (mut graph, mut ctx, mut written) = (0u32, 0u32, 0u32);
    let mut out = vec![0u8; data.len().max(1 << 20)];
    unsafe {
        check(load_by_name(
            name.as_ptr() as i32,
            name.len() as i32,
            &mut graph as *mut u32 as i32,
        ));
        let t = f32_tensor(&dims, &data);
        let mut first = None;
        for _ in 0..contexts {
            check(init_execution_context(
                graph as i32,
                &mut ctx as *mut u32 as i32,
            ));
            check(set_input(ctx as i32, 0, &t as *const _ as i32));
            first.get_or_insert(ctx);
        }
        let ctx = first.unwrap_or(ctx);
        check(compute(ctx as i32));
        check(get_output(
            ctx as i32,
            0,
            out.as_mut_ptr() as i32,
            out.len() as i32,
            &mut written as *mut u32 as i32,
        ));
    }
    tally_guest::write_output(&out[..written as usize]);
}
