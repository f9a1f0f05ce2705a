//! Stage: reads safetensors from stdin and writes one JSON line per tensor
//! with its shape and, per channel (dimension 1 of an NCHW tensor, or the
//! whole tensor otherwise), the mean, minimum and maximum.
//!
//! Numbers are printed with 6 decimals, so the text is a deterministic
//! function of the bits.

use tally_guest::{fail, read_input, write_output, Tensor};

fn main() {
    let tensors = Tensor::decode_all(&read_input()).unwrap_or_else(|e| fail(1, &e.to_string()));
    let mut out = String::new();
    for t in &tensors {
        let channels = if t.shape.len() == 4 { t.shape[1] } else { 1 };
        let per = t.data.len() / channels.max(1);
        let stats: Vec<String> = (0..channels)
            .map(|c| {
                let xs = &t.data[c * per..(c + 1) * per];
                let (mut lo, mut hi, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
                for &x in xs {
                    lo = lo.min(x);
                    hi = hi.max(x);
                    sum += x as f64;
                }
                let mean = if xs.is_empty() {
                    0.0
                } else {
                    sum / xs.len() as f64
                };
                format!("{{\"mean\":{mean:.6},\"min\":{lo:.6},\"max\":{hi:.6}}}")
            })
            .collect();
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        out.push_str(&format!(
            "{{\"tensor\":\"{}\",\"shape\":[{}],\"channels\":[{}]}}\n",
            t.name,
            shape.join(","),
            stats.join(",")
        ));
    }
    write_output(out.as_bytes());
}
