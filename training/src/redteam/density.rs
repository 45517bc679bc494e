//! The attacker's copy of a fused feature density: the judged model's own density branch
//! (`mcgate-training density`), read back from its ONNX constants and differentiated in tch,
//! so that an attack on a card fusing density is not blind to it (Athalye et al. 2018: an
//! attack that ignores a signal flatters the defence).

use anyhow::{ensure, Context, Result};
use mcgate::contract::pb;
use tch::{Device, Kind, Tensor};

use crate::nets::mnist::DensityFeatures;
use crate::nets::DropoutNet;

/// The density `log Σ_c exp(log π_c − ½‖f W − μ_c W‖²) + constant` on the features `f`,
/// and where the attack's hinge aims: above `aim`, in units of `scale`.
#[derive(Debug, serde::Serialize)]
pub struct DensityAim {
    /// Which features the branch reads.
    pub features: DensityFeatures,
    /// The log density below which the density rejects a frame alone (`FusedGate::cuts`).
    pub cut: f64,
    /// The hinge's target: `cut + (1 − τ)·(median − cut)`, with the clean calibration
    /// frames' median; τ = 1 aims at the cut itself, τ = 0 at a typical clean frame.
    pub aim: f64,
    /// The clean calibration frames' interquartile range: the hinge counts in these units,
    /// so that λ weighs it as it weighs MI's.
    pub scale: f64,
    #[serde(skip)]
    whiten: Tensor,
    #[serde(skip)]
    means: Tensor,
    #[serde(skip)]
    log_priors: Tensor,
    #[serde(skip)]
    constant: f64,
}

impl Clone for DensityAim {
    fn clone(&self) -> Self {
        DensityAim {
            features: self.features,
            cut: self.cut,
            aim: self.aim,
            scale: self.scale,
            whiten: self.whiten.shallow_clone(),
            means: self.means.shallow_clone(),
            log_priors: self.log_priors.shallow_clone(),
            constant: self.constant,
        }
    }
}

impl DensityAim {
    /// Reads the density branch `mcgate-training density` writes from `onnx`, aimed between
    /// `cut` and the median of the `clean` calibration values at hinge fraction `tau`.
    pub fn from_onnx(
        onnx: &[u8],
        cut: f64,
        clean: &[f64],
        tau: f64,
        device: Device,
    ) -> Result<DensityAim> {
        use prost::Message;
        let model = pb::ModelProto::decode(onnx).context("not an ONNX file")?;
        let graph = model.graph.context("the ONNX file has no graph")?;
        let constant = |name: &str| -> Result<Tensor> {
            let t = graph
                .initializer
                .iter()
                .find(|t| t.name == name)
                .with_context(|| {
                    format!(
                        "no constant {name}: not a density branch `mcgate-training density` wrote"
                    )
                })?;
            ensure!(
                t.data_type == pb::tensor_proto::DataType::Float as i32
                    && t.raw_data.len() % 4 == 0,
                "constant {name} is not float32 with raw data"
            );
            let values: Vec<f32> = t
                .raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok(Tensor::from_slice(&values)
                .view(&t.dims[..])
                .to_device(device))
        };
        let features = match graph.node.iter().any(|n| n.name == "density.features") {
            true => DensityFeatures::Relu,
            false => DensityFeatures::PreRelu,
        };
        let mut sorted = clean.to_vec();
        sorted.sort_by(f64::total_cmp);
        ensure!(sorted.len() >= 4, "too few clean density values to aim at");
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let (median, scale) = (at(0.5), at(0.75) - at(0.25));
        ensure!(
            scale > 0.0 && median > cut,
            "the clean density values give no room above the cut {cut}"
        );
        Ok(DensityAim {
            features,
            cut,
            aim: cut + (1.0 - tau) * (median - cut),
            scale,
            whiten: constant("density.whiten")?,
            means: constant("density.means")?,
            log_priors: constant("density.log_priors")?.view([1, -1]),
            constant: constant("density.constant")?.double_value(&[]),
        })
    }

    /// The log density of each frame `[N]`, for the network's input `x`; `None` for a
    /// network without the features.
    pub fn log_density(&self, net: &dyn DropoutNet, x: &Tensor) -> Option<Tensor> {
        let f = net.density_features(x, self.features)?; // [N, d]
        let z = f.matmul(&self.whiten).unsqueeze(1); // [N, 1, d]
        let distance =
            (z - self.means.unsqueeze(0))
                .square()
                .sum_dim_intlist(-1, false, Kind::Float); // [N, C]
        Some((&self.log_priors - distance * 0.5).logsumexp(-1, false) + self.constant)
    }

    /// The hinge `max(aim − log density, 0) / scale` `[N]`.
    pub fn hinge(&self, net: &dyn DropoutNet, x: &Tensor) -> Tensor {
        match self.log_density(net, x) {
            Some(d) => (d.neg() + self.aim).clamp_min(0.0) / self.scale,
            // Checked before any attack runs (`check_density`); NaN, not a silent zero, if not.
            None => Tensor::full([x.size()[0]], f64::NAN, (Kind::Float, x.device())),
        }
    }
}
