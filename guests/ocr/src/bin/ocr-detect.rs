//! Stage: a PNG or JPEG on stdin → text boxes and recogniser inputs.
//!
//! Runs the graph `det` through wasi-nn; writes safetensors `boxes`
//! `[n, 5]` and `line.NNNN` `[1, 3, 48, W]` per box (see the library).

use tally_guest::{fail, read_input, write_output, Tensor};
use tally_ocr::{detect, DetParams};
use wasi_nn::{ExecutionTarget, GraphBuilder, GraphEncoding, TensorType};

fn main() {
    let p = DetParams::from_args(std::env::args().skip(1)).unwrap_or_else(|e| fail(2, &e));
    let img = tally_image_preprocess::decode_rgb(&read_input(), p.max_input_side)
        .unwrap_or_else(|e| fail(1, &e));
    let graph = GraphBuilder::new(GraphEncoding::Onnx, ExecutionTarget::CPU)
        .build_from_cache("det")
        .unwrap_or_else(|e| fail(4, &format!("cannot load graph `det`: {e}")));
    let mut ctx = graph
        .init_execution_context()
        .unwrap_or_else(|e| fail(4, &format!("cannot create a context: {e}")));
    let mut infer = |data: &[f32], shape: [usize; 4]| {
        ctx.set_input(0, TensorType::F32, &shape, data)?;
        ctx.compute()?;
        // The map has one value per input pixel.
        let mut map = vec![0f32; shape[2] * shape[3]];
        ctx.get_output(0, &mut map)?;
        Ok::<_, wasi_nn::Error>(map)
    };
    let lines =
        detect(&img, &p, &mut infer).unwrap_or_else(|e| fail(4, &format!("detection failed: {e}")));
    let mut out = vec![Tensor::new(
        "boxes",
        vec![lines.len(), 5],
        lines
            .iter()
            .flat_map(|l| {
                let b = &l.bbox;
                [b.x0 as f32, b.y0 as f32, b.x1 as f32, b.y1 as f32, b.score]
            })
            .collect(),
    )];
    for (i, l) in lines.into_iter().enumerate() {
        out.push(Tensor::new(
            format!("line.{i:04}"),
            l.shape.to_vec(),
            l.data,
        ));
    }
    write_output(&Tensor::encode_all(&out));
}
