//! The paper's MNIST network (the Keras MNIST example Smith & Gal used):
//! Conv32 3×3 ReLU → Conv64 3×3 ReLU → MaxPool 2 → Dropout 0.25 → Flatten →
//! Dense128 ReLU → Dropout 0.5 → Dense10 softmax, on `[N, 1, 28, 28]` images in [0, 1].
//!
//! The trunk ends at the max-pool (`[N, 64, 12, 12]`), the first dropout site. Its float
//! graph is here; `int8` holds its quantised variant. The shapes below are known only here.

mod int8;

pub use int8::Int8Scales;

use anyhow::{ensure, Context, Result};
use mcgate::contract::card::{ChannelOrder, InputSpec, Resize};
use mcgate::contract::onnx::{int, ints, Graph};
use tch::{nn, nn::Module, Tensor};

use super::{f32_constant, DropoutNet, Site, IMAGE_INPUT, OUTPUT};
use crate::density::DensityFit;

/// The density branch's graph output (`MnistCnn::add_density`), named in the card's
/// `output.log_density`.
pub const DENSITY_OUTPUT: &str = "log_density";

/// Drop probabilities of the two dropout sites, in graph order.
const DROP_P: [f64; 2] = [0.25, 0.5];
/// Per-sample shapes of the two sites (after the trunk; after the first dense layer).
const SITE_SHAPES: [&[i64]; 2] = [&[64, 12, 12], &[128]];
const CLASSES: i64 = 10;
const INPUT_SHAPE: [usize; 4] = [1, 1, 28, 28];

#[derive(Debug)]
pub struct MnistCnn {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

/// How the weights start before training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WeightInit {
    /// tch's defaults (the shipped models): Kaiming-uniform weights with the ReLU gain,
    /// bound √(6/fan_in); dense biases U(±1/√fan_in), conv biases 0.
    #[default]
    Tch,
    /// PyTorch's defaults: weights and biases U(±1/√fan_in) (Kaiming uniform with a = √5),
    /// weights 2.45× narrower than tch's.
    Torch,
    /// Keras's defaults (the paper's code): Glorot-uniform weights, bound
    /// √(6/(fan_in + fan_out)), biases 0.
    Glorot,
}

impl WeightInit {
    /// Weight and bias initialisers for a layer with these fans (receptive field included).
    fn layer(self, fan_in: i64, fan_out: i64) -> (nn::Init, Option<nn::Init>) {
        let uniform = |b: f64| nn::Init::Uniform { lo: -b, up: b };
        let torch = 1.0 / (fan_in as f64).sqrt();
        match self {
            WeightInit::Tch => (nn::init::DEFAULT_KAIMING_UNIFORM, None),
            WeightInit::Torch => (uniform(torch), Some(uniform(torch))),
            WeightInit::Glorot => (
                uniform((6.0 / (fan_in + fan_out) as f64).sqrt()),
                Some(nn::Init::Const(0.0)),
            ),
        }
    }

    fn conv(self, vs: nn::Path, cin: i64, cout: i64, k: i64) -> nn::Conv2D {
        let mut cfg = nn::ConvConfig::default();
        let (ws, bs) = self.layer(cin * k * k, cout * k * k);
        cfg.ws_init = ws;
        if let Some(bs) = bs {
            cfg.bs_init = bs;
        }
        nn::conv2d(vs, cin, cout, k, cfg)
    }

    fn linear(self, vs: nn::Path, cin: i64, cout: i64) -> nn::Linear {
        let (ws_init, bs_init) = self.layer(cin, cout);
        nn::linear(
            vs,
            cin,
            cout,
            nn::LinearConfig {
                ws_init,
                bs_init,
                bias: true,
            },
        )
    }
}

impl MnistCnn {
    /// The network's variables under `vs` (`conv1`, `conv2`, `fc1`, `fc2`: the names of the
    /// checkpoint's tensors), initialised as tch does (what loading a checkpoint overwrites).
    pub fn new(vs: &nn::Path) -> MnistCnn {
        MnistCnn::with_init(vs, WeightInit::Tch)
    }

    /// As [`MnistCnn::new`], initialised by `init`.
    pub fn with_init(vs: &nn::Path, init: WeightInit) -> MnistCnn {
        MnistCnn {
            conv1: init.conv(vs / "conv1", 1, 32, 3),
            conv2: init.conv(vs / "conv2", 32, 64, 3),
            fc1: init.linear(vs / "fc1", 64 * 12 * 12, 128),
            fc2: init.linear(vs / "fc2", 128, CLASSES),
        }
    }
}

impl DropoutNet for MnistCnn {
    fn description(&self) -> String {
        "Smith & Gal 2018 MNIST dropout CNN".into()
    }

    fn density_features(&self, x: &Tensor, which: DensityFeatures) -> Option<Tensor> {
        Some(self.features(x, which))
    }

