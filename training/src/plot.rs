//! What every figure needs: a registered font (plotters lays out no text without one) and
//! a compact PNG writer.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// The TrueType file text is drawn with; `MCGATE_FONT` overrides it.
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The family name figures ask plotters for.
pub const FONT: &str = "sans-serif";

/// Registers the font once per process; plotters needs it to lay out any text.
pub fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = std::env::var("MCGATE_FONT").unwrap_or_else(|_| DEFAULT_FONT.into());
            let bytes = std::fs::read(&path).map_err(|e| {
                format!("reading font {path}: {e} (install fonts-dejavu-core or set MCGATE_FONT to a .ttf)")
            })?;
            // plotters keeps a &'static: the font lives for the process, once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a TrueType/OpenType font"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Renders into memory and writes the PNG at the best compression (plotters' own encoder
/// writes files several times larger).
pub fn write_png(
    path: &Path,
    (w, h): (u32, u32),
    render: impl FnOnce(DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    render(BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area())?;
    let file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    PngEncoder::new_with_quality(file, CompressionType::Best, FilterType::Adaptive)
        .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("writing {}", path.display()))
}
