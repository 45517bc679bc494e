//! Frame → model input: channel conversion, resize, and normalisation as the card says.

use std::borrow::Cow;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;

use crate::contract::card::{ChannelOrder, InputSpec, Resize};

/// Why a frame cannot become model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PreprocessError {
    /// The frame is 0 pixels wide or high.
    #[error("frame has no pixels")]
    NoPixels,
    /// Resizing the frame's shorter side would make an image too large to hold (an extreme
    /// aspect ratio, e.g. 1×16384).
    #[error("frame {width}x{height} would be resized to {resized_width}x{resized_height}, over {MAX_RESIZED_PIXELS} pixels")]
    TooLarge {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Width after resizing.
        resized_width: u64,
        /// Height after resizing.
        resized_height: u64,
    },
    /// The resizer refused the frame (it is converted to 8-bit gray or RGB first, so this
    /// should not happen).
    #[error("the frame could not be resized")]
    Resize,
    /// The model takes a channel count this build cannot feed (the card check rules it out).
    #[error("model takes {0} channels; only 1 and 3 are supported")]
    Channels(usize),
}

/// The largest image the shorter-side resize may produce before its centre is cut: 4 M
/// pixels, 12 MiB as RGB, an aspect ratio up to 64:1 at a shorter side of 256 (a camera's is
/// under 4:1). Was 64 M pixels: one 883-byte 16384×16 PNG then cost 340 MB, and 2.27 GB at
/// `-j 8`, outside the frame budget (third outside probe).
pub const MAX_RESIZED_PIXELS: u64 = 1 << 22;

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

    /// Gray models take the frame's luma, RGB models its RGB (in the card's channel order);
    /// a frame of another size is fitted to the model's H×W as the card's `resize` says
    /// (stretched, or shorter side resized and the centre cut; bilinear). 16-bit and palette
    /// images are converted to 8 bits first, so `scale` always applies to 0–255 values.
    pub fn run(&mut self, image: &DynamicImage) -> Result<&[f32], PreprocessError> {
        let (w, h) = (self.spec.width() as u32, self.spec.height() as u32);
        if image.width() == 0 || image.height() == 0 {
            return Err(PreprocessError::NoPixels);
        }
        let resize = self.spec.resize;
        let fit = |img: DynamicImage| fit(img, resize, w, h).ok_or(PreprocessError::Resize);
        if let Resize::ShorterSideCrop { shorter_side, .. } = resize {
            let (rw, rh) = resized_size(image.width(), image.height(), shorter_side);
            if rw * rh > MAX_RESIZED_PIXELS {
                return Err(PreprocessError::TooLarge {
                    width: image.width(),
                    height: image.height(),
                    resized_width: rw,
                    resized_height: rh,
                });
            }
        }
        let plane = (w * h) as usize;
        let scale = self.spec.scale;
        match self.spec.channels() {
            1 => {
                let gray = match image {
                    DynamicImage::ImageLuma8(g)
                        if resize == Resize::Stretch && g.width() == w && g.height() == h =>
                    {
                        std::borrow::Cow::Borrowed(g)
                    }
                    other => std::borrow::Cow::Owned(
                        fit(DynamicImage::ImageLuma8(other.to_luma8()))?.to_luma8(),
                    ),
                };
                let (mean, std) = (self.spec.mean[0], self.spec.std[0]);
                for (dst, &v) in self.buffer.iter_mut().zip(gray.as_raw()) {
                    *dst = (v as f32 * scale - mean) / std;
                }
            }
            3 => {
                let rgb = fit(DynamicImage::ImageRgb8(image.to_rgb8()))?.to_rgb8();
                // Plane c of the model takes the frame's channel order[c].
                let order = match self.spec.channel_order {
                    ChannelOrder::Rgb => [0, 1, 2],
                    ChannelOrder::Bgr => [2, 1, 0],
                };
                for (i, px) in rgb.pixels().enumerate() {
                    for (c, &from) in order.iter().enumerate() {
                        self.buffer[c * plane + i] =
                            (px.0[from] as f32 * scale - self.spec.mean[c]) / self.spec.std[c];
                    }
                }
            }
            c => return Err(PreprocessError::Channels(c)),
        }
        Ok(&self.buffer)
    }
}

