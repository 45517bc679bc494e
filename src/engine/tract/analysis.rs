//! What tract tells the converter (`model::rewrite`, `convert`) about an ONNX graph at
//! translate time: every value's type and shape at batch 1, the values of constants, the
//! output's dimensions, and the original graph run as a reference. The converter's output is
//! engine-agnostic contract ONNX; only its analysis is tract's. The graph arrives as our own
//! protobuf types (`model::pb`) or bytes, and leaves as plain Rust values.

use prost::Message;
use tract_onnx::prelude::*;

use crate::contract::pb;

/// One value as tract's shape inference saw it.
#[derive(Debug, Clone)]
pub struct Fact {
    /// Whether it is F32.
    pub float: bool,
    /// Its shape, when concrete.
    pub shape: Option<Vec<usize>>,
    /// Whether tract folded it to a constant.
    pub constant: bool,
}

/// The facts of the values `names` (node outputs of `model`) with the input named `image`
/// pinned to `shape`. `model` must list exactly `names` as its graph outputs (each one made
/// an output, so tract's renaming of nodes does not matter).
pub fn output_facts(
    model: &pb::ModelProto,
    image: &str,
    shape: &[usize],
    names: usize,
) -> TractResult<Vec<Fact>> {
    // Our types and tract's share ONNX's wire format.
    let theirs = tract_onnx::pb::ModelProto::decode(&model.encode_to_vec()[..])?;
    let mut inference = tract_onnx::onnx().model_for_proto_model(&theirs)?;
    let ix = inference
        .input_outlets()?
        .iter()
        .position(|o| inference.node(o.node).name == image)
        .ok_or_else(|| anyhow::anyhow!("tract sees no input {image}"))?;
    inference.set_input_fact(ix, f32::fact(shape).into())?;
    let typed = inference.into_typed()?;
    (0..names)
        .map(|i| {
            let fact = typed.output_fact(i)?;
            Ok(Fact {
                float: fact.datum_type == f32::datum_type(),
                shape: fact.shape.as_concrete().map(<[usize]>::to_vec),
                constant: fact.konst.is_some(),
            })
        })
        .collect()
}

/// A constant's values, read as tract reads them (raw or typed fields, any stored type).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// A floating-point tensor's values.
    Float(Vec<f64>),
    /// An integer or boolean tensor's values.
    Int(Vec<i64>),
}

/// The values of a tensor stored in the graph; `None` when tract cannot read it or it is
/// neither numbers nor booleans.
pub fn tensor_values(t: &pb::TensorProto) -> Option<Values> {
    // Our types and tract's share ONNX's wire format.
    let theirs = tract_onnx::pb::TensorProto::decode(&t.encode_to_vec()[..]).ok()?;
    let tensor = tract_onnx::tensor::load_tensor(
        &tract_onnx::data_resolver::MmapDataResolver,
        &theirs,
        None,
    )
    .ok()?;
    if tensor.datum_type().is_float() {
        let t = tensor.cast_to::<f64>().ok()?;
        let view = t.to_plain_array_view::<f64>().ok()?;
        return Some(Values::Float(view.iter().copied().collect()));
    }
    let t = tensor.cast_to::<i64>().ok()?;
    let view = t.to_plain_array_view::<i64>().ok()?;
    Some(Values::Int(view.iter().copied().collect()))
}

/// The dimensions of the graph's first output, as text (`T` for the sample axis).
pub fn output_dims(onnx: &[u8]) -> TractResult<Vec<String>> {
    let typed = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])?
        .into_typed()?;
    Ok(typed
        .output_fact(0)?
        .shape
        .iter()
        .map(|d| d.to_string())
        .collect())
}

/// An original graph, as it runs in tract at one input shape: the reference a converted
/// model is checked against.
pub struct Reference {
    plan: Arc<TypedRunnableModel>,
    shape: Vec<usize>,
}

impl Reference {
    /// `onnx` (in inference mode) with its first input pinned to `shape`, its output the one
    /// named `output` (or its own).
    pub fn new(onnx: &[u8], output: Option<&str>, shape: &[usize]) -> TractResult<Reference> {
        let plan = tract_onnx::onnx()
            // value_info with a symbolic batch would not unify with the batch of 1.
            .with_ignore_value_info(true)
            .model_for_read(&mut &onnx[..])
            .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
            .and_then(|m| match output {
                Some(name) => m.with_outputs_by_name([name]),
                None => Ok(m),
            })
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())?;
        Ok(Reference {
            plan,
            shape: shape.to_vec(),
        })
    }

    /// The output's values for input `x`.
    pub fn run(&self, x: &[f32]) -> TractResult<Vec<f32>> {
        let tensor = Tensor::from_shape(&self.shape, x)?;
        let out = self.plan.run(tvec!(tensor.into_tvalue()))?;
        Ok(out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect())
    }
}