    fn input_spec(&self) -> InputSpec {
        InputSpec {
            name: IMAGE_INPUT.into(),
            shape: INPUT_SHAPE,
            layout: "NCHW".into(),
            scale: 1.0 / 255.0,
            mean: vec![0.0],
            std: vec![1.0],
            channel_order: ChannelOrder::Rgb,
            resize: Resize::Stretch,
        }
    }

    fn sites(&self) -> Vec<Site> {
        DROP_P
            .iter()
            .zip(SITE_SHAPES)
            .map(|(&p, shape)| Site {
                p,
                shape: shape.to_vec(),
            })
            .collect()
    }

    fn classes(&self) -> usize {
        CLASSES as usize
    }

    /// `[N, 1, 28, 28]` → `[N, 64, 12, 12]`.
    fn trunk(&self, x: &Tensor) -> Tensor {
        x.apply(&self.conv1)
            .relu()
            .apply(&self.conv2)
            .relu()
            .max_pool2d_default(2)
    }

    /// `features` `[.., 64, 12, 12]` broadcasts against `masks[0]` `[T, .., 64, 12, 12]`;
    /// `masks[1]` is `[T, .., 128]`.
    fn head(&self, features: &Tensor, masks: &[Tensor]) -> Tensor {
        let h = (features * &masks[0]).flatten(-3, -1);
        (self.fc1.forward(&h).relu() * &masks[1]).apply(&self.fc2)
    }

    fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        self.trunk(x)
            .dropout(DROP_P[0], train)
            .flatten(1, -1)
            .apply(&self.fc1)
            .relu()
            .dropout(DROP_P[1], train)
            .apply(&self.fc2)
    }

    fn onnx_graph(&self, doc: &str) -> Result<Graph> {
        let mut g = self.contract_graph("mcgate_dropout", doc);
        g.node(
            "Conv",
            &[IMAGE_INPUT, "conv1.weight", "conv1.bias"],
            "conv1",
            vec![ints("kernel_shape", &[3, 3])],
        )
        .node("Relu", &["conv1"], "relu1", vec![])
        .node(
            "Conv",
            &["relu1", "conv2.weight", "conv2.bias"],
            "conv2",
            vec![ints("kernel_shape", &[3, 3])],
        )
        .node("Relu", &["conv2"], "relu2", vec![]);
        pool_drop_flatten(&mut g);
        g.node(
            "Gemm",
            &["flat", "fc1.weight", "fc1.bias"],
            "fc1",
            vec![int("transB", 1)],
        );
        g.constant(f32_constant("conv1.weight", &self.conv1.ws)?)
            .constant(f32_constant("conv1.bias", bias(&self.conv1.bs, "conv1")?)?)
            .constant(f32_constant("conv2.weight", &self.conv2.ws)?)
            .constant(f32_constant("conv2.bias", bias(&self.conv2.bs, "conv2")?)?)
            .constant(f32_constant("fc1.weight", &self.fc1.ws)?)
            .constant(f32_constant("fc1.bias", bias(&self.fc1.bs, "fc1")?)?);
        self.fc1_to_probs(&mut g)?;
        Ok(g)
    }
}

/// Which of the network's values a feature density is fitted on: the first dense layer's
/// 128 outputs with every mask 1 (dropout off), before or after its ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DensityFeatures {
    /// Before the ReLU: a unit's value below 0 still says how far below (measured on the
    /// latent holes: 49 % rejected against 29 % after the ReLU, docs/RESULTS.md).
    PreRelu,
    /// After the ReLU, as the next layer reads them.
    Relu,
}

impl MnistCnn {
    /// The features the density is fitted on, `[N, 128]`.
    pub fn features(&self, x: &Tensor, which: DensityFeatures) -> Tensor {
        let fc1 = self.trunk(x).flatten(1, -1).apply(&self.fc1);
        match which {
            DensityFeatures::PreRelu => fc1,
            DensityFeatures::Relu => fc1.relu(),
        }
    }