/// The size after resizing a `width`×`height` frame's shorter side to `shorter_side`.
fn resized_size(width: u32, height: u32, shorter_side: u32) -> (u64, u64) {
    let (w, h, n) = (width as u64, height as u64, shorter_side as u64);
    if w <= h {
        (n, n * h / w)
    } else {
        (n * w / h, n)
    }
}

/// Fits `img` to `w`×`h` by the card's policy. The shorter-side policy follows torchvision's
/// `Resize(n)` (the longer side is `n · long / short`, truncated) and `CenterCrop(m)` (offsets
/// `(side − m) / 2` rounded half to even, as Python's `round`). `None` if the resizer fails.
fn fit(img: DynamicImage, resize: Resize, w: u32, h: u32) -> Option<DynamicImage> {
    match resize {
        Resize::Stretch => {
            if img.width() == w && img.height() == h {
                Some(img)
            } else {
                resize_bilinear(img, w, h)
            }
        }
        Resize::ShorterSideCrop { shorter_side, crop } => {
            let resized = resize_shorter_side(img, shorter_side)?;
            let (x, y) = centre_crop_offset(resized.width(), resized.height(), crop);
            Some(resized.crop_imm(x, y, crop, crop))
        }
    }
}

/// `img` with its shorter side resized to `shorter_side` (bilinear), as torchvision's
/// `Resize(n)`; unchanged if it already has that size. `None` if the resizer fails.
pub fn resize_shorter_side(img: DynamicImage, shorter_side: u32) -> Option<DynamicImage> {
    let (rw, rh) = resized_size(img.width(), img.height(), shorter_side);
    if (rw, rh) == (img.width() as u64, img.height() as u64) {
        Some(img)
    } else {
        resize_bilinear(img, rw as u32, rh as u32)
    }
}

/// `img` at `w`×`h`: bilinear with its support widened by the scale factor when shrinking
/// (antialiased, as PIL's `BILINEAR` that torchvision uses). A frame at least 4× the target
/// each way (a 1080p camera frame to 256) goes through fast_image_resize's SIMD convolution,
/// 6.5× faster there than image's triangle filter (`cargo bench --bench photo`); smaller
/// downscales keep image's filter, whose outputs the shipped photo model was calibrated and
/// evaluated with. 8-bit gray and RGB stay as they are; other pixel types become 8-bit RGB.
fn resize_bilinear(img: DynamicImage, w: u32, h: u32) -> Option<DynamicImage> {
    let img = match img {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => img,
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    };
    if img.width() < 4 * w || img.height() < 4 * h {
        return Some(img.resize_exact(w, h, image::imageops::FilterType::Triangle));
    }
    let mut out = DynamicImage::new(w, h, img.color());
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(&img, &mut out, &options).ok()?;
    Some(out)
}

/// The part of a `width`×`height` frame that the model scores, as `(x, y, w, h)` in the frame's
/// own pixels: the whole frame when the card stretches it, the centre square that survives the
/// crop when it cuts (edges rounded to the nearest pixel; at least one pixel each way). What
/// lies outside was never seen by the model, so nothing outside may be passed on as gated.
pub fn scored_region(width: u32, height: u32, resize: Resize) -> (u32, u32, u32, u32) {
    let Resize::ShorterSideCrop { shorter_side, crop } = resize else {
        return (0, 0, width, height);
    };
    let (rw, rh) = resized_size(width, height, shorter_side);
    let (cx, cy) = centre_crop_offset(rw as u32, rh as u32, crop);
    // Resized coordinate c maps back to c · side / resized, rounded.
    let back = |c: u32, side: u32, resized: u64| {
        ((c as u64 * side as u64 + resized / 2) / resized).min(side as u64) as u32
    };
    let span = |c: u32, side: u32, resized: u64| {
        let start = back(c, side, resized).min(side - 1);
        let end = back(c + crop, side, resized).max(start + 1);
        (start, end - start)
    };
    let (x, w) = span(cx, width, rw);
    let (y, h) = span(cy, height, rh);
    (x, y, w, h)
}

/// The part of `image` that a model fitting frames by `resize` scores ([`scored_region`]),
/// borrowed when that is the whole frame.
pub fn scored_part(image: &DynamicImage, resize: Resize) -> Cow<'_, DynamicImage> {
    let (x, y, w, h) = scored_region(image.width(), image.height(), resize);
    if (x, y, w, h) == (0, 0, image.width(), image.height()) {
        Cow::Borrowed(image)
    } else {
        Cow::Owned(image.crop_imm(x, y, w, h))
    }
}

