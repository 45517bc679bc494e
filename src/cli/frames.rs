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
    /// The command-line checks that need no model. `sized_output`: --width/--height may also
    /// size an output (gate's --pass-through) when the inputs are image files; otherwise they
    /// describe raw frames only, and beside image files they are refused, not ignored
    /// (seventh outside probe: `--accepted` saved 28×28 PNGs under `--width 56`, silently).
    pub(crate) fn source(&self, sized_output: bool) -> Result<Source, Error> {
        let source = Source::new(&self.inputs, self.width, self.height, self.pixel_format)?;
        let sized = self.width.is_some() || self.height.is_some();
        if sized && !sized_output && !source.is_stdin() {
            return Err(Error::Setting(
                "--width/--height describe raw frames on stdin (`-`); image files carry their \
                 own size"
                    .into(),
            ));
        }
        Ok(source)
    }
}
