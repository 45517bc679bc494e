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

/// A decoded frame and where it came from.
#[derive(Debug)]
pub struct Frame {
    /// Position in the run, from 0.
    pub index: u64,
    /// The file path, or `stdin#<index>`.
    pub source: String,
    /// The pixels.
    pub image: DynamicImage,
}

/// A frame that could not be read, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    /// Position in the run, from 0.
    pub index: u64,
    /// The file path, or `stdin#<index>`.
    pub source: String,
    /// Why it could not be read.
    pub reason: ReadError,
}

/// Why a frame could not be read; each variant renders as one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// A directory named as input cannot be listed.
    #[error("cannot list directory: {0}")]
    ListDirectory(String),
    /// The file cannot be read (the operating system's words).
    #[error("cannot read: {0}")]
    Read(String),
    /// The file is empty.
    #[error("empty file")]
    Empty,
    /// The bytes are not an image format this build decodes.
    #[error("not a PNG, JPEG or PNM image")]
    UnknownFormat,
    /// The decoder failed (corrupt data, or over the size limits).
    #[error("cannot decode: {0}")]
    Decode(String),
    /// The image has no pixels.
    #[error("image has no pixels")]
    NoPixels,
    /// The raw stream failed.
    #[error("cannot read stream: {0}")]
    Stream(String),
    /// The raw stream ended inside a frame.
    #[error("truncated raw frame: {got} of {want} bytes ({width}x{height} {format:?})")]
    Truncated {
        /// Bytes read.
        got: usize,
        /// Bytes in a frame.
        want: usize,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Pixel format.
        format: PixelFormat,
    },
    /// A raw buffer does not hold a whole frame (a bug).
    #[error("raw frame buffer does not match its size")]
    BufferSize,
}

/// The byte layout of raw frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PixelFormat {
    /// 8-bit gray, 1 byte per pixel (ffmpeg `-pix_fmt gray`).
    Gray,
    /// 8-bit RGB, 3 bytes per pixel (ffmpeg `-pix_fmt rgb24`).
    Rgb24,
}

impl PixelFormat {
    /// The format whose channels a model with `channels` input channels takes: gray for 1,
    /// RGB for 3 (what raw frames are read as unless told otherwise).
    pub fn for_channels(channels: usize) -> Option<PixelFormat> {
        match channels {
            1 => Some(PixelFormat::Gray),
            3 => Some(PixelFormat::Rgb24),
            _ => None,
        }
    }

    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Gray => 1,
            PixelFormat::Rgb24 => 3,
        }
    }
}

/// What a frame source yields: a frame, or why the next one could not be read.
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
                reason: ReadError::ListDirectory(e.to_string()),
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
pub fn decode_file(path: &Path) -> Result<DynamicImage, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| ReadError::Read(e.to_string()))?;
    decode_bytes(&bytes)
}

/// Decodes an image from its file's bytes, with the same limits.
pub fn decode_bytes(bytes: &[u8]) -> Result<DynamicImage, ReadError> {
    if bytes.is_empty() {
        return Err(ReadError::Empty);
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ReadError::Read(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ReadError::UnknownFormat);
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| ReadError::Decode(e.to_string()))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(ReadError::NoPixels);
    }
    Ok(image)
}

/// Frames from image files.
pub struct Files {
    paths: std::vec::IntoIter<Result<PathBuf, Unreadable>>,
    next_index: u64,
}

impl Files {
    /// The frames of `inputs`: files, and directories expanded.
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

/// Checks a raw frame size against [`MAX_SIDE`].
pub fn check_raw_size(width: u32, height: u32) -> Result<(), crate::Error> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(crate::Error::RawFrameSize { width, height });
    }
    Ok(())
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
    /// Frames of `width`×`height` pixels in `format` read from `reader`.
    pub fn new(
        reader: R,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<Raw<R>, crate::Error> {
        check_raw_size(width, height)?;
        Ok(Raw {
            reader,
            width,
            height,
            format,
            next_index: 0,
            done: false,
        })
    }

    /// Bytes in one frame.
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
                        reason: ReadError::Stream(e.to_string()),
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
                reason: ReadError::Truncated {
                    got,
                    want,
                    width: self.width,
                    height: self.height,
                    format: self.format,
                },
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
                    reason: ReadError::BufferSize,
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
            matches!(
                err.reason,
                ReadError::Truncated {
                    got: 4,
                    want: 6,
                    ..
                }
            ),
            "{:?}",
            err.reason
        );
        assert!(
            err.reason
                .to_string()
                .contains("truncated raw frame: 4 of 6 bytes"),
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
        assert_eq!(decode_bytes(b"").unwrap_err(), ReadError::Empty);
        assert_eq!(ReadError::Empty.to_string(), "empty file");
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        png.extend([0u8; 20]);
        assert!(matches!(
            decode_bytes(&png).unwrap_err(),
            ReadError::Decode(_)
        ));
        assert!(decode_bytes(b"hello world").is_err());
    }
}
