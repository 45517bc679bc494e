//! Where a run's frames come from: files and directories, or raw frames on stdin. Checked
//! before the model is loaded; read as the model takes them once it is.

use std::path::PathBuf;

use super::frame::{self, PixelFormat};
use crate::contract::card::ModelCard;
use crate::Error;

/// A run's frame source.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Image files, and directories of them.
    Files(Vec<PathBuf>),
    /// Raw frames on stdin.
    Raw {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Pixel format; `None`: the model's channels.
        format: Option<PixelFormat>,
    },
}

/// The frames of a source, each read or with why it could not be.
pub type Frames = Box<dyn Iterator<Item = frame::Item> + Send>;

impl Source {
    /// The source the inputs name: `-` alone is raw frames on stdin, of `width` × `height`
    /// (both needed) in `format`; anything else is files and directories.
    pub fn new(
        inputs: &[PathBuf],
        width: Option<u32>,
        height: Option<u32>,
        format: Option<PixelFormat>,
    ) -> Result<Source, Error> {
        let stdin_mode = inputs.iter().any(|p| p.as_os_str() == "-");
        if !stdin_mode {
            return Ok(Source::Files(inputs.to_vec()));
        }
        if inputs.len() > 1 {
            // Was "cannot be mixed with file inputs" for `- -` too (fifth outside probe).
            let dashes = inputs.iter().filter(|p| p.as_os_str() == "-").count();
            return Err(Error::Setting(if dashes == inputs.len() {
                format!("`-` (raw frames on stdin) given {dashes} times: stdin is one stream, name it once")
            } else {
                "`-` (raw frames on stdin) cannot be mixed with file inputs".into()
            }));
        }
        let (Some(width), Some(height)) = (width, height) else {
            return Err(Error::Setting(
                "raw frames on stdin need --width and --height".into(),
            ));
        };
        frame::check_raw_size(width, height)?;
        Ok(Source::Raw {
            width,
            height,
            format,
        })
    }

    /// The frames, read as the model of `card` takes them.
    pub fn frames(self, card: &ModelCard) -> Result<Frames, Error> {
        Ok(match self {
            Source::Files(paths) => Box::new(frame::Files::new(&paths)),
            Source::Raw {
                width,
                height,
                format,
            } => {
                // Without a pixel format, raw frames are read in the model's own channels: a
                // 3-channel model must not see an RGB frame as three gray ones.
                let format = format.unwrap_or_else(|| {
                    PixelFormat::for_channels(card.input.channels())
                        .expect("a valid card has 1 or 3 channels")
                });
                // `Stdin`, not its lock: the reader runs on its own thread under --jobs.
                Box::new(frame::Raw::new(std::io::stdin(), width, height, format)?)
            }
        })
    }

    /// Whether the frames come from stdin.
    pub fn is_stdin(&self) -> bool {
        matches!(self, Source::Raw { .. })
    }
}
