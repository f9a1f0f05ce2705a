//! ONNX graphs for Tally's inference backends, independent of any runtime.
//!
//! This crate is compiled twice: natively, for the host's `tract` backend
//! and for the cost model every backend shares, and to `wasm32-wasip1`, as
//! the engine inside the `portable` backend. Keeping both on one source
//! means the portable backend computes exactly what native tract computes,
//! only with wasm's deterministic float semantics.
//!
//! - [`Tensor`] and [`ElemType`] (re-exported from `tally-tensor`, the
//!   format crate a verifier needs without tract): a tensor as wasi-nn
//!   passes it, with a stable byte encoding for lists of tensors.
//! - [`check_onnx`]: the policy every graph passes at pack and load time:
//!   standard operator domains only, a known opset, no external data, no
//!   model-local functions.
//! - [`onnx_metadata`]: the key/value metadata an exporter attached.
//! - [`Model`]: a parsed graph; [`Model::plan`] builds (and caches, the
//!   least recently used evicted beyond a bound) one [`Plan`] per set of
//!   input shapes, with its static
//!   [`Plan::cost`]; [`Plan::run`] runs it.
//!
//! The cost of a plan is the sum, over the nodes of the *decluttered* typed
//! model (before any CPU-specific optimisation), of the multiply-adds and
//! divisions each operator reports plus the number of elements it outputs.
//! It depends only on the graph and the input shapes, so every backend
//! charges the same fuel for the same call.

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::logic::IfThenElse;
use tract_onnx::tract_core::ops::scan::Scan;
use tract_onnx::tract_core::ops::Cost;

/// The highest `ai.onnx` opset a graph may import. ONNX Runtime 1.31
/// implements opset 23; tract is tested up to 18 and loads later models
/// whose operators it knows.
pub const MAX_OPSET: i64 = 23;

/// Errors from checking, planning or running a graph.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NnError {
    /// The graph breaks the ONNX policy ([`check_onnx`]).
    #[error("graph rejected: {0}")]
    Rejected(String),
    /// A tensor is malformed (type, shape and byte length disagree).
    #[error("bad tensor: {0}")]
    BadTensor(String),
    /// The graph could not be parsed, typed or planned for these inputs.
    #[error("cannot plan the graph: {0}")]
    Plan(String),
    /// Running the plan failed.
    #[error("inference failed: {0}")]
    Run(String),
    /// The run's wall-clock deadline passed while the graph was running
    /// (backends that can be interrupted: `portable`).
    #[error("the run's wall-clock deadline passed during inference")]
    WallTime,
}

/// Result alias for this crate.
pub type Result<T, E = NnError> = std::result::Result<T, E>;

impl From<TensorError> for NnError {
    fn from(e: TensorError) -> Self {
        NnError::BadTensor(e.0)
    }
}

pub use tally_tensor::{byte_len, decode_tensors, encode_tensors, ElemType, Tensor, TensorError};

fn datum(ty: ElemType) -> DatumType {
    match ty {
        ElemType::F16 => DatumType::F16,
        ElemType::F32 => DatumType::F32,
        ElemType::F64 => DatumType::F64,
        ElemType::U8 => DatumType::U8,
        ElemType::I32 => DatumType::I32,
        ElemType::I64 => DatumType::I64,
        _ => unreachable!("every element type wasi-nn carries has a tract datum"),
    }
}

fn elem_type(dt: DatumType) -> Option<ElemType> {
    Some(match dt {
        DatumType::F16 => ElemType::F16,
        DatumType::F32 => ElemType::F32,
        DatumType::F64 => ElemType::F64,
        DatumType::U8 => ElemType::U8,
        DatumType::I32 => ElemType::I32,
        DatumType::I64 => ElemType::I64,
        _ => return None,
    })
}

fn to_tract(t: &Tensor) -> Result<TValue> {
    let shape: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
    // SAFETY: `Tensor::new` checked that data holds exactly product(dims)
    // elements of its type, and every bit pattern is a valid value of these
    // plain numeric types.
    let v = unsafe { tract_onnx::prelude::Tensor::from_raw_dt(datum(t.ty()), &shape, t.data()) }
        .map_err(|e| NnError::BadTensor(format!("{e:#}")))?;
    Ok(v.into_tvalue())
}

