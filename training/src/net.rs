//! The paper's MNIST network (the Keras MNIST example Smith & Gal used):
//! Conv32 3×3 ReLU → Conv64 3×3 ReLU → MaxPool 2 → Dropout 0.25 → Flatten →
//! Dense128 ReLU → Dropout 0.5 → Dense10 softmax.
//!
//! The forward pass is split at the first dropout site: the *trunk* runs once per image,
//! the *head* runs once per Monte-Carlo sample with explicit masks. The exported ONNX has
//! the same split, so tch and tract compute the same function for the same masks.

use tch::{nn, nn::Module, Device, Kind, Tensor};

/// Drop probabilities of the two dropout sites, in graph order.
pub const DROP_P: [f64; 2] = [0.25, 0.5];
/// Per-sample shapes of the two sites (after the trunk; after the first dense layer).
pub const SITE_SHAPES: [&[i64]; 2] = [&[64, 12, 12], &[128]];
pub const CLASSES: i64 = 10;
pub const INPUT_SHAPE: [i64; 4] = [1, 1, 28, 28];

#[derive(Debug)]
pub struct Net {
    pub conv1: nn::Conv2D,
    pub conv2: nn::Conv2D,
    pub fc1: nn::Linear,
    pub fc2: nn::Linear,
}

impl Net {
    pub fn new(vs: &nn::Path) -> Net {
        Net {
            conv1: nn::conv2d(vs / "conv1", 1, 32, 3, Default::default()),
            conv2: nn::conv2d(vs / "conv2", 32, 64, 3, Default::default()),
            fc1: nn::linear(vs / "fc1", 64 * 12 * 12, 128, Default::default()),
            fc2: nn::linear(vs / "fc2", 128, CLASSES, Default::default()),
        }
    }

    /// `[N, 1, 28, 28]` → `[N, 64, 12, 12]`: everything before the first dropout site.
    pub fn trunk(&self, x: &Tensor) -> Tensor {
        x.apply(&self.conv1)
            .relu()
            .apply(&self.conv2)
            .relu()
            .max_pool2d_default(2)
    }

    /// Logits with ordinary dropout (`train`: stochastic; otherwise the identity).
    pub fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        self.trunk(x)
            .dropout(DROP_P[0], train)
            .flatten(1, -1)
            .apply(&self.fc1)
            .relu()
            .dropout(DROP_P[1], train)
            .apply(&self.fc2)
    }

    /// Logits of the head with explicit masks; `features` `[.., 64, 12, 12]` broadcasts
    /// against `mask0` `[T, .., 64, 12, 12]`, and `mask1` is `[T, .., 128]`.
    pub fn masked_logits(&self, features: &Tensor, mask0: &Tensor, mask1: &Tensor) -> Tensor {
        let h = (features * mask0).flatten(-3, -1);
        (self.fc1.forward(&h).relu() * mask1).apply(&self.fc2)
    }

    /// MC-dropout probabilities `[T, N, 10]` for a batch `[N, 1, 28, 28]`, each image and
    /// sample with its own masks.
    pub fn mc_probs(&self, x: &Tensor, samples: i64) -> Tensor {
        let n = x.size()[0];
        let features = self.trunk(x);
        let device = x.device();
        let m0 = sample_mask(&[&[samples, n], SITE_SHAPES[0]].concat(), DROP_P[0], device);
        let m1 = sample_mask(&[&[samples, n], SITE_SHAPES[1]].concat(), DROP_P[1], device);
        self.masked_logits(&features, &m0, &m1)
            .softmax(-1, Kind::Float)
    }
}

/// Bernoulli(1−p)/(1−p) mask values (inverted dropout, as in the runtime).
pub fn sample_mask(shape: &[i64], p: f64, device: Device) -> Tensor {
    Tensor::rand(shape, (Kind::Float, device))
        .ge(p)
        .to_kind(Kind::Float)
        / (1.0 - p)
}
