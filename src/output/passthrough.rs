//! Pass-through: the gate in the video path. Accepted frames go downstream as raw frames,
//! byte for byte what came in (raw stdin) or decoded to the stream's size and pixel format
//! (image files); a rejected frame's place is dropped, filled black, or filled with the last
//! accepted frame, so that an encoder downstream can keep its frame rate.

use std::borrow::Cow;
use std::io::Write;

use image::{imageops::FilterType, DynamicImage};

use super::OutputError;
use crate::input::frame::PixelFormat;

/// What downstream gets in a rejected frame's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnReject {
    /// Nothing: the stream has fewer frames.
    Drop,
    /// A black frame of the same size.
    Black,
    /// The last accepted frame again (black before the first).
    Repeat,
}

/// A raw frame stream out.
pub struct PassThrough {
    out: Box<dyn Write>,
    format: PixelFormat,
    width: u32,
    height: u32,
    on_reject: OnReject,
    /// The last frame written in full (for `Repeat`), or a black frame.
    last: Vec<u8>,
}

impl PassThrough {
    /// Raw `width`×`height` frames in `format` to `out`.
    pub fn new(
        out: Box<dyn Write>,
        format: PixelFormat,
        width: u32,
        height: u32,
        on_reject: OnReject,
    ) -> PassThrough {
        let bytes = width as usize * height as usize * format.bytes_per_pixel();
        PassThrough {
            out,
            format,
            width,
            height,
            on_reject,
            last: vec![0; bytes],
        }
    }

    /// The stream's frame size.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The frame's raw bytes at the stream's size and format: a raw frame read at that size
    /// is its own bytes, borrowed, unchanged.
    fn raw<'a>(&self, image: &'a DynamicImage) -> Cow<'a, [u8]> {
        if image.width() != self.width || image.height() != self.height {
            let sized = image.resize_exact(self.width, self.height, FilterType::Triangle);
            return Cow::Owned(self.convert(&sized));
        }
        match (self.format, image) {
            (PixelFormat::Gray, DynamicImage::ImageLuma8(g)) => Cow::Borrowed(g.as_raw()),
            (PixelFormat::Rgb24, DynamicImage::ImageRgb8(c)) => Cow::Borrowed(c.as_raw()),
            (_, other) => Cow::Owned(self.convert(other)),
        }
    }

    fn convert(&self, image: &DynamicImage) -> Vec<u8> {
        match self.format {
            PixelFormat::Gray => image.to_luma8().into_raw(),
            PixelFormat::Rgb24 => image.to_rgb8().into_raw(),
        }
    }

    /// Writes an accepted frame downstream (the pixels of it that were scored, at
    /// [`size`](PassThrough::size)).
    pub fn accept(&mut self, image: &DynamicImage) -> Result<(), OutputError> {
        let bytes = self.raw(image);
        write(&mut self.out, &bytes)?;
        if self.on_reject == OnReject::Repeat {
            // Same size every frame: the buffer is reused.
            self.last.clear();
            self.last.extend_from_slice(&bytes);
        }
        Ok(())
    }

    /// Fills a rejected frame's place as `on_reject` says.
    pub fn reject(&mut self) -> Result<(), OutputError> {
        match self.on_reject {
            OnReject::Drop => Ok(()),
            // `last` stays black unless frames are repeated.
            OnReject::Black | OnReject::Repeat => write(&mut self.out, &self.last),
        }
    }
}

fn write(out: &mut dyn Write, bytes: &[u8]) -> Result<(), OutputError> {
    // Flushed per frame: downstream acts per frame, and a consumer that stops reading
    // back-pressures the gate instead of a buffer growing.
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| OutputError {
            what: "pass-through frames to stdout".into(),
            cause: e.to_string(),
        })
}