fn from_tract(t: &tract_onnx::prelude::Tensor, max_bytes: usize) -> Result<Tensor> {
    let ty = elem_type(t.datum_type()).ok_or_else(|| {
        NnError::Run(format!(
            "the graph produced a {:?} tensor, which wasi-nn cannot carry",
            t.datum_type()
        ))
    })?;
    let dims = t
        .shape()
        .iter()
        .map(|&d| u32::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| NnError::Run("an output dimension exceeds u32".into()))?;
    Ok(Tensor::new(ty, dims, t.as_bytes().to_vec(), max_bytes)?)
}

/// What [`check_onnx`] learned about an accepted graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnnxSummary {
    /// The `ai.onnx` opset the graph imports.
    pub opset: i64,
    /// Number of graph inputs that are not initializers.
    pub inputs: usize,
    /// Number of graph outputs.
    pub outputs: usize,
}

/// Checks an ONNX graph against Tally's policy: it parses; it imports only
/// the standard `ai.onnx` domain at opset 1..=[`MAX_OPSET`]; every node,
/// in every subgraph, uses that domain; no tensor refers to external data;
/// there are no model-local functions or training info.
pub fn check_onnx(bytes: &[u8]) -> Result<OnnxSummary> {
    use tract_onnx::prelude::tract_itertools::Itertools as _;
    let proto = decode_proto(bytes)?;
    let reject = |m: String| Err(NnError::Rejected(m));
    let mut opset = None;
    for import in &proto.opset_import {
        if import.domain.is_empty() || import.domain == "ai.onnx" {
            opset = Some(import.version);
        } else {
            return reject(format!(
                "imports the custom operator domain `{}`; only the standard `ai.onnx` domain is allowed",
                import.domain
            ));
        }
    }
    let opset = match opset {
        Some(v) if (1..=MAX_OPSET).contains(&v) => v,
        Some(v) => {
            return reject(format!(
                "imports ai.onnx opset {v}; supported: 1 to {MAX_OPSET}"
            ))
        }
        None => return reject("imports no ai.onnx opset".into()),
    };
    if !proto.functions.is_empty() {
        return reject(format!(
            "defines model-local functions ({}); they are not supported",
            proto
                .functions
                .iter()
                .map(|f| f.name.as_deref().unwrap_or("?"))
                .join(", ")
        ));
    }
    if !proto.training_info.is_empty() {
        return reject("carries training info; export an inference-only graph".into());
    }
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| NnError::Rejected("the model holds no graph".into()))?;
    check_graph(graph)?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    Ok(OnnxSummary {
        opset,
        inputs: graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .count(),
        outputs: graph.output.len(),
    })
}

/// The model's metadata (`metadata_props`: key/value strings a model's
/// exporter attached, e.g. the character set of an OCR recogniser), in file
/// order. Fails only when `bytes` is not an ONNX model.
pub fn onnx_metadata(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    Ok(decode_proto(bytes)?
        .metadata_props
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect())
}

fn decode_proto(bytes: &[u8]) -> Result<pb::ModelProto> {
    tract_onnx::onnx()
        .proto_model_for_read(&mut &*bytes)
        .map_err(|e| NnError::Rejected(format!("not an ONNX model: {e:#}")))
}

fn check_tensor(t: &pb::TensorProto, at: &str) -> Result<()> {
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(NnError::Rejected(format!(
            "tensor `{}` in {at} refers to external data; embed every weight in the .onnx file",
            t.name
        )));
    }
    Ok(())
}

fn check_graph(g: &pb::GraphProto) -> Result<()> {
    let at = format!("graph `{}`", g.name);
    for t in &g.initializer {
        check_tensor(t, &at)?;
    }
    if !g.sparse_initializer.is_empty() {
        return Err(NnError::Rejected(format!(
            "{at} has sparse initializers, which are not supported"
        )));
    }
    for node in &g.node {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(NnError::Rejected(format!(
                "node `{}` ({}) in {at} uses the custom domain `{}`",
                node.name, node.op_type, node.domain
            )));
        }
        for a in &node.attribute {
            if let Some(t) = &a.t {
                check_tensor(t, &at)?;
            }
            for t in &a.tensors {
                check_tensor(t, &at)?;
            }
            if let Some(sub) = &a.g {
                check_graph(sub)?;
            }
            for sub in &a.graphs {
                check_graph(sub)?;
            }
        }
    }
    Ok(())
}

/// The element types and dimensions of a call's inputs: one plan each.
pub type Signature = Vec<(ElemType, Vec<u32>)>;

