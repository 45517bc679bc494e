//! Frames written into a directory as PNG files (`--accepted`, `--annotate`).

use std::path::{Path, PathBuf};

use crate::Error;

/// Writes `bytes` to `path` under a temporary name in the same directory, then renames it: a
/// reader never sees a partial file, and a failed write (full disk) leaves nothing behind and
/// the old file, if any, as it was.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // The process id keeps two writers of the same file (two gates on one directory) apart.
    let partial = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    std::fs::File::create(&partial)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            // On the disk before the rename: after a power cut, the file is whole or absent.
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            Error::Output {
                what: path.display().to_string(),
                cause: e.to_string(),
            }
        })
}

/// A directory that frames are written into as PNG files.
pub struct FrameDir {
    dir: PathBuf,
}

impl FrameDir {
    /// Creates the directory if needed and checks that it is writable now, so a bad path
    /// fails at start-up rather than on the first frame.
    pub fn open(dir: &Path, what: &str) -> Result<FrameDir, Error> {
        let fail = |e: std::io::Error| Error::Output {
            what: format!("{what} {}", dir.display()),
            cause: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        let probe = dir.join(".mcgate-write-probe");
        std::fs::write(&probe, b"").map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)?;
        Ok(FrameDir {
            dir: dir.to_owned(),
        })
    }

    /// `<dir>/<index:06>_<source stem>.png`.
    pub fn path_for(&self, index: u64, source: &str) -> PathBuf {
        let stem = Path::new(source)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let stem: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{index:06}_{stem}.png"))
    }

    /// Writes the PNG under a temporary name, then renames it: a reader of the directory
    /// never sees a partial frame, and a failed write (full disk) leaves nothing behind.
    pub fn save(&self, index: u64, source: &str, image: &image::DynamicImage) -> Result<(), Error> {
        let path = self.path_for(index, source);
        let fail = |e: &dyn std::fmt::Display| Error::Output {
            what: path.display().to_string(),
            cause: e.to_string(),
        };
        let mut png = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| fail(&e))?;
        write_atomically(&path, png.get_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_names_are_sanitised() {
        let d = FrameDir { dir: "out".into() };
        assert_eq!(
            d.path_for(3, "a/b/c d.png"),
            PathBuf::from("out/000003_c_d.png")
        );
        assert_eq!(
            d.path_for(12, "stdin#12"),
            PathBuf::from("out/000012_stdin_12.png")
        );
    }
}
