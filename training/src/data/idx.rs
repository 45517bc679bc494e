//! IDX files (the MNIST / Fashion-MNIST format), raw or gzipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use super::Dataset;

/// Reads a whole file, gunzipping it when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = vec![];
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("cannot gunzip {}", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX byte buffer of unsigned bytes: returns (dims, data).
pub fn parse_idx(bytes: &[u8]) -> Result<(Vec<usize>, &[u8])> {
    ensure!(bytes.len() >= 4, "shorter than an IDX header");
    ensure!(
        bytes[0] == 0 && bytes[1] == 0,
        "bad IDX magic {:02x?}",
        &bytes[..4]
    );
    ensure!(
        bytes[2] == 0x08,
        "IDX element type 0x{:02x} is not unsigned byte",
        bytes[2]
    );
    let rank = bytes[3] as usize;
    ensure!(
        rank >= 1 && bytes.len() >= 4 + 4 * rank,
        "truncated IDX header"
    );
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let len: usize = dims.iter().product();
    let data = &bytes[4 + 4 * rank..];
    ensure!(
        data.len() == len,
        "IDX dims {dims:?} need {len} bytes, file has {}",
        data.len()
    );
    Ok((dims, data))
}

/// Finds `name` or `name.gz` in `dir`.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.exists())
}

/// Loads one split (`train` or `t10k`) from a directory of IDX files.
pub fn load_split(dir: &Path, split: &str, fetch_hint: &str) -> Result<Dataset> {
    let images_name = format!("{split}-images-idx3-ubyte");
    let labels_name = format!("{split}-labels-idx1-ubyte");
    let (Some(images_path), Some(labels_path)) = (find(dir, &images_name), find(dir, &labels_name))
    else {
        bail!(
            "{} has no {images_name}[.gz] / {labels_name}[.gz]: run `{fetch_hint}` first",
            dir.display()
        );
    };
    let image_bytes = read_maybe_gz(&images_path)?;
    let (dims, images) =
        parse_idx(&image_bytes).with_context(|| format!("in {}", images_path.display()))?;
    ensure!(
        dims.len() == 3,
        "{}: images must be rank 3, got {dims:?}",
        images_path.display()
    );
    let label_bytes = read_maybe_gz(&labels_path)?;
    let (ldims, labels) =
        parse_idx(&label_bytes).with_context(|| format!("in {}", labels_path.display()))?;
    ensure!(
        ldims == [dims[0]],
        "{} has {ldims:?} labels for {} images",
        labels_path.display(),
        dims[0]
    );
    Ok(Dataset {
        images: images.to_vec(),
        labels: labels.to_vec(),
        rows: dims[1],
        cols: dims[2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(data);
        b
    }

    #[test]
    fn reads_raw_and_gzipped_splits() {
        let dir = tempfile::tempdir().unwrap();
        let images: Vec<u8> = (0..2 * 2 * 3).map(|i| i as u8).collect();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            idx(&[2, 2, 3], &images),
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
        gz.write_all(&idx(&[2], &[7, 9])).unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte.gz"),
            gz.finish().unwrap(),
        )
        .unwrap();
        let d = load_split(dir.path(), "t10k", "fetch").unwrap();
        assert_eq!((d.len(), d.rows, d.cols), (2, 2, 3));
        assert_eq!(d.image(1), &images[6..12]);
        assert_eq!(d.labels, vec![7, 9]);
    }

    #[test]
    fn missing_and_corrupt_files_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_split(dir.path(), "train", "scripts/fetch-mnist.sh").unwrap_err();
        assert!(
            err.to_string()
                .contains("run `scripts/fetch-mnist.sh` first"),
            "{err}"
        );
        assert!(parse_idx(&idx(&[3], &[1, 2]))
            .unwrap_err()
            .to_string()
            .contains("need 3 bytes"));
        assert!(parse_idx(&[1, 2, 3, 4]).is_err());
    }
}
