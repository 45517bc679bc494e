//! Reading a file someone else may have planted: never waiting on a named pipe, never reading
//! more than a bound (a leaf: the model loader, the converter's labels and the bundle reader use it).

use std::io::Read;
use std::path::Path;

/// Largest model card read, in bytes (a thousand labels take ~20 KB).
pub const MAX_CARD_BYTES: u64 = 16 << 20;
/// Largest ONNX file read, in bytes (the shipped photo model is 18 MB).
pub const MAX_ONNX_BYTES: u64 = 1 << 30;
/// Largest eval bundle manifest read, in bytes (the shipped ones are under 100 KB).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The bytes of the regular file (or device) at `path`, at most `max` of them: a named pipe
/// or socket is refused without waiting for a writer, and a longer file is refused unread.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let (file, meta) = open_unwaited(path)?;
    if is_pipe_or_socket(&meta) {
        return Err(std::io::Error::other(
            "a named pipe or socket, not a file (it could block forever)",
        ));
    }
    let too_long = || std::io::Error::other(format!("longer than the {max} bytes read at most"));
    if meta.is_file() && meta.len() > max {
        return Err(too_long());
    }
    let mut bytes = vec![];
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_long());
    }
    Ok(bytes)
}

/// `path` opened for reading without waiting (opening a named pipe blocks until someone
/// writes to it), with its metadata.
pub fn open_unwaited(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// Whether a file is a named pipe or socket: reading it could wait forever.
pub fn is_pipe_or_socket(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        meta.file_type().is_fifo() || meta.file_type().is_socket()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_are_refused_unwaited_and_long_files_unread() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("card.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_bounded(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("named pipe"), "{e}");
        let file = dir.path().join("m.onnx");
        std::fs::write(&file, [1u8; 11]).unwrap();
        assert!(read_bounded(&file, 10)
            .unwrap_err()
            .to_string()
            .contains("10 bytes"));
        assert_eq!(read_bounded(&file, 11).unwrap().len(), 11);
        // A device that never ends: read to the bound, then refused.
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }
}
