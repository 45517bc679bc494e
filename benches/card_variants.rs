//! Gates on a copy of a shipped model whose card has what `calibrate` adds beside the MI
//! threshold — tamper checks (`--tamper`'s rule) and fused signals (`--signals mi,entropy`) —
//! set on a folder of clean frames and the bench's own frame, for the benches to time them
//! beside the MI-only gate.

use std::path::Path;

use mcgate::contract::card::{Fused, FusedSignal, Fusion, Signal, SCHEMA_V3};
use mcgate::gate::{Gate, Seeds};
use mcgate::input::frame::{decode_file, Frame};
use mcgate::model::Model;
use mcgate::score::fusion::signal_value;
use mcgate::score::tamper::{self, TamperMeter};

/// What the card holds besides the MI threshold.
#[derive(Clone, Copy, PartialEq)]
pub enum Added {
    /// Nothing: the MI-only card, on a copy as the others are (a control).
    #[allow(dead_code)]
    Nothing,
    /// Tamper checks.
    Tamper,
    /// Tamper checks and MI fused with entropy (Bonferroni, 5 %).
    TamperAndFused,
    /// Tamper checks and MI fused with feature density (Bonferroni, 5 %; a model with a
    /// `log_density` output; the photo bench has none).
    #[allow(dead_code)]
    TamperAndDensity,
}

/// The gate at T=20, and the directory that holds the copy of the model at `stem`. `frame`
/// passes the checks (it is among the frames they are set on), so the model runs after them.
pub fn gate_with(
    stem: &Path,
    clean_dir: &Path,
    frame: &Frame,
    added: Added,
) -> (tempfile::TempDir, Gate) {
    let dir = tempfile::tempdir().unwrap();
    let name = stem.file_name().unwrap().to_string_lossy().to_string();
    std::fs::copy(
        stem.with_file_name(format!("{name}.onnx")),
        dir.path().join("m.onnx"),
    )
    .unwrap();
    let images: Vec<_> = walk(clean_dir)
        .iter()
        .filter_map(|path| decode_file(path).ok())
        .chain([frame.image.clone()])
        .collect();
    let mut meter = TamperMeter::new();
    let measures: Vec<_> = images.iter().map(|image| meter.measure(image)).collect();
    let model = Model::load_from(stem).unwrap();
    let mut card = model.card.clone();
    if added != Added::Nothing {
        card.tamper = Some(tamper::calibrate(&measures, 0).expect("tamper checks"));
        card.schema = SCHEMA_V3.into();
    }
    let signals = match added {
        Added::Nothing | Added::Tamper => vec![],
        Added::TamperAndFused => vec![Signal::Mi, Signal::Entropy],
        Added::TamperAndDensity => vec![Signal::Mi, Signal::Density],
    };
    if !signals.is_empty() {
        let mut plain = Gate::new(&model, 20, 0.1, Seeds::PerFrame(7)).unwrap();
        let scored: Vec<_> = images
            .into_iter()
            .enumerate()
            .filter_map(|(i, image)| {
                let report = plain.score(&Frame::new(i as u64, "clean", image));
                report.measures.map(|m| (m, report.log_density))
            })
            .collect();
        card.fusion = Some(Fused {
            rule: Fusion::Bonferroni,
            target_fpr: 0.05,
            signals: signals
                .into_iter()
                .map(|name| FusedSignal {
                    name,
                    clean: scored
                        .iter()
                        .map(|(m, density)| signal_value(name, m, *density))
                        .collect(),
                })
                .collect(),
            holdout: None,
        });
    }
    std::fs::write(dir.path().join("m.card.json"), card.to_json()).unwrap();
    let model = Model::load_from(&dir.path().join("m")).unwrap();
    let mut gate = Gate::new(&model, 20, 0.1, Seeds::PerFrame(1)).unwrap();
    assert!(
        gate.score(frame).measures.is_some(),
        "the frame passes the checks"
    );
    assert_eq!(
        gate.fused().is_some(),
        !matches!(added, Added::Nothing | Added::Tamper)
    );
    (dir, gate)
}

/// Every file under `dir`, in name order.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The ort engine for the benches (feature `ort`): the library `ORT_DYLIB_PATH` names, else
/// the one `scripts/setup-ort.sh` links into `.venv`; one intra-op thread (per core).
#[cfg(feature = "ort")]
pub fn ort_engine(root: &Path) -> mcgate::engine::Engine {
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/libonnxruntime.so"));
    mcgate::engine::Engine::Ort(mcgate::engine::OrtOptions {
        library: Some(library),
        threads: 1,
        provider: Default::default(),
    })
}
