//! Frame sources: image files and directories, or raw frames on stdin.
//!
//! A source yields `Ok(Frame)` or `Err(Unreadable)`: a frame that cannot be read is still a
//! frame the gate must reject (fail closed), so it travels on with its reason.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::DynamicImage;

/// Largest image accepted from a file, per side; bigger files are rejected unread.
pub const MAX_SIDE: u32 = 16_384;
/// Largest decoder allocation for one image.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

#[derive(Debug)]
pub struct Frame {
    pub index: u64,
    pub source: String,
    pub image: DynamicImage,
}

/// A frame that could not be read, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub index: u64,
    pub source: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PixelFormat {
    /// 8-bit gray, 1 byte per pixel (ffmpeg `-pix_fmt gray`).
    Gray,
    /// 8-bit RGB, 3 bytes per pixel (ffmpeg `-pix_fmt rgb24`).
    Rgb24,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Gray => 1,
            PixelFormat::Rgb24 => 3,
        }
    }
}

pub type Item = Result<Frame, Unreadable>;

/// The image files named on the command line, directories expanded recursively, each
/// directory's entries in name order.
pub fn expand_paths(inputs: &[PathBuf]) -> Vec<Result<PathBuf, Unreadable>> {
    let mut out = vec![];
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut out);
        } else {
            out.push(Ok(input.clone()));
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<Result<PathBuf, Unreadable>>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            out.push(Err(Unreadable {
                index: 0,
                source: dir.display().to_string(),
                reason: format!("cannot list directory: {e}"),
            }));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, out);
        } else if path.is_file() && is_image_name(&path) {
            out.push(Ok(path));
        }
    }
}

fn is_image_name(p: &Path) -> bool {
    let ext = p
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    matches!(
        ext.as_deref(),
        Some("png" | "jpg" | "jpeg" | "pgm" | "ppm" | "pnm" | "pbm")
    )
}

/// Decodes one image file, with size limits so a hostile header cannot exhaust memory.
pub fn decode_file(path: &Path) -> Result<DynamicImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    decode_bytes(&bytes)
}

pub fn decode_bytes(bytes: &[u8]) -> Result<DynamicImage, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    if reader.format().is_none() {
        return Err("not a PNG, JPEG or PNM image".into());
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| format!("cannot decode: {e}"))?;
    if image.width() == 0 || image.height() == 0 {
        return Err("image has no pixels".into());
    }
    Ok(image)
}

/// Frames from image files.
pub struct Files {
    paths: std::vec::IntoIter<Result<PathBuf, Unreadable>>,
    next_index: u64,
}

impl Files {
    pub fn new(inputs: &[PathBuf]) -> Files {
        Files {
            paths: expand_paths(inputs).into_iter(),
            next_index: 0,
        }
    }
}

impl Iterator for Files {
    type Item = Item;
    fn next(&mut self) -> Option<Item> {
        let path = self.paths.next()?;
        let index = self.next_index;
        self.next_index += 1;
        Some(match path {
            Ok(path) => {
                let source = path.display().to_string();
                match decode_file(&path) {
                    Ok(image) => Ok(Frame {
                        index,
                        source,
                        image,
                    }),
                    Err(reason) => Err(Unreadable {
                        index,
                        source,
                        reason,
                    }),
                }
            }
            Err(e) => Err(Unreadable { index, ..e }),
        })
    }
}

/// Raw frames of a fixed size read back to back from a byte stream, as `ffmpeg -f rawvideo`
/// or gstreamer write them. A short final frame is reported as truncated, then the stream ends.
pub struct Raw<R: Read> {
    reader: R,
    width: u32,
    height: u32,
    format: PixelFormat,
    next_index: u64,
    done: bool,
}

impl<R: Read> Raw<R> {
    pub fn new(reader: R, width: u32, height: u32, format: PixelFormat) -> Result<Raw<R>, String> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(format!(
                "raw frame size {width}x{height} must be within 1..={MAX_SIDE} per side"
            ));
        }
        Ok(Raw {
            reader,
            width,
            height,
            format,
            next_index: 0,
            done: false,
        })
    }

    pub fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * self.format.bytes_per_pixel()
    }
}

impl<R: Read> Iterator for Raw<R> {
    type Item = Item;
    fn next(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        let source = format!("stdin#{index}");
        let want = self.frame_bytes();
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match self.reader.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(Unreadable {
                        index,
                        source,
                        reason: format!("cannot read stream: {e}"),
                    }));
                }
            }
        }
        if got == 0 {
            self.done = true;
            return None;
        }
        if got < want {
            self.done = true;
            return Some(Err(Unreadable {
                index,
                source,
                reason: format!(
                    "truncated raw frame: {got} of {want} bytes ({}x{} {:?})",
                    self.width, self.height, self.format
                ),
            }));
        }
        let image = match self.format {
            PixelFormat::Gray => image::GrayImage::from_raw(self.width, self.height, buf)
                .map(DynamicImage::ImageLuma8),
            PixelFormat::Rgb24 => {
                image::RgbImage::from_raw(self.width, self.height, buf).map(DynamicImage::ImageRgb8)
            }
        };
        Some(
            image
                .map(|image| Frame {
                    index,
                    source: source.clone(),
                    image,
                })
                .ok_or(Unreadable {
                    index,
                    source,
                    reason: "raw frame buffer does not match its size".into(),
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_stream_splits_frames_and_reports_truncation() {
        let bytes: Vec<u8> = (0..2 * 6 + 4).map(|i| i as u8).collect();
        let frames: Vec<Item> = Raw::new(&bytes[..], 3, 2, PixelFormat::Gray)
            .unwrap()
            .collect();
        assert_eq!(frames.len(), 3);
        let f1 = frames[1].as_ref().unwrap();
        assert_eq!(f1.image.to_luma8().into_raw(), (6..12).collect::<Vec<u8>>());
        let err = frames[2].as_ref().unwrap_err();
        assert!(
            err.reason.contains("truncated raw frame: 4 of 6 bytes"),
            "{}",
            err.reason
        );
        assert_eq!(
            Raw::new(&[][..], 3, 2, PixelFormat::Rgb24).unwrap().count(),
            0
        );
        assert!(Raw::new(&[][..], 0, 2, PixelFormat::Gray).is_err());
    }

    #[test]
    fn corrupt_and_empty_images_are_unreadable_not_panics() {
        assert_eq!(decode_bytes(b"").unwrap_err(), "empty file");
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        png.extend([0u8; 20]);
        assert!(decode_bytes(&png).unwrap_err().starts_with("cannot decode"));
        assert!(decode_bytes(b"hello world").is_err());
    }
}
