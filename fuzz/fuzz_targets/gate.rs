//! The whole gate with the shipped (built-in) MNIST model on an arbitrary byte stream, read as
//! raw 28×28 gray frames (first byte even) or as one image file (odd): every frame gets
//! exactly one report, written as one JSON line, and no frame is accepted unless it was
//! scored with a mutual information at or below the threshold (fail closed).
//!
//! Image files are decoded within 1 MiB (the gate's bound is 512 MiB), as in the
//! `decode_preprocess` target: large blank images cost time, not coverage.
#![no_main]

use std::path::Path;
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use mcgate::gate::{Gate, Seeds};
use mcgate::score::report::Report;
use mcgate::input::frame::{
    decode_bytes_within, DecodeLimits, Frame, PixelFormat, Raw, Unreadable,
};
use mcgate::model::Model;
use mcgate::output::report::{Format, ReportWriter};
use mcgate::score::verdict::Decision;

/// T = 4 instead of the card's 20: the same code path at five times the executions.
const SAMPLES: usize = 4;

const LIMITS: DecodeLimits = DecodeLimits {
    max_alloc: 1 << 20,
    ..DecodeLimits::FRAMES
};

static GATE: Mutex<Option<Gate>> = Mutex::new(None);

/// (A reject always carries its reason: `Verdict::Reject(RejectReason)`, by type.)
fn check(report: &Report, threshold: f64) {
    if report.verdict.decision() == Decision::Accept {
        let m = report.measures.expect("an accepted frame was scored");
        assert!(
            m.mutual_information <= threshold,
            "accepted above threshold: {m:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, stream @ ..] = data else {
        return;
    };
    let mut guard = GATE.lock().unwrap();
    let gate = guard.get_or_insert_with(|| {
        let model = Model::load_from(Path::new("builtin:mnist")).expect("built-in model");
        let threshold = model
            .card
            .mi_threshold()
            .expect("the shipped card has a threshold");
        Gate::new(&model, SAMPLES, threshold, Seeds::PerFrame(1)).expect("gate")
    });
    let items: Vec<Result<Frame, Unreadable>> = if mode & 1 == 0 {
        Raw::new(stream, 28, 28, PixelFormat::Gray)
            .unwrap()
            .collect()
    } else {
        vec![decode_bytes_within(stream, LIMITS)
            .map(|image| Frame::new(0, "fuzz", image))
            .map_err(|reason| Unreadable {
                index: 0,
                source: "fuzz".into(),
                reason,
            })]
    };
    let mut out = Vec::new();
    let mut writer = ReportWriter::new(&mut out, Format::Jsonl, false, gate.card(), gate.samples());
    for item in &items {
        let report = match item {
            Ok(frame) => gate.score(frame),
            Err(u) => gate.unreadable(u),
        };
        check(&report, gate.threshold());
        writer.write(&report).expect("writing to memory");
    }
    drop(writer);
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&out)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), items.len(), "one line per frame");
});