    /// Adds the density branch to this network's float graph: from `pool` (the trunk's
    /// end, before any mask) through `fc1` again (its constants shared; the runtime reads
    /// the sparse head's product instead) and, for [`DensityFeatures::Relu`], a ReLU to the
    /// features, then `fit`'s log density as the output `log_density` `[1, 1]` — computed
    /// once per frame, whatever T.
    pub fn add_density(g: &mut Graph, fit: &DensityFit, which: DensityFeatures) -> Result<()> {
        use mcgate::contract::onnx::{f32_scalar, f32_tensor, i64_tensor, Dim};
        let (d, classes) = (fit.dims, fit.means.len());
        ensure!(
            d == 128,
            "the density was fitted on {d} features, the network has 128"
        );
        let as_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        // The class means whitened once here: (f − μ) W = f W − μ W.
        let means_w: Vec<f64> = fit
            .means
            .iter()
            .flat_map(|mean| {
                (0..d).map(move |j| (0..d).map(|i| mean[i] * fit.whiten[i * d + j]).sum::<f64>())
            })
            .collect();
        g.output(DENSITY_OUTPUT, &[Dim::Fixed(1), Dim::Fixed(1)])
            .node("Flatten", &["pool"], "density.flat", vec![])
            .node(
                "Gemm",
                &["density.flat", "fc1.weight", "fc1.bias"],
                "density.fc1",
                vec![int("transB", 1)],
            );
        let features = match which {
            DensityFeatures::PreRelu => "density.fc1",
            DensityFeatures::Relu => {
                g.node("Relu", &["density.fc1"], "density.features", vec![]);
                "density.features"
            }
        };
        g.node("MatMul", &[features, "density.whiten"], "density.z", vec![])
            .node(
                "Sub",
                &["density.z", "density.means"],
                "density.diff",
                vec![],
            )
            .node(
                "ReduceSumSquare",
                &["density.diff"],
                "density.distance",
                vec![ints("axes", &[1]), int("keepdims", 1)],
            )
            .node(
                "Mul",
                &["density.distance", "density.minus_half"],
                "density.half",
                vec![],
            )
            .node(
                "Add",
                &["density.half", "density.log_priors"],
                "density.terms",
                vec![],
            )
            // logsumexp over the classes, shifted by the largest term: the terms are
            // −½ × distances in the hundreds, whose exp underflows f32 unshifted.
            .node(
                "ReduceMax",
                &["density.terms"],
                "density.top",
                vec![ints("axes", &[0]), int("keepdims", 1)],
            )
            .node(
                "Sub",
                &["density.terms", "density.top"],
                "density.shifted",
                vec![],
            )
            .node("Exp", &["density.shifted"], "density.exp", vec![])
            .node(
                "ReduceSum",
                &["density.exp", "density.axis0"],
                "density.sum",
                vec![int("keepdims", 1)],
            )
            .node("Log", &["density.sum"], "density.log_sum", vec![])
            .node(
                "Add",
                &["density.log_sum", "density.top"],
                "density.mixture",
                vec![],
            )
            .constant(i64_tensor("density.axis0", &[1], &[0]))
            .node(
                "Add",
                &["density.mixture", "density.constant"],
                DENSITY_OUTPUT,
                vec![],
            )
            .constant(f32_tensor(
                "density.whiten",
                &[d as i64, d as i64],
                &as_f32(&fit.whiten),
            ))
            .constant(f32_tensor(
                "density.means",
                &[classes as i64, d as i64],
                &as_f32(&means_w),
            ))
            .constant(f32_scalar("density.minus_half", -0.5))
            .constant(f32_tensor(
                "density.log_priors",
                &[classes as i64, 1],
                &as_f32(&fit.log_priors),
            ))
            .constant(f32_scalar("density.constant", fit.constant as f32));
        Ok(())
    }

    /// An empty graph with the contract's inputs and output for this network.
    fn contract_graph(&self, name: &str, doc: &str) -> Graph {
        let mut g = Graph::contract(
            name,
            &self.input_spec(),
            &self.dropout_sites(),
            OUTPUT,
            self.classes(),
        );
        g.doc = doc.into();
        g
    }

    /// The graph's last part, the same in float and int8: ReLU of `fc1` → Mul by the second
    /// site's masks → Gemm fc2 (float weights, appended as the last constants) → Softmax
    /// (default axis -1 in opset ≥ 13: the class axis) → `probs`.
    fn fc1_to_probs(&self, g: &mut Graph) -> Result<()> {
        let mask = super::mask_input(1);
        g.node("Relu", &["fc1"], "relu3", vec![])
            .node("Mul", &["relu3", &mask], "drop1", vec![])
            .node(
                "Gemm",
                &["drop1", "fc2.weight", "fc2.bias"],
                "fc2",
                vec![int("transB", 1)],
            )
            .node("Softmax", &["fc2"], OUTPUT, vec![])
            .constant(f32_constant("fc2.weight", &self.fc2.ws)?)
            .constant(f32_constant("fc2.bias", bias(&self.fc2.bs, "fc2")?)?);
        Ok(())
    }
}

/// `relu2` → `pool` (MaxPool 2×2) → `drop0` (× the first site's masks: the trunk ran once,
/// broadcasting makes it T samples) → `flat`, the same in float and int8.
fn pool_drop_flatten(g: &mut Graph) {
    let mask = super::mask_input(0);
    g.node(
        "MaxPool",
        &["relu2"],
        "pool",
        vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
    )
    .node("Mul", &["pool", &mask], "drop0", vec![])
    .node("Flatten", &["drop0"], "flat", vec![]);
}

fn bias<'a>(bs: &'a Option<Tensor>, layer: &str) -> Result<&'a Tensor> {
    bs.as_ref().with_context(|| format!("{layer} has no bias"))
}
