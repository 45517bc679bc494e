//! Frame sources: image files and directories, or raw frames on stdin.
//!
//! A source yields `Ok(Frame)` or `Err(Unreadable)`: a frame that cannot be read is still a
//! frame the gate must reject (fail closed), so it travels on with its reason.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::DynamicImage;

use super::budget::{self, Lease};

/// Largest image accepted from a file, per side; bigger files are rejected unread.
pub const MAX_SIDE: u32 = 16_384;
/// Largest decoder allocation for one image.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;
/// Largest frame file read, in bytes (a 4K PPM is 25 MB): a larger file is rejected unread.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// The decoder's bounds on one image: its sides and its largest allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width or height, in pixels.
    pub max_side: u32,
    /// Largest decoder allocation, in bytes.
    pub max_alloc: u64,
}

impl DecodeLimits {
    /// What the gate decodes: [`MAX_SIDE`] and [`MAX_DECODE_BYTES`].
    pub const FRAMES: DecodeLimits = DecodeLimits {
        max_side: MAX_SIDE,
        max_alloc: MAX_DECODE_BYTES,
    };
}

/// A decoded frame and where it came from.
#[derive(Debug)]
pub struct Frame {
    /// Position in the run, from 0.
    pub index: u64,
    /// The file path, or `stdin#<index>`.
    pub source: String,
    /// The pixels.
    pub image: DynamicImage,
    /// Its share of the frame memory budget: held, never read, given back when the frame is
    /// dropped.
    _lease: Lease,
}

impl Frame {
    /// A frame made in memory, outside the memory budget (tests, benches, bundles).
    pub fn new(index: u64, source: impl Into<String>, image: DynamicImage) -> Frame {
        Frame::leased(index, source.into(), image, Lease::none())
    }

    fn leased(index: u64, source: String, image: DynamicImage, lease: Lease) -> Frame {
        Frame {
            index,
            source,
            image,
            _lease: lease,
        }
    }
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
    /// A named pipe or socket: reading it could wait forever for a writer.
    #[error(
        "a named pipe or socket, not a file: frames are files, or raw frames on stdin with `-`"
    )]
    NotAFile,
    /// The file is larger than a frame may be.
    #[error("file is over {} MiB, the most a frame file may be (read no further)", MAX_FILE_BYTES >> 20)]
    TooLarge,
    /// A JPEG ends before its end-of-image marker (cut short in transfer or on disk); the
    /// decoder would fill the missing rows with grey and score a picture nobody took.
    #[error("JPEG ends before its end-of-image marker (cut short)")]
    TruncatedJpeg,
    /// The decoder failed (corrupt data, or over the size limits).
    #[error("cannot decode: {0}")]
    Decode(String),
    /// Decoding and scoring the frame would take more memory than all frames may hold.
    #[error(
        "a {width}x{height} frame needs about {} MiB to decode and score, over the {} MiB all \
         frames in flight may hold",
        need >> 20,
        budget::FRAME_MEMORY >> 20
    )]
    OverBudget {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Estimated peak bytes.
        need: u64,
    },
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
                source: crate::text::path_name(dir),
                reason: ReadError::ListDirectory(e.to_string()),
            }));
            return;
        }
    };
    let mut entries: Vec<(PathBuf, Option<std::fs::FileType>)> = entries
        .filter_map(|e| e.ok().map(|e| (e.path(), e.file_type().ok())))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut skipped = vec![];
    for (path, kind) in entries {
        // The entry's own type, links not followed: a link to a folder is not walked (two
        // links to `.` made a walk without end), a link to a file is read as the file.
        let is_dir = kind.is_some_and(|k| k.is_dir());
        let is_file = kind.is_some_and(|k| k.is_file())
            || kind.is_some_and(|k| k.is_symlink())
                && std::fs::metadata(&path).is_ok_and(|m| m.is_file());
        if is_dir {
            walk(&path, out);
        } else if is_file && is_image_name(&path) {
            out.push(Ok(path));
        } else {
            skipped.push(path);
        }
    }
    // Named files are always gated; in a folder only frame files are, and the rest is said.
    if let Some(first) = skipped.first() {
        log::warn!(
            "{}: skipped {} entr{} that {} not frame files (a frame file is a regular file, or \
             a link to one, named .png .jpg .jpeg .pgm .ppm .pnm .pbm; links to folders are \
             not followed), e.g. {}",
            crate::text::printable(&dir.display().to_string()),
            skipped.len(),
            if skipped.len() == 1 { "y" } else { "ies" },
            if skipped.len() == 1 { "is" } else { "are" },
            crate::text::printable(&first.display().to_string())
        );
    }
}

