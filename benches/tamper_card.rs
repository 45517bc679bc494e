//! A gate on a copy of a shipped model whose card has tamper checks (`calibrate --tamper`'s
//! rule) set on a folder of clean frames and the bench's own frame, for the benches to time
//! the checks beside the MI-only gate.

use std::path::Path;

use mcgate::contract::card::SCHEMA_V3;
use mcgate::gate::{Gate, Seeds};
use mcgate::input::frame::{decode_file, Frame};
use mcgate::model::Model;
use mcgate::score::tamper::{self, TamperMeter};

/// The gate at T=20, and the directory that holds the copy of the model at `stem`. `frame`
/// passes the checks (it is among the frames they are set on), so the model runs after them.
pub fn gate_with_tamper(stem: &Path, clean_dir: &Path, frame: &Frame) -> (tempfile::TempDir, Gate) {
    let dir = tempfile::tempdir().unwrap();
    let name = stem.file_name().unwrap().to_string_lossy().to_string();
    std::fs::copy(
        stem.with_file_name(format!("{name}.onnx")),
        dir.path().join("m.onnx"),
    )
    .unwrap();
    let mut meter = TamperMeter::new();
    let measures: Vec<_> = std::fs::read_dir(clean_dir)
        .unwrap()
        .filter_map(|e| decode_file(&e.unwrap().path()).ok())
        .chain([frame.image.clone()])
        .map(|image| meter.measure(&image))
        .collect();
    let mut card = Model::load_from(stem).unwrap().card;
    card.tamper = Some(tamper::calibrate(&measures).expect("tamper checks"));
    card.schema = SCHEMA_V3.into();
    std::fs::write(dir.path().join("m.card.json"), card.to_json()).unwrap();
    let model = Model::load_from(&dir.path().join("m")).unwrap();
    let mut gate = Gate::new(&model, 20, 0.1, Seeds::PerFrame(1)).unwrap();
    assert!(
        gate.score(frame).measures.is_some(),
        "the frame passes the checks"
    );
    (dir, gate)
}
