//! WAV (16 kHz mono) on stdin → speech probability per 32 ms window.

use std::io::Cursor;

use tally_guest::{fail, read_input, write_output, Tensor};
use tally_vad::{CONTEXT, SAMPLE_RATE, WINDOW};
use wasi_nn::{ExecutionTarget, GraphBuilder, GraphEncoding, TensorType};

fn main() {
    let wav = read_input();
    let reader = hound::WavReader::new(Cursor::new(wav))
        .unwrap_or_else(|e| fail(2, &format!("not a WAV file: {e}")));
    let spec = reader.spec();
    if spec.sample_rate != SAMPLE_RATE || spec.channels != 1 {
        fail(
            2,
            &format!(
                "need 16 kHz mono audio, got {} Hz with {} channels (convert with `sox in.wav -r 16000 -c 1 out.wav`)",
                spec.sample_rate, spec.channels
            ),
        );
    }
    let samples: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => reader
            .into_samples::<i16>()
            .map(|s| s.map(|v| v as f32 / 32768.0))
            .collect::<Result<_, _>>(),
        (hound::SampleFormat::Float, 32) => reader.into_samples::<f32>().collect::<Result<_, _>>(),
        (f, b) => fail(
            2,
            &format!("unsupported sample format {f:?} {b}-bit; use 16-bit PCM or 32-bit float"),
        ),
    }
    .unwrap_or_else(|e| fail(2, &format!("bad WAV data: {e}")));

    let graph = GraphBuilder::new(GraphEncoding::Onnx, ExecutionTarget::CPU)
        .build_from_cache("vad")
        .unwrap_or_else(|e| fail(4, &format!("cannot load graph `vad`: {e}")));
    let mut ctx = graph
        .init_execution_context()
        .unwrap_or_else(|e| fail(4, &format!("cannot create a context: {e}")));
    let mut state = vec![0f32; 2 * 128];
    let mut input = vec![0f32; CONTEXT + WINDOW];
    let mut probs = Vec::with_capacity(samples.len() / WINDOW + 1);
    for chunk in samples.chunks(WINDOW) {
        // Shift the last CONTEXT samples to the front, then the new window
        // (zero-padded at the end of the audio).
        input.copy_within(WINDOW.., 0);
        input[CONTEXT..].fill(0.0);
        input[CONTEXT..CONTEXT + chunk.len()].copy_from_slice(chunk);
        let step = (|| {
            ctx.set_input(0, TensorType::F32, &[1, CONTEXT + WINDOW], &input)?;
            ctx.set_input(1, TensorType::F32, &[2, 1, 128], &state)?;
            ctx.compute()?;
            let mut prob = [0f32; 1];
            ctx.get_output(0, &mut prob)?;
            ctx.get_output(1, &mut state)?;
            Ok::<f32, wasi_nn::Error>(prob[0])
        })();
        probs.push(step.unwrap_or_else(|e| fail(4, &format!("inference failed: {e}"))));
    }
    let n = probs.len();
    let meta = Tensor::new("probs", vec![n], probs);
    let total = Tensor::new("samples", vec![1], vec![samples.len() as f32]);
    write_output(&Tensor::encode_all(&[meta, total]));
}
