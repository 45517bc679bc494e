//! Photos from files, cut as the runtime cuts a frame for a shorter-side-resize + centre-crop
//! card (the `mcgate` library's own resize and crop), kept as pixels in [0, 1] for the attacks
//! (`DropoutNet::input_from_pixels` gives the network's input), with the resized image around
//! each crop so an altered crop can be written back as a frame the runtime cuts identically.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use image::{DynamicImage, RgbImage};
use mcgate::contract::card::{InputSpec, Resize};
use mcgate::input::frame::decode_file;
use mcgate::input::preprocess::{centre_crop_offset, resize_shorter_side};
use tch::{Kind, Tensor};

/// Photos, each resized and cropped as the card says.
#[derive(Debug)]
pub struct Photos {
    pub paths: Vec<PathBuf>,
    /// The crops as pixels in [0, 1], `[N, 3, crop, crop]`.
    pub pixels: Tensor,
    /// The class in the file name's last `_` field (`imagenet_03_990.jpg` → 990), if any.
    pub labels: Vec<Option<usize>>,
    /// Each photo with its shorter side resized (RGB), the crop at `offsets`.
    resized: Vec<RgbImage>,
    offsets: Vec<(u32, u32)>,
    crop: u32,
}

impl Photos {
    /// Every PNG/JPEG file directly in `dir`, in name order.
    pub fn load_dir(dir: &Path, input: &InputSpec) -> Result<Photos> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", dir.display()))?;
        paths.retain(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        });
        paths.sort();
        ensure!(
            !paths.is_empty(),
            "no PNG or JPEG photos in {}",
            dir.display()
        );
        Photos::load(paths, input)
    }

    /// The given photo files, for an RGB card with a shorter-side-resize + centre-crop input.
    pub fn load(paths: Vec<PathBuf>, input: &InputSpec) -> Result<Photos> {
        let images = paths
            .iter()
            .map(|p| decode_file(p).with_context(|| format!("{}", p.display())))
            .collect::<Result<Vec<_>>>()?;
        Photos::from_images(paths, images, input)
    }

    /// Decoded photos with the names they go by (a file's path, or a variant's).
    pub fn from_images(
        paths: Vec<PathBuf>,
        images: Vec<DynamicImage>,
        input: &InputSpec,
    ) -> Result<Photos> {
        let Resize::ShorterSideCrop { shorter_side, crop } = input.resize else {
            bail!("photos need a card with the shorter_side_crop resize policy");
        };
        ensure!(input.channels() == 3, "photos need a 3-channel (RGB) card");
        ensure!(paths.len() == images.len(), "one name per photo");
        let (mut resized, mut offsets, mut bytes) = (vec![], vec![], vec![]);
        for image in images {
            // RGB first, as the runtime converts a frame before it resizes it.
            let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
            let r = resize_shorter_side(rgb, shorter_side)
                .context("the resizer refused a photo")?
                .to_rgb8();
            let (x, y) = centre_crop_offset(r.width(), r.height(), crop);
            let cut = image::imageops::crop_imm(&r, x, y, crop, crop).to_image();
            bytes.extend_from_slice(cut.as_raw());
            resized.push(r);
            offsets.push((x, y));
        }
        let side = crop as i64;
        // HWC bytes → NCHW pixels in [0, 1].
        let pixels = Tensor::from_slice(&bytes)
            .view([paths.len() as i64, side, side, 3])
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            / 255.0;
        let labels = paths.iter().map(|p| label_in_name(p)).collect();
        Ok(Photos {
            paths,
            pixels,
            labels,
            resized,
            offsets,
            crop,
        })
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Photo `i` resized, with its crop replaced by `crop` (pixels `[3, crop, crop]` in [0, 1],
    /// rounded to 8 bits): a frame the runtime cuts back to exactly those 8-bit pixels.
    pub fn frame_with_crop(&self, i: usize, crop: &Tensor) -> Result<RgbImage> {
        let side = self.crop as i64;
        ensure!(
            crop.size() == [3, side, side],
            "crop of shape {:?}",
            crop.size()
        );
        let hwc = (crop * 255.0)
            .round()
            .clamp(0.0, 255.0)
            .permute([1, 2, 0])
            .to_kind(Kind::Uint8)
            .contiguous();
        let bytes = Vec::<u8>::try_from(hwc.flatten(0, -1)).context("reading pixels")?;
        let cut = RgbImage::from_raw(self.crop, self.crop, bytes).context("crop size")?;
        let mut frame = self.resized[i].clone();
        let (x, y) = self.offsets[i];
        image::imageops::replace(&mut frame, &cut, x as i64, y as i64);
        Ok(frame)
    }

    /// Photo `i` resized to the card's shorter side (the frame `frame_with_crop` alters).
    pub fn resized(&self, i: usize) -> &RgbImage {
        &self.resized[i]
    }
}

/// The number after the last `_` of the file stem, as foolbox names its ImageNet samples.
fn label_in_name(path: &Path) -> Option<usize> {
    path.file_stem()?.to_str()?.rsplit_once('_')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_the_last_field_of_the_name() {
        assert_eq!(label_in_name(Path::new("a/imagenet_03_990.jpg")), Some(990));
        assert_eq!(label_in_name(Path::new("chelsea.png")), None);
        assert_eq!(label_in_name(Path::new("cat_dog.png")), None);
    }
}
