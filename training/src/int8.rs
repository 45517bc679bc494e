//! The int8 variant of a trained model: QOperator ONNX (`QLinearConv`, `QLinearMatMul`) that
//! tract runs with integer kernels, with the mask inputs, the mask products, the small last
//! layer and the softmax kept in float (docs/model-format.md, "int8 models").
//!
//! Scales are per tensor (tract reads only those), weights symmetric int8, activations uint8.
//! Activation scales come from clean training images (`calibrate`).

use anyhow::{Context, Result};
use serde::Serialize;
use tch::{Kind, Tensor};
use tract_onnx::pb;

use crate::export::{initializer, int, ints, mask_input, model_bytes, node, IMAGE_INPUT, OUTPUT};
use crate::net::{sample_mask, Net, DROP_P, SITE_SHAPES};

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

/// Largest activations over `x` `[N, 1, 28, 28]` in [0, 1], with `samples` masks per image
/// for fc1 (its input is the masked feature map).
pub fn calibrate(net: &Net, x: &Tensor, samples: i64) -> Int8Scales {
    let _guard = tch::no_grad_guard();
    let (mut m1, mut m2, mut mf) = (0f64, 0f64, 0f64);
    for batch in x.split(100, 0) {
        let c1 = batch.apply(&net.conv1).relu();
        let c2 = c1.apply(&net.conv2).relu();
        let pool = c2.max_pool2d_default(2);
        let n = pool.size()[0];
        let mask = sample_mask(
            &[&[samples, n], SITE_SHAPES[0]].concat(),
            DROP_P[0],
            batch.device(),
        );
        let flat = (&pool * mask).flatten(-3, -1);
        let pre_bias = flat.matmul(&net.fc1.ws.tr());
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

fn raw(
    name: &str,
    dims: Vec<i64>,
    data_type: pb::tensor_proto::DataType,
    raw_data: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims,
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

fn scalar_f32(name: &str, v: f32) -> pb::TensorProto {
    raw(
        name,
        vec![],
        pb::tensor_proto::DataType::Float,
        v.to_le_bytes().to_vec(),
    )
}

fn i8s(name: &str, dims: Vec<i64>, v: &[i8]) -> pb::TensorProto {
    raw(
        name,
        dims,
        pb::tensor_proto::DataType::Int8,
        v.iter().map(|&x| x as u8).collect(),
    )
}

/// The int8 ONNX file for `net` at the given activation scales.
pub fn onnx_bytes(net: &Net, s: &Int8Scales, doc: &str) -> Result<Vec<u8>> {
    use pb::tensor_proto::DataType;
    let (m0, m1) = (mask_input(0), mask_input(1));
    let mut init = vec![
        scalar_f32("x.scale", 1.0 / 255.0),
        raw("zero.u8", vec![], DataType::Uint8, vec![0]),
        raw("zero.i8", vec![], DataType::Int8, vec![0]),
        raw("mid.u8", vec![], DataType::Uint8, vec![128]),
        scalar_f32("conv1.y_scale", s.conv1),
        scalar_f32("conv2.y_scale", s.conv2),
        // Masks scale the pooled map by 1/(1-p): this scale re-quantises it without rounding.
        scalar_f32("flat.scale", s.conv2 / (1.0 - DROP_P[0] as f32)),
        scalar_f32("fc1.y_scale", s.fc1),
    ];
    // Convolutions: int8 weights, int32 bias at input scale × weight scale.
    let mut in_scale = 1.0 / 255.0;
    for (name, conv, out_scale) in [
        ("conv1", &net.conv1, s.conv1),
        ("conv2", &net.conv2, s.conv2),
    ] {
        let (w, ws) = quantize_weights(&conv.ws)?;
        let bias = conv.bs.as_ref().context("conv has no bias")?;
        let b = Vec::<f32>::try_from(bias.detach().to_kind(Kind::Float)).context("bias")?;
        let bq: Vec<u8> = b
            .iter()
            .flat_map(|v| ((v / (in_scale * ws)).round() as i32).to_le_bytes())
            .collect();
        init.push(i8s(&format!("{name}.w"), conv.ws.size(), &w));
        init.push(scalar_f32(&format!("{name}.w_scale"), ws));
        init.push(raw(
            &format!("{name}.b"),
            vec![b.len() as i64],
            DataType::Int32,
            bq,
        ));
        in_scale = out_scale;
    }
    // fc1 as [9216, 128], split into two column halves: tract pre-computes constants only up
    // to 4 MiB, and the int32 copy of the whole matrix it sums for the zero-point correction
    // (4.5 MiB) would otherwise be summed again on every run (measured: 2.4 vs 0.8 ms at T=20).
    let w1 = net.fc1.ws.tr().contiguous();
    let (w, ws) = quantize_weights(&w1)?;
    let (k, n) = (w1.size()[0] as usize, w1.size()[1] as usize);
    let half = n / 2;
    for (part, cols) in [(0, 0..half), (1, half..n)] {
        let v: Vec<i8> = (0..k)
            .flat_map(|r| w[r * n + cols.start..r * n + cols.end].to_vec())
            .collect();
        init.push(i8s(
            &format!("fc1.w{part}"),
            vec![k as i64, cols.len() as i64],
            &v,
        ));
    }
    init.push(scalar_f32("fc1.w_scale", ws));
    init.push(initializer(
        "fc1.bias",
        net.fc1.bs.as_ref().context("fc1 has no bias")?,
    )?);
    init.push(initializer("fc2.weight", &net.fc2.ws)?);
    init.push(initializer(
        "fc2.bias",
        net.fc2.bs.as_ref().context("fc2 has no bias")?,
    )?);
    let qconv = |x: &str, x_scale: &str, w: &str, y_scale: &str, out: &str| {
        node(
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
        )
    };
    let qmatmul = |part: usize| {
        node(
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
        )
    };
    let nodes = vec![
        node(
            "QuantizeLinear",
            &[IMAGE_INPUT, "x.scale", "zero.u8"],
            "x.q",
            vec![],
        ),
        // Output zero point 0 in uint8: saturation at 0 is the ReLU.
        qconv("x.q", "x.scale", "conv1", "conv1.y_scale", "relu1.q"),
        qconv(
            "relu1.q",
            "conv1.y_scale",
            "conv2",
            "conv2.y_scale",
            "relu2.q",
        ),
        node(
            "DequantizeLinear",
            &["relu2.q", "conv2.y_scale", "zero.u8"],
            "relu2",
            vec![],
        ),
        node(
            "MaxPool",
            &["relu2"],
            "pool",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ),
        node("Mul", &["pool", &m0], "drop0", vec![]),
        node("Flatten", &["drop0"], "flat", vec![]),
        node(
            "QuantizeLinear",
            &["flat", "flat.scale", "zero.u8"],
            "flat.q",
            vec![],
        ),
        qmatmul(0),
        qmatmul(1),
        node(
            "Concat",
            &["fc1.q0", "fc1.q1"],
            "fc1.q",
            vec![int("axis", 1)],
        ),
        node(
            "DequantizeLinear",
            &["fc1.q", "fc1.y_scale", "mid.u8"],
            "fc1.pre",
            vec![],
        ),
        node("Add", &["fc1.pre", "fc1.bias"], "fc1", vec![]),
        node("Relu", &["fc1"], "relu3", vec![]),
        node("Mul", &["relu3", &m1], "drop1", vec![]),
        node(
            "Gemm",
            &["drop1", "fc2.weight", "fc2.bias"],
            "fc2",
            vec![int("transB", 1)],
        ),
        node("Softmax", &["fc2"], OUTPUT, vec![]),
    ];
    Ok(model_bytes("mcgate_dropout_int8", nodes, init, doc))
}
