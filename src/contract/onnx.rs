//! The one ONNX graph builder: small constructors over tract-onnx's prost types, used by the
//! training crate's float and int8 exports and by the tests that need a model of their own.
//!
//! Opset 17, IR version 8; tensors as raw little-endian data; `T` (the Monte-Carlo sample
//! axis) a symbolic dimension. prost leaves out zero-valued scalars, so an attribute that
//! equals its ONNX default is not written.

use crate::contract::pb;
use prost::Message;

pub use pb::tensor_proto::DataType;

use crate::contract::card::SAMPLE_DIM;
use crate::contract::card::{DropoutSite, InputSpec};

/// The operator set the builder's graphs use.
pub const OPSET: i64 = 17;
/// The IR version that goes with opset 17.
pub const IR_VERSION: i64 = 8;

/// One dimension of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// The symbolic Monte-Carlo sample axis `T`.
    Samples,
    /// `M·T`: an ensemble of M members' samples stacked (written `M*T`, which tract reads
    /// as that expression).
    Pooled(i64),
}

/// A float32 graph input or output named `name` of shape `dims`.
pub fn value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    typed_value_info(name, DataType::Float, dims)
}

/// A graph input or output named `name` of element type `data_type` and shape `dims`.
pub fn typed_value_info(name: &str, data_type: DataType, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => Value::DimValue(*v),
                Dim::Samples => Value::DimParam(SAMPLE_DIM.to_string()),
                Dim::Pooled(m) => Value::DimParam(format!("{m}*{SAMPLE_DIM}")),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: data_type as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A constant tensor from its raw little-endian bytes.
pub fn tensor(name: &str, dims: &[i64], data_type: DataType, raw_data: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

/// A constant float32 tensor.
pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, DataType::Float, raw)
}

/// A constant float32 scalar.
pub fn f32_scalar(name: &str, value: f32) -> pb::TensorProto {
    f32_tensor(name, &[], &[value])
}

/// A constant int8 tensor.
pub fn i8_tensor(name: &str, dims: &[i64], values: &[i8]) -> pb::TensorProto {
    let raw = values.iter().map(|&v| v as u8).collect();
    tensor(name, dims, DataType::Int8, raw)
}

/// A constant int32 tensor.
pub fn i32_tensor(name: &str, dims: &[i64], values: &[i32]) -> pb::TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, DataType::Int32, raw)
}

/// A constant int64 tensor (shapes, axes).
pub fn i64_tensor(name: &str, dims: &[i64], values: &[i64]) -> pb::TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, DataType::Int64, raw)
}

