//! The converter against tract running the original, on graphs built for each rule.

use std::collections::HashMap;
use std::path::Path;

use super::*;
use crate::contract::card::tests::sample_card;
use crate::contract::card::{sha256_hex, ModelCard};
use crate::contract::onnx::{
    f32_scalar, f32_tensor, float, i64_tensor, int, tensor, DataType, Graph,
};
use crate::model::Model;
use crate::run::masks;
use crate::run::plan::Plan;
use crate::run::rng::WyRand;

/// Samples per run in the tests.
const T: usize = 3;

fn uniform(rng: &mut WyRand, n: usize, scale: f32) -> Vec<f32> {
    let unit = |u: u64| (u >> 40) as f32 / (1u64 << 24) as f32;
    (0..n)
        .map(|_| (unit(rng.next_u64()) * 2.0 - 1.0) * scale)
        .collect()
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// `w·x + b`, W `[out, in]` row-major (Gemm with transB = 1).
fn dense(w: &[f32], b: &[f32], x: &[f32]) -> Vec<f32> {
    let n = x.len();
    let dot = |o: usize| (0..n).map(|i| w[o * n + i] * x[i]).sum::<f32>();
    b.iter().enumerate().map(|(o, bo)| bo + dot(o)).collect()
}

/// A 1×1 convolution of `[cin, pixels]` with W `[cout, cin]`.
fn conv1x1(w: &[f32], b: &[f32], x: &[f32], pixels: usize) -> Vec<f32> {
    let cin = x.len() / pixels;
    let mut out = vec![];
    for (o, bo) in b.iter().enumerate() {
        for p in 0..pixels {
            out.push(
                bo + (0..cin)
                    .map(|i| w[o * cin + i] * x[i * pixels + p])
                    .sum::<f32>(),
            );
        }
    }
    out
}

/// Global average pooling of `[c, pixels]`.
fn pool(x: &[f32], pixels: usize) -> Vec<f32> {
    let mean = |c: &[f32]| c.iter().sum::<f32>() / pixels as f32;
    x.chunks(pixels).map(mean).collect()
}

fn relu(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|x| x.max(0.0)).collect()
}

fn masked(a: &[f32], m: &[f32]) -> Vec<f32> {
    a.iter().zip(m).map(|(a, m)| a * m).collect()
}

fn fixed(dims: &[i64]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
}

/// The graph as a model file of `opset` (IR 3 before opset 8, as exporters wrote them).
fn bytes(g: Graph, opset: i64) -> Vec<u8> {
    let mut m = g.into_model("test", "0");
    m.opset_import[0].version = opset;
    m.ir_version = if opset < 8 { 3 } else { 8 };
    m.encode_to_vec()
}

/// A node with several outputs (the builder's have one).
fn node_n(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The original model run by tract at batch 1, output flattened (softmaxed for logits).
fn original(onnx: &[u8], shape: [usize; 4], x: &[f32], logits: bool) -> Vec<f32> {
    let out = analysis::Reference::new(onnx, None, &shape)
        .unwrap()
        .run(x)
        .unwrap();
    if logits {
        softmax(&out)
    } else {
        out
    }
}

/// The converted model loaded and checked by the runtime against a card built from it.
fn load(conv: &Converted) -> Model {
    let mut card: ModelCard = sample_card();
    let channels = conv.input.1[1];
    card.input.name.clone_from(&conv.input.0);
    card.input.shape = conv.input.1;
    card.input.mean = vec![0.0; channels];
    card.input.std = vec![1.0; channels];
    card.dropout_sites.clone_from(&conv.sites);
    card.output.name.clone_from(&conv.output);
    card.classes = (0..conv.classes).map(|c| format!("c{c}")).collect();
    card.onnx_sha256 = sha256_hex(&conv.onnx);
    card.validate().unwrap();
    Model::from_parts(card, &conv.onnx, Path::new("converted.onnx")).unwrap()
}

fn run(model: &Model, x: &[f32], masks: &[Vec<f32>]) -> Vec<f32> {
    let mut plan = Plan::new(model, T).unwrap();
    let masks: Vec<&[f32]> = masks.iter().map(Vec::as_slice).collect();
    plan.run_with_masks(x, &masks).unwrap().to_vec()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{what}: {got:?} against {want:?}");
    }
}

