//! The files the runtime loads: ONNX bytes of a network (float, or int8 for a network that
//! quantises itself), its card (`card`), and writing both beside each other.

mod card;

pub use card::card_for;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mcgate::contract::card::ModelCard;

use crate::nets::{DropoutNet, Int8Export};

/// The ONNX files' `producer_name`; `producer_version` is this crate's version.
pub const PRODUCER: &str = "mcgate-training";

/// The doc string `train` gives the float file.
pub fn float_doc(net: &dyn DropoutNet) -> String {
    format!("{}; masks are inputs", net.description())
}

/// The doc string `quantize` gives the int8 file.
pub fn int8_doc(net: &dyn DropoutNet) -> String {
    format!("{}, int8 (QOperator); masks are inputs", net.description())
}

/// The float ONNX file's bytes for `net`.
pub fn onnx_bytes(net: &dyn DropoutNet, doc: &str) -> Result<Vec<u8>> {
    Ok(net
        .onnx_graph(doc)?
        .to_bytes(PRODUCER, env!("CARGO_PKG_VERSION")))
}

/// The int8 ONNX file's bytes for `net` at the given activation scales.
pub fn int8_onnx_bytes<N: Int8Export>(net: &N, scales: &N::Scales, doc: &str) -> Result<Vec<u8>> {
    Ok(net
        .int8_graph(scales, doc)?
        .to_bytes(PRODUCER, env!("CARGO_PKG_VERSION")))
}

/// `<stem>.<ext>`, keeping any dots already in the stem (`models/mnist.int8` → `.onnx`).
pub fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", stem.display()))
}

/// The last component of `stem`, the card's `name`.
pub fn stem_name(stem: &Path) -> String {
    stem.file_name()
        .map_or("model".into(), |n| n.to_string_lossy().to_string())
}

/// Creates the parent directory of `path` if needed.
pub fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

/// Writes `<stem>.onnx`; returns its path.
pub fn write_onnx(stem: &Path, onnx: &[u8]) -> Result<PathBuf> {
    let path = with_ext(stem, "onnx");
    std::fs::write(&path, onnx).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes `<stem>.card.json`; returns its path.
pub fn write_card(stem: &Path, card: &ModelCard) -> Result<PathBuf> {
    let path = with_ext(stem, "card.json");
    std::fs::write(&path, card.to_json()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
