//! The int8 variant of the MNIST CNN: QOperator ONNX (`QLinearConv`, `QLinearMatMul`) that
//! tract runs with integer kernels, with the mask inputs, the mask products, the small last
//! layer and the softmax kept in float (docs/model-format.md, "int8 models").
//!
//! Scales are per tensor (tract reads only those), weights symmetric int8, activations uint8.
//! Activation scales come from clean training images (`calibrate`).

use anyhow::{Context, Result};
use mcgate::contract::onnx::{
    f32_scalar, i32_tensor, i8_tensor, int, ints, tensor, DataType, Graph,
};
use serde::Serialize;
use tch::{Kind, Tensor};

use super::{bias, pool_drop_flatten, MnistCnn, DROP_P, SITE_SHAPES};
use crate::nets::{f32_constant, sample_mask, Int8Export, IMAGE_INPUT};

/// Activation scales (real value of one integer step) measured on clean images.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Int8Scales {
    /// conv1 + ReLU output, uint8 with zero point 0 (the ReLU is the saturation at 0).
    pub conv1: f32,
    /// conv2 + ReLU output, likewise.
    pub conv2: f32,
    /// fc1 before its bias, uint8 with zero point 128 (it has both signs).
    pub fc1: f32,
}

impl Int8Export for MnistCnn {
    type Scales = Int8Scales;

    /// Largest activations over `x` `[N, 1, 28, 28]` in [0, 1], with `samples` masks per
    /// image for fc1 (its input is the masked feature map).
    fn calibrate(&self, x: &Tensor, samples: i64) -> Int8Scales {
        let _guard = tch::no_grad_guard();
        let (mut m1, mut m2, mut mf) = (0f64, 0f64, 0f64);
        for batch in x.split(100, 0) {
            let c1 = batch.apply(&self.conv1).relu();
            let c2 = c1.apply(&self.conv2).relu();
            let pool = c2.max_pool2d_default(2);
            let n = pool.size()[0];
            let mask = sample_mask(
                &[&[samples, n], SITE_SHAPES[0]].concat(),
                DROP_P[0],
                batch.device(),
            );
            let flat = (&pool * mask).flatten(-3, -1);
            let pre_bias = flat.matmul(&self.fc1.ws.tr());
            m1 = m1.max(c1.max().double_value(&[]));
            m2 = m2.max(c2.max().double_value(&[]));
            mf = mf.max(pre_bias.abs().max().double_value(&[]));
        }
        Int8Scales {
            conv1: (m1 / 255.0) as f32,
            conv2: (m2 / 255.0) as f32,
            fc1: (mf / 127.0) as f32,
        }
    }

