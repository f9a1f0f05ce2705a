//! Hand-built ONNX graphs for the inference bounds: what a hostile
//! publisher could ship in a few hundred bytes.

use prost::Message;
use tract_onnx::pb;

/// A tensor value; a negative dimension is the symbol `n` (one per graph).
fn value(name: &str, elem_type: i32, dims: Option<&[i64]>) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::dimension::Value;
    let shape = dims.map(|dims| pb::TensorShapeProto {
        dim: dims
            .iter()
            .map(|&d| pb::tensor_shape_proto::Dimension {
                value: Some(if d < 0 {
                    Value::DimParam("n".into())
                } else {
                    Value::DimValue(d)
                }),
                ..Default::default()
            })
            .collect(),
    });
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        name: output.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn model(graph: pb::GraphProto) -> Vec<u8> {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

const FLOAT: i32 = 1;
const INT64: i32 = 7;

/// `Y = Scan(X)` over the rows of an f32 `X [n, width]` with no state, the
/// body multiplying each row by a constant matrix. tract 0.23.9's optimiser
/// never finishes with it for `n ≥ 2` (its declutter passes keep patching):
/// a few kilobytes that would hang an unbounded analysis forever.
pub fn endless_scan(width: i64) -> Vec<u8> {
    let body = pb::GraphProto {
        name: "body".into(),
        node: vec![node("MatMul", &["row", "w"], "out", vec![])],
        initializer: vec![pb::TensorProto {
            name: "w".into(),
            dims: vec![width, width],
            data_type: FLOAT,
            float_data: vec![1.0 / width as f32; (width * width) as usize],
            ..Default::default()
        }],
        input: vec![value("row", FLOAT, Some(&[width]))],
        output: vec![value("out", FLOAT, Some(&[width]))],
        ..Default::default()
    };
    let attribute = vec![
        pb::AttributeProto {
            name: "body".into(),
            r#type: pb::attribute_proto::AttributeType::Graph as i32,
            g: Some(body),
            ..Default::default()
        },
        pb::AttributeProto {
            name: "num_scan_inputs".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: 1,
            ..Default::default()
        },
    ];
    model(pb::GraphProto {
        name: "scan".into(),
        node: vec![node("Scan", &["x"], "y", attribute)],
        input: vec![value("x", FLOAT, Some(&[-1, width]))],
        output: vec![value("y", FLOAT, None)],
        ..Default::default()
    })
}

/// `Y = LSTM(X)` over an f32 `X [n, 1, input]` (declared with a symbolic
/// `n`, as a publisher would) with `hidden` units: tract runs it as a
/// `Scan` whose body does `4·hidden·(input + hidden)` multiply-adds per
/// step, none of them visible at the top level of the graph.
pub fn lstm(input: i64, hidden: i64) -> Vec<u8> {
    let weights = |name: &str, cols: i64| pb::TensorProto {
        name: name.into(),
        dims: vec![1, 4 * hidden, cols],
        data_type: FLOAT,
        float_data: vec![0.01; (4 * hidden * cols) as usize],
        ..Default::default()
    };
    let units = pb::AttributeProto {
        name: "hidden_size".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: hidden,
        ..Default::default()
    };
    model(pb::GraphProto {
        name: "lstm".into(),
        node: vec![node("LSTM", &["x", "w", "r"], "y", vec![units])],
        initializer: vec![weights("w", input), weights("r", hidden)],
        input: vec![value("x", FLOAT, Some(&[-1, 1, input]))],
        output: vec![value("y", FLOAT, None)],
        ..Default::default()
    })
}

/// `Y = Identity(X)` for an f32 `X [n]`: outputs as large as the inputs
/// for next to no compute.
pub fn identity() -> Vec<u8> {
    model(pb::GraphProto {
        name: "identity".into(),
        node: vec![node("Identity", &["x"], "y", vec![])],
        input: vec![value("x", FLOAT, Some(&[-1]))],
        output: vec![value("y", FLOAT, None)],
        ..Default::default()
    })
}

/// `Y = X + ReduceSum(ConstantOfShape([rows, cols]))`: a constant of
/// `rows × cols` f32 elements that exists nowhere in the file (it is under
/// 300 bytes), summed to one value and added to an f32 `X [1]`.
pub fn constant_of_shape_sum(rows: i64, cols: i64) -> Vec<u8> {
    let shape = pb::TensorProto {
        name: "shape".into(),
        dims: vec![2],
        data_type: INT64,
        int64_data: vec![rows, cols],
        ..Default::default()
    };
    let one = pb::AttributeProto {
        name: "value".into(),
        r#type: pb::attribute_proto::AttributeType::Tensor as i32,
        t: Some(pb::TensorProto {
            dims: vec![1],
            data_type: FLOAT,
            float_data: vec![1.0],
            ..Default::default()
        }),
        ..Default::default()
    };
    let keep = pb::AttributeProto {
        name: "keepdims".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 0,
        ..Default::default()
    };
    model(pb::GraphProto {
        name: "fold".into(),
        node: vec![
            node("ConstantOfShape", &["shape"], "big", vec![one]),
            node("ReduceSum", &["big"], "sum", vec![keep]),
            node("Add", &["x", "sum"], "y", vec![]),
        ],
        initializer: vec![shape],
        input: vec![value("x", FLOAT, Some(&[1]))],
        output: vec![value("y", FLOAT, None)],
        ..Default::default()
    })
}