/// Check 1: with every mask 1, each of the T rows is the original model's output.
fn check_ones(onnx: &[u8], conv: &Converted, logits: bool) {
    let model = load(conv);
    let mut rng = WyRand::new(7);
    let ones: Vec<Vec<f32>> = conv
        .sites
        .iter()
        .map(|s| vec![1.0; T * s.sample_len()])
        .collect();
    let [_, c, h, w] = conv.input.1;
    for _ in 0..3 {
        let x = uniform(&mut rng, c * h * w, 2.0);
        let want = original(onnx, conv.input.1, &x, logits);
        assert_eq!(want.len(), conv.classes);
        let got = run(&model, &x, &ones);
        for row in got.chunks(conv.classes) {
            assert_close(row, &want, "masks of ones");
        }
    }
}

/// Check 2: with random masks, each row is `reference(x, that sample's masks)`.
fn check_random(conv: &Converted, reference: impl Fn(&[f32], &[&[f32]]) -> Vec<f32>) {
    let model = load(conv);
    let mut rng = WyRand::new(11);
    let [_, c, h, w] = conv.input.1;
    for _ in 0..3 {
        let x = uniform(&mut rng, c * h * w, 2.0);
        let drawn: Vec<Vec<f32>> = conv
            .sites
            .iter()
            .map(|s| {
                let mut m = vec![0.0; T * s.sample_len()];
                masks::fill(&mut m, s.p, &mut rng);
                m
            })
            .collect();
        let got = run(&model, &x, &drawn);
        for (t, row) in got.chunks(conv.classes).enumerate() {
            let sample: Vec<&[f32]> = conv
                .sites
                .iter()
                .zip(&drawn)
                .map(|(s, m)| &m[t * s.sample_len()..(t + 1) * s.sample_len()])
                .collect();
            assert_close(row, &reference(&x, &sample), "random masks");
        }
    }
}

fn site(input: &str, p: f32, shape: &[usize]) -> DropoutSite {
    DropoutSite {
        input: input.into(),
        p,
        shape: shape.to_vec(),
    }
}

/// Weights of the MLP tests: x [1,1,4,4] → Flatten → Gemm 16→8 → Relu → (head) → Gemm 8→3.
struct Mlp {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl Mlp {
    fn new() -> Mlp {
        let mut rng = WyRand::new(3);
        Mlp {
            w1: uniform(&mut rng, 8 * 16, 0.5),
            b1: uniform(&mut rng, 8, 0.2),
            w2: uniform(&mut rng, 3 * 8, 1.0),
            b2: uniform(&mut rng, 3, 0.2),
        }
    }

    /// x → Flatten `flat` → Gemm `h1` → Relu `h`, with the weights as constants.
    fn trunk(&self, opset_ir3: bool) -> Graph {
        let mut g = Graph::new("t");
        g.input("x", &fixed(&[1, 1, 4, 4]))
            .constant(f32_tensor("w1", &[8, 16], &self.w1))
            .constant(f32_tensor("b1", &[8], &self.b1))
            .constant(f32_tensor("w2", &[3, 8], &self.w2))
            .constant(f32_tensor("b2", &[3], &self.b2))
            .node("Flatten", &["x"], "flat", vec![])
            .node("Gemm", &["flat", "w1", "b1"], "h1", vec![int("transB", 1)])
            .node("Relu", &["h1"], "h", vec![]);
        if opset_ir3 {
            // IR 3 lists the initializers among the graph inputs.
            g.input("w1", &fixed(&[8, 16]))
                .input("b1", &fixed(&[8]))
                .input("w2", &fixed(&[3, 8]))
                .input("b2", &fixed(&[3]));
        }
        g
    }

