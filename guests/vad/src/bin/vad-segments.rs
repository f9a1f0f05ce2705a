//! Speech probabilities → one JSON line per speech segment.

use tally_guest::{fail, read_input, write_output, Tensor};
use tally_vad::{segments, Params, SAMPLE_RATE};

fn main() {
    let tensors = Tensor::decode_all(&read_input())
        .unwrap_or_else(|e| fail(2, &format!("bad input tensors: {e}")));
    let get = |name: &str| {
        tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| fail(2, &format!("no tensor `{name}` in the input")))
    };
    let probs = &get("probs").data;
    let total = get("samples").data[0] as usize;
    let params = Params::from_args(std::env::args().skip(1)).unwrap_or_else(|e| fail(2, &e));
    let mut out = String::new();
    for (s, e) in segments(probs, total, &params) {
        let ms = |v: usize| v as u64 * 1000 / SAMPLE_RATE as u64;
        out.push_str(&format!(
            "{{\"start_ms\":{},\"end_ms\":{}}}\n",
            ms(s),
            ms(e)
        ));
    }
    write_output(out.as_bytes());
}
