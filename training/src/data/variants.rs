//! Camera-like variants of a photo, for clean negatives and calibration: a fixed camera sees
//! the same scene in many frames, a little shifted, zoomed, brighter or darker. They are not
//! independent photos: n variants of k scenes are k scenes' worth of evidence, not n·k.

use image::{imageops, RgbImage};

/// The variants, in a fixed order: (name, how it is made).
pub const VARIANTS: [&str; 8] = [
    "original",
    "flip",
    "darker",
    "brighter",
    "shift_top_left",
    "shift_bottom_right",
    "zoom",
    "shift_top_right_flip",
];

/// Every variant of `photo`, in `VARIANTS` order.
pub fn variants(photo: &RgbImage) -> Vec<RgbImage> {
    let (w, h) = photo.dimensions();
    // A window of `frac` of each side at (fx, fy) of the free margin (0: left/top, 1: right/bottom).
    let window = |frac: f64, fx: f64, fy: f64| {
        let (cw, ch) = ((w as f64 * frac) as u32, (h as f64 * frac) as u32);
        let (x, y) = (((w - cw) as f64 * fx) as u32, ((h - ch) as f64 * fy) as u32);
        imageops::crop_imm(photo, x, y, cw, ch).to_image()
    };
    let exposure = |gain: f32| {
        let mut out = photo.clone();
        for p in out.pixels_mut() {
            for c in p.0.iter_mut() {
                *c = (*c as f32 * gain).round().clamp(0.0, 255.0) as u8;
            }
        }
        out
    };
    vec![
        photo.clone(),
        imageops::flip_horizontal(photo),
        exposure(0.75),
        exposure(1.25),
        window(0.9, 0.0, 0.0),
        window(0.9, 1.0, 1.0),
        window(0.8, 0.5, 0.5),
        imageops::flip_horizontal(&window(0.9, 1.0, 0.0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_distinct_and_named() {
        let photo = RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 100]));
        let v = variants(&photo);
        assert_eq!(v.len(), VARIANTS.len());
        assert_eq!(v[0], photo);
        assert_eq!(v[4].dimensions(), (36, 27));
        assert_eq!(v[6].dimensions(), (32, 24));
        for i in 0..v.len() {
            for j in i + 1..v.len() {
                assert_ne!(v[i], v[j], "{} and {}", VARIANTS[i], VARIANTS[j]);
            }
        }
    }
}
