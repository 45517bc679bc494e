//! The ort engine (onnxruntime, feature `ort`) against tract on every shipped model: the same
//! seeds give the same masks, so every shipped and bundle frame gets the same verdict and
//! class through both engines and its measures agree within a tolerance (float models 1e-5;
//! the int8 models are stated below). Needs the library `scripts/setup-ort.sh` installs
//! (the test command runs it); a missing library fails the test, it does not skip.
#![cfg(feature = "ort")]

mod common;

use std::path::PathBuf;

use common::{pngs, root};
use mcgate::engine::{Engine, OrtOptions};
use mcgate::gate::{Gate, Seeds};
use mcgate::input::frame::{decode_file, Frame};
use mcgate::model::Model;
use mcgate::score::verdict::Decision;

fn ort() -> Engine {
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/libonnxruntime.so"));
    assert!(
        library.exists(),
        "{} is missing: run scripts/setup-ort.sh",
        library.display()
    );
    Engine::Ort(OrtOptions {
        library: Some(library),
        threads: 1,
        provider: Default::default(),
    })
}

/// Gates `frames` with `stem` through both engines (seed per frame from 7, the card's T and
/// threshold): same verdicts and classes, MI and predictive entropy within `tolerance`
/// relative to the value (absolute below 1: float32 rounds relative to the magnitude).
/// Returns (frames rejected, the largest MI and entropy differences, frames whose measures
/// differ by more than float rounding, 1e-5 relative).
fn same_answers(stem: &str, frames: &[PathBuf], tolerance: f64) -> (usize, [f64; 2], usize) {
    let path = root().join("models").join(stem);
    let tract = Model::load_from(&path).unwrap();
    let onnxruntime = Model::load_from_with(&path, &ort()).unwrap();
    assert!(onnxruntime
        .site_paths()
        .iter()
        .all(|p| !matches!(p, mcgate::engine::SitePath::Sparse { .. })));
    let samples = tract.card.default_samples;
    let threshold = tract.card.mi_threshold().unwrap();
    let gate = |m: &Model| Gate::new(m, samples, threshold, Seeds::PerFrame(7)).unwrap();
    let (mut a, mut b) = (gate(&tract), gate(&onnxruntime));
    let (mut rejected, mut worst, mut beyond_rounding) = (0, [0.0f64; 2], 0);
    for (index, path) in frames.iter().enumerate() {
        let frame = Frame::new(
            index as u64,
            path.display().to_string(),
            decode_file(path).unwrap(),
        );
        let (ra, rb) = (a.score(&frame), b.score(&frame));
        let source = &frame.source;
        assert_eq!(
            ra.verdict.decision(),
            rb.verdict.decision(),
            "{stem} {source}"
        );
        let (ma, mb) = (ra.measures.unwrap(), rb.measures.unwrap());
        assert_eq!(ma.predicted_class, mb.predicted_class, "{stem} {source}");
        let d = (ma.mutual_information - mb.mutual_information).abs();
        let e = (ma.predictive_entropy - mb.predictive_entropy).abs();
        let within =
            |tolerance: f64, diff: f64, value: f64| diff <= tolerance * value.abs().max(1.0);
        let both = |tolerance| {
            within(tolerance, d, ma.mutual_information)
                && within(tolerance, e, ma.predictive_entropy)
        };
        beyond_rounding += !both(1e-5) as usize;
        assert!(
            both(tolerance),
            "{stem} {source}: MI {} tract, {} ort; entropy {} and {}",
            ma.mutual_information,
            mb.mutual_information,
            ma.predictive_entropy,
            mb.predictive_entropy
        );
        worst = [worst[0].max(d), worst[1].max(e)];
        rejected += (ra.verdict.decision() == Decision::Reject) as usize;
    }
    (rejected, worst, beyond_rounding)
}

/// [`same_answers`], checked to hold both verdicts (so the comparison is not all-pass
/// against all-pass) and printed.
fn parity(stem: &str, frames: &[PathBuf], tolerance: f64) -> (usize, [f64; 2], usize) {
    let answers = same_answers(stem, frames, tolerance);
    let (rejected, [mi, entropy], beyond) = answers;
    assert!(
        rejected > 0 && rejected < frames.len(),
        "{stem}: {answers:?}"
    );
    eprintln!(
        "{stem}: {} frames, {rejected} rejected; largest difference MI {mi:.1e}, \
         entropy {entropy:.1e}; {beyond} frames beyond float rounding",
        frames.len()
    );
    answers
}

/// Every how many digit frames the float models' test takes: `MCGATE_PARITY_EVERY` (default
/// 1, all 513). Under qemu-user all of them take hours (scripts/arm-ort-check.sh takes every
/// 8th).
fn every() -> usize {
    std::env::var("MCGATE_PARITY_EVERY")
        .ok()
        .map(|v| v.parse().expect("MCGATE_PARITY_EVERY is a whole number"))
        .unwrap_or(1)
}

#[test]
fn float_models_give_tracts_answers_through_onnxruntime() {
    let digits: Vec<PathBuf> = pngs(&["samples/mnist", "bundles/mnist"])
        .into_iter()
        .step_by(every())
        .collect();
    for stem in [
        "mnist",
        "fashion",
        "mnist-ensemble",
        "mnist-robust",
        "fashion-robust",
    ] {
        parity(stem, &digits, 1e-5);
    }
    let photos = pngs(&["samples/photos", "bundles/lite0-imagenet"]);
    parity("lite0-imagenet", &photos, 1e-5);
}

