//! A copy of a shipped model whose card has tamper checks (`calibrate --tamper`'s rule) set on
//! the given clean frames, for the benches to time the checks beside the MI-only gate.

use std::path::Path;

use image::DynamicImage;
use mcgate::contract::card::SCHEMA_V3;
use mcgate::model::Model;
use mcgate::score::tamper::{self, TamperMeter};

/// The copy (kept alive by the returned directory) of the model at `stem`.
pub fn with_tamper(stem: &Path, clean: &[DynamicImage]) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let name = stem.file_name().unwrap().to_string_lossy().to_string();
    std::fs::copy(
        stem.with_file_name(format!("{name}.onnx")),
        dir.path().join("m.onnx"),
    )
    .unwrap();
    let mut card = Model::load_from(stem).unwrap().card;
    let mut meter = TamperMeter::new();
    let measures: Vec<_> = clean.iter().map(|f| meter.measure(f)).collect();
    card.tamper = Some(tamper::calibrate(&measures).expect("tamper checks"));
    card.schema = SCHEMA_V3.into();
    std::fs::write(dir.path().join("m.card.json"), card.to_json()).unwrap();
    let model = Model::load_from(&dir.path().join("m")).unwrap();
    (dir, model)
}