/// Whether a folder walk takes `p` as a frame by its name.
pub fn is_image_name(p: &Path) -> bool {
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
    decode_bytes(&read_file(path)?)
}

/// [`decode_file`], with the frame's share of the memory budget leased before decoding.
fn decode_file_leased(path: &Path) -> Result<(DynamicImage, Lease), ReadError> {
    decode_leased(&read_file(path)?, DecodeLimits::FRAMES)
}

/// A frame file's bytes, read only when its first bytes are an image format this build decodes
/// and only up to [`MAX_FILE_BYTES`]: a huge sparse file or `/dev/zero` costs 16 bytes.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    let read_error = |e: std::io::Error| ReadError::Read(e.to_string());
    let (file, meta) = crate::files::open_unwaited(path).map_err(read_error)?;
    if crate::files::is_pipe_or_socket(&meta) {
        return Err(ReadError::NotAFile);
    }
    if meta.is_file() && meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    let mut limited = file.take(MAX_FILE_BYTES + 1);
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match limited.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        }
    }
    if got == 0 {
        return Err(ReadError::Empty);
    }
    if decodable_format(&head[..got]).is_none() {
        return Err(ReadError::UnknownFormat);
    }
    let mut bytes = head[..got].to_vec();
    limited.read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

/// The format of an image whose first bytes are `head`, among those this build decodes.
fn decodable_format(head: &[u8]) -> Option<image::ImageFormat> {
    use image::ImageFormat::*;
    image::guess_format(head)
        .ok()
        .filter(|f| matches!(f, Png | Jpeg | Pnm))
}

/// A PNG without its metadata chunks (`iCCP`, `zTXt`, `iTXt`, `tEXt`): the gate uses none of
/// them, and the decoder inflates and keeps them before the frame's size is known, outside the
/// frame budget (a 400 KB PNG with a colour profile of 400 MB of zeros peaked at 442 MB; a
/// 60 MB one of 4,000,000 empty `tEXt` chunks at 522 MB). Pixels are unchanged (the decoder
/// applies no profile). Anything else, or a PNG whose chunks do not
/// parse, is returned as it is, for the decoder to judge.
fn png_without_metadata(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    const DROPPED: [&[u8; 4]; 4] = [b"iCCP", b"zTXt", b"iTXt", b"tEXt"];
    if !bytes.starts_with(SIGNATURE) {
        return Cow::Borrowed(bytes);
    }
    // Chunks: 4-byte length, 4-byte type, data, 4-byte CRC.
    let mut kept = Vec::with_capacity(bytes.len());
    kept.extend_from_slice(SIGNATURE);
    let (mut i, mut dropped) = (SIGNATURE.len(), false);
    while i + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes")) as usize;
        let Some(end) = (i + 12).checked_add(len).filter(|&end| end <= bytes.len()) else {
            return Cow::Borrowed(bytes);
        };
        if DROPPED.iter().any(|t| &bytes[i + 4..i + 8] == *t) {
            dropped = true;
        } else {
            kept.extend_from_slice(&bytes[i..end]);
        }
        i = end;
    }
    kept.extend_from_slice(&bytes[i..]);
    if dropped {
        Cow::Owned(kept)
    } else {
        Cow::Borrowed(bytes)
    }
}

/// Whether a JPEG's markers run to its end-of-image marker (EOI). Segments are skipped by
/// their lengths and each scan's entropy-coded data up to the next marker (in it, 0xFF is
/// always followed by a stuffed 0 or a restart marker), so an EOI byte pair cannot be matched
/// by accident; bytes between segments are skipped as decoders do.
fn jpeg_is_complete(b: &[u8]) -> bool {
    let mut i = 2; // after SOI
    loop {
        // The next marker: 0xFF (fill bytes allowed) and a code.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = b.get(i) else {
            return false;
        };
        i += 1;
        match code {
            0xD9 => return true,
            // Standalone markers: restarts, TEM, and a stuffed zero outside a scan.
            0x00 | 0x01 | 0xD0..=0xD8 => {}
            _ => {
                let Some(len) = b.get(i..i + 2).map(|l| u16::from_be_bytes([l[0], l[1]])) else {
                    return false;
                };
                i += len as usize;
                if i > b.len() {
                    return false;
                }
                if code == 0xDA {
                    // Entropy-coded data: up to a 0xFF followed by a marker code.
                    loop {
                        match b.get(i..i + 2) {
                            None => return false,
                            Some([0xFF, c]) if *c != 0x00 && !(0xD0..=0xD7).contains(c) => break,
                            Some(_) => i += 1,
                        }
                    }
                }
            }
        }
    }
}

