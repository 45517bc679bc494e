//! The referee: frames judged by the runtime library, the code path of `mcgate gate`.
//!
//! An attack's result counts only as the deployed gate sees it: pixels rounded to the 8-bit
//! frame a camera delivers, preprocessed by the card, scored with masks the attacker did not
//! choose, and "misclassified" read from the class the gate itself reports (the argmax of its
//! MC mean), not from any model the attacker ran.

use anyhow::{ensure, Context, Result};
use image::{DynamicImage, GrayImage, RgbImage};
use mcgate::contract::card::Resize;
use mcgate::gate::{Gate, Seeds};
use mcgate::input::frame::Frame;
use mcgate::model::Model;
use mcgate::score::verdict::Decision;
use tch::{Device, Kind, Tensor};

/// What the gate did with one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Accepted (scored with MI at or under the threshold).
    pub accepted: bool,
    /// The class the gate reports; `None` when the frame could not be scored.
    pub class: Option<usize>,
    /// Its MI; `None` when the frame could not be scored.
    pub mi: Option<f64>,
    /// The mask seed it was scored with (`mcgate gate --frame-seed` replays it).
    pub seed: u64,
}

impl Outcome {
    /// Accepted and reported as another class than `label`: the attack got through.
    pub fn bypass(&self, label: i64) -> bool {
        self.accepted && self.class.is_some_and(|c| c as i64 != label)
    }
}

/// 8-bit frames `[N, C, H, W]` from pixels in [0, 1]: what a camera delivers, so what an
/// attack must survive. Rounded to the nearest level.
pub fn quantise(pixels: &Tensor) -> Tensor {
    (pixels * 255.0).round().clamp(0.0, 255.0) / 255.0
}

/// Frame `i` of 8-bit pixels `[N, C, H, W]` (values k/255) as the image a camera hands over.
pub fn frame_image(pixels: &Tensor, i: i64) -> Result<DynamicImage> {
    let one = pixels.get(i);
    let (c, h, w) = (one.size()[0], one.size()[1], one.size()[2]);
    let bytes: Vec<u8> = Vec::<f32>::try_from(
        (one * 255.0)
            .round()
            .clamp(0.0, 255.0)
            .permute([1, 2, 0])
            .contiguous()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .flatten(0, -1),
    )
    .context("reading pixels")?
    .into_iter()
    .map(|v| v as u8)
    .collect();
    let (w, h) = (w as u32, h as u32);
    Ok(match c {
        1 => DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, bytes).context("frame size")?),
        3 => DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, bytes).context("frame size")?),
        _ => anyhow::bail!("{c} channels: frames are gray or RGB"),
    })
}

/// The deployed gate on one model, its masks from one seed the attacker never sees; each
/// frame judged gets its own masks (frame index `next`, counting up).
pub struct Judge {
    gate: Gate,
    next: u64,
}

impl Judge {
    /// The gate `mcgate gate MODEL --seed seed -T samples --threshold threshold` runs.
    /// Refuses a model whose preprocessing would resample a frame of its own input size
    /// (a crop model): its frames must be built around the crop, which this judge does not do.
    pub fn new(model: &Model, samples: usize, threshold: f64, seed: u64) -> Result<Judge> {
        ensure!(
            model.card.input.resize == Resize::Stretch,
            "{}: frames are judged at the model's input size, which a {} model resamples; \
             only stretch-resize models are supported",
            model.card.name,
            model.card.input.resize
        );
        let gate = Gate::new(model, samples, threshold, Seeds::PerFrame(seed))
            .context("building the judging gate")?;
        Ok(Judge { gate, next: 0 })
    }

    /// Judges 8-bit pixels `[N, C, H, W]`, each frame with fresh masks.
    pub fn judge(&mut self, pixels: &Tensor) -> Result<Vec<Outcome>> {
        (0..pixels.size()[0])
            .map(|i| {
                let frame = Frame::new(self.next, "redteam", frame_image(pixels, i)?);
                self.next += 1;
                let report = self.gate.score(&frame);
                Ok(Outcome {
                    accepted: report.verdict.decision() == Decision::Accept,
                    class: report.measures.map(|m| m.predicted_class),
                    mi: report.measures.map(|m| m.mutual_information),
                    seed: report.seed.unwrap_or_default(),
                })
            })
            .collect()
    }
}
