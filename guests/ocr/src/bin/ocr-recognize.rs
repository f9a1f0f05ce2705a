//! Stage: `ocr-detect`'s tensors on stdin → one JSON line per text line.
//!
//! Runs the graph `rec` through wasi-nn on each `line.NNNN` and decodes it
//! with the character list at `--charset PATH`; lines with a confidence
//! below `--min-score` are dropped (see the library's `RecParams`).

use tally_guest::{fail, read_input, write_output, Tensor};
use tally_ocr::{recognize, Charset, RecParams, TextBox};
use wasi_nn::{ExecutionTarget, GraphBuilder, GraphEncoding, TensorType};

fn main() {
    let p = RecParams::from_args(std::env::args().skip(1)).unwrap_or_else(|e| fail(2, &e));
    let charset = std::fs::read_to_string(&p.charset)
        .map_err(|e| e.to_string())
        .and_then(|t| Charset::parse(&t))
        .unwrap_or_else(|e| fail(2, &format!("character list {}: {e}", p.charset)));
    let tensors = Tensor::decode_all(&read_input()).unwrap_or_else(|e| fail(1, &e.0));
    let (boxes, lines) = match tensors.split_first() {
        Some((b, rest)) if b.name == "boxes" && b.shape.len() == 2 && b.shape[1] == 5 => (b, rest),
        _ => fail(
            1,
            "expected a `boxes` [n, 5] tensor first (the output of ocr-detect)",
        ),
    };
    if lines.len() != boxes.shape[0] || lines.iter().any(|l| l.shape.len() != 4) {
        fail(1, "expected one `line.NNNN` [1, 3, 48, W] tensor per box");
    }
    let graph = GraphBuilder::new(GraphEncoding::Onnx, ExecutionTarget::CPU)
        .build_from_cache("rec")
        .unwrap_or_else(|e| fail(4, &format!("cannot load graph `rec`: {e}")));
    let mut ctx = graph
        .init_execution_context()
        .unwrap_or_else(|e| fail(4, &format!("cannot create a context: {e}")));
    let classes = charset.len();
    let mut infer = |data: &[f32], shape: [usize; 4]| {
        ctx.set_input(0, TensorType::F32, &shape, data)?;
        ctx.compute()?;
        // At most one step per 4 input columns (PP-OCRv4 gives W / 8).
        let mut probs = vec![0f32; shape[3] / 4 * classes];
        let bytes = ctx.get_output(0, &mut probs)? as usize;
        probs.truncate(bytes / 4);
        Ok::<_, wasi_nn::Error>(probs)
    };
    let mut out = String::new();
    for (b, line) in boxes.data.chunks_exact(5).zip(lines) {
        let bbox = TextBox {
            x0: b[0] as u32,
            y0: b[1] as u32,
            x1: b[2] as u32,
            y1: b[3] as u32,
            score: b[4],
        };
        let shape = [line.shape[0], line.shape[1], line.shape[2], line.shape[3]];
        let l =
            recognize(&line.data, shape, bbox, &charset, &mut infer).unwrap_or_else(|e| match e {
                Ok(e) => fail(4, &format!("recognition failed: {e}")),
                Err(msg) => fail(4, &msg),
            });
        if l.confidence >= p.min_score && !l.text.is_empty() {
            out.push_str(&l.to_json());
            out.push('\n');
        }
    }
    write_output(out.as_bytes());
}