    fn hidden(&self, x: &[f32]) -> Vec<f32> {
        relu(dense(&self.w1, &self.b1, x))
    }

    /// softmax(W2·(m ⊙ h) + b2).
    fn head(&self, h: &[f32], m: &[f32]) -> Vec<f32> {
        softmax(&dense(&self.w2, &self.b2, &masked(h, m)))
    }
}

/// One way a Dropout is written, by opset: how the test graph spells it after the hidden
/// layer `h` (writing `hd`), and what convert must make of it.
struct DropoutForm {
    name: &'static str,
    opset: i64,
    /// The trunk with the IR version 3 an opset-7 exporter writes.
    ir3: bool,
    /// Adds the Dropout (and its ratio) reading `h` and writing `hd`.
    dropout: fn(&mut Graph),
    p: f32,
    /// The graph ends in its own Softmax (else logits, and convert appends one).
    softmax: bool,
    /// Further checks of the converted graph.
    extra: fn(&Converted),
}

fn ratio_attribute(g: &mut Graph) {
    g.node("Dropout", &["h"], "hd", vec![float("ratio", 0.3)]);
}

fn ratio_attribute_02(g: &mut Graph) {
    g.node("Dropout", &["h"], "hd", vec![float("ratio", 0.2)]);
}

fn ratio_initializer(g: &mut Graph) {
    g.constant(f32_scalar("ratio", 0.25))
        .node("Dropout", &["h", "ratio"], "hd", vec![]);
}

/// Opset 13: the ratio from a Constant node, a `training_mode` input, an unused mask output.
fn ratio_constant_training_mode_and_mask(g: &mut Graph) {
    g.nodes.push(pb::NodeProto {
        op_type: "Constant".into(),
        output: vec!["ratio".into()],
        attribute: vec![pb::AttributeProto {
            name: "value".into(),
            r#type: pb::attribute_proto::AttributeType::Tensor as i32,
            t: Some(f32_scalar("", 0.4)),
            ..Default::default()
        }],
        ..Default::default()
    });
    g.constant(tensor("train", &[], DataType::Bool, vec![0]));
    g.nodes.push(node_n(
        "Dropout",
        "drop",
        &["h", "ratio", "train"],
        &["hd", "hmask"],
    ));
}

fn keeps_opset_and_ir(conv: &Converted) {
    assert_eq!(conv.input, ("x".to_string(), [1, 1, 4, 4]));
    assert_eq!((conv.output.as_str(), conv.classes), ("probs", 3));
    let out = pb::ModelProto::decode(&conv.onnx[..]).unwrap();
    assert_eq!((out.opset_import[0].version, out.ir_version), (7, 3));
}

fn drops_dropout_and_its_inputs(conv: &Converted) {
    let graph = pb::ModelProto::decode(&conv.onnx[..])
        .unwrap()
        .graph
        .unwrap();
    assert!(graph
        .node
        .iter()
        .all(|n| n.op_type != "Dropout" && n.op_type != "Constant"));
    assert!(graph.initializer.iter().all(|t| t.name != "train"));
}

/// Every Dropout form convert reads becomes one mask site with the form's p; with every mask
/// 1 the converted graph computes the original (tract), and with random masks the reference.
#[test]
fn every_dropout_form_becomes_one_site_that_computes_the_original() {
    let forms = [
        DropoutForm {
            name: "opset 7, ratio attribute, logits",
            opset: 7,
            ir3: true,
            dropout: ratio_attribute,
            p: 0.3,
            softmax: false,
            extra: keeps_opset_and_ir,
        },
        DropoutForm {
            name: "opset 10, before an existing softmax",
            opset: 10,
            ir3: false,
            dropout: ratio_attribute_02,
            p: 0.2,
            softmax: true,
            extra: |_| {},
        },
        DropoutForm {
            name: "opset 12, ratio initializer",
            opset: 12,
            ir3: false,
            dropout: ratio_initializer,
            p: 0.25,
            softmax: false,
            extra: |_| {},
        },
        DropoutForm {
            name: "opset 13, ratio, training_mode and an unused mask",
            opset: 13,
            ir3: false,
            dropout: ratio_constant_training_mode_and_mask,
            p: 0.4,
            softmax: true,
            extra: drops_dropout_and_its_inputs,
        },
    ];
    let mlp = Mlp::new();
    for form in forms {
        let mut g = mlp.trunk(form.ir3);
        (form.dropout)(&mut g);
        g.node(
            "Gemm",
            &["hd", "w2", "b2"],
            "logits",
            vec![int("transB", 1)],
        );
        if form.softmax {
            g.node("Softmax", &["logits"], "out", vec![])
                .output("out", &fixed(&[1, 3]));
        } else {
            g.output("logits", &fixed(&[1, 3]));
        }
        let onnx = bytes(g, form.opset);
        let conv =
            convert(&onnx, &Options::default()).unwrap_or_else(|e| panic!("{}: {e}", form.name));
        assert_eq!(
            conv.sites,
            vec![site("mask_0", form.p, &[8])],
            "{}",
            form.name
        );
        assert_eq!(conv.softmax_appended, !form.softmax, "{}", form.name);
        (form.extra)(&conv);
        check_ones(&onnx, &conv, !form.softmax);
        check_random(&conv, |x, m| mlp.head(&mlp.hidden(x), m[0]));
    }
}

/// PyTorch's eval export: no Dropout, `x.view(..)` as a Reshape to a constant shape.
fn pytorch_head(w: [&[f32]; 4], shape: &[i64], allowzero: bool) -> Vec<u8> {
    let mut g = Graph::new("t");
    let attrs = if allowzero {
        vec![int("allowzero", 1)]
    } else {
        vec![]
    };
    g.input("x", &fixed(&[1, 1, 4, 4]))
        .constant(f32_tensor("cw", &[2, 1, 1, 1], w[0]))
        .constant(f32_tensor("cb", &[2], w[1]))
        .constant(i64_tensor("shape", &[shape.len() as i64], shape))
        .constant(f32_tensor("fw", &[3, 32], w[2]))
        .constant(f32_tensor("fb", &[3], w[3]))
        .node("Conv", &["x", "cw", "cb"], "c", vec![])
        .node("Relu", &["c"], "feat", vec![])
        .node("Reshape", &["feat", "shape"], "flat", attrs)
        .node(
            "Gemm",
            &["flat", "fw", "fb"],
            "logits",
            vec![int("transB", 1)],
        )
        .output("logits", &fixed(&[1, 3]));
    bytes(g, 17)
}

#[test]
fn a_named_site_before_a_pytorch_reshape() {
    let mut rng = WyRand::new(5);
    let (w, b) = (uniform(&mut rng, 2, 1.0), uniform(&mut rng, 2, 0.2));
    let (w2, b2) = (uniform(&mut rng, 96, 0.5), uniform(&mut rng, 3, 0.2));
    let weights = [&w[..], &b, &w2, &b2];
    let opts = Options {
        sites: vec![("feat".into(), 0.5)],
        output: None,
    };
    // (target shape, allowzero) → the target shape after conversion.
    let cases: [(&[i64], bool, &[i64]); 5] = [
        (&[1, -1], false, &[0, -1]),
        (&[1, 32], false, &[0, 32]),
        (&[-1, 32], false, &[-1, 32]),
        (&[1, 32], true, &[-1, 32]),
        (&[1, -1], true, &[-1, 32]),
    ];
    for (shape, allowzero, want) in cases {
        let onnx = pytorch_head(weights, shape, allowzero);
        let conv = convert(&onnx, &opts).unwrap();
        assert_eq!(conv.sites, vec![site("mask_0", 0.5, &[2, 4, 4])]);
        assert!(conv.softmax_appended);
        let graph = pb::ModelProto::decode(&conv.onnx[..])
            .unwrap()
            .graph
            .unwrap();
        let reshape = graph.node.iter().find(|n| n.op_type == "Reshape").unwrap();
        let got = ints(&constant(&graph, &reshape.input[1]).unwrap()).unwrap();
        assert_eq!(got, want, "{shape:?} allowzero {allowzero}");
        check_ones(&onnx, &conv, true);
        check_random(&conv, |x, m| {
            let feat = relu(conv1x1(&w, &b, x, 16));
            softmax(&dense(&w2, &b2, &masked(&feat, m[0])))
        });
    }

    let onnx = pytorch_head(weights, &[1, -1], false);
    assert_eq!(
        convert(&onnx, &Options::default()),
        Err(ConvertError::NoSites)
    );
    let candidates = list_sites(&onnx).unwrap();
    let tensors: Vec<(&str, &[usize], &str)> = candidates
        .iter()
        .map(|c| (c.tensor.as_str(), &c.shape[..], c.feeds.as_str()))
        .collect();
    assert_eq!(
        tensors,
        vec![
            ("x", &[1, 1, 4, 4][..], "Conv c"),
            ("flat", &[1, 32][..], "Gemm logits")
        ]
    );
}

#[test]
fn frees_the_contract_names_and_refuses_old_opsets() {
    let mlp = Mlp::new();
    let mut model = pb::ModelProto::decode(&mlp_with(|_| "hd")[..]).unwrap();
    // The graph already has a `mask_0` (the activation) and a `probs` (its logits).
    rename(model.graph.as_mut().unwrap(), "h", "mask_0");
    rename(model.graph.as_mut().unwrap(), "logits", "probs");
    let onnx = model.encode_to_vec();
    let conv = convert(&onnx, &Options::default()).unwrap();
    assert_eq!(conv.sites, vec![site("mask_0", 0.5, &[8])]);
    assert!(conv.softmax_appended);
    check_ones(&onnx, &conv, true);
    check_random(&conv, |x, m| mlp.head(&mlp.hidden(x), m[0]));

    model.opset_import[0].version = 6;
    let err = convert(&model.encode_to_vec(), &Options::default());
    assert_eq!(err, Err(ConvertError::Opset(6)));

    // Weights in an external file (PyTorch's dynamo exporter writes them so by default).
    model.opset_import[0].version = 17;
    let w = &mut model.graph.as_mut().unwrap().initializer[0];
    w.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
    let name = w.name.clone();
    let err = convert(&model.encode_to_vec(), &Options::default());
    assert_eq!(err, Err(ConvertError::ExternalData(name)));
}

#[test]
fn a_dropout_inside_a_subgraph_is_refused() {
    let mut body = Graph::new("then");
    body.node("Dropout", &["h"], "hd", vec![]);
    let if_node = pb::NodeProto {
        op_type: "If".into(),
        name: "branch".into(),
        input: vec!["cond".into()],
        output: vec!["y".into()],
        attribute: vec![pb::AttributeProto {
            name: "then_branch".into(),
            r#type: pb::attribute_proto::AttributeType::Graph as i32,
            g: Some(body.into_model("t", "0").graph.unwrap()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let graph = pb::GraphProto {
        node: vec![if_node],
        ..Default::default()
    };
    let Err(err) = find_sites(&graph, &[], &HashMap::new(), "y") else {
        panic!("a Dropout in an If body was not refused");
    };
    assert!(
        matches!(&err, ConvertError::Dropout { why, .. } if why.contains("inside the subgraph")),
        "{err}"
    );
}

#[test]
fn two_sites_are_numbered_in_topological_order() {
    let mlp = Mlp::new();
    let mut g = mlp.trunk(false);
    g.node("Dropout", &["h"], "hd", vec![])
        .node(
            "Gemm",
            &["hd", "w2", "b2"],
            "logits",
            vec![int("transB", 1)],
        )
        .node("Softmax", &["logits"], "out", vec![int("axis", -1)])
        .output("out", &fixed(&[1, 3]));
    let onnx = bytes(g, 17);
    let opts = Options {
        sites: vec![("flat".into(), 0.1)],
        output: None,
    };
    let conv = convert(&onnx, &opts).unwrap();
    assert_eq!(
        conv.sites,
        vec![site("mask_0", 0.1, &[16]), site("mask_1", 0.5, &[8])]
    );
    assert!(!conv.softmax_appended);
    check_ones(&onnx, &conv, false);
    check_random(&conv, |x, m| mlp.head(&mlp.hidden(&masked(x, m[0])), m[1]));
}

/// x [batch,C,4,4] → Conv 1×1 → Relu → Dropout → Conv 1×1 classifier (→ Relu) → global
/// average pool (→ Flatten).
struct Squeeze {
    c: usize,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl Squeeze {
    fn new(c: usize) -> Squeeze {
        let mut rng = WyRand::new(9);
        Squeeze {
            c,
            w1: uniform(&mut rng, 4 * c, 1.0),
            b1: uniform(&mut rng, 4, 0.2),
            w2: uniform(&mut rng, 3 * 4, 1.0),
            b2: uniform(&mut rng, 3, 0.2),
        }
    }

    fn graph(&self, batch: Dim, relu_flatten: bool) -> Graph {
        let c = self.c as i64;
        let mut g = Graph::new("t");
        g.input("x", &[batch, Dim::Fixed(c), Dim::Fixed(4), Dim::Fixed(4)])
            .constant(f32_tensor("w1", &[4, c, 1, 1], &self.w1))
            .constant(f32_tensor("b1", &[4], &self.b1))
            .constant(f32_tensor("w2", &[3, 4, 1, 1], &self.w2))
            .constant(f32_tensor("b2", &[3], &self.b2))
            .node("Conv", &["x", "w1", "b1"], "c1", vec![])
            .node("Relu", &["c1"], "f", vec![])
            .node("Dropout", &["f"], "fd", vec![float("ratio", 0.5)])
            .node("Conv", &["fd", "w2", "b2"], "c2", vec![]);
        if relu_flatten {
            g.node("Relu", &["c2"], "r", vec![])
                .node("GlobalAveragePool", &["r"], "gap", vec![])
                .node("Flatten", &["gap"], "logits", vec![])
                .output("logits", &[batch, Dim::Fixed(3)]);
        } else {
            g.node("GlobalAveragePool", &["c2"], "gap", vec![])
                .output("gap", &[batch, Dim::Fixed(3), Dim::Fixed(1), Dim::Fixed(1)]);
        }
        g
    }

    fn reference(&self, x: &[f32], m: &[f32], relu_after: bool) -> Vec<f32> {
        let f = relu(conv1x1(&self.w1, &self.b1, x, 16));
        let mut c2 = conv1x1(&self.w2, &self.b2, &masked(&f, m), 16);
        if relu_after {
            c2 = relu(c2);
        }
        softmax(&pool(&c2, 16))
    }
}

#[test]
fn a_site_on_a_conv_feature_map_before_a_conv_classifier() {
    let net = Squeeze::new(3);
    let onnx = bytes(net.graph(Dim::Fixed(1), true), 17);
    let conv = convert(&onnx, &Options::default()).unwrap();
    assert_eq!(conv.input, ("x".to_string(), [1, 3, 4, 4]));
    assert_eq!(conv.sites, vec![site("mask_0", 0.5, &[4, 4, 4])]);
    assert!(conv.softmax_appended);
    check_ones(&onnx, &conv, true);
    check_random(&conv, |x, m| net.reference(x, m[0], true));
}

#[test]
fn a_symbolic_batch_is_pinned_and_a_1x1_output_flattened() {
    let net = Squeeze::new(1);
    let mut model = net.graph(Dim::Samples, false).into_model("test", "0");
    // Rename the symbolic batch T → N, as exporters name it, also in stale value_info.
    let graph = model.graph.as_mut().unwrap();
    let mut f = builder::value_info(
        "f",
        &[Dim::Samples, Dim::Fixed(4), Dim::Fixed(4), Dim::Fixed(4)],
    );
    let infos = graph.input.iter_mut().chain(&mut graph.output);
    for info in infos.chain(std::iter::once(&mut f)) {
        let Some(pb::type_proto::Value::TensorType(t)) =
            info.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            unreachable!()
        };
        use pb::tensor_shape_proto::dimension::Value;
        t.shape.as_mut().unwrap().dim[0].value = Some(Value::DimParam("N".into()));
    }
    graph.value_info.push(f);
    let onnx = model.encode_to_vec();
    let conv = convert(&onnx, &Options::default()).unwrap();
    assert_eq!(conv.input, ("x".to_string(), [1, 1, 4, 4]));
    assert_eq!(conv.sites, vec![site("mask_0", 0.5, &[4, 4, 4])]);
    assert!(conv.softmax_appended);
    let graph = pb::ModelProto::decode(&conv.onnx[..])
        .unwrap()
        .graph
        .unwrap();
    assert!(graph.node.iter().any(|n| n.op_type == "Flatten"));
    assert!(graph.value_info.is_empty());
    check_ones(&onnx, &conv, true);
    check_random(&conv, |x, m| net.reference(x, m[0], false));
}

#[test]
fn picks_one_of_several_outputs() {
    let mlp = Mlp::new();
    let mut g = mlp.trunk(false);
    g.node("Dropout", &["h"], "hd", vec![])
        .node(
            "Gemm",
            &["hd", "w2", "b2"],
            "logits",
            vec![int("transB", 1)],
        )
        .output("logits", &fixed(&[1, 3]))
        .output("h", &fixed(&[1, 8]));
    let onnx = bytes(g, 17);
    let err = convert(&onnx, &Options::default()).unwrap_err();
    assert_eq!(
        err,
        ConvertError::Outputs(vec!["logits".into(), "h".into()])
    );
    let opts = |name: &str| Options {
        sites: vec![],
        output: Some(name.into()),
    };
    assert!(matches!(
        convert(&onnx, &opts("nope")),
        Err(ConvertError::UnknownOutput { .. })
    ));
    let conv = convert(&onnx, &opts("logits")).unwrap();
    let mut single = pb::ModelProto::decode(&onnx[..]).unwrap();
    single.graph.as_mut().unwrap().output.truncate(1);
    check_ones(&single.encode_to_vec(), &conv, true);
}

/// An MLP whose head after Dropout `hd` is `head`, then Gemm → logits.
fn mlp_with(head: impl FnOnce(&mut Graph) -> &str) -> Vec<u8> {
    let mlp = Mlp::new();
    let mut g = mlp.trunk(false);
    g.node("Dropout", &["h"], "hd", vec![]);
    let last = head(&mut g).to_string();
    g.node(
        "Gemm",
        &[&last, "w2", "b2"],
        "logits",
        vec![int("transB", 1)],
    )
    .output("logits", &fixed(&[1, 3]));
    bytes(g, 17)
}

fn unbatchable(onnx: &[u8]) -> (String, String, String) {
    match convert(onnx, &Options::default()) {
        Err(e @ ConvertError::Unbatchable { .. }) => {
            assert!(!e.to_string().contains('\n'), "{e}");
            let ConvertError::Unbatchable { node, op, why } = e else {
                unreachable!()
            };
            (node, op, why)
        }
        other => panic!("{other:?}"),
    }
}

/// A head that cannot carry the T samples on axis 0: the graph after the Dropout, and the
/// node, op and reason convert must name.
struct Unbatchable {
    head: fn(&mut Graph) -> &'static str,
    node: Option<&'static str>,
    op: Option<&'static str>,
    why: Option<&'static str>,
}

#[test]
fn refuses_what_cannot_carry_the_samples() {
    let cases = [
        // A Reshape to a shape computed (at batch 1) from the trunk.
        Unbatchable {
            head: |g| {
                g.node("Shape", &["h"], "hs", vec![])
                    .node("Reshape", &["hd", "hs"], "r", vec![]);
                "r"
            },
            node: Some("r"),
            op: Some("Reshape"),
            why: Some("computed"),
        },
        // A Reshape whose constant shape leads with 2.
        Unbatchable {
            head: |g| {
                g.constant(i64_tensor("s", &[3], &[2, 2, 2]))
                    .constant(i64_tensor("back", &[2], &[1, 8]))
                    .node("Reshape", &["hd", "s"], "r", vec![])
                    .node("Reshape", &["r", "back"], "r2", vec![]);
                "r2"
            },
            node: Some("r"),
            op: None,
            why: Some("starts with 2"),
        },
        // A Gather on axis 0.
        Unbatchable {
            head: |g| {
                g.constant(i64_tensor("i", &[1], &[0]))
                    .node("Gather", &["hd", "i"], "g", vec![]);
                "g"
            },
            node: None,
            op: Some("Gather"),
            why: Some("sample axis"),
        },
        // The shape of a tensor after a site.
        Unbatchable {
            head: |g| {
                g.node("Shape", &["hd"], "s", vec![])
                    .node("Reshape", &["hd", "s"], "r", vec![]);
                "r"
            },
            node: None,
            op: Some("Shape"),
            why: None,
        },
    ];
    for case in cases {
        let (node, op, why) = unbatchable(&mlp_with(|g| (case.head)(g)));
        if let Some(want) = case.node {
            assert_eq!(node, want, "{op}: {why}");
        }
        if let Some(want) = case.op {
            assert_eq!(op, want, "{node}: {why}");
        }
        if let Some(want) = case.why {
            assert!(why.contains(want), "{node} ({op}): {why}");
        }
    }
}

#[test]
fn refuses_a_used_dropout_mask_and_bad_sites() {
    let mlp = Mlp::new();
    let mut g = mlp.trunk(false);
    g.nodes
        .push(node_n("Dropout", "drop", &["h"], &["hd", "hm"]));
    g.node(
        "Cast",
        &["hm"],
        "hmf",
        vec![int("to", DataType::Float as i64)],
    )
    .node("Add", &["hd", "hmf"], "sum", vec![])
    .node(
        "Gemm",
        &["sum", "w2", "b2"],
        "logits",
        vec![int("transB", 1)],
    )
    .output("logits", &fixed(&[1, 3]));
    let onnx = bytes(g, 13);
    let err = convert(&onnx, &Options::default()).unwrap_err();
    assert!(
        matches!(&err, ConvertError::Dropout { node, why } if node == "drop" && why.contains("hmf")),
        "{err}"
    );

    let onnx = mlp_with(|_| "hd");
    let with = |tensor: &str, p: f32| Options {
        sites: vec![(tensor.into(), p)],
        output: None,
    };
    assert_eq!(
        convert(&onnx, &with("nope", 0.5)),
        Err(ConvertError::UnknownTensor("nope".into()))
    );
    for p in [1.0, -0.1, f32::NAN] {
        assert!(matches!(
            convert(&onnx, &with("flat", p)),
            Err(ConvertError::SiteP { .. })
        ));
    }
    assert_eq!(
        convert(&onnx, &with("hd", 0.5)),
        Err(ConvertError::SiteTwice("hd".into()))
    );
    let err = convert(&onnx, &with("w1", 0.5)).unwrap_err();
    assert!(matches!(err, ConvertError::Site { .. }), "{err}");
    for e in [err, ConvertError::NoSites, ConvertError::Opset(6)] {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
