//! The paper's MNIST VAE with a 2-D latent space (`train_mnist_vae.py` in its code): encoder
//! MLP 784 → 400 → 256 (ELU) → (μ, log σ²), decoder 2 → 256 → 400 (ELU) → 784 (sigmoid), loss
//! 784·BCE + KL, Adam. Its only use is to walk the data manifold: decode a latent grid or a
//! latent interpolation into images the classifier then scores (the paper's Figs 1–5).

use anyhow::{ensure, Context, Result};
use tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};

/// Latent dimensions (2, so the space can be drawn).
pub const LATENT: i64 = 2;
/// Pixels of an MNIST image.
const PIXELS: i64 = 784;

/// Encoder and decoder.
#[derive(Debug)]
pub struct Vae {
    enc1: nn::Linear,
    enc2: nn::Linear,
    mu: nn::Linear,
    log_var: nn::Linear,
    dec1: nn::Linear,
    dec2: nn::Linear,
    dec3: nn::Linear,
}

impl Vae {
    pub fn new(vs: &nn::Path) -> Vae {
        let l = |name: &str, i: i64, o: i64| nn::linear(vs / name, i, o, Default::default());
        Vae {
            enc1: l("enc1", PIXELS, 400),
            enc2: l("enc2", 400, 256),
            mu: l("mu", 256, LATENT),
            log_var: l("log_var", 256, LATENT),
            dec1: l("dec1", LATENT, 256),
            dec2: l("dec2", 256, 400),
            dec3: l("dec3", 400, PIXELS),
        }
    }

    /// Images `[N, 1, 28, 28]` (or `[N, 784]`) in [0, 1] → (μ, log σ²), each `[N, 2]`.
    pub fn encode(&self, x: &Tensor) -> (Tensor, Tensor) {
        let h = x
            .view([-1, PIXELS])
            .apply(&self.enc1)
            .elu()
            .apply(&self.enc2)
            .elu();
        (self.mu.forward(&h), self.log_var.forward(&h))
    }

    /// Latent points `[N, 2]` → images `[N, 1, 28, 28]` in [0, 1].
    pub fn decode(&self, z: &Tensor) -> Tensor {
        z.apply(&self.dec1)
            .elu()
            .apply(&self.dec2)
            .elu()
            .apply(&self.dec3)
            .sigmoid()
            .view([-1, 1, 28, 28])
    }

    /// The paper's loss, averaged over the batch: 784 × mean pixel BCE (the summed BCE) plus
    /// KL(q(z|x) ‖ N(0, I)), with one reparameterised sample of z.
    pub fn loss(&self, x: &Tensor) -> Tensor {
        let (mu, log_var) = self.encode(x);
        let z = &mu + (&log_var * 0.5).exp() * mu.randn_like();
        let recon = self.decode(&z).view([-1, PIXELS]);
        let target = x.view([-1, PIXELS]);
        let bce = recon
            .binary_cross_entropy::<Tensor>(&target, None, tch::Reduction::None)
            .sum_dim_intlist(1, false, Kind::Float);
        let kl = ((&log_var.exp() + mu.square() - 1.0 - &log_var) * 0.5).sum_dim_intlist(
            1,
            false,
            Kind::Float,
        );
        (bce + kl).mean(Kind::Float)
    }
}

/// Trains `vae` on images `x` `[N, 1, 28, 28]` in [0, 1]: Adam at `lr`, shuffled batches,
/// `epochs` passes. Returns each epoch's mean loss.
pub fn train(
    vae: &Vae,
    vs: &nn::VarStore,
    x: &Tensor,
    epochs: usize,
    batch_size: i64,
    lr: f64,
    seed: u64,
) -> Result<Vec<f64>> {
    let n = x.size()[0];
    ensure!(n > 0 && batch_size > 0 && epochs > 0, "nothing to train");
    tch::manual_seed(seed as i64);
    let mut opt = nn::Adam::default()
        .build(vs, lr)
        .context("building optimizer")?;
    let mut losses = vec![];
    for epoch in 1..=epochs {
        let order = Tensor::randperm(n, (Kind::Int64, x.device()));
        let mut sum = 0.0;
        for start in (0..n).step_by(batch_size as usize) {
            let idx = order.narrow(0, start, batch_size.min(n - start));
            let loss = vae.loss(&x.index_select(0, &idx));
            opt.backward_step(&loss);
            sum += loss.double_value(&[]) * idx.size()[0] as f64;
        }
        losses.push(sum / n as f64);
        log::info!("epoch {epoch}: loss {:.2}", sum / n as f64);
    }
    Ok(losses)
}

/// Encoded means of images `x`, `[N, 2]` on the CPU, in batches.
pub fn encode_means(vae: &Vae, x: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let parts: Vec<Tensor> = x
        .split(1000, 0)
        .iter()
        .map(|b| vae.encode(b).0.to_device(Device::Cpu))
        .collect();
    Tensor::cat(&parts, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 256 images of one bright square at one of 16 places: a family a 2-D code can hold.
    fn squares() -> Tensor {
        let mut v = vec![0f32; 256 * 784];
        for i in 0..256 {
            let (r, c) = (4 * ((i % 16) / 4) + 2, 4 * (i % 4) + 6);
            for y in r..r + 8 {
                for x in c..c + 8 {
                    v[i * 784 + y * 28 + x] = 1.0;
                }
            }
        }
        Tensor::from_slice(&v).view([256, 1, 28, 28])
    }

    #[test]
    fn learns_and_round_trips_through_its_checkpoint() {
        let x = squares();
        let vs = nn::VarStore::new(Device::Cpu);
        let vae = Vae::new(&vs.root());
        let losses = train(&vae, &vs, &x, 8, 32, 1e-3, 1).unwrap();
        assert!(losses[7] < 0.7 * losses[0], "{losses:?}");
        let z = encode_means(&vae, &x);
        assert_eq!(z.size(), [256, LATENT]);
        let images = tch::no_grad(|| vae.decode(&z));
        assert_eq!(images.size(), [256, 1, 28, 28]);
        let (lo, hi) = (
            images.min().double_value(&[]),
            images.max().double_value(&[]),
        );
        assert!(
            (0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi),
            "{lo} {hi}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vae.safetensors");
        vs.save(&path).unwrap();
        let mut again = nn::VarStore::new(Device::Cpu);
        let reloaded = Vae::new(&again.root());
        again.load(&path).unwrap();
        let same = tch::no_grad(|| reloaded.decode(&z));
        assert_eq!(f64::try_from((same - images).abs().max()).unwrap(), 0.0);
    }
}