/// A float attribute.
pub fn float(name: &str, value: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// A node with one output, named after that output.
pub fn node(
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

/// A graph under construction: nodes, constants, inputs and outputs, in the order added.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The graph's name.
    pub name: String,
    /// Nodes in topological order.
    pub nodes: Vec<pb::NodeProto>,
    /// Constant tensors (weights).
    pub initializers: Vec<pb::TensorProto>,
    /// Graph inputs.
    pub inputs: Vec<pb::ValueInfoProto>,
    /// Graph outputs.
    pub outputs: Vec<pb::ValueInfoProto>,
    /// The graph's documentation string.
    pub doc: String,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: &str) -> Graph {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// A graph with the contract's interface (docs/model-format.md): the image input, one
    /// `[T, ..shape]` mask input per dropout site, and the `[T, classes]` output.
    pub fn contract(
        name: &str,
        input: &InputSpec,
        sites: &[DropoutSite],
        output: &str,
        classes: usize,
    ) -> Graph {
        let mut g = Graph::new(name);
        let image: Vec<Dim> = input.shape.iter().map(|&d| Dim::Fixed(d as i64)).collect();
        g.input(&input.name, &image);
        for site in sites {
            let mut dims = vec![Dim::Samples];
            dims.extend(site.shape.iter().map(|&d| Dim::Fixed(d as i64)));
            g.input(&site.input, &dims);
        }
        g.output(output, &[Dim::Samples, Dim::Fixed(classes as i64)]);
        g
    }

    /// Adds a float32 input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> &mut Graph {
        self.inputs.push(value_info(name, dims));
        self
    }

    /// Adds a float32 output.
    pub fn output(&mut self, name: &str, dims: &[Dim]) -> &mut Graph {
        self.outputs.push(value_info(name, dims));
        self
    }

    /// Appends a node (see [`node`]).
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<pb::AttributeProto>,
    ) -> &mut Graph {
        self.nodes.push(node(op, inputs, output, attribute));
        self
    }

    /// Appends a constant tensor.
    pub fn constant(&mut self, tensor: pb::TensorProto) -> &mut Graph {
        self.initializers.push(tensor);
        self
    }

    /// The model around the graph: opset 17, with who produced it.
    pub fn into_model(self, producer_name: &str, producer_version: &str) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: producer_name.into(),
            producer_version: producer_version.into(),
            graph: Some(pb::GraphProto {
                name: self.name,
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                doc_string: self.doc,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The ONNX file's bytes.
    pub fn to_bytes(self, producer_name: &str, producer_version: &str) -> Vec<u8> {
        self.into_model(producer_name, producer_version)
            .encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::card::tests::sample_card;
    use crate::contract::card::ModelCard;
    use crate::model::Model;
    use crate::run::plan::Plan;

    /// A contract graph (x [1,1,4,4] → Flatten → Mul mask_0 [T,16] → Gemm 16→2 → Softmax)
    /// is loaded and checked by the runtime, and its plan gives probability rows.
    #[test]
    fn a_contract_graph_loads_checks_and_runs() {
        let mut card = sample_card();
        card.dropout_sites[0].shape = vec![16];
        let mut g = Graph::contract(
            "t",
            &card.input,
            &card.dropout_sites,
            &card.output.name,
            card.classes.len(),
        );
        let weights: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) / 8.0).collect();
        g.constant(f32_tensor("w", &[2, 16], &weights))
            .constant(f32_tensor("b", &[2], &[0.0, 0.1]))
            .node("Flatten", &["x"], "flat", vec![])
            .node("Mul", &["flat", "mask_0"], "drop", vec![])
            .node(
                "Gemm",
                &["drop", "w", "b"],
                "logits",
                vec![int("transB", 1)],
            )
            .node("Softmax", &["logits"], "probs", vec![]);
        let bytes = g.to_bytes("test", "0");
        card.onnx_sha256 = crate::contract::card::sha256_hex(&bytes);
        let model = Model::from_parts(card, &bytes, "t.onnx".as_ref()).expect("loads");
        let mut plan = Plan::new(&model, 4).unwrap();
        let probs = plan.run(&[0.5; 16], 1).unwrap();
        assert_eq!(probs.len(), 4 * 2);
        for row in probs.chunks(2) {
            assert!((row[0] + row[1] - 1.0).abs() < 1e-6, "{row:?}");
        }
    }

    /// Two one-site "members" side by side, their softmaxes concatenated: with an ensemble
    /// card the runtime checks the `[2·T, classes]` output and runs 2·T rows; the card and
    /// the graph must agree on the member count either way.
    #[test]
    fn an_ensemble_graph_pools_its_members_rows_and_must_match_its_card() {
        use crate::contract::card::{Assembly, DropoutSite, Ensemble, Member, Provenance};
        use crate::model::MismatchError;
        let mut card = sample_card();
        card.dropout_sites = ["mask_0", "mask_1"]
            .map(|name| DropoutSite {
                input: name.into(),
                p: 0.5,
                shape: vec![16],
            })
            .to_vec();
        let Provenance::Trained(training) = card.provenance.clone() else {
            unreachable!()
        };
        card.provenance = Provenance::Assembled(Assembly {
            assembled_from: vec!["a".into(), "b".into()],
            source_commit: "test".into(),
        });
        card.ensemble = Some(Ensemble {
            members: ["mask_0", "mask_1"]
                .iter()
                .enumerate()
                .map(|(k, site)| Member {
                    name: format!("m{k}"),
                    sites: vec![site.to_string()],
                    metrics: None,
                    training: training.clone(),
                })
                .collect(),
        });
        let graph = |members: i64| {
            let mut g = Graph::contract(
                "t",
                &card.input,
                &card.dropout_sites[..members as usize],
                &card.output.name,
                card.classes.len(),
            );
            if members > 1 {
                g.outputs = vec![value_info("probs", &[Dim::Pooled(members), Dim::Fixed(2)])];
            }
            g.node("Flatten", &["x"], "flat", vec![]);
            let mut outs = vec![];
            for k in 0..members {
                // Member 1's weights are member 0's negated: its logits are too.
                let sign = if k == 0 { 1.0 } else { -1.0 };
                let w: Vec<f32> = (0..32).map(|i| sign * ((i % 5) as f32 - 2.0)).collect();
                let (wk, mk) = (format!("w{k}"), format!("mask_{k}"));
                g.constant(f32_tensor(&wk, &[2, 16], &w))
                    .node("Mul", &["flat", &mk], &format!("drop{k}"), vec![])
                    .node(
                        "Gemm",
                        &[&format!("drop{k}"), &wk],
                        &format!("logits{k}"),
                        vec![int("transB", 1)],
                    )
                    .node(
                        "Softmax",
                        &[&format!("logits{k}")],
                        &format!("p{k}"),
                        vec![],
                    );
                outs.push(format!("p{k}"));
            }
            let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
            if members > 1 {
                g.node("Concat", &outs, "probs", vec![int("axis", 0)]);
            } else {
                g.node("Identity", &outs, "probs", vec![]);
            }
            g.to_bytes("test", "0")
        };
        let load = |card: &ModelCard, bytes: &[u8]| {
            let mut card = card.clone();
            card.onnx_sha256 = crate::contract::card::sha256_hex(bytes);
            Model::from_parts(card, bytes, "t.onnx".as_ref())
        };
        let model = load(&card, &graph(2)).expect("the ensemble loads");
        let mut plan = Plan::new(&model, 3).unwrap();
        assert_eq!((plan.samples(), plan.rows()), (3, 6));
        let probs = plan.run(&[0.5; 16], 1).unwrap();
        assert_eq!(probs.len(), 6 * 2);
        // The members' weights differ, so their rows do even with every mask 1.
        let ones = vec![1.0; 3 * 16];
        let probs = plan.run_with_masks(&[0.5; 16], &[&ones, &ones]).unwrap();
        assert_ne!(probs[..2], probs[6..8]);

        // An ensemble card on a one-model graph, and the ensemble graph with the card's
        // `ensemble` removed: refused, naming the rows the card implies.
        let mut two_sites = card.clone();
        two_sites.ensemble = None;
        let expected_rows = |result: Result<Model, crate::model::LoadError>| match result {
            Err(crate::model::LoadError::Mismatch {
                problem: MismatchError::OutputShape { rows, .. },
                ..
            }) => rows,
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("loaded"),
        };
        assert_eq!(expected_rows(load(&two_sites, &graph(2))), "T");
        let wrong = card.clone();
        let single = {
            let mut g = graph(1);
            // A one-model graph with both mask inputs declared, so only the output differs.
            let mut m = <pb::ModelProto as Message>::decode(&g[..]).unwrap();
            let graph = m.graph.as_mut().unwrap();
            graph
                .input
                .push(value_info("mask_1", &[Dim::Samples, Dim::Fixed(16)]));
            g.clear();
            m.encode(&mut g).unwrap();
            g
        };
        assert_eq!(expected_rows(load(&wrong, &single)), "2*T");
    }
}
