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
use mcgate::input::preprocess::centre_crop_offset;
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

/// The frame a camera would hand over for attacked pixels at the model's input size: the
/// pixels themselves for a stretch model; for a crop model, a `shorter_side` square with the
/// pixels as its centre crop, so the runtime neither resizes it nor cuts anything else (the
/// border, never scored nor passed on, is mid-gray).
pub fn frame_for(resize: Resize, image: DynamicImage) -> Result<DynamicImage> {
    let Resize::ShorterSideCrop { shorter_side, crop } = resize else {
        return Ok(image);
    };
    ensure!(
        (image.width(), image.height()) == (crop, crop),
        "a {}x{} frame for a model that crops {crop}x{crop}",
        image.width(),
        image.height()
    );
    let side = shorter_side;
    let mut canvas = match &image {
        DynamicImage::ImageLuma8(_) => GrayImage::from_pixel(side, side, [128].into()).into(),
        _ => DynamicImage::ImageRgb8(RgbImage::from_pixel(side, side, [128, 128, 128].into())),
    };
    let (x, y) = centre_crop_offset(side, side, crop);
    image::imageops::replace(&mut canvas, &image, x as i64, y as i64);
    Ok(canvas)
}

/// The deployed gate on one model, its masks from one seed the attacker never sees; each
/// frame judged gets its own masks (frame index `next`, counting up).
pub struct Judge {
    gate: Gate,
    resize: Resize,
    next: u64,
}

impl Judge {
    /// The gate `mcgate gate MODEL --seed seed -T samples --threshold threshold` runs.
    pub fn new(model: &Model, samples: usize, threshold: f64, seed: u64) -> Result<Judge> {
        let gate = Gate::new(model, samples, threshold, Seeds::PerFrame(seed))
            .context("building the judging gate")?;
        Ok(Judge {
            gate,
            resize: model.card.input.resize,
            next: 0,
        })
    }

    /// Judges 8-bit pixels `[N, C, H, W]`, each frame with fresh masks.
    pub fn judge(&mut self, pixels: &Tensor) -> Result<Vec<Outcome>> {
        (0..pixels.size()[0])
            .map(|i| {
                let image = frame_for(self.resize, frame_image(pixels, i)?)?;
                let frame = Frame::new(self.next, "redteam", image);
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

#[cfg(test)]
mod tests {
    use mcgate::contract::card::{ChannelOrder, InputSpec};
    use mcgate::input::preprocess::Preprocessor;

    use super::*;

    /// What a crop model scores of the judged frame is exactly the attacked pixels (any other
    /// frame would be resized or cut, and the judge would score other pixels than the attack
    /// made).
    #[test]
    fn a_crop_model_scores_exactly_the_attacked_pixels() {
        let spec = InputSpec {
            name: "x".into(),
            shape: [1, 3, 6, 6],
            layout: "NCHW".into(),
            scale: 1.0 / 255.0,
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            channel_order: ChannelOrder::Rgb,
            resize: Resize::ShorterSideCrop {
                shorter_side: 9,
                crop: 6,
            },
        };
        let pixels = Tensor::rand([1, 3, 6, 6], (Kind::Float, Device::Cpu));
        let pixels = quantise(&pixels);
        let frame = frame_for(spec.resize, frame_image(&pixels, 0).unwrap()).unwrap();
        assert_eq!((frame.width(), frame.height()), (9, 9));
        let scored = Preprocessor::new(&spec).run(&frame).unwrap().to_vec();
        let want = Vec::<f32>::try_from(pixels.flatten(0, -1)).unwrap();
        for (a, b) in scored.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let stretch = frame_for(Resize::Stretch, frame_image(&pixels, 0).unwrap()).unwrap();
        assert_eq!((stretch.width(), stretch.height()), (6, 6));
    }
}