/// Which pixels of an accepted frame are passed on (`--pass-through`, `--accepted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassedPixels {
    /// The model's input: the H×W pixels it was fed, resized to the output's size. Nothing
    /// passes that the model did not see.
    #[default]
    ModelInput,
    /// The part of the frame the model scored, at the frame's own resolution (resized to the
    /// output's size). Detail finer than the model's input passes unscored: the antialiased
    /// downscale removes it before scoring (fourth outside probe: a picture the gate rejects,
    /// hidden at the finest pixel pitch of a 56×56 frame, was accepted and passed on).
    ScoredPart,
}

/// The pixels of an accepted frame that may be passed on: what the model scored and nothing
/// else. A gray model scores luma only, so its frames pass on gray (colour it never saw does
/// not pass); a crop model scores the centre, so only the centre passes. At the model's own
/// size (`size` its W×H) this is exactly the image the model was fed, by the same resize. At
/// another `size`: by default ([`PassedPixels::ModelInput`]) the image the model was fed,
/// resized to `size`; with [`PassedPixels::ScoredPart`], the scored part resized by the same
/// resampler. With `size` `None`, the image the model was fed, or the scored part at its own
/// resolution. `None` if the resizer fails. (Pass-through asks for the model's size unless
/// `--pass-unscored-detail`: at any other, resampling the model's input makes a picture that
/// scores otherwise — fifth outside probe — and passing a smaller frame as it came passes
/// detail an enlargement by a near-1 factor cancels — sixth.)
pub fn scored_pixels<'a>(
    image: &'a DynamicImage,
    spec: &InputSpec,
    size: Option<(u32, u32)>,
    passed: PassedPixels,
) -> Option<Cow<'a, DynamicImage>> {
    let seen: Cow<'a, DynamicImage> = match (spec.channels(), image) {
        (1, DynamicImage::ImageLuma8(_)) | (3, DynamicImage::ImageRgb8(_)) => Cow::Borrowed(image),
        (1, other) => Cow::Owned(DynamicImage::ImageLuma8(other.to_luma8())),
        (_, other) => Cow::Owned(DynamicImage::ImageRgb8(other.to_rgb8())),
    };
    let model_size = (spec.width() as u32, spec.height() as u32);
    let fed = |seen: Cow<'a, DynamicImage>| {
        if spec.resize == Resize::Stretch && (seen.width(), seen.height()) == model_size {
            return Some(seen);
        }
        fit(seen.into_owned(), spec.resize, model_size.0, model_size.1).map(Cow::Owned)
    };
    match (passed, size) {
        (_, Some(size)) if size == model_size => fed(seen),
        (PassedPixels::ModelInput, None) => fed(seen),
        (PassedPixels::ModelInput, Some((w, h))) => {
            resize_bilinear(fed(seen)?.into_owned(), w, h).map(Cow::Owned)
        }
        (PassedPixels::ScoredPart, Some((w, h))) => {
            let part = scored_part(&seen, spec.resize).into_owned();
            if (part.width(), part.height()) == (w, h) {
                return Some(Cow::Owned(part));
            }
            resize_bilinear(part, w, h).map(Cow::Owned)
        }
        (PassedPixels::ScoredPart, None) => Some(match seen {
            Cow::Borrowed(image) => scored_part(image, spec.resize),
            Cow::Owned(image) => Cow::Owned(scored_part(&image, spec.resize).into_owned()),
        }),
    }
}

