//! The image input found, its batch pinned to 1, and every tensor's shape at that batch from
//! the engine's shape inference.

use std::collections::{HashMap, HashSet};

use super::error::ConvertError;
use super::graph::*;
use crate::contract::card::MAX_INPUT_VALUES;
use crate::contract::onnx::{self as builder, DataType, Dim};
use crate::contract::pb;
use crate::engine::tract::analysis::{self, Fact};
use crate::text::one_line;

/// Every node output's fact, from tract with the image pinned to `shape`: each one is made a
/// graph output of a copy of the model, so that tract's renaming of nodes does not matter.
pub(super) fn infer(
    model: &pb::ModelProto,
    image: &str,
    shape: [usize; 4],
) -> Result<HashMap<String, Fact>, ConvertError> {
    let shapes = |e: anyhow::Error| ConvertError::Shapes(one_line(&e));
    let mut proto = model.clone();
    let graph = proto.graph.as_mut().expect("decode checks the graph");
    graph.value_info.clear();
    let mut names = vec![];
    for node in &graph.node {
        for (k, o) in node.output.iter().enumerate() {
            // A Dropout's mask is never a site, and tract types it bool.
            if o.is_empty() || (is_dropout(node) && k > 0) {
                continue;
            }
            names.push(o.clone());
        }
    }
    graph.output = names
        .iter()
        .map(|n| pb::ValueInfoProto {
            name: n.clone(),
            ..Default::default()
        })
        .collect();
    let facts = analysis::output_facts(&proto, image, &shape, names.len()).map_err(shapes)?;
    let mut facts: HashMap<String, Fact> = names.into_iter().zip(facts).collect();
    for t in &model
        .graph
        .as_ref()
        .expect("decode checks the graph")
        .initializer
    {
        let fact = Fact {
            float: t.data_type == DataType::Float as i32,
            shape: Some(t.dims.iter().map(|&d| d as usize).collect()),
            constant: true,
        };
        facts.insert(t.name.clone(), fact);
    }
    let fact = Fact {
        float: true,
        shape: Some(shape.to_vec()),
        constant: false,
    };
    facts.insert(image.to_string(), fact);
    Ok(facts)
}

/// The graph input that carries the image: the one non-initializer input that a node reads
/// (a Dropout's ratio or training_mode do not count: they go with the Dropout).
pub(super) fn image_input(graph: &pb::GraphProto) -> Result<String, ConvertError> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut read = HashSet::new();
    for node in &graph.node {
        let data = if is_dropout(node) {
            1
        } else {
            node.input.len()
        };
        read.extend(node.input.iter().take(data).cloned());
        read.extend(captured(node));
    }
    let data: Vec<String> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()) && read.contains(&i.name))
        .map(|i| i.name.clone())
        .collect();
    match &data[..] {
        [one] => Ok(one.clone()),
        _ => Err(ConvertError::Inputs(data)),
    }
}

/// Checks the image input and declares it `[1, C, H, W]` float32.
pub(super) fn pin_image(
    graph: &mut pb::GraphProto,
    name: &str,
) -> Result<[usize; 4], ConvertError> {
    use pb::tensor_shape_proto::dimension::Value;
    let bad = |why: String| ConvertError::ImageInput {
        name: name.to_string(),
        why,
    };
    let info = graph
        .input
        .iter_mut()
        .find(|i| i.name == name)
        .expect("the image is a graph input");
    let Some(pb::type_proto::Value::TensorType(t)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(bad("is not a tensor".into()));
    };
    if t.elem_type != DataType::Float as i32 {
        let got = DataType::try_from(t.elem_type).map_or("an unknown type", |d| d.as_str_name());
        return Err(bad(format!("is {got}; the contract needs FLOAT (float32)")));
    }
    let dims = t.shape.as_ref().map_or(&[][..], |s| &s.dim[..]);
    if dims.len() != 4 {
        return Err(bad(format!(
            "has {} axes; the contract needs [1, C, H, W]",
            dims.len()
        )));
    }
    match &dims[0].value {
        Some(Value::DimValue(1)) | Some(Value::DimParam(_)) | None => {}
        Some(Value::DimValue(n)) => {
            return Err(bad(format!(
                "has batch size {n}; convert needs 1 or a symbolic batch"
            )))
        }
    }
    let mut shape = [1; 4];
    for k in 1..4 {
        match &dims[k].value {
            Some(Value::DimValue(v)) if *v > 0 => shape[k] = *v as usize,
            _ => return Err(bad(format!("has no fixed size on axis {k}"))),
        }
    }
    // Bounded before tract infers anything: a hostile shape would overflow or allocate gigabytes.
    let values = shape.iter().fold(1usize, |n, &d| n.saturating_mul(d));
    if values > MAX_INPUT_VALUES {
        return Err(bad(format!(
            "is {shape:?}: {values} values, over the {MAX_INPUT_VALUES} the gate holds"
        )));
    }
    let fixed: Vec<Dim> = shape.iter().map(|&d| Dim::Fixed(d as i64)).collect();
    *info = builder::value_info(name, &fixed);
    Ok(shape)
}