/// A JPEG decoded by zune-jpeg, as image decodes it (the same output colour spaces) but in
/// strict mode: image runs zune leniently, and a scan with corrupt entropy-coded data (a bad
/// Huffman code: bit errors, garbage) decodes with grey blocks, without a word. Strict, it is
/// an error, and the frame is rejected (docs/RELIABILITY.md, row 73).
fn decode_jpeg_strictly(bytes: &[u8], bounds: DecodeLimits) -> Result<DynamicImage, ReadError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let decode_error = |e: zune_jpeg::errors::DecodeErrors| ReadError::Decode(format!("{e:?}"));
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(bounds.max_side as usize)
        .set_max_height(bounds.max_side as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(decode_error)?;
    let out = match decoder.input_colorspace() {
        Some(c @ (ColorSpace::RGB | ColorSpace::RGBA | ColorSpace::Luma | ColorSpace::LumaA)) => c,
        // CMYK, YCCK and the like become RGB, as image does.
        _ => ColorSpace::RGB,
    };
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
    let pixels = decoder.decode().map_err(decode_error)?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| ReadError::Decode("JPEG without dimensions".into()))?;
    let (w, h) = (w as u32, h as u32);
    let image = match out {
        ColorSpace::Luma => image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::from),
        ColorSpace::LumaA => image::GrayAlphaImage::from_raw(w, h, pixels).map(DynamicImage::from),
        ColorSpace::RGBA => image::RgbaImage::from_raw(w, h, pixels).map(DynamicImage::from),
        _ => image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::from),
    };
    image.ok_or_else(|| ReadError::Decode("JPEG decoded to fewer pixels than its size".into()))
}

/// Drops an alpha channel. The gate scores colour values; with the alpha kept, `--accepted`
/// would pass on a picture that viewers composite into something the gate never scored. The
/// frame passed on is the one scored (docs/RELIABILITY.md, row 58).
fn without_alpha(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageLumaA8(_) => DynamicImage::ImageLuma8(image.to_luma8()),
        DynamicImage::ImageRgba8(_) => DynamicImage::ImageRgb8(image.to_rgb8()),
        DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLuma16(image.to_luma16()),
        DynamicImage::ImageRgba16(_) => DynamicImage::ImageRgb16(image.to_rgb16()),
        DynamicImage::ImageRgba32F(_) => DynamicImage::ImageRgb32F(image.to_rgb32f()),
        other => other,
    }
}

/// Decodes an image from its file's bytes, with the same limits.
pub fn decode_bytes(bytes: &[u8]) -> Result<DynamicImage, ReadError> {
    decode_bytes_within(bytes, DecodeLimits::FRAMES)
}

/// [`decode_bytes`] within other limits: the fuzz targets use small ones, so that they spend
/// their time on the decoders' structure rather than on inflating large blank images.
pub fn decode_bytes_within(bytes: &[u8], limits: DecodeLimits) -> Result<DynamicImage, ReadError> {
    decode_leased(bytes, limits).map(|(image, _)| image)
}