/// The int8 graphs round activations to u8 levels; where a value falls on a rounding tie
/// the two engines may land one level apart (onnxruntime's kernels and tract's round ties
/// differently), which moves that sample's probabilities by more than float rounding. So:
/// verdicts and classes exactly, measures within float rounding on all but 1 % of the
/// frames and within 1e-2 nats on those (measured: 4 of 513 frames of mnist-robust.int8,
/// the largest 3.4e-3; none of the other three models').
#[test]
fn int8_models_give_tracts_answers_through_onnxruntime() {
    let digits = pngs(&["samples/mnist", "bundles/mnist"]);
    for stem in [
        "mnist.int8",
        "fashion.int8",
        "mnist-robust.int8",
        "fashion-robust.int8",
    ] {
        let answers = parity(stem, &digits, 1e-2);
        assert!(answers.2 <= digits.len() / 100, "{stem}: {answers:?}");
    }
}

#[test]
fn a_missing_library_is_one_line_naming_the_path() {
    let engine = Engine::Ort(OrtOptions {
        library: Some(root().join("no/such/libonnxruntime.so")),
        threads: 1,
        provider: Default::default(),
    });
    let err = engine.ready().unwrap_err();
    assert!(err.contains("no/such/libonnxruntime.so"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// Through the binary: `--engine ort` gives tract's verdict lines (same `--seed`), and the
/// settings it cannot honour are one-line usage errors (exit 2; reliability row 115).
#[test]
fn the_binary_gates_with_either_engine_alike_and_refuses_what_it_cannot_load() {
    let stem = root().join("models/mnist");
    let stem = stem.to_str().unwrap();
    let sample = root().join("samples/mnist");
    let sample = sample.to_str().unwrap();
    let Engine::Ort(OrtOptions {
        library: Some(library),
        ..
    }) = ort()
    else {
        unreachable!()
    };
    let library = library.to_str().unwrap();
    let base = ["gate", stem, sample, "--seed", "3", "--no-latency"];
    let tract = common::mcgate(&base);
    let with_ort: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--engine", "ort", "--ort-library", library])
        .collect();
    let onnxruntime = common::mcgate(&with_ort);
    assert_eq!(tract.status.code(), Some(0), "{}", common::stderr(&tract));
    assert_eq!(
        onnxruntime.status.code(),
        Some(0),
        "{}",
        common::stderr(&onnxruntime)
    );
    let (a, b) = (common::lines(&tract), common::lines(&onnxruntime));
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    for (x, y) in a.iter().zip(&b) {
        for key in ["source", "verdict", "class", "seed"] {
            assert_eq!(x[key], y[key], "{key}: {x} / {y}");
        }
    }

    // validate, info and calibrate take the engine too: the bundle passes, the plan is
    // the whole graph, and the same seed calibrates the same threshold.
    let bundle = root().join("bundles/mnist");
    let bundle = bundle.to_str().unwrap();
    let ort_flags = ["--engine", "ort", "--ort-library", library];
    let args: Vec<&str> = ["validate", stem, bundle, "--runs", "1"]
        .into_iter()
        .chain(ort_flags)
        .collect();
    let out = common::mcgate(&args);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let args: Vec<&str> = ["info", stem].into_iter().chain(ort_flags).collect();
    let out = common::mcgate(&args);
    assert!(String::from_utf8_lossy(&out.stdout).contains("the ort engine runs the whole graph"));
    let dir = tempfile::tempdir().unwrap();
    let clean = root().join("bundles/mnist/clean");
    let threshold = |engine: &[&str]| {
        let copy = dir.path().join(format!("m{}", engine.len()));
        for ext in ["onnx", "card.json"] {
            std::fs::copy(
                root().join(format!("models/mnist.{ext}")),
                copy.with_extension(ext),
            )
            .unwrap();
        }
        let copy = copy.to_str().unwrap().to_owned();
        let args: Vec<&str> = ["calibrate", &copy, clean.to_str().unwrap(), "--seed", "1"]
            .into_iter()
            .chain(["--fpr", "0.1"])
            .chain(engine.iter().copied())
            .collect();
        let out = common::mcgate(&args);
        assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
        let card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{copy}.card.json")).unwrap()).unwrap();
        card["threshold"]["mutual_information"].as_f64().unwrap()
    };
    let (t, o) = (threshold(&[]), threshold(&ort_flags));
    assert!((t - o).abs() < 1e-6, "tract {t}, ort {o}");

    let out = common::mcgate(&[
        "gate",
        stem,
        sample,
        "--engine",
        "ort",
        "--ort-library",
        "/no/such/libonnxruntime.so",
    ]);
    common::assert_one_line_error(&out, 2, "/no/such/libonnxruntime.so");
    let out = common::mcgate(&[
        "gate",
        stem,
        sample,
        "--engine",
        "ort",
        "--ort-threads",
        "0",
    ]);
    common::assert_one_line_error(&out, 2, "--ort-threads must be at least 1");
    // The PyPI wheel's library has no CUDA: refused, not run on the CPU instead.
    let args: Vec<&str> = ["gate", stem, sample, "--ort-provider", "cuda"]
        .into_iter()
        .chain(ort_flags)
        .collect();
    let out = common::mcgate(&args);
    common::assert_one_line_error(&out, 2, "has no CUDAExecutionProvider");
}
