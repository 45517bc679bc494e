//! A frozen network's trunk features of image files, computed once and cached.
//!
//! Training a new head on a frozen backbone (`train-head`) needs each image's trunk output
//! and nothing else of it, so the trunk — nearly all of the cost — runs once per image and
//! its `[N, features]` are kept in a cache file. The cache is named by a SHA-256 of
//! everything the features depend on: the network and its weights, the input specification,
//! and every file's path (relative to the folder) and bytes; anything changed is a new name,
//! never a stale hit. Each file is cut as the runtime cuts a frame (`data::photos`), so the
//! features are the ones the exported model computes on the camera.
//!
//! A file that cannot be decoded is recorded with the reason; the caller decides whether that
//! is an error.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mcgate::input::frame::decode_file;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::data::photos::Photos;
use crate::nets::DropoutNet;

/// Bump when the way features are computed changes (old caches are then never read).
const CACHE_VERSION: &str = "mcgate trunk features v1";

/// Trunk features of a list of files.
#[derive(Debug)]
pub struct Features {
    /// `[N, features]` on the CPU; zeros in the rows of unreadable files.
    pub values: Tensor,
    /// Files that could not be decoded or cut, with the reason, in file order.
    pub unreadable: Vec<(usize, String)>,
    /// The cache file read or written, if caching.
    pub cache: Option<PathBuf>,
    /// Whether the values came from the cache.
    pub from_cache: bool,
}

impl Features {
    /// Whether file `i` was read.
    pub fn readable(&self, i: usize) -> bool {
        !self.unreadable.iter().any(|&(j, _)| j == i)
    }
}

/// The trunk features of `files` (paths under `root`), through `cache_dir` when given.
/// `weights_id` names the network's weights (their SHA-256): part of the cache key.
pub fn of_files(
    net: &dyn DropoutNet,
    weights_id: &str,
    root: &Path,
    files: &[PathBuf],
    cache_dir: Option<&Path>,
    batch: usize,
    device: Device,
) -> Result<Features> {
    ensure!(batch > 0, "batch size 0");
    let cache = match cache_dir {
        Some(dir) => Some(dir.join(format!(
            "{}.safetensors",
            cache_key(net, weights_id, root, files)?
        ))),
        None => None,
    };
    if let Some(path) = cache.as_deref().filter(|p| p.exists()) {
        let (values, readable) = read_cache(path, files.len())?;
        // Only the unreadable files are decoded again, for their reasons.
        let unreadable = (0..files.len())
            .filter(|&i| !readable[i])
            .map(|i| {
                (
                    i,
                    cut(net, &files[i]).err().map_or_else(
                        || "unreadable when the cache was written".to_string(),
                        |e| format!("{e:#}"),
                    ),
                )
            })
            .collect();
        log::info!(
            "trunk features of {} files from {}",
            files.len(),
            path.display()
        );
        return Ok(Features {
            values,
            unreadable,
            cache,
            from_cache: true,
        });
    }

    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("trunk features [{bar:30}] {pos}/{len} ({elapsed}<{eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let _guard = tch::no_grad_guard();
    let (mut rows, mut unreadable) = (vec![], vec![]);
    for (b, chunk) in files.chunks(batch).enumerate() {
        let mut pixels = vec![];
        let mut read = vec![];
        for (k, path) in chunk.iter().enumerate() {
            match cut(net, path) {
                Ok(p) => {
                    pixels.push(p);
                    read.push(true);
                }
                Err(e) => {
                    unreadable.push((b * batch + k, format!("{e:#}")));
                    read.push(false);
                }
            }
            bar.inc(1);
        }
        let values = if pixels.is_empty() {
            None
        } else {
            let x = net.input_from_pixels(&Tensor::cat(&pixels, 0).to_device(device));
            Some(net.trunk(&x).to_device(Device::Cpu))
        };
        let mut next = 0;
        for r in read {
            rows.push(match (&values, r) {
                (Some(v), true) => {
                    next += 1;
                    v.get(next - 1)
                }
                _ => Tensor::zeros([features_of(net)?], (Kind::Float, Device::Cpu)),
            });
        }
    }
    bar.finish_and_clear();
    let values = Tensor::stack(&rows, 0);
    if let Some(path) = &cache {
        let readable: Vec<u8> = (0..files.len())
            .map(|i| u8::from(!unreadable.iter().any(|&(j, _)| j == i)))
            .collect();
        write_cache(path, &values, &readable)?;
        log::info!("cached the trunk features in {}", path.display());
    }
    Ok(Features {
        values,
        unreadable,
        cache,
        from_cache: false,
    })
}

/// One file decoded and cut as the runtime cuts it: pixels `[1, C, H, W]` in [0, 1].
fn cut(net: &dyn DropoutNet, path: &Path) -> Result<Tensor> {
    let image = decode_file(path).with_context(|| format!("{}", path.display()))?;
    let photo = Photos::from_images(vec![path.to_owned()], vec![image], &net.input_spec())
        .with_context(|| format!("{}", path.display()))?;
    Ok(photo.pixels)
}

/// The size of the network's (single) dropout site: its trunk's feature count.
fn features_of(net: &dyn DropoutNet) -> Result<i64> {
    let sites = net.sites();
    ensure!(
        sites.len() == 1 && sites[0].shape.len() == 1,
        "trunk features need one flat dropout site, the network has {sites:?}"
    );
    Ok(sites[0].shape[0])
}

/// Hex SHA-256 of what the features depend on.
fn cache_key(
    net: &dyn DropoutNet,
    weights_id: &str,
    root: &Path,
    files: &[PathBuf],
) -> Result<String> {
    let mut h = Sha256::new();
    h.update(CACHE_VERSION);
    h.update([0]);
    h.update(net.description());
    h.update([0]);
    h.update(weights_id);
    h.update([0]);
    h.update(serde_json::to_vec(&net.input_spec())?);
    let mut buf = vec![0u8; 1 << 16];
    for path in files {
        let rel = path.strip_prefix(root).unwrap_or(path);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        let mut file =
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut content = Sha256::new();
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            content.update(&buf[..n]);
        }
        h.update(content.finalize());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn read_cache(path: &Path, n: usize) -> Result<(Tensor, Vec<bool>)> {
    let tensors = Tensor::read_safetensors(path)
        .with_context(|| format!("reading the feature cache {}", path.display()))?;
    let get = |name: &str| {
        tensors
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, t)| t.shallow_clone())
            .with_context(|| format!("{}: no {name:?} tensor", path.display()))
    };
    let (values, readable) = (get("features")?, get("readable")?);
    ensure!(
        values.size().first() == Some(&(n as i64)) && readable.size() == [n as i64],
        "{}: features for {:?} files, expected {n}; delete it",
        path.display(),
        values.size()
    );
    let readable = Vec::<u8>::try_from(readable)?
        .into_iter()
        .map(|r| r != 0)
        .collect();
    Ok((values.to_kind(Kind::Float), readable))
}

/// Written under a temporary name and renamed: an interrupted write leaves no cache.
fn write_cache(path: &Path, values: &Tensor, readable: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("partial");
    Tensor::write_safetensors(
        &[
            ("features", values),
            ("readable", &Tensor::from_slice(readable)),
        ],
        &tmp,
    )
    .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