/// Encodes a signature as: count (u32 LE), then per input its type code
/// (u8), rank (u32) and dimensions (u32 each). The portable engine's cost
/// analysis takes it.
pub fn encode_signature(sig: &Signature) -> Vec<u8> {
    let mut out = (sig.len() as u32).to_le_bytes().to_vec();
    for (ty, dims) in sig {
        out.push(*ty as u8);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
    }
    out
}

/// Decodes [`encode_signature`]'s format (rank ≤ 16, no trailing bytes).
pub fn decode_signature(bytes: &[u8]) -> Result<Signature> {
    let bad = || NnError::BadTensor("malformed input signature".into());
    let mut words = bytes;
    let u32_of = |b: &mut &[u8]| -> Result<u32> {
        let (head, tail) = b.split_first_chunk::<4>().ok_or_else(bad)?;
        *b = tail;
        Ok(u32::from_le_bytes(*head))
    };
    let count = u32_of(&mut words)?;
    let mut sig = Vec::new();
    for _ in 0..count {
        let (&code, tail) = words.split_first().ok_or_else(bad)?;
        words = tail;
        let ty = ElemType::from_code(code).ok_or_else(bad)?;
        let rank = u32_of(&mut words)?;
        if rank > 16 {
            return Err(bad());
        }
        let dims = (0..rank)
            .map(|_| u32_of(&mut words))
            .collect::<Result<Vec<_>>>()?;
        sig.push((ty, dims));
    }
    if !words.is_empty() {
        return Err(bad());
    }
    Ok(sig)
}

/// A checked, parsed ONNX graph, with its plans.
pub struct Model {
    model: InferenceModel,
    /// Plans by signature, with the use counter of their last use.
    plans: HashMap<Signature, (Arc<Plan>, u64)>,
    max_plans: usize,
    uses: u64,
}

impl Model {
    /// Checks ([`check_onnx`]) and parses `bytes`. At most `max_plans`
    /// distinct input signatures will be planned.
    pub fn load(bytes: &[u8], max_plans: usize) -> Result<Self> {
        check_onnx(bytes)?;
        let proto = decode_proto(bytes)?;
        let model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(|e| NnError::Plan(format!("{e:#}")))?;
        Ok(Model {
            model,
            plans: HashMap::new(),
            max_plans: max_plans.max(1),
            uses: 0,
        })
    }

    /// Types and declutters the graph with its declared inputs (whatever
    /// their shapes) and drops the result: the work of folding every
    /// constant subgraph that does not depend on the inputs. A host runs it
    /// under a memory cap before a native engine (which folds constants
    /// when it loads a graph) ever sees the graph. Running out of memory,
    /// or tract refusing a constant too large to address, means the graph
    /// folds into too much; other errors (shapes tract cannot type
    /// symbolically) say nothing about folding.
    pub fn fold_constants(&self) -> Result<()> {
        let err = |e: TractError| NnError::Plan(format!("{e:#}"));
        let typed = self.model.clone().into_typed().map_err(err)?;
        typed.into_decluttered().map_err(err)?;
        Ok(())
    }

    /// The static cost of a call with inputs of this signature, without
    /// building an optimised plan (see [`Plan::cost`]).
    pub fn cost(&mut self, sig: &Signature) -> Result<u64> {
        if let Some((p, _)) = self.plans.get(sig) {
            return Ok(p.cost);
        }
        let (_, cost) = Plan::declutter(self.model.clone(), sig)?;
        Ok(cost)
    }

    /// How many plans are kept now (each holds the graph's weights as
    /// prepared for its kernels).
    pub fn plan_count(&self) -> usize {
        self.plans.len()
    }

    /// The plan for inputs of this signature, built on first use. At most
    /// `max_plans` are kept: a new one replaces the least recently used
    /// (plans are pure functions of graph and signature, so which ones are
    /// cached changes speed, never results).
    pub fn plan(&mut self, sig: &Signature) -> Result<Arc<Plan>> {
        self.uses += 1;
        if let Some((p, used)) = self.plans.get_mut(sig) {
            *used = self.uses;
            return Ok(p.clone());
        }
        let plan = Arc::new(Plan::build(self.model.clone(), sig)?);
        if self.plans.len() >= self.max_plans {
            let oldest = self
                .plans
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
                .expect("a full cache is not empty");
            self.plans.remove(&oldest);
        }
        self.plans.insert(sig.clone(), (plan.clone(), self.uses));
        Ok(plan)
    }
}

