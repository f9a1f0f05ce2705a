//! Abuses wasi-nn through its raw imports: guest-supplied graph bytes,
//! pointers out of bounds, lying lengths, overflowing dimensions, unknown
//! types, ungranted graphs, outputs before compute, too many graphs and
//! contexts. Prints each errno (or count), one
//! per line as `case errno`; the host must answer every call and live.

use tally_test_programs::nn::{
    compute, get_output, init_execution_context, load, load_by_name, set_input, RawTensor,
};

fn main() {
    let mut out = String::new();
    let mut report = |case: &str, errno: i32| out.push_str(&format!("{case} {errno}\n"));
    let mut handle = 0u32;
    let h = &mut handle as *mut u32 as i32;
    let far = i32::MAX - 8; // beyond any memory this guest has
    unsafe {
        let bytes = [0u8; 16];
        let builder = [bytes.as_ptr() as u32, 16u32];
        report("raw_load", load(builder.as_ptr() as i32, 1, 1, 0, h));
        report("name_out_of_bounds", load_by_name(far, 16, h));
        let nope = b"nope";
        report("ungranted", load_by_name(nope.as_ptr() as i32, 4, h));
        let vad = b"vad";
        report(
            "handle_out_of_bounds",
            load_by_name(vad.as_ptr() as i32, 3, far),
        );
        report("load_vad", load_by_name(vad.as_ptr() as i32, 3, h));
        let graph = handle as i32;
        report("bad_graph_handle", init_execution_context(99, h));
        report("context", init_execution_context(graph, h));
        let ctx = handle as i32;
        report("descriptor_out_of_bounds", set_input(ctx, 0, far));
        let dims = [1u32, 576];
        let data = vec![0u8; 576 * 4];
        let t = |dims: &[u32], ty: u8, data: &[u8], len: u32| RawTensor {
            dims: dims.as_ptr(),
            rank: dims.len() as u32,
            ty,
            data: data.as_ptr(),
            len,
        };
        let lying = t(&dims, 1, &data, 100);
        report("lying_length", set_input(ctx, 0, &lying as *const _ as i32));
        let huge = [u32::MAX, u32::MAX, u32::MAX];
        let overflow = t(&huge, 1, &data, 0);
        report(
            "overflowing_dims",
            set_input(ctx, 0, &overflow as *const _ as i32),
        );
        let unknown = t(&dims, 9, &data, data.len() as u32);
        report(
            "unknown_type",
            set_input(ctx, 0, &unknown as *const _ as i32),
        );
        let data_oob = RawTensor {
            data: far as *const u8,
            ..t(&dims, 1, &data, data.len() as u32)
        };
        report(
            "data_out_of_bounds",
            set_input(ctx, 0, &data_oob as *const _ as i32),
        );
        report("bad_context", compute(77));
        let mut buf = [0u8; 4];
        let mut written = 0u32;
        let w = &mut written as *mut u32 as i32;
        report(
            "output_before_compute",
            get_output(ctx, 0, buf.as_mut_ptr() as i32, 4, w),
        );
        report("missing_inputs", compute(ctx));
        let good = t(&dims, 1, &data, data.len() as u32);
        report("input", set_input(ctx, 0, &good as *const _ as i32));
        let wrong_shape = t(&[1, 5], 1, &data[..20], 20);
        report(
            "wrong_shape_state",
            set_input(ctx, 1, &wrong_shape as *const _ as i32),
        );
        report("compute_rejects_shapes", compute(ctx));
        let state = vec![0u8; 256 * 4];
        let good_state = t(&[2, 1, 128], 1, &state, state.len() as u32);
        report("state", set_input(ctx, 1, &good_state as *const _ as i32));
        report("compute", compute(ctx));
        report(
            "output_too_small",
            get_output(ctx, 1, buf.as_mut_ptr() as i32, 4, w),
        );
        report("output_out_of_bounds", get_output(ctx, 0, far, 4, w));
        report("output", get_output(ctx, 0, buf.as_mut_ptr() as i32, 4, w));
        // The per-stage caps: graphs, then contexts, until refused.
        let (mut loads, mut errno) = (1, 0);
        while errno == 0 && loads < 100 {
            errno = load_by_name(vad.as_ptr() as i32, 3, h);
            loads += (errno == 0) as i32;
        }
        report("graphs_loaded", loads);
        report("graph_cap", errno);
        let (mut contexts, mut errno) = (1, 0);
        while errno == 0 && contexts < 200 {
            errno = init_execution_context(graph, h);
            contexts += (errno == 0) as i32;
        }
        report("contexts_created", contexts);
        report("context_cap", errno);
    }
    print!("{out}");
}