/// [`decode_bytes`], leasing the frame's estimated peak memory from [`budget::FRAMES`] once
/// the header gave its size and before the pixels are decoded (waiting while other frames
/// hold the budget).
fn decode_leased(bytes: &[u8], bounds: DecodeLimits) -> Result<(DynamicImage, Lease), ReadError> {
    if bytes.is_empty() {
        return Err(ReadError::Empty);
    }
    let stripped = png_without_metadata(bytes);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(&stripped[..]))
        .with_guessed_format()
        .map_err(|e| ReadError::Read(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(ReadError::UnknownFormat);
    };

    let mut limits = image::Limits::default();
    limits.max_image_width = Some(bounds.max_side);
    limits.max_image_height = Some(bounds.max_side);
    limits.max_alloc = Some(bounds.max_alloc);
    reader.limits(limits);
    let decode_error = |e: image::ImageError| ReadError::Decode(e.to_string());
    let decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    let decoded = image::ImageDecoder::total_bytes(&decoder);
    if width == 0 || height == 0 {
        return Err(ReadError::NoPixels);
    }
    // Not every decoder applies `max_alloc` to its output (JPEG does not): bound it here.
    if decoded > bounds.max_alloc {
        return Err(ReadError::Decode(format!(
            "a {width}×{height} image decodes to {decoded} bytes, over the limit of {}",
            bounds.max_alloc
        )));
    }
    let need = decoded.saturating_mul(budget::PEAK_PER_DECODED_BYTE);
    let lease = budget::FRAMES.lease(need).ok_or(ReadError::OverBudget {
        width,
        height,
        need,
    })?;
    let image = if format == image::ImageFormat::Jpeg {
        // A file cut short is said to be so (the strict decoder says "exhausted data").
        if !jpeg_is_complete(bytes) {
            return Err(ReadError::TruncatedJpeg);
        }
        drop(decoder);
        decode_jpeg_strictly(bytes, bounds)?
    } else {
        DynamicImage::from_decoder(decoder).map_err(decode_error)?
    };
    Ok((without_alpha(image), lease))
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
                let source = crate::text::path_name(&path);
                match decode_file_leased(&path) {
                    Ok((image, lease)) => Ok(Frame::leased(index, source, image, lease)),
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

/// A raw frame size the gate will not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawSizeError {
    /// A side is 0 or over [`MAX_SIDE`].
    #[error("raw frame size {width}x{height} must be within 1..={MAX_SIDE} per side")]
    Sides {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// One frame, read, converted and passed on, would not fit the frame budget.
    #[error(
        "raw frame size must be one whose frame, read, converted and passed on, fits the {} MiB \
         all frames in flight may hold, got {got}",
        budget::FRAME_MEMORY >> 20
    )]
    OverBudget {
        /// The size, format and peak, in words.
        got: String,
    },
}

/// Checks a raw frame size against [`MAX_SIDE`].
pub fn check_raw_size(width: u32, height: u32) -> Result<(), RawSizeError> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(RawSizeError::Sides { width, height });
    }
    Ok(())
}

