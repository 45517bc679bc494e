//! Frame → model input: channel conversion, resize, and normalisation as the card says.

use image::{imageops::FilterType, DynamicImage};

use crate::model::card::InputSpec;

/// Why a frame cannot become model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PreprocessError {
    /// The frame is 0 pixels wide or high.
    #[error("frame has no pixels")]
    NoPixels,
    /// The model takes a channel count this build cannot feed (the card check rules it out).
    #[error("model takes {0} channels; only 1 and 3 are supported")]
    Channels(usize),
}

/// Converts frames into the model's `[C·H·W]` float input, reusing one buffer.
pub struct Preprocessor {
    spec: InputSpec,
    buffer: Vec<f32>,
}

impl Preprocessor {
    /// A preprocessor for the card's input.
    pub fn new(spec: &InputSpec) -> Preprocessor {
        Preprocessor {
            spec: spec.clone(),
            buffer: vec![0.0; spec.len()],
        }
    }

    /// Gray models take the frame's luma, RGB models its RGB; any other frame size is
    /// resized (bilinear) to the model's H×W. 16-bit and palette images are converted to
    /// 8 bits first, so `scale` always applies to 0–255 values.
    pub fn run(&mut self, image: &DynamicImage) -> Result<&[f32], PreprocessError> {
        let (w, h) = (self.spec.width() as u32, self.spec.height() as u32);
        if image.width() == 0 || image.height() == 0 {
            return Err(PreprocessError::NoPixels);
        }
        let resize = |img: DynamicImage| {
            if img.width() == w && img.height() == h {
                img
            } else {
                img.resize_exact(w, h, FilterType::Triangle)
            }
        };
        let plane = (w * h) as usize;
        let scale = self.spec.scale;
        match self.spec.channels() {
            1 => {
                let gray = match image {
                    DynamicImage::ImageLuma8(g) if g.width() == w && g.height() == h => {
                        std::borrow::Cow::Borrowed(g)
                    }
                    other => std::borrow::Cow::Owned(
                        resize(DynamicImage::ImageLuma8(other.to_luma8())).to_luma8(),
                    ),
                };
                let (mean, std) = (self.spec.mean[0], self.spec.std[0]);
                for (dst, &v) in self.buffer.iter_mut().zip(gray.as_raw()) {
                    *dst = (v as f32 * scale - mean) / std;
                }
            }
            3 => {
                let rgb = resize(DynamicImage::ImageRgb8(image.to_rgb8())).to_rgb8();
                for (i, px) in rgb.pixels().enumerate() {
                    for c in 0..3 {
                        self.buffer[c * plane + i] =
                            (px.0[c] as f32 * scale - self.spec.mean[c]) / self.spec.std[c];
                    }
                }
            }
            c => return Err(PreprocessError::Channels(c)),
        }
        Ok(&self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(c: usize) -> InputSpec {
        InputSpec {
            name: "x".into(),
            shape: [1, c, 2, 2],
            layout: "NCHW".into(),
            scale: 1.0 / 255.0,
            mean: vec![0.5; c],
            std: vec![0.5; c],
        }
    }

    #[test]
    fn normalises_gray_and_plans_rgb_channels() {
        let gray = DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(2, 2, vec![0, 255, 51, 204]).unwrap(),
        );
        let mut p = Preprocessor::new(&spec(1));
        let out = p.run(&gray).unwrap();
        let want = [-1.0, 1.0, -0.6, 0.6];
        assert!(
            out.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{out:?}"
        );

        let rgb = image::RgbImage::from_fn(2, 2, |x, y| {
            image::Rgb([(x * 255) as u8, (y * 255) as u8, 0])
        });
        let mut p = Preprocessor::new(&spec(3));
        let out = p.run(&DynamicImage::ImageRgb8(rgb)).unwrap().to_vec();
        // Planar layout: R plane, then G, then B.
        assert_eq!(&out[0..4], &[-1.0, 1.0, -1.0, 1.0]);
        assert_eq!(&out[4..8], &[-1.0, -1.0, 1.0, 1.0]);
        assert_eq!(&out[8..12], &[-1.0; 4]);
    }

    #[test]
    fn resizes_other_sizes_and_converts_16_bit() {
        let big =
            image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(8, 6, image::Luma([65535u16]));
        let mut p = Preprocessor::new(&spec(1));
        let out = p.run(&DynamicImage::ImageLuma16(big)).unwrap();
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{out:?}");
    }
}
