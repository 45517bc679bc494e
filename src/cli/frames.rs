//! Where frames come from: the flags shared by `gate` and `calibrate`.

use std::path::PathBuf;

use clap::Args;

use mcgate::input::frame::{self, PixelFormat};
use mcgate::model::Model;

use super::Failure;

/// Where frames come from: files and directories, or raw frames on stdin.
#[derive(Args)]
pub(crate) struct FrameArgs {
    /// Image files (PNG, JPEG, PGM/PPM) or directories of them; `-` reads raw frames from
    /// stdin (give --width and --height).
    #[arg(required = true)]
    pub(crate) inputs: Vec<PathBuf>,
    /// Raw stdin frames: width in pixels.
    #[arg(long)]
    pub(crate) width: Option<u32>,
    /// Raw stdin frames: height in pixels.
    #[arg(long)]
    pub(crate) height: Option<u32>,
    /// Raw stdin frames: pixel format [default: the model's: gray for a 1-channel model,
    /// rgb24 for a 3-channel one].
    #[arg(long, value_enum)]
    pub(crate) pixel_format: Option<PixelFormat>,
}

/// A frame source, checked before the model is loaded.
pub(crate) enum Source {
    Files(Vec<PathBuf>),
    Raw {
        width: u32,
        height: u32,
        format: Option<PixelFormat>,
    },
}

impl FrameArgs {
    /// The command-line checks that need no model.
    pub(crate) fn source(&self) -> Result<Source, Failure> {
        let stdin_mode = self.inputs.iter().any(|p| p.as_os_str() == "-");
        if !stdin_mode {
            return Ok(Source::Files(self.inputs.clone()));
        }
        if self.inputs.len() > 1 {
            return Err(Failure::Usage(
                "`-` (raw frames on stdin) cannot be mixed with file inputs".into(),
            ));
        }
        let (Some(width), Some(height)) = (self.width, self.height) else {
            return Err(Failure::Usage(
                "raw frames on stdin need --width and --height".into(),
            ));
        };
        frame::check_raw_size(width, height)?;
        Ok(Source::Raw {
            width,
            height,
            format: self.pixel_format,
        })
    }
}

impl Source {
    /// The frames, read as `model` takes them.
    pub(crate) fn frames(
        self,
        model: &Model,
    ) -> Result<Box<dyn Iterator<Item = frame::Item> + Send>, Failure> {
        Ok(match self {
            Source::Files(paths) => Box::new(frame::Files::new(&paths)),
            Source::Raw {
                width,
                height,
                format,
            } => {
                // Without --pixel-format, raw frames are read in the model's own channels: a
                // 3-channel model must not see an RGB frame as three gray ones.
                let format = format.unwrap_or_else(|| {
                    PixelFormat::for_channels(model.card.input.channels())
                        .expect("a valid card has 1 or 3 channels")
                });
                // `Stdin`, not its lock: the reader runs on its own thread under --jobs.
                Box::new(frame::Raw::new(std::io::stdin(), width, height, format)?)
            }
        })
    }

    pub(crate) fn is_stdin(&self) -> bool {
        matches!(self, Source::Raw { .. })
    }
}
