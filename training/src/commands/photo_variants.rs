//! `photo-variants`: camera-like variants of photos (flip, exposure, shifted and zoomed
//! windows; `data::variants`) as PNG files, the clean frames `mcgate calibrate` and the photo
//! evaluation use.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use clap::Args;
use mcgate::input::frame::{decode_file, expand_paths};

use crate::data::variants::{variants, VARIANTS};

#[derive(Debug, Args)]
pub struct PhotoVariantsArgs {
    /// Photo files or directories of them.
    #[arg(required = true)]
    pub photos: Vec<PathBuf>,
    /// Output directory: `<photo>_<variant>.png` for each photo and variant.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: PhotoVariantsArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut written = 0;
    for path in expand_paths(&args.photos) {
        let path = path.map_err(|e| anyhow::anyhow!("{}: {}", e.source, e.reason))?;
        let photo = decode_file(&path)
            .with_context(|| format!("{}", path.display()))?
            .to_rgb8();
        let stem = path
            .file_stem()
            .context("photo without a file name")?
            .to_string_lossy()
            .to_string();
        for (variant, name) in variants(&photo).iter().zip(VARIANTS) {
            let out = args.out.join(format!("{stem}_{name}.png"));
            variant
                .save(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            written += 1;
        }
    }
    ensure!(written > 0, "no photos found");
    println!("wrote {written} frames under {}", args.out.display());
    Ok(())
}
