//! Writes the dropout network as ONNX with the masks as inputs (docs/model-format.md).
//!
//! The file is built from tract-onnx's prost types: opset 17, float32 weights as raw
//! little-endian data, `T` a symbolic dimension. prost drops zero-valued scalars, so
//! attributes that equal their ONNX default are left out.

use anyhow::{Context, Result};
use prost::Message;
use tch::{Kind, Tensor};
use tract_onnx::pb;

use crate::net::{Net, CLASSES, INPUT_SHAPE, SITE_SHAPES};

pub const OPSET: i64 = 17;
/// IR version 8 goes with opset 17.
pub const IR_VERSION: i64 = 8;
pub const IMAGE_INPUT: &str = "x";
pub const OUTPUT: &str = "probs";

pub fn mask_input(site: usize) -> String {
    format!("mask_{site}")
}

pub(crate) enum Dim {
    Fixed(i64),
    Samples,
}

pub(crate) fn value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => Value::DimValue(*v),
                Dim::Samples => Value::DimParam(mcgate::plan::SAMPLE_DIM.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn initializer(name: &str, t: &Tensor) -> Result<pb::TensorProto> {
    let t = t
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let values = Vec::<f32>::try_from(t.flatten(0, -1)).context("reading weights")?;
    Ok(pb::TensorProto {
        name: name.into(),
        dims: t.size(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    })
}

pub(crate) fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

pub(crate) fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

/// The ONNX file's bytes for `net`.
pub fn onnx_bytes(net: &Net, doc: &str) -> Result<Vec<u8>> {
    let (m0, m1) = (mask_input(0), mask_input(1));
    let nodes = vec![
        node(
            "Conv",
            &[IMAGE_INPUT, "conv1.weight", "conv1.bias"],
            "conv1",
            vec![ints("kernel_shape", &[3, 3])],
        ),
        node("Relu", &["conv1"], "relu1", vec![]),
        node(
            "Conv",
            &["relu1", "conv2.weight", "conv2.bias"],
            "conv2",
            vec![ints("kernel_shape", &[3, 3])],
        ),
        node("Relu", &["conv2"], "relu2", vec![]),
        node(
            "MaxPool",
            &["relu2"],
            "pool",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ),
        // First dropout site: the trunk ran at batch 1, broadcasting makes it T samples.
        node("Mul", &["pool", &m0], "drop0", vec![]),
        node("Flatten", &["drop0"], "flat", vec![]),
        node(
            "Gemm",
            &["flat", "fc1.weight", "fc1.bias"],
            "fc1",
            vec![int("transB", 1)],
        ),
        node("Relu", &["fc1"], "relu3", vec![]),
        node("Mul", &["relu3", &m1], "drop1", vec![]),
        node(
            "Gemm",
            &["drop1", "fc2.weight", "fc2.bias"],
            "fc2",
            vec![int("transB", 1)],
        ),
        // Softmax's default axis in opset ≥ 13 is -1, the class axis.
        node("Softmax", &["fc2"], OUTPUT, vec![]),
    ];
    let initializer = vec![
        initializer("conv1.weight", &net.conv1.ws)?,
        initializer(
            "conv1.bias",
            net.conv1.bs.as_ref().context("conv1 has no bias")?,
        )?,
        initializer("conv2.weight", &net.conv2.ws)?,
        initializer(
            "conv2.bias",
            net.conv2.bs.as_ref().context("conv2 has no bias")?,
        )?,
        initializer("fc1.weight", &net.fc1.ws)?,
        initializer("fc1.bias", net.fc1.bs.as_ref().context("fc1 has no bias")?)?,
        initializer("fc2.weight", &net.fc2.ws)?,
        initializer("fc2.bias", net.fc2.bs.as_ref().context("fc2 has no bias")?)?,
    ];
    Ok(model_bytes("mcgate_dropout", nodes, initializer, doc))
}

/// The model file around `nodes`: the contract's inputs (`x`, one mask per site with
/// symbolic T) and output (`probs`), opset 17.
pub(crate) fn model_bytes(
    graph_name: &str,
    nodes: Vec<pb::NodeProto>,
    initializer: Vec<pb::TensorProto>,
    doc: &str,
) -> Vec<u8> {
    let site_dims = |site: usize| {
        let mut d = vec![Dim::Samples];
        d.extend(SITE_SHAPES[site].iter().map(|&v| Dim::Fixed(v)));
        d
    };
    let graph = pb::GraphProto {
        name: graph_name.into(),
        node: nodes,
        initializer,
        input: vec![
            value_info(IMAGE_INPUT, &INPUT_SHAPE.map(Dim::Fixed)),
            value_info(&mask_input(0), &site_dims(0)),
            value_info(&mask_input(1), &site_dims(1)),
        ],
        output: vec![value_info(OUTPUT, &[Dim::Samples, Dim::Fixed(CLASSES)])],
        doc_string: doc.into(),
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "mcgate-training".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// The card for an exported MNIST-architecture model: the parts fixed by the architecture
/// and the export contract are filled here; the measured parts come from the caller.
pub fn card_for(
    name: &str,
    classes: Vec<String>,
    onnx: &[u8],
    default_samples: usize,
    threshold: mcgate::card::Threshold,
    metrics: mcgate::card::Metrics,
    provenance: mcgate::card::Provenance,
) -> mcgate::card::ModelCard {
    use crate::net::DROP_P;
    use mcgate::card::{DropoutSite, InputSpec, ModelCard, OutputSpec};
    ModelCard {
        schema: mcgate::card::SCHEMA.into(),
        name: name.into(),
        classes,
        input: InputSpec {
            name: IMAGE_INPUT.into(),
            shape: INPUT_SHAPE.map(|d| d as usize),
            layout: "NCHW".into(),
            scale: 1.0 / 255.0,
            mean: vec![0.0],
            std: vec![1.0],
        },
        dropout_sites: (0..DROP_P.len())
            .map(|i| DropoutSite {
                input: mask_input(i),
                p: DROP_P[i] as f32,
                shape: SITE_SHAPES[i].iter().map(|&d| d as usize).collect(),
            })
            .collect(),
        output: OutputSpec {
            name: OUTPUT.into(),
        },
        default_samples,
        threshold,
        metrics,
        onnx_sha256: mcgate::card::sha256_hex(onnx),
        provenance,
    }
}
