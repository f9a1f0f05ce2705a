//! Every wasi-nn tensor type crosses both native engines intact: a
//! hand-built ONNX `Identity` graph per type, run on tract and on ONNX
//! Runtime (the library `scripts/fetch-assets.sh` fetches).

use prost::Message;
use tally_manifest::ExecutionTarget;
use tally_nn::{Backend, ElemType, OrtBackend, OrtConfig, Tensor, TractBackend};
use tract_onnx::pb;

/// `Y = Identity(X)` with X and Y of ONNX type `onnx_type`, shape `[3]`.
fn identity(onnx_type: i32) -> Vec<u8> {
    let value = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: onnx_type,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![pb::tensor_shape_proto::Dimension {
                        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(3)),
                        ..Default::default()
                    }],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "g".into(),
            node: vec![pb::NodeProto {
                name: "id".into(),
                op_type: "Identity".into(),
                input: vec!["x".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn ort() -> OrtBackend {
    let mut c = OrtConfig::default();
    c.library = tally_test_artifacts::pkg::assets_dir().join("libonnxruntime.so.1.31.1");
    OrtBackend::new(&c).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_wasi_nn_type_round_trips_through_tract_and_onnxruntime() {
    let backends: [Box<dyn Backend>; 2] = [
        Box::new(TractBackend::new(false, 1).unwrap()),
        Box::new(ort()),
    ];
    // (type, ONNX data type, three values as little-endian bytes)
    let h = |v: f32| half::f16::from_f32(v).to_le_bytes();
    let cases: Vec<(ElemType, i32, Vec<u8>)> = vec![
        (ElemType::F16, 10, [h(-1.5), h(0.0), h(65504.0)].concat()),
        (
            ElemType::F32,
            1,
            [-1.5f32, 0.0, f32::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            ElemType::F64,
            11,
            [-1.5f64, 0.0, 1e300]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (ElemType::U8, 2, vec![0, 7, 255]),
        (
            ElemType::I32,
            6,
            [-7i32, 0, i32::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            ElemType::I64,
            7,
            [-7i64, 0, i64::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    ];
    for (ty, onnx_type, bytes) in cases {
        let model = identity(onnx_type);
        let x = Tensor::new(ty, vec![3], bytes, 1 << 20).unwrap();
        for b in &backends {
            let g = b
                .load(&model, ExecutionTarget::Cpu)
                .unwrap_or_else(|e| panic!("{} loading {}: {e}", b.kind(), ty.name()));
            let y = g
                .run(std::slice::from_ref(&x), 1 << 20)
                .unwrap_or_else(|e| panic!("{} running {}: {e}", b.kind(), ty.name()));
            assert_eq!(y, vec![x.clone()], "{} {}", b.kind(), ty.name());
        }
    }
}
