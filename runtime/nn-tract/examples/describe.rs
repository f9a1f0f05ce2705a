//! Prints an ONNX graph's policy summary, inputs and outputs:
//! `cargo run -p tally-nn-tract --example describe -- MODEL.onnx`.

use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let path = std::env::args().nth(1).expect("usage: describe MODEL.onnx");
    let bytes = std::fs::read(&path)?;
    println!("{:?}", tally_nn_tract::check_onnx(&bytes));
    let model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
    for (i, o) in model.inputs.iter().enumerate() {
        println!(
            "input {i} {}: {:?}",
            model.node(o.node).name,
            model.outlet_fact(*o)?
        );
    }
    for (i, o) in model.outputs.iter().enumerate() {
        println!(
            "output {i} {}: {:?}",
            model.node(o.node).name,
            model.outlet_fact(*o)?
        );
    }
    Ok(())
}