/// A graph typed and optimised for one input signature.
pub struct Plan {
    cost: u64,
    runnable: Arc<TypedRunnableModel>,
}

impl Plan {
    fn build(model: InferenceModel, sig: &Signature) -> Result<Self> {
        let (decluttered, cost) = Self::declutter(model, sig)?;
        let runnable = decluttered
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| NnError::Plan(format!("{e:#}")))?;
        Ok(Plan { cost, runnable })
    }

    fn declutter(mut model: InferenceModel, sig: &Signature) -> Result<(TypedModel, u64)> {
        let err = |e: TractError| NnError::Plan(format!("{e:#}"));
        if sig.len() != model.inputs.len() {
            return Err(NnError::Plan(format!(
                "the graph takes {} inputs, {} were set",
                model.inputs.len(),
                sig.len()
            )));
        }
        for (i, (ty, dims)) in sig.iter().enumerate() {
            let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            model
                .set_input_fact(i, InferenceFact::dt_shape(datum(*ty), shape))
                .map_err(err)?;
        }
        let mut typed = model.into_typed().map_err(err)?;
        // Recurrent graphs: never let state from one call leak into the next.
        for node in typed.nodes_mut() {
            if let Some(scan) = node.op_as_mut::<Scan>() {
                scan.reset_every_turn = true;
            }
        }
        let decluttered = typed.into_decluttered().map_err(err)?;
        let cost = static_cost(&decluttered).map_err(err)?;
        Ok((decluttered, cost))
    }

    /// The static cost of one call: multiply-adds, divisions and output
    /// elements of the decluttered graph.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// Runs the plan. Each output must fit in `max_output_bytes`.
    pub fn run(&self, inputs: &[Tensor], max_output_bytes: usize) -> Result<Vec<Tensor>> {
        let values = inputs.iter().map(to_tract).collect::<Result<TVec<_>>>()?;
        let outputs = self
            .runnable
            .run(values)
            .map_err(|e| NnError::Run(format!("{e:#}")))?;
        outputs
            .iter()
            .map(|t| from_tract(t, max_output_bytes))
            .collect()
    }
}

