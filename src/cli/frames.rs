//! Where frames come from: the flags shared by `gate` and `calibrate`.

use std::path::PathBuf;

use clap::Args;

use mcgate::input::frame::PixelFormat;
use mcgate::input::source::Source;
use mcgate::Error;

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

impl FrameArgs {
    /// The command-line checks that need no model.
    pub(crate) fn source(&self) -> Result<Source, Error> {
        Source::new(&self.inputs, self.width, self.height, self.pixel_format)
    }
}