/// Peak bytes one raw frame of this size holds while read, scored and passed on.
fn raw_frame_peak(width: u32, height: u32, format: PixelFormat) -> u64 {
    width as u64 * height as u64 * format.bytes_per_pixel() as u64 * budget::PEAK_PER_RAW_BYTE
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
    ) -> Result<Raw<R>, RawSizeError> {
        check_raw_size(width, height)?;
        let peak = raw_frame_peak(width, height, format);
        if peak > budget::FRAMES.total() {
            return Err(RawSizeError::OverBudget {
                got: format!("{width}x{height} {format:?} ({} MiB)", peak >> 20),
            });
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
        let lease = budget::FRAMES
            .lease(raw_frame_peak(self.width, self.height, self.format))
            .expect("Raw::new checked that a frame fits the budget");
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
                .map(|image| Frame::leased(index, source.clone(), image, lease))
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
    fn a_jpeg_is_complete_only_up_to_its_end_of_image_marker() {
        let img =
            image::GrayImage::from_fn(96, 96, |x, y| image::Luma([((x * x + y) % 256) as u8]));
        let mut jpeg = vec![];
        img.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        assert!(jpeg_is_complete(&jpeg));
        // Every cut short of the end is incomplete: within a header or within the scan.
        for cut in (2..jpeg.len() - 1).step_by(7).chain([jpeg.len() - 1]) {
            assert!(
                !jpeg_is_complete(&jpeg[..cut]),
                "cut at {cut} of {}",
                jpeg.len()
            );
        }
        // Bytes after the end-of-image marker (some cameras pad files) change nothing.
        let mut padded = jpeg.clone();
        padded.extend([0u8; 16]);
        assert!(jpeg_is_complete(&padded));
        assert_eq!(
            decode_bytes(&jpeg[..jpeg.len() * 3 / 4]),
            Err(ReadError::TruncatedJpeg)
        );
    }

    #[test]
    fn the_decoded_size_is_bounded_for_every_format_jpeg_included() {
        let img = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x ^ y) as u8]));
        let small = DecodeLimits {
            max_alloc: 64 * 64 - 1,
            ..DecodeLimits::FRAMES
        };
        for format in [image::ImageFormat::Jpeg, image::ImageFormat::Png] {
            let mut bytes = vec![];
            img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
                .unwrap();
            assert!(decode_bytes_within(&bytes, DecodeLimits::FRAMES).is_ok());
            let refused = decode_bytes_within(&bytes, small).unwrap_err();
            assert!(
                matches!(&refused, ReadError::Decode(m) if m.contains("limit")),
                "{format:?}: {refused:?}"
            );
        }
    }

    /// The photo every JPEG test starts from: smooth, with detail, colour.
    fn photo_jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(160, 120, |x, y| {
            image::Rgb([(x * 255 / 160) as u8, (y * 2) as u8, ((x * y) % 251) as u8])
        });
        let mut jpeg = vec![];
        img.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        jpeg
    }

    #[test]
    fn a_jpeg_decodes_strictly_to_what_image_decodes_and_corrupt_scan_data_is_refused() {
        for jpeg in [
            photo_jpeg(),
            include_bytes!("../../fuzz/seeds/decode_preprocess/testsrc.jpg").to_vec(),
        ] {
            let lenient =
                image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
            let strict = decode_bytes(&jpeg).unwrap();
            assert_eq!(strict.color(), lenient.color());
            assert_eq!(strict.as_bytes(), lenient.as_bytes());
        }
        // The last eighth of the scan overwritten with random bytes, markers intact (made by
        // the outside probe's recipe, on the fuzz seed): the lenient decoder fills grey
        // blocks and says nothing.
        let corrupt = include_bytes!("../../fuzz/seeds/decode_preprocess/testsrc-corrupt.jpg");
        assert!(image::load_from_memory_with_format(corrupt, image::ImageFormat::Jpeg).is_ok());
        let refused = decode_bytes(corrupt).unwrap_err();
        assert!(
            matches!(&refused, ReadError::Decode(m) if m.contains("Huffman")),
            "{refused:?}"
        );
    }

    /// A PNG chunk: length, type, data, CRC.
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut typed = kind.to_vec();
        typed.extend_from_slice(data);
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(&typed);
        c.extend_from_slice(&crc32(&typed).to_be_bytes());
        c
    }

    /// CRC-32 (ISO-HDLC, as PNG chunks use it), bit by bit.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_png_is_decoded_without_its_metadata() {
        let img = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 30 + y) as u8]));
        let mut png = vec![];
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        // A colour profile after the header (its deflated bytes never read: the chunk goes
        // before the decoder sees it), and a compressed text chunk.
        let mut profile = b"bomb\0\0".to_vec();
        profile.extend([0x78, 0xDA, 0xED, 0xC1, 0x01, 0x0D]);
        let ihdr_end = 8 + 8 + 13 + 4;
        let mut with = png[..ihdr_end].to_vec();
        with.extend(chunk(b"iCCP", &profile));
        with.extend(chunk(b"zTXt", b"k\0\0x"));
        for _ in 0..3 {
            with.extend(chunk(b"tEXt", b""));
        }
        with.extend_from_slice(&png[ihdr_end..]);
        let stripped = png_without_metadata(&with);
        assert_eq!(&stripped[..], &png[..], "exactly the chunks dropped");
        assert!(matches!(
            png_without_metadata(&png),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            decode_bytes(&with).unwrap().as_bytes(),
            img.as_raw().as_slice()
        );
        // A PNG whose chunks do not parse is left to the decoder.
        assert_eq!(&png_without_metadata(&with[..40])[..], &with[..40]);
    }

    #[test]
    fn frames_with_alpha_are_scored_and_passed_on_without_it() {
        let rgba =
            DynamicImage::ImageRgba8(image::RgbaImage::from_raw(1, 1, vec![9, 8, 7, 0]).unwrap());
        let mut png = vec![];
        rgba.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let decoded = decode_bytes(&png).unwrap();
        assert_eq!(decoded.color(), image::ColorType::Rgb8);
        assert_eq!(decoded.to_rgb8().into_raw(), vec![9, 8, 7]);
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