    fn int8_graph(&self, s: &Int8Scales, doc: &str) -> Result<Graph> {
        let mut g = self.contract_graph("mcgate_dropout_int8", doc);
        g.constant(f32_scalar("x.scale", 1.0 / 255.0))
            .constant(tensor("zero.u8", &[], DataType::Uint8, vec![0]))
            .constant(tensor("zero.i8", &[], DataType::Int8, vec![0]))
            .constant(tensor("mid.u8", &[], DataType::Uint8, vec![128]))
            .constant(f32_scalar("conv1.y_scale", s.conv1))
            .constant(f32_scalar("conv2.y_scale", s.conv2))
            // Masks scale the pooled map by 1/(1-p): this scale re-quantises it without
            // rounding.
            .constant(f32_scalar("flat.scale", s.conv2 / (1.0 - DROP_P[0] as f32)))
            .constant(f32_scalar("fc1.y_scale", s.fc1));
        // Convolutions: int8 weights, int32 bias at input scale × weight scale.
        let mut in_scale = 1.0 / 255.0;
        for (name, conv, out_scale) in [
            ("conv1", &self.conv1, s.conv1),
            ("conv2", &self.conv2, s.conv2),
        ] {
            let (w, ws) = quantize_weights(&conv.ws)?;
            let b = bias(&conv.bs, name)?;
            let b = Vec::<f32>::try_from(b.detach().to_kind(Kind::Float)).context("bias")?;
            let bq: Vec<i32> = b
                .iter()
                .map(|v| (v / (in_scale * ws)).round() as i32)
                .collect();
            g.constant(i8_tensor(&format!("{name}.w"), &conv.ws.size(), &w))
                .constant(f32_scalar(&format!("{name}.w_scale"), ws))
                .constant(i32_tensor(&format!("{name}.b"), &[b.len() as i64], &bq));
            in_scale = out_scale;
        }
        // fc1 as [9216, 128], split into two column halves: tract pre-computes constants only
        // up to 4 MiB, and the int32 copy of the whole matrix it sums for the zero-point
        // correction (4.5 MiB) would otherwise be summed again on every run (measured: 2.4 vs
        // 0.8 ms at T=20).
        let w1 = self.fc1.ws.tr().contiguous();
        let (w, ws) = quantize_weights(&w1)?;
        let (k, n) = (w1.size()[0] as usize, w1.size()[1] as usize);
        let half = n / 2;
        for (part, cols) in [(0, 0..half), (1, half..n)] {
            let v: Vec<i8> = (0..k)
                .flat_map(|r| w[r * n + cols.start..r * n + cols.end].to_vec())
                .collect();
            g.constant(i8_tensor(
                &format!("fc1.w{part}"),
                &[k as i64, cols.len() as i64],
                &v,
            ));
        }
        g.constant(f32_scalar("fc1.w_scale", ws))
            .constant(f32_constant("fc1.bias", bias(&self.fc1.bs, "fc1")?)?);

        let qconv = |g: &mut Graph, x: &str, x_scale: &str, w: &str, y_scale: &str, out: &str| {
            g.node(
                "QLinearConv",
                &[
                    x,
                    x_scale,
                    "zero.u8",
                    &format!("{w}.w"),
                    &format!("{w}.w_scale"),
                    "zero.i8",
                    y_scale,
                    "zero.u8",
                    &format!("{w}.b"),
                ],
                out,
                vec![ints("kernel_shape", &[3, 3])],
            );
        };
        let qmatmul = |g: &mut Graph, part: usize| {
            g.node(
                "QLinearMatMul",
                &[
                    "flat.q",
                    "flat.scale",
                    "zero.u8",
                    &format!("fc1.w{part}"),
                    "fc1.w_scale",
                    "zero.i8",
                    "fc1.y_scale",
                    "mid.u8",
                ],
                &format!("fc1.q{part}"),
                vec![],
            );
        };
        g.node(
            "QuantizeLinear",
            &[IMAGE_INPUT, "x.scale", "zero.u8"],
            "x.q",
            vec![],
        );
        // Output zero point 0 in uint8: saturation at 0 is the ReLU.
        qconv(
            &mut g,
            "x.q",
            "x.scale",
            "conv1",
            "conv1.y_scale",
            "relu1.q",
        );
        qconv(
            &mut g,
            "relu1.q",
            "conv1.y_scale",
            "conv2",
            "conv2.y_scale",
            "relu2.q",
        );
        g.node(
            "DequantizeLinear",
            &["relu2.q", "conv2.y_scale", "zero.u8"],
            "relu2",
            vec![],
        );
        pool_drop_flatten(&mut g);
        g.node(
            "QuantizeLinear",
            &["flat", "flat.scale", "zero.u8"],
            "flat.q",
            vec![],
        );
        qmatmul(&mut g, 0);
        qmatmul(&mut g, 1);
        g.node(
            "Concat",
            &["fc1.q0", "fc1.q1"],
            "fc1.q",
            vec![int("axis", 1)],
        )
        .node(
            "DequantizeLinear",
            &["fc1.q", "fc1.y_scale", "mid.u8"],
            "fc1.pre",
            vec![],
        )
        .node("Add", &["fc1.pre", "fc1.bias"], "fc1", vec![]);
        self.fc1_to_probs(&mut g)?;
        Ok(g)
    }
}

/// Symmetric per-tensor int8: values and the scale of one step.
fn quantize_weights(t: &Tensor) -> Result<(Vec<i8>, f32)> {
    let v = Vec::<f32>::try_from(t.detach().to_kind(Kind::Float).contiguous().flatten(0, -1))
        .context("reading weights")?;
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    Ok((
        v.iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
            .collect(),
        scale,
    ))
}