/// The static cost of one run of `model`: per node, its multiply-adds and
/// divisions and the elements of its outputs. Control flow is costed, not
/// free: a `Scan` costs its body times its iteration count (known from the
/// input shapes, or the graph is refused), an `If` the dearer of its two
/// branches. ONNX `Loop` has no static trip count and is refused (tract
/// does not load it).
fn static_cost(model: &TypedModel) -> TractResult<u64> {
    let mut total: u64 = 0;
    for node in model.nodes() {
        let inputs = model.node_input_facts(node.id)?;
        if let Some(scan) = node.op_as::<Scan>() {
            let iters = scan
                .iteration_count(&inputs)
                .ok_or_else(|| TractError::msg(format!("Scan `{}` scans no input", node.name)))?
                .to_i64()
                .map_err(|_| {
                    TractError::msg(format!(
                        "Scan `{}` has no static iteration count",
                        node.name
                    ))
                })?
                .max(0) as u64;
            total = total.saturating_add(iters.saturating_mul(static_cost(&scan.body)?));
        } else if let Some(ite) = node.op_as::<IfThenElse>() {
            let branch = static_cost(&ite.then_body)?.max(static_cost(&ite.else_body)?);
            total = total.saturating_add(branch);
        } else {
            for (kind, count) in node.op.cost(&inputs)? {
                if matches!(kind, Cost::FMA(_) | Cost::Div(_)) {
                    total = total.saturating_add(count.to_i64()?.max(0) as u64);
                }
            }
        }
        for out in &node.outputs {
            let n = out.fact.shape.volume().to_i64()?.max(0) as u64;
            total = total.saturating_add(n);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_and_reject_lies() {
        let a = Tensor::new(ElemType::F32, vec![2, 2], vec![0; 16], 1 << 20).unwrap();
        let b = Tensor::new(ElemType::I64, vec![1], 7i64.to_le_bytes().to_vec(), 1 << 20).unwrap();
        let enc = encode_tensors(&[a.clone(), b.clone()]);
        assert_eq!(decode_tensors(&enc, 1 << 20).unwrap(), vec![a, b]);
        assert!(decode_tensors(&enc[..enc.len() - 1], 1 << 20).is_err());
        assert!(Tensor::new(ElemType::F32, vec![2, 2], vec![0; 15], 1 << 20).is_err());
        assert!(Tensor::new(
            ElemType::F32,
            vec![u32::MAX, u32::MAX, u32::MAX],
            vec![],
            usize::MAX
        )
        .is_err());
        assert!(Tensor::new(ElemType::F32, vec![1024], vec![0; 4096], 4095).is_err());
    }

    fn relu(opset: i64) -> pb::ModelProto {
        let value = |name: &str| pb::ValueInfoProto {
            name: name.into(),
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node: vec![pb::NodeProto {
                    name: "r".into(),
                    op_type: "Relu".into(),
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
    }

    #[test]
    fn the_plan_cache_evicts_the_least_recently_used_plan() {
        let mut proto = relu(13);
        let g = proto.graph.as_mut().unwrap();
        for v in g.input.iter_mut().chain(g.output.iter_mut()) {
            v.r#type = Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1, // float
                    shape: None,
                })),
                ..Default::default()
            });
        }
        let bytes = prost::Message::encode_to_vec(&proto);
        let mut m = Model::load(&bytes, 2).unwrap();
        let sig = |n: u32| vec![(ElemType::F32, vec![n])];
        let x =
            |n: u32| Tensor::new(ElemType::F32, vec![n], vec![0; 4 * n as usize], 1 << 20).unwrap();
        for n in [1, 2, 1, 3] {
            let out = m.plan(&sig(n)).unwrap().run(&[x(n)], 1 << 20).unwrap();
            assert_eq!(out[0].dims(), &[n]);
        }
        // 2 was the least recently used when 3 came: 1 and 3 remain.
        assert_eq!(m.plans.len(), 2);
        assert!(m.plans.contains_key(&sig(1)) && m.plans.contains_key(&sig(3)));
        // Any number of shapes still plans and runs.
        for n in 4..12 {
            m.plan(&sig(n)).unwrap().run(&[x(n)], 1 << 20).unwrap();
        }
        assert_eq!(m.plans.len(), 2);
    }

    fn check(m: &pb::ModelProto) -> Result<OnnxSummary> {
        check_onnx(&prost::Message::encode_to_vec(m))
    }

    fn rejected(m: &pb::ModelProto, says: &str) {
        match check(m) {
            Err(NnError::Rejected(why)) => assert!(why.contains(says), "{why}"),
            other => panic!("expected a rejection saying {says:?}, got {other:?}"),
        }
    }

    #[test]
    fn the_onnx_policy_accepts_standard_graphs_and_names_each_violation() {
        assert_eq!(
            check(&relu(13)).unwrap(),
            OnnxSummary {
                opset: 13,
                inputs: 1,
                outputs: 1
            }
        );
        rejected(&relu(MAX_OPSET + 1), "opset 24");
        let mut m = relu(13);
        m.opset_import.push(pb::OperatorSetIdProto {
            domain: "com.microsoft".into(),
            version: 1,
        });
        rejected(&m, "custom operator domain `com.microsoft`");
        let mut m = relu(13);
        m.graph.as_mut().unwrap().node[0].domain = "com.example".into();
        rejected(&m, "node `r` (Relu) in graph `g` uses the custom domain");
        let mut m = relu(13);
        m.graph.as_mut().unwrap().initializer.push(pb::TensorProto {
            name: "w".into(),
            data_location: Some(1),
            ..Default::default()
        });
        rejected(&m, "tensor `w` in graph `g` refers to external data");
        // External data hidden in a subgraph (an attribute of a node).
        let mut m = relu(13);
        let mut sub = relu(13).graph.unwrap();
        sub.name = "body".into();
        sub.initializer.push(pb::TensorProto {
            name: "v".into(),
            external_data: vec![pb::StringStringEntryProto {
                key: "location".into(),
                value: "../../etc/passwd".into(),
            }],
            ..Default::default()
        });
        m.graph.as_mut().unwrap().node[0]
            .attribute
            .push(pb::AttributeProto {
                name: "body".into(),
                g: Some(sub),
                ..Default::default()
            });
        rejected(&m, "tensor `v` in graph `body` refers to external data");
        let mut m = relu(13);
        m.functions.push(pb::FunctionProto {
            name: Some("f".into()),
            ..Default::default()
        });
        rejected(&m, "model-local functions (f)");
    }

    #[test]
    fn garbage_is_not_onnx() {
        assert!(matches!(
            check_onnx(b"not a model"),
            Err(NnError::Rejected(_))
        ));
    }
}
