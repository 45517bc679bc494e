//! Frames written into a directory as PNG files (`--accepted`, `--annotate`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use image::DynamicImage;

use super::OutputError;

/// Writes `bytes` to `path` under a temporary name in the same directory, then renames it: a
/// reader never sees a partial file, and a failed write (full disk) leaves nothing behind and
/// the old file, if any, as it was. The temporary file is created exclusively under an
/// unpredictable name (`tempfile`: `O_EXCL`, never through a link someone planted), and the
/// rename replaces a link at `path` itself, never the file it points to. New files get the
/// usual `0666 & !umask`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    write_atomically_with_mode(path, bytes, None)
}

/// [`write_atomically`] with the file's permissions given (to keep a file's mode when it is
/// replaced).
pub fn write_atomically_with_mode(
    path: &Path,
    bytes: &[u8],
    permissions: Option<std::fs::Permissions>,
) -> Result<(), OutputError> {
    use std::io::Write;
    let fail = |e: std::io::Error| OutputError {
        what: path.display().to_string(),
        cause: e.to_string(),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".partial");
    // tempfile creates 0600 files; a new frame or card gets what `File::create` gives it.
    #[cfg(unix)]
    let permissions = Some(permissions.unwrap_or_else(|| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::Permissions::from_mode(0o666)
    }));
    if let Some(permissions) = permissions {
        builder.permissions(permissions);
    }
    // Created and registered under the lock: a signal's clean-up sees every temporary file.
    // (Bound in this order, the file is removed on an early return before it is unlisted.)
    let (_registered, mut partial) = {
        let mut in_flight = in_flight();
        let partial = builder.tempfile_in(dir).map_err(fail)?;
        in_flight.push(partial.path().to_path_buf());
        (Registered(partial.path().to_path_buf()), partial)
    };
    partial
        .write_all(bytes)
        // On the disk before the rename: after a power cut, the file is whole or absent.
        .and_then(|()| partial.as_file().sync_all())
        .map_err(fail)?;
    // On failure the temporary file is removed when dropped.
    partial.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// Temporary files being written now. Their clean-up runs on drop, which a signal that ends
/// the process skips (third outside probe: a SIGTERM during `--accepted` left a hidden
/// `.NAME.XXXXXX.partial` file in 13 of 30 runs); [`remove_partial_files`] removes them.
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn in_flight() -> MutexGuard<'static, Vec<PathBuf>> {
    // A writer that panicked leaves the list as it was: still the files to remove.
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes its temporary file off the list once written (renamed) or dropped.
struct Registered(PathBuf);

impl Drop for Registered {
    fn drop(&mut self) {
        in_flight().retain(|p| *p != self.0);
    }
}

/// Removes every temporary file being written, and holds the lock until the process ends, so
/// that none is started after: for a handler about to end the process on a signal.
pub fn remove_partial_files() -> MutexGuard<'static, Vec<PathBuf>> {
    let in_flight = in_flight();
    for path in in_flight.iter() {
        let _ = std::fs::remove_file(path);
    }
    in_flight
}

/// Somewhere frames are written: a directory of PNGs, or a test's recorder.
pub trait FrameSink {
    /// Writes frame `index` from `source`; an error means it was not written.
    fn save(&self, index: u64, source: &str, image: &DynamicImage) -> Result<(), OutputError>;

    /// Takes back frame `index`, saved but then not passed on (its line says reject).
    fn unsave(&self, index: u64, source: &str) -> Result<(), OutputError>;
}

impl FrameSink for FrameDir {
    fn save(&self, index: u64, source: &str, image: &DynamicImage) -> Result<(), OutputError> {
        FrameDir::save(self, index, source, image)
    }

    fn unsave(&self, index: u64, source: &str) -> Result<(), OutputError> {
        let path = self.path_for(index, source);
        std::fs::remove_file(&path).map_err(|e| OutputError {
            what: path.display().to_string(),
            cause: e.to_string(),
        })
    }
}

/// Whether `a` and `b` name the same existing file (through links, `/dev/stdout`, `..`): the
/// same device and inode. False when either does not exist.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => same_inode(&a, &b),
        _ => false,
    }
}

/// [`same_file`] for a path that may not exist yet: also compared with its `..` steps taken
/// lexically (`new/../model.onnx` is `model.onnx` once `new/` is created, and a writer
/// creates it).
pub fn will_be_same_file(a: &Path, b: &Path) -> bool {
    same_file(a, b) || same_file(&lexically_normal(a), b)
}

/// `a` with each `dir/..` pair and each `.` dropped, without asking the file system.
fn lexically_normal(a: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for part in a.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether two files' metadata are of one file.
pub fn same_inode(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

/// A directory that frames are written into as PNG files.
pub struct FrameDir {
    dir: PathBuf,
}

impl FrameDir {
    /// Creates the directory if needed and checks that it is writable now, so a bad path
    /// fails at start-up rather than on the first frame.
    pub fn open(dir: &Path, what: &str) -> Result<FrameDir, OutputError> {
        let fail = |e: std::io::Error| OutputError {
            what: format!("{what} {}", dir.display()),
            cause: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        // An anonymous file: nothing named that another user could have planted as a link.
        tempfile::tempfile_in(dir).map_err(fail)?;
        Ok(FrameDir {
            dir: dir.to_owned(),
        })
    }

    /// `<dir>/<index:06>_<source stem>.png`.
    pub fn path_for(&self, index: u64, source: &str) -> PathBuf {
        const MAX_STEM: usize = 200;
        let stem = Path::new(source)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        // Every character becomes one ASCII byte, and 200 of them keep the name under the
        // 255 bytes file systems allow: a long frame name cannot stop the gate.
        let stem: String = stem
            .chars()
            .take(MAX_STEM)
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
    pub fn save(
        &self,
        index: u64,
        source: &str,
        image: &image::DynamicImage,
    ) -> Result<(), OutputError> {
        let path = self.path_for(index, source);
        let fail = |e: &dyn std::fmt::Display| OutputError {
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
    #[cfg(unix)]
    fn links_at_the_old_temporary_name_or_the_destination_are_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("frame.png");
        // The name the old code wrote through: `.NAME.PID.partial`, the PID predictable.
        let old_partial = dir
            .path()
            .join(format!(".frame.png.{}.partial", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_partial).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        // Nothing of ours is left beside the planted link.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

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

    #[test]
    fn a_path_through_a_folder_not_made_yet_is_the_file_it_will_be() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("net.onnx");
        std::fs::write(&model, b"x").unwrap();
        let through = dir.path().join("sub/../net.onnx");
        assert!(!same_file(&through, &model), "sub/ does not exist yet");
        assert!(will_be_same_file(&through, &model));
        assert!(will_be_same_file(
            &dir.path().join("./a/b/../../net.onnx"),
            &model
        ));
        assert!(!will_be_same_file(&dir.path().join("sub/net.onnx"), &model));
    }
}