/// Top-left corner of the centre `crop`×`crop` of a `width`×`height` image, as torchvision's
/// `CenterCrop` (offsets rounded half to even). The image must be at least `crop` each way.
pub fn centre_crop_offset(width: u32, height: u32, crop: u32) -> (u32, u32) {
    let offset = |side: u32| ((side - crop) as f64 / 2.0).round_ties_even() as u32;
    (offset(width), offset(height))
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
            channel_order: ChannelOrder::Rgb,
            resize: Resize::Stretch,
        }
    }

    /// A gray image whose pixel at column x, row y is x + 10·y.
    fn ramp(w: u32, h: u32) -> DynamicImage {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x + 10 * y) as u8])).into()
    }

    #[test]
    fn shorter_side_crop_cuts_the_centre_as_torchvision_does() {
        let crop = |w, h, shorter_side, side| {
            let img = fit(
                ramp(w, h),
                Resize::ShorterSideCrop {
                    shorter_side,
                    crop: side,
                },
                side,
                side,
            )
            .unwrap();
            assert_eq!((img.width(), img.height()), (side, side));
            let g = img.to_luma8();
            (g.get_pixel(0, 0).0[0], g.get_pixel(side - 1, side - 1).0[0])
        };
        // No resize (the shorter side is already 4): offsets (6−4)/2 = 1 column, 0 rows.
        assert_eq!(crop(6, 4, 4, 4), (1, 4 + 30));
        // Offsets half-way round half to even, as Python's round: 1.5 → 2, 0.5 → 0.
        assert_eq!(crop(7, 4, 4, 4).0, 2);
        assert_eq!(crop(5, 4, 4, 4).0, 0);
        // Portrait, shorter side resized 8 → 4 (long side 16 → 8), rows 2..6 kept.
        let img = fit(
            ramp(8, 16),
            Resize::ShorterSideCrop {
                shorter_side: 4,
                crop: 4,
            },
            4,
            4,
        )
        .unwrap();
        assert_eq!((img.width(), img.height()), (4, 4));
    }

    /// The fast path (a downscale of 4× or more, fast_image_resize) against image's triangle
    /// filter, the reference for smaller downscales: the same antialiased bilinear, so on a
    /// smooth RGB frame the two differ by rounding only.
    #[test]
    fn large_downscales_match_the_triangle_filter() {
        let frame: DynamicImage = image::RgbImage::from_fn(1920, 1080, |x, y| {
            image::Rgb([(x / 8) as u8, (y / 5) as u8, ((x + y) / 12) as u8])
        })
        .into();
        let fast = resize_bilinear(frame.clone(), 455, 256).unwrap().to_rgb8();
        let reference = frame
            .resize_exact(455, 256, image::imageops::FilterType::Triangle)
            .to_rgb8();
        assert_eq!(fast.dimensions(), (455, 256));
        // Edge pixels: the filters treat the border differently; compare the interior.
        let mut worst = 0;
        for y in 2..254 {
            for x in 2..453 {
                for c in 0..3 {
                    let (a, b) = (fast.get_pixel(x, y).0[c], reference.get_pixel(x, y).0[c]);
                    worst = worst.max(a.abs_diff(b));
                }
            }
        }
        assert!(
            worst <= 1,
            "fast and triangle resizes differ by {worst} levels"
        );
    }

    /// The scored region, cut from the frame and resized to the model's size, is what the
    /// model saw: against `fit` (resize then cut) on a frame with detail everywhere, the two
    /// differ by resampling only; the whole frame squeezed differs by far more.
    #[test]
    fn the_scored_region_is_what_the_model_sees() {
        let resize = Resize::ShorterSideCrop {
            shorter_side: 256,
            crop: 224,
        };
        assert_eq!(scored_region(640, 480, resize), (109, 30, 420, 420));
        assert_eq!(scored_region(480, 640, resize), (30, 109, 420, 420));
        assert_eq!(scored_region(256, 256, resize), (16, 16, 224, 224));
        assert_eq!(scored_region(1, 1, resize), (0, 0, 1, 1));
        assert_eq!(scored_region(640, 480, Resize::Stretch), (0, 0, 640, 480));
        let frame: DynamicImage = image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x / 3) as u8, (y / 2) as u8, ((x * y) / 997 % 256) as u8])
        })
        .into();
        let seen = fit(frame.clone(), resize, 224, 224).unwrap().to_rgb8();
        let mean_gap = |other: &image::RgbImage| {
            let sum: u64 = (seen.as_raw().iter().zip(other.as_raw()))
                .map(|(&a, &b)| a.abs_diff(b) as u64)
                .sum();
            sum as f64 / seen.as_raw().len() as f64
        };
        let (x, y, w, h) = scored_region(640, 480, resize);
        let region = frame.crop_imm(x, y, w, h);
        let passed = region.resize_exact(224, 224, image::imageops::FilterType::Triangle);
        let squeezed = frame.resize_exact(224, 224, image::imageops::FilterType::Triangle);
        let (gap, squeezed_gap) = (mean_gap(&passed.to_rgb8()), mean_gap(&squeezed.to_rgb8()));
        assert!(gap < 3.0, "the scored region differs by {gap} levels");
        assert!(squeezed_gap > 10.0 * gap, "{squeezed_gap} vs {gap}");
    }

    /// A 640×480 frame, white outside the region the model scores and black inside: the
    /// scored part is all black, and a stretching model's is the whole frame.
    #[test]
    fn the_scored_part_holds_nothing_unscored() {
        let resize = Resize::ShorterSideCrop {
            shorter_side: 256,
            crop: 224,
        };
        let (x0, y0, w, h) = scored_region(640, 480, resize);
        let frame: DynamicImage = image::GrayImage::from_fn(640, 480, |x, y| {
            let inside = (x0..x0 + w).contains(&x) && (y0..y0 + h).contains(&y);
            image::Luma([if inside { 0 } else { 255 }])
        })
        .into();
        let part = scored_part(&frame, resize);
        assert_eq!((part.width(), part.height()), (420, 420));
        assert!(part.to_luma8().iter().all(|&v| v == 0));
        assert!(matches!(
            scored_part(&frame, Resize::Stretch),
            Cow::Borrowed(_)
        ));
    }

    /// Was (third outside probe): a gray model scored a colour frame's luma and passed the
    /// colour on, so a picture drawn in colours of equal luma went through unseen; and a frame
    /// of another size was passed on through another resampler than the one scored. Now a
    /// gray model's frames pass on gray, and at the model's size they are the very pixels the
    /// model was fed.
    #[test]
    fn what_passes_is_what_the_model_was_fed() {
        let mut gray = spec(1);
        gray.shape = [1, 1, 28, 28];
        let colour: DynamicImage = image::RgbImage::from_fn(28, 28, |x, _| {
            if x % 2 == 0 {
                image::Rgb([0, 0, 255])
            } else {
                image::Rgb([97, 0, 0])
            }
        })
        .into();
        let passed =
            scored_pixels(&colour, &gray, Some((28, 28)), PassedPixels::ModelInput).unwrap();
        assert!(matches!(*passed, DynamicImage::ImageLuma8(_)));
        let mut fed = Preprocessor::new(&gray);
        let want = fed.run(&colour).unwrap().to_vec();
        let got = Preprocessor::new(&gray).run(&passed).unwrap().to_vec();
        assert_eq!(got, want, "the passed-on frame scores as the original did");
        // A 300×300 frame: at the model's size, exactly the resize the model saw.
        let big: DynamicImage = image::GrayImage::from_fn(300, 300, |x, y| {
            image::Luma([((x * 7 + y * 13) % 256) as u8])
        })
        .into();
        let passed = scored_pixels(&big, &gray, Some((28, 28)), PassedPixels::ScoredPart).unwrap();
        let want = fed.run(&big).unwrap().to_vec();
        let got = Preprocessor::new(&gray).run(&passed).unwrap().to_vec();
        assert_eq!(got, want);
        // Saved at its own size: the whole frame, gray.
        let saved = scored_pixels(&colour, &gray, None, PassedPixels::ScoredPart).unwrap();
        assert_eq!((saved.width(), saved.height()), (28, 28));
        assert!(matches!(*saved, DynamicImage::ImageLuma8(_)));
    }

    /// Was (fifth outside probe, marginal FAIL-OPEN): a 14×14 stream for a 28×28 model passed
    /// on the model's input shrunk back to 14×14, a picture other than the one scored (27 %
    /// of the accepted bundle frames were rejected when it was); passing the frame as it came
    /// instead (sixth probe) passes a 27×27 frame's finest detail, which the 27→28 enlargement
    /// cancels near the centre. At the model's size, what passes is what was scored.
    #[test]
    fn a_frame_smaller_than_the_model_passes_as_its_model_input() {
        let mut gray = spec(1);
        gray.shape = [1, 1, 28, 28];
        for (w, h) in [(14, 11), (27, 27)] {
            let frame: DynamicImage = image::GrayImage::from_fn(w, h, |x, y| {
                image::Luma([if (x + y) % 2 == 0 { 28 } else { 228 }])
            })
            .into();
            let scored = Preprocessor::new(&gray).run(&frame).unwrap().to_vec();
            for size in [Some((28, 28)), None] {
                let passed = scored_pixels(&frame, &gray, size, PassedPixels::ModelInput).unwrap();
                assert_eq!((passed.width(), passed.height()), (28, 28));
                let again = Preprocessor::new(&gray).run(&passed).unwrap().to_vec();
                assert_eq!(
                    again, scored,
                    "{w}x{h}: what passed scores as the frame did"
                );
            }
        }
    }

    /// Was (fourth outside probe, FAIL-OPEN): a frame larger than the model's input was passed
    /// on at its own resolution, and the antialiased downscale removes detail at the finest
    /// pixel pitch before scoring. The probe's frame: mid-gray plus a ±(v − 128) checkerboard
    /// at 2× the model's size, which scores as near gray while a nearest-neighbour downscale
    /// downstream gives back the hidden picture `v` exactly. Now what passes is the model's
    /// input resized back, so the hidden picture does not come back; only with
    /// `ScoredPart` (`--pass-unscored-detail`) does the frame pass byte for byte.
    #[test]
    fn detail_finer_than_the_model_input_does_not_pass() {
        let mut gray = spec(1);
        gray.shape = [1, 1, 28, 28];
        // The hidden picture: salt noise in 0..=255 (a frame the gate rejects).
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let hidden: Vec<i32> = (0..28 * 28)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng >> 56) as i32
            })
            .collect();
        let frame = image::GrayImage::from_fn(56, 56, |x, y| {
            let v = hidden[(y / 2 * 28 + x / 2) as usize] - 128;
            let sign = if (x + y) % 2 == 0 { 1 } else { -1 };
            image::Luma([(128 + sign * v).clamp(0, 255) as u8])
        });
        let frame = DynamicImage::ImageLuma8(frame);
        // Nearest-neighbour downstream: the top-left pixel of each 2×2 block.
        let recovered = |passed: &DynamicImage| -> Vec<i32> {
            let g = passed.to_luma8();
            (0..28 * 28)
                .map(|i| g.get_pixel(i % 28 * 2, i / 28 * 2).0[0] as i32)
                .collect()
        };
        let close = |got: &[i32]| {
            got.iter()
                .zip(&hidden)
                .filter(|(a, b)| (*a - *b).abs() <= 8)
                .count()
        };
        let unsafe_pass =
            scored_pixels(&frame, &gray, Some((56, 56)), PassedPixels::ScoredPart).unwrap();
        assert_eq!(unsafe_pass.as_bytes(), frame.as_bytes(), "byte for byte");
        assert_eq!(close(&recovered(&unsafe_pass)), 28 * 28);
        for size in [Some((56, 56)), Some((112, 112)), None] {
            let passed = scored_pixels(&frame, &gray, size, PassedPixels::ModelInput).unwrap();
            let expected = size.unwrap_or((28, 28));
            assert_eq!((passed.width(), passed.height()), expected);
            // What went downstream is the model's input, resized: at the model's size the
            // very pixels it scored, and it holds no checkerboard.
            let small = passed.resize_exact(28, 28, image::imageops::FilterType::Triangle);
            let mut fed = Preprocessor::new(&gray);
            let scored: Vec<f32> = fed.run(&frame).unwrap().to_vec();
            let again = Preprocessor::new(&gray).run(&small).unwrap().to_vec();
            let gap = scored.iter().zip(&again).map(|(a, b)| (a - b).abs());
            assert!(gap.fold(0.0, f32::max) < 0.1, "{size:?}");
            if expected.0 > 28 {
                // Nearest-neighbour brings back at most chance agreement (±8 of 256: ~7 %).
                let hits = close(&recovered(&passed));
                assert!(hits < 28 * 28 / 5, "{hits} of 784 hidden pixels came back");
            }
        }
    }

    #[test]
    fn an_extreme_aspect_ratio_is_refused_not_resized_into_gigabytes() {
        let mut spec = spec(1);
        spec.shape = [1, 1, 224, 224];
        spec.resize = Resize::ShorterSideCrop {
            shorter_side: 256,
            crop: 224,
        };
        let sliver = DynamicImage::ImageLuma8(image::GrayImage::new(1, 16_384));
        let err = Preprocessor::new(&spec).run(&sliver).unwrap_err();
        assert!(
            matches!(
                err,
                PreprocessError::TooLarge {
                    resized_height: 4_194_304,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bgr_models_get_their_planes_in_bgr_order() {
        let rgb = image::RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 0]));
        let mut bgr = spec(3);
        bgr.channel_order = ChannelOrder::Bgr;
        let out = Preprocessor::new(&bgr)
            .run(&DynamicImage::ImageRgb8(rgb))
            .unwrap()
            .to_vec();
        // Red is the last plane of a BGR model.
        assert_eq!(&out[0..4], &[-1.0; 4]);
        assert_eq!(&out[8..12], &[1.0; 4]);
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
