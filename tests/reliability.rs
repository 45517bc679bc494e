//! The bad-input table of docs/RELIABILITY.md: one test per row. Every case must end in a
//! one-line error with its documented exit code, or in a `reject` verdict with a reason —
//! never a panic, and never an accepted frame that was not scored.
//!
//! Model cases use a tiny model built here with the library's ONNX builder (x [1,C,2,2] →
//! Flatten → Mul mask_0 [T,4C] → Gemm 4C→3 → Softmax), so each row can break one thing.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mcgate::contract::onnx::{f32_tensor, i64_tensor, int, ints, Dim, Graph};

/// Knobs for the tiny model.
#[derive(Clone, Copy, Default)]
struct Variant {
    no_mask: bool,
    extra_input: bool,
    nan_weight: bool,
    fixed_t: bool,
    /// Three input channels (an RGB model) instead of one.
    rgb: bool,
    /// All weights 0: the logits are the bias whatever the masks, so MI is always 0.
    zero_weights: bool,
    /// Weights of 1e-9: the samples differ only by float rounding (MI of noise, not 0).
    tiny_weights: bool,
    /// Weights of 1e-3: the samples differ beyond float rounding (probabilities by ~1e-4),
    /// but MI stays near 1e-7 nats on every frame.
    small_weights: bool,
    /// The masked values expanded by 100,000 along a new axis and averaged back: a tensor of
    /// T × 400,000 values, which at T = 4096 is 1.6 G values.
    expand_by_t: bool,
    /// A second output `log_density` [1, 1]: minus the sum of the unmasked pixels (a stand-in
    /// for a feature density: bright frames are "far").
    density: bool,
}

fn tiny_onnx(v: Variant) -> Vec<u8> {
    let t = if v.fixed_t {
        Dim::Fixed(4)
    } else {
        Dim::Samples
    };
    let channels = if v.rgb { 3 } else { 1 };
    let features = 4 * channels;
    let mut weights: Vec<f32> = (0..3 * features)
        .map(|i| (i as f32 - 6.0) / (4.0 * channels as f32))
        .collect();
    if v.nan_weight {
        weights[0] = f32::NAN;
    }
    if v.zero_weights {
        weights.fill(0.0);
    }
    if v.tiny_weights {
        weights.iter_mut().for_each(|w| *w *= 1e-9);
    }
    if v.small_weights {
        weights.iter_mut().for_each(|w| *w *= 1e-3);
    }
    let mut g = Graph::new("tiny");
    g.input(
        "x",
        &[
            Dim::Fixed(1),
            Dim::Fixed(channels),
            Dim::Fixed(2),
            Dim::Fixed(2),
        ],
    );
    if !v.no_mask {
        g.input("mask_0", &[t, Dim::Fixed(features)]);
    }
    if v.extra_input {
        g.input("y", &[Dim::Fixed(1)]);
    }
    let out_t = if v.no_mask { Dim::Fixed(1) } else { t };
    g.output("probs", &[out_t, Dim::Fixed(3)])
        .constant(f32_tensor("w", &[3, features], &weights))
        .constant(f32_tensor("b", &[3], &[0.1, 0.0, -0.1]))
        .node("Flatten", &["x"], "flat", vec![]);
    let gemm_input = match (v.no_mask, v.expand_by_t) {
        (true, _) => "flat",
        (false, false) => "drop",
        (false, true) => "averaged",
    };
    if !v.no_mask {
        g.node("Mul", &["flat", "mask_0"], "drop", vec![]);
    }
    if v.expand_by_t {
        g.constant(i64_tensor("axis2", &[1], &[2]))
            .constant(i64_tensor("wide", &[3], &[1, 1, 100_000]))
            .node("Unsqueeze", &["drop", "axis2"], "column", vec![])
            .node("Expand", &["column", "wide"], "expanded", vec![])
            .node(
                "ReduceMean",
                &["expanded"],
                "averaged",
                vec![ints("axes", &[2]), int("keepdims", 0)],
            );
    }
    g.node(
        "Gemm",
        &[gemm_input, "w", "b"],
        "logits",
        vec![int("transB", 1)],
    )
    .node("Softmax", &["logits"], "probs", vec![]);
    if v.density {
        g.output("log_density", &[Dim::Fixed(1), Dim::Fixed(1)])
            .constant(i64_tensor("axis1", &[1], &[1]))
            .node(
                "ReduceSum",
                &["flat", "axis1"],
                "sum",
                vec![int("keepdims", 1)],
            )
            .node("Neg", &["sum"], "log_density", vec![]);
    }
    g.to_bytes("", "")
}

fn tiny_card(onnx: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "schema": "mcgate.card/1",
        "name": "tiny",
        "classes": ["a", "b", "c"],
        "input": {"name": "x", "shape": [1, 1, 2, 2], "layout": "NCHW", "scale": 1.0 / 255.0, "mean": [0.0], "std": [1.0]},
        "dropout_sites": [{"input": "mask_0", "p": 0.5, "shape": [4]}],
        "output": {"name": "probs"},
        "default_samples": 8,
        "threshold": {"mutual_information": 0.5, "method": "test", "target_fpr": null, "provisional": true},
        "metrics": {"test_accuracy_deterministic": 0.0, "test_accuracy_mc": 0.0, "mc_samples": 8, "test_images": 0},
        "onnx_sha256": mcgate::contract::card::sha256_hex(onnx),
        "provenance": {"dataset": "none", "train_images": 0, "epochs": 0, "batch_size": 0, "optimizer": "none",
                       "seed": 0, "device": "cpu", "train_seconds": 0.0, "source_commit": "test"}
    })
}

/// A model directory: `m.onnx` from `onnx`, `m.card.json` from the card after `edit`.
struct TinyModel {
    dir: tempfile::TempDir,
}

impl TinyModel {
    fn new(onnx: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> TinyModel {
        let dir = tempfile::tempdir().unwrap();
        let mut card = tiny_card(onnx);
        edit(&mut card);
        std::fs::write(dir.path().join("m.onnx"), onnx).unwrap();
        std::fs::write(dir.path().join("m.card.json"), card.to_string()).unwrap();
        TinyModel { dir }
    }
    fn good() -> TinyModel {
        Self::new(&tiny_onnx(Variant::default()), |_| {})
    }
    fn stem(&self) -> String {
        self.dir.path().join("m").to_string_lossy().to_string()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// A 2×2 gray PNG frame in the model's directory.
    fn frame(&self) -> String {
        let p = self.path("frame.png");
        image::GrayImage::from_raw(2, 2, vec![0, 80, 160, 240])
            .unwrap()
            .save(&p)
            .unwrap();
        p.to_string_lossy().to_string()
    }
}

/// Gates one good frame with a broken model: exit 3, one error line, nothing on stdout.
fn assert_model_refused(m: &TinyModel, needle: &str) {
    let frame = m.frame();
    let out = mcgate(&["gate", &m.stem(), &frame, "--seed", "1"]);
    assert_one_line_error(&out, 3, needle);
    assert!(
        out.stdout.is_empty(),
        "a frame was gated by a refused model"
    );
}

#[test]
fn the_tiny_model_itself_gates_frames() {
    let m = TinyModel::good();
    let frame = m.frame();
    let out = mcgate(&["gate", &m.stem(), &frame, "--seed", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(lines(&out)[0]["measures"]["mutual_information"].is_f64());
}

// --- model and card rows (exit 3) ---

#[test]
fn onnx_missing() {
    let m = TinyModel::good();
    std::fs::remove_file(m.path("m.onnx")).unwrap();
    assert_model_refused(&m, "cannot read model");
}

#[test]
fn onnx_empty() {
    let m = TinyModel::new(b"", |_| {});
    assert_model_refused(&m, "not a loadable ONNX model");
}

#[test]
fn onnx_truncated() {
    let full = tiny_onnx(Variant::default());
    let m = TinyModel::new(&full[..full.len() / 2], |_| {});
    assert_model_refused(&m, "not a loadable ONNX model");
}

#[test]
fn onnx_garbage() {
    let m = TinyModel::new(b"\x08\x08this is not protobuf at all\xff\xff\xff", |_| {});
    assert_model_refused(&m, "model");
}

#[test]
fn onnx_without_mask_inputs() {
    let m = TinyModel::new(
        &tiny_onnx(Variant {
            no_mask: true,
            ..Default::default()
        }),
        |_| {},
    );
    assert_model_refused(&m, "graph has no input named mask_0");
}

#[test]
fn onnx_with_an_unknown_input() {
    let m = TinyModel::new(
        &tiny_onnx(Variant {
            extra_input: true,
            ..Default::default()
        }),
        |_| {},
    );
    assert_model_refused(&m, "graph input y is not in the card");
}

#[test]
fn onnx_mask_without_symbolic_t() {
    let m = TinyModel::new(
        &tiny_onnx(Variant {
            fixed_t: true,
            ..Default::default()
        }),
        |_| {},
    );
    assert_model_refused(&m, "mask input mask_0 is [4, 4]");
}

#[test]
fn card_missing() {
    let m = TinyModel::good();
    std::fs::remove_file(m.path("m.card.json")).unwrap();
    assert_model_refused(&m, "cannot read model card");
}

#[test]
fn card_malformed_json() {
    let m = TinyModel::good();
    std::fs::write(m.path("m.card.json"), b"{\"schema\": \"mcgate.card/1\", ").unwrap();
    assert_model_refused(&m, "not valid JSON");
}

#[test]
fn card_wrong_schema_version() {
    let m = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
        c["schema"] = "mcgate.card/4".into()
    });
    assert_model_refused(
        &m,
        "schema is \"mcgate.card/4\", this build reads \"mcgate.card/1\", \"mcgate.card/2\" and \"mcgate.card/3\"",
    );
}

/// A converted model before `mcgate calibrate`: schema 2, `threshold: null`. The gate has no
/// threshold to reject by, so it refuses to start unless one is given.
#[test]
fn card_without_a_threshold_is_refused_unless_one_is_given() {
    let m = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
        c["schema"] = "mcgate.card/2".into();
        c["threshold"] = serde_json::Value::Null;
    });
    assert_model_refused(&m, "has no MI threshold yet: calibrate it");
    let frame = m.frame();
    let out = mcgate(&[
        "gate",
        &m.stem(),
        &frame,
        "--seed",
        "1",
        "--threshold",
        "0.3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["threshold"], 0.3);

    // Schema 1 has no uncalibrated cards.
    let m = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
        c["threshold"] = serde_json::Value::Null;
    });
    assert_model_refused(&m, "needs schema \"mcgate.card/2\"");
}

/// `calibrate` on the tiny uncalibrated model: the threshold is the (1 − fpr) quantile of the
/// MI that `gate` then reports for the same frames and seed, so at most ⌊fpr·n⌋ are rejected.
#[test]
fn calibrate_sets_the_quantile_threshold_and_refuses_too_few_or_unreadable_frames() {
    let m = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
        c["schema"] = "mcgate.card/2".into();
        c["threshold"] = serde_json::Value::Null;
    });
    let stem = m.stem();
    let card_path = m.path("m.card.json");
    let before = std::fs::read(&card_path).unwrap();
    let frames = |n: usize| -> Vec<u8> { (0..4 * n).map(|i| (i * 37 % 251) as u8).collect() };
    let raw = ["-", "--width", "2", "--height", "2", "--seed", "7"];
    let args = |cmd: &'static str, extra: &[&'static str]| -> Vec<String> {
        let mut v = vec![cmd.to_string(), stem.clone()];
        v.extend(raw.iter().chain(extra).map(|s| s.to_string()));
        v
    };
    let run = |a: Vec<String>, input: &[u8]| {
        mcgate_stdin(&a.iter().map(String::as_str).collect::<Vec<_>>(), input)
    };

    // A model whose samples never disagree cannot be calibrated (a threshold of 0 would pass
    // everything).
    let flat = TinyModel::new(
        &tiny_onnx(Variant {
            zero_weights: true,
            ..Default::default()
        }),
        |c| {
            c["schema"] = "mcgate.card/2".into();
            c["threshold"] = serde_json::Value::Null;
        },
    );
    let flat_stem = flat.stem();
    let mut flat_args = vec!["calibrate", flat_stem.as_str()];
    flat_args.extend(raw);
    let out = mcgate_stdin(&flat_args, &frames(120));
    assert_one_line_error(&out, 4, "below 1e-4: on these 120 frames");

    // Too few frames for 5 %: refused, the card untouched.
    let out = run(args("calibrate", &["--fpr", "0.05"]), &frames(30));
    assert_one_line_error(
        &out,
        4,
        "30 frames are too few for --fpr 0.05: calibrating needs at least 100",
    );
    assert_eq!(std::fs::read(&card_path).unwrap(), before);
    // A truncated frame among them: refused, the card untouched.
    let mut cut = frames(120);
    cut.pop();
    let out = run(args("calibrate", &["--fpr", "0.05"]), &cut);
    assert_one_line_error(&out, 4, "could not be scored: truncated raw frame");
    assert_eq!(std::fs::read(&card_path).unwrap(), before);
    let out = run(args("calibrate", &["--fpr", "1.5"]), &frames(120));
    assert_one_line_error(&out, 2, "--fpr must be in (0, 1), got 1.5");

    let out = run(args("calibrate", &["--fpr", "0.05"]), &frames(120));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&card_path).unwrap()).unwrap();
    let threshold = card["threshold"]["mutual_information"].as_f64().unwrap();
    assert_eq!(card["threshold"]["calibration"]["frames"], 120);
    assert_eq!(card["threshold"]["calibration"]["seed"], 7);
    assert_eq!(card["threshold"]["target_fpr"], 0.05);

    // The gate, same frames and seed, no --threshold: the same MIs, and the threshold is
    // their quantile: the 7th largest (⌊0.05 · 120⌋ = 6 may lie above it).
    let out = run(args("gate", &[]), &frames(120));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = lines(&out);
    let mut mi: Vec<f64> = lines
        .iter()
        .map(|l| l["measures"]["mutual_information"].as_f64().unwrap())
        .collect();
    mi.sort_by(f64::total_cmp);
    assert_eq!(mi[120 - 1 - 6], threshold);
    let rejected = lines.iter().filter(|l| l["verdict"] == "reject").count();
    assert!(rejected <= 6, "{rejected} of 120 clean frames rejected");
    assert!(String::from_utf8_lossy(&out.stderr).contains("120 frames"));
}

#[test]
fn card_unknown_field() {
    let m = TinyModel::new(&tiny_onnx(Variant::default()), |c| c["surprise"] = 1.into());
    assert_model_refused(&m, "unknown field `surprise`");
}

#[test]
fn card_sha256_mismatch() {
    let m = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
        c["onnx_sha256"] = "a".repeat(64).into()
    });
    assert_model_refused(&m, "SHA-256 is");
}

#[test]
fn card_site_name_not_in_graph() {
    let m = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
        c["dropout_sites"][0]["input"] = "mask_7".into()
    });
    assert_model_refused(&m, "graph has no input named mask_7");
}

#[test]
fn card_site_shape_not_the_graphs() {
    let m = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
        c["dropout_sites"][0]["shape"] = serde_json::json!([5])
    });
    assert_model_refused(
        &m,
        "mask input mask_0 is [T, 4] in the graph, the card needs [T, 5]",
    );
}

#[test]
fn card_p_outside_unit_interval() {
    for p in [1.0, -0.1, 1.5] {
        let m = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
            c["dropout_sites"][0]["p"] = p.into()
        });
        assert_model_refused(&m, "is outside [0, 1)");
    }
}

#[test]
fn card_classes_not_the_outputs() {
    let m = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
        c["classes"] = serde_json::json!(["a", "b"])
    });
    assert_model_refused(&m, "output probs is F32 [T, 3], the card needs F32 [T, 2]");
}

// --- flags (exit 2) ---

#[test]
fn samples_zero_or_absurd() {
    let m = TinyModel::good();
    let frame = m.frame();
    for t in ["0", "100000"] {
        let out = mcgate(&["gate", &m.stem(), &frame, "-T", t]);
        assert_one_line_error(&out, 2, "samples (T) must be in 4..=4096");
    }
    let out = mcgate(&["gate", &m.stem(), &frame, "-T", "many"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_alarm_window() {
    let m = TinyModel::good();
    let frame = m.frame();
    let out = mcgate(&[
        "gate",
        &m.stem(),
        &frame,
        "--alarm-rejects",
        "9",
        "--alarm-window",
        "3",
    ]);
    assert_one_line_error(&out, 2, "alarm needs 1 <= k <= n <= 1024");
}

// --- frames (reject with a reason; exit 4 at the end) ---

/// Gates the tiny model's good frame plus `bad`, expects exit 4 and a reject for `bad`.
fn assert_frame_rejected(m: &TinyModel, bad: &Path, reason: &str) {
    let good = m.frame();
    let out = mcgate(&[
        "gate",
        &m.stem(),
        &good,
        bad.to_str().unwrap(),
        "--seed",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
    let r = lines(&out);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1]["verdict"], "reject");
    assert!(
        r[1]["measures"].is_null(),
        "an unscored frame carries no measures"
    );
    assert!(
        r[1]["reason"].as_str().unwrap().contains(reason),
        "{}",
        r[1]
    );
}

#[test]
fn frame_file_missing() {
    let m = TinyModel::good();
    assert_frame_rejected(&m, &m.path("nope.png"), "cannot read");
}

#[test]
fn frame_file_empty() {
    let m = TinyModel::good();
    std::fs::write(m.path("empty.png"), b"").unwrap();
    assert_frame_rejected(&m, &m.path("empty.png"), "empty file");
}

#[test]
fn frame_corrupt_png() {
    let m = TinyModel::good();
    let mut png = vec![];
    image::GrayImage::new(8, 8)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png.truncate(png.len() - 20);
    png[40] ^= 0xff;
    std::fs::write(m.path("bad.png"), &png).unwrap();
    assert_frame_rejected(&m, &m.path("bad.png"), "cannot decode");
}

#[test]
fn frame_corrupt_jpeg() {
    let m = TinyModel::good();
    std::fs::write(
        m.path("bad.jpg"),
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00garbage-after-header",
    )
    .unwrap();
    assert_frame_rejected(&m, &m.path("bad.jpg"), "cannot decode");
}

#[test]
fn frame_not_an_image() {
    let m = TinyModel::good();
    std::fs::write(m.path("notes.png"), b"just some text").unwrap();
    assert_frame_rejected(&m, &m.path("notes.png"), "not a PNG, JPEG or PNM image");
}

#[test]
fn frame_huge_declared_size_is_refused_unread() {
    // A PGM header declaring 100000×100000 pixels: over the per-side limit, never allocated.
    let m = TinyModel::good();
    std::fs::write(m.path("huge.pgm"), b"P5\n100000 100000\n255\n\x00\x00").unwrap();
    assert_frame_rejected(&m, &m.path("huge.pgm"), "cannot decode");
}

#[test]
fn frames_16_bit_palette_and_other_sizes_are_converted_and_scored() {
    let m = TinyModel::good();
    let wide16 = m.path("wide16.png");
    image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(7, 3, image::Luma([40000u16]))
        .save(&wide16)
        .unwrap();
    let rgb = m.path("rgb.png");
    image::RgbImage::from_pixel(5, 9, image::Rgb([10, 200, 30]))
        .save(&rgb)
        .unwrap();
    // A palette PNG, written with the png crate's indexed colour type.
    let palette = m.path("palette.png");
    {
        let file = std::fs::File::create(&palette).unwrap();
        let mut enc = png::Encoder::new(file, 2, 2);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![0, 0, 0, 255, 255, 255]);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[0, 1, 1, 0]).unwrap();
    }
    let out = mcgate(&[
        "gate",
        &m.stem(),
        wide16.to_str().unwrap(),
        rgb.to_str().unwrap(),
        palette.to_str().unwrap(),
        "--seed",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for r in lines(&out) {
        assert!(r["measures"]["mutual_information"].is_f64(), "{r}");
    }
}

/// `gate <stem> - --width 2 --height 2 --seed 1`: 2×2 raw frames on stdin.
fn raw_2x2_args(stem: &str) -> Vec<&str> {
    vec![
        "gate", stem, "-", "--width", "2", "--height", "2", "--seed", "1",
    ]
}

#[test]
fn raw_stream_truncated_mid_frame_and_empty() {
    let m = TinyModel::good();
    let stem = m.stem();
    let out = mcgate_stdin(&raw_2x2_args(&stem), &[1, 2, 3, 4, 5, 6]);
    assert_eq!(out.status.code(), Some(4));
    let r = lines(&out);
    assert_eq!(
        (r.len(), &r[1]["verdict"]),
        (2, &serde_json::json!("reject"))
    );
    assert!(r[1]["reason"]
        .as_str()
        .unwrap()
        .contains("truncated raw frame: 2 of 4 bytes"));

    let out = mcgate_stdin(
        &["gate", &m.stem(), "-", "--width", "2", "--height", "2"],
        &[],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("no frames to gate (stdin was empty)"));

    let out = mcgate_stdin(
        &["gate", &m.stem(), "-", "--width", "0", "--height", "2"],
        &[],
    );
    assert_one_line_error(&out, 2, "raw frame size 0x2");
}

/// The fail-open bug: without --pixel-format, raw frames were read as gray whatever the
/// model, so one RGB frame for a 3-channel model became three gray "frames", all gated.
#[test]
fn raw_frames_for_a_colour_model_are_read_in_its_channels() {
    let m = TinyModel::new(
        &tiny_onnx(Variant {
            rgb: true,
            ..Default::default()
        }),
        |card| {
            card["input"]["shape"] = serde_json::json!([1, 3, 2, 2]);
            card["input"]["mean"] = serde_json::json!([0.0, 0.0, 0.0]);
            card["input"]["std"] = serde_json::json!([1.0, 1.0, 1.0]);
            card["dropout_sites"][0]["shape"] = serde_json::json!([12]);
        },
    );
    let one_rgb_frame: Vec<u8> = (0..2 * 2 * 3).map(|i| (i * 20) as u8).collect();
    let stem = m.stem();
    let args = raw_2x2_args(&stem);
    let out = mcgate_stdin(&args, &one_rgb_frame);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = lines(&out);
    assert_eq!(r.len(), 1, "one RGB frame read as {} frames", r.len());
    assert!(r[0]["measures"]["mutual_information"].is_f64(), "{}", r[0]);

    // Told gray explicitly, the same bytes are three gray frames: the flag still rules.
    let mut gray = args.clone();
    gray.extend(["--pixel-format", "gray"]);
    let out = mcgate_stdin(&gray, &one_rgb_frame);
    assert_eq!(lines(&out).len(), 3, "{}", stderr(&out));
}

#[test]
fn nan_reaching_the_output_is_rejected() {
    let m = TinyModel::new(
        &tiny_onnx(Variant {
            nan_weight: true,
            ..Default::default()
        }),
        |_| {},
    );
    let frame = m.frame();
    let out = mcgate(&["gate", &m.stem(), &frame, "--seed", "1"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let r = &lines(&out)[0];
    assert_eq!(r["verdict"], "reject");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("model output is NaN"),
        "{r}"
    );
    // The sparse path would skip a NaN row whose activation is 0 (and pass the frame): the
    // layer takes the plain plan, and `info` says why.
    let out = mcgate(&["info", &m.stem()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("weights are not all finite"), "{text}");
}

// --- outputs (exit 5) ---

#[test]
fn output_directory_cannot_be_created() {
    let m = TinyModel::good();
    let frame = m.frame();
    std::fs::write(m.path("blocker"), b"").unwrap();
    let dir = m.path("blocker").join("sub");
    let out = mcgate(&[
        "gate",
        &m.stem(),
        &frame,
        "--annotate",
        dir.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, 5, "--annotate");
}

#[test]
fn stdout_on_a_full_disk() {
    let m = TinyModel::good();
    let frame = m.frame();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full exists on Linux");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcgate"))
        .args(["gate", &m.stem(), &frame, "--seed", "1"])
        .stdout(full)
        .output()
        .unwrap();
    assert_one_line_error(&out, 5, "cannot write report to stdout");
}

#[test]
fn accepted_frames_on_a_full_disk() {
    // A file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) fails writes past 64 bytes the way
    // a full disk does (EFBIG instead of ENOSPC, same code path); mounting a small filesystem
    // would need root. The PNG of a frame is larger than 64 bytes.
    let m = TinyModel::good();
    let frame = m.frame();
    let accepted = m.path("accepted");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcgate"));
    cmd.args(["gate", &m.stem(), &frame, &frame, "--seed", "1"])
        .args([
            "--threshold",
            "1.0",
            "--accepted",
            accepted.to_str().unwrap(),
        ]);
    limit_file_size(&mut cmd, 64);
    let out = cmd.output().unwrap();
    assert_one_line_error(&out, 5, "File too large");
    // The frame that could not be passed on is reported as a reject, and the gate stops.
    let lines = lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["verdict"], "reject");
    let reason = lines[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("accepted but not passed on"), "{reason}");
    let left: Vec<_> = std::fs::read_dir(&accepted).unwrap().collect();
    assert!(left.is_empty(), "no partial frame is left behind: {left:?}");
}

#[test]
fn a_blocked_consumer_back_pressures_the_gate() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let m = TinyModel::good();
    let frames = 5000;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcgate"))
        .args([
            "gate",
            &m.stem(),
            "-",
            "--width",
            "2",
            "--height",
            "2",
            "--seed",
            "1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&vec![128u8; frames * 4]);
    });
    // Nobody reads stdout: ~5000 lines (~2 MB) cannot fit the pipe, so a gate that
    // back-pressures is still running; one that buffered without bound would have finished.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the gate finished without its output being read"
    );
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    feeder.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(out.lines().count(), frames, "one line per frame, none lost");
    for (i, line) in out.lines().enumerate().step_by(997) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["frame"], i, "lines in frame order");
    }
}

/// Stdin closing mid-frame under `--jobs`: every whole frame is scored, in order, then the
/// partial one is rejected as truncated — the same lines as with one job.
#[test]
fn raw_stream_truncated_under_jobs_gives_the_one_job_lines() {
    let m = TinyModel::good();
    let stem = m.stem();
    let bytes: Vec<u8> = (0..7 * 4 + 3).map(|i| (i * 29 % 256) as u8).collect();
    let run = |jobs: &str| {
        let mut args = raw_2x2_args(&stem);
        args.extend(["--no-latency", "--jobs", jobs]);
        mcgate_stdin(&args, &bytes)
    };
    let one = run("1");
    assert_eq!(one.status.code(), Some(4), "{}", stderr(&one));
    let lines = lines(&one);
    assert_eq!(lines.len(), 8);
    assert!(lines[7]["reason"]
        .as_str()
        .unwrap()
        .contains("truncated raw frame: 3 of 4 bytes"));
    for jobs in ["2", "3"] {
        let many = run(jobs);
        assert_eq!(many.status.code(), Some(4));
        assert_eq!(many.stdout, one.stdout, "--jobs {jobs}");
    }
}

/// Frames into a running gate, one at a time, each line read back (the SIGHUP test).
struct Feed {
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    sent: u64,
}

impl Feed {
    /// A gate reading raw frames from stdin (`args`), its lines fed back one at a time and
    /// its log lines sent on as they come.
    fn spawn(args: &[&str]) -> (std::process::Child, Feed, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead, BufReader};
        let mut child = spawn_mcgate(args);
        let feed = Feed {
            stdin: child.stdin.take().unwrap(),
            lines: BufReader::new(child.stdout.take().unwrap()).lines(),
            sent: 0,
        };
        let (log_tx, log) = std::sync::mpsc::channel();
        let stderr_pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let _ = log_tx.send(line.unwrap());
            }
        });
        (child, feed, log)
    }

    fn next(&mut self) -> serde_json::Value {
        use std::io::Write;
        self.stdin.write_all(&[10, 200, 30, 90]).unwrap();
        self.stdin.flush().unwrap();
        self.sent += 1;
        let line: serde_json::Value =
            serde_json::from_str(&self.lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(line["frame"], self.sent - 1, "a frame was dropped");
        line
    }

    /// Frames keep flowing while the signal thread works, until its log line shows; before
    /// it the old threshold may still hold, never a third value.
    fn until_logged(
        &mut self,
        log: &std::sync::mpsc::Receiver<String>,
        old: f64,
        new: f64,
    ) -> String {
        for _ in 0..1000 {
            let threshold = self.next()["threshold"].as_f64().unwrap();
            assert!(threshold == old || threshold == new, "{threshold}");
            // The alarm (5 rejects of 20 at the low thresholds) logs too: not what is awaited.
            if let Ok(line) = log.recv_timeout(std::time::Duration::from_millis(10)) {
                if !line.contains("ALARM") {
                    return line;
                }
            }
        }
        panic!("SIGHUP was not handled");
    }
}

/// SIGHUP re-reads the card's threshold while frames flow, without dropping one; a broken card
/// keeps the old threshold and logs one line.
#[test]
fn sighup_reloads_the_threshold_and_a_broken_card_keeps_the_old_one() {
    let m = TinyModel::good();
    let stem = m.stem();
    let card_path = m.path("m.card.json");
    let (mut child, mut feed, log) = Feed::spawn(&raw_2x2_args(&stem));
    let hangup = |pid: u32| unsafe {
        assert_eq!(libc::kill(pid as i32, libc::SIGHUP), 0);
    };
    assert_eq!(feed.next()["threshold"], 0.5);

    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&card_path).unwrap()).unwrap();
    card["threshold"]["mutual_information"] = 0.01.into();
    std::fs::write(&card_path, card.to_string()).unwrap();
    hangup(child.id());
    let reloaded = feed.until_logged(&log, 0.5, 0.01);
    assert!(reloaded.contains("MI threshold 0.5 -> 0.01"), "{reloaded}");
    assert_eq!(feed.next()["threshold"], 0.01);

    // A card for another model (its ONNX hash) is refused, the threshold kept.
    card["threshold"]["mutual_information"] = 0.2.into();
    card["onnx_sha256"] = "f".repeat(64).into();
    std::fs::write(&card_path, card.to_string()).unwrap();
    hangup(child.id());
    let refused = feed.until_logged(&log, 0.01, 0.01);
    assert!(
        refused.contains("is for another model") && refused.contains("keeping MI threshold 0.01"),
        "{refused}"
    );

    // A threshold no MI can reach (ln 3 = 1.1 for three classes) would accept every frame.
    card["onnx_sha256"] =
        mcgate::contract::card::sha256_hex(&std::fs::read(m.path("m.onnx")).unwrap()).into();
    card["threshold"]["mutual_information"] = 100.0.into();
    std::fs::write(&card_path, card.to_string()).unwrap();
    hangup(child.id());
    let refused = feed.until_logged(&log, 0.01, 0.01);
    assert!(
        refused.contains("is not below ln(3)") && refused.contains("keeping MI threshold 0.01"),
        "{refused}"
    );

    std::fs::write(&card_path, "{").unwrap();
    hangup(child.id());
    let kept = feed.until_logged(&log, 0.01, 0.01);
    assert!(
        kept.contains("not valid JSON") && kept.contains("keeping MI threshold 0.01"),
        "{kept}"
    );
    assert_eq!(feed.next()["threshold"], 0.01);
    drop(feed);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let rest: Vec<String> = log.try_iter().filter(|l| !l.contains("ALARM")).collect();
    assert!(
        !rest.iter().any(|l| l.contains("SIGHUP")),
        "one log line per SIGHUP: {rest:?}"
    );
}

// --- fail closed: what made the gate accept everything (rows 53–56) ---

#[test]
fn fewer_samples_than_the_floor_are_refused_on_the_flag_and_in_the_card() {
    let m = TinyModel::good();
    let frame = m.frame();
    // One sample has MI exactly 0: every frame passed. Below 4 the gate is refused.
    for t in ["1", "3"] {
        let out = mcgate(&["gate", &m.stem(), &frame, "-T", t, "--seed", "1"]);
        assert_one_line_error(&out, 2, "samples (T) must be in 4..=4096");
        assert!(out.stdout.is_empty());
    }
    let card_t1 = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
        c["default_samples"] = 1.into();
    });
    assert_model_refused(&card_t1, "default_samples 1 is outside 4..=4096");
    let out = mcgate(&["gate", &m.stem(), &frame, "-T", "4", "--seed", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A 256×256 textured JPEG: its headers are a few hundred bytes, its scan data kilobytes, so a
/// cut at 40 % or more lands in the scan, where the decoder fills the rest grey.
fn gradient_jpeg() -> Vec<u8> {
    let img = image::GrayImage::from_fn(256, 256, |x, y| {
        image::Luma([((x * x + 3 * y) % 256) as u8])
    });
    let mut jpeg = vec![];
    img.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    jpeg
}

#[test]
fn a_jpeg_cut_short_is_rejected_not_filled_grey() {
    let m = TinyModel::good();
    let jpeg = gradient_jpeg();
    std::fs::write(m.path("whole.jpg"), &jpeg).unwrap();
    let out = mcgate(&[
        "gate",
        &m.stem(),
        m.path("whole.jpg").to_str().unwrap(),
        "--seed",
        "1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the whole JPEG is scored: {}",
        stderr(&out)
    );
    for share in [0.4, 0.6, 0.8, 0.99] {
        let cut = m.path(&format!("cut{share}.jpg"));
        std::fs::write(&cut, &jpeg[..(jpeg.len() as f64 * share) as usize]).unwrap();
        assert_frame_rejected(&m, &cut, "JPEG ends before its end-of-image marker");
    }
}

#[test]
fn cards_that_would_accept_every_frame_are_refused() {
    let onnx = tiny_onnx(Variant::default());
    let refused = |edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let m = TinyModel::new(&onnx, |c| edit(c));
        assert_model_refused(&m, needle);
    };
    for p in [1e-12, 1e-7, 0.009, 0.995, 0.9999] {
        refused(
            &|c| c["dropout_sites"][0]["p"] = p.into(),
            "is outside [0.01, 0.99]: the masks would drop almost nothing or almost everything",
        );
    }
    for t in [1.0986123, 100.0, 1e300] {
        refused(
            &|c| c["threshold"]["mutual_information"] = t.into(),
            "the most mutual information 3 classes can have",
        );
    }
    refused(&|c| c["input"]["scale"] = 1e-40.into(), "span");
    // std 100 on 0–1 pixels (found by the outside probe): every frame scores nearly alike.
    refused(
        &|c| c["input"]["std"] = serde_json::json!([100.0]),
        "span 1e-2 units",
    );
    refused(
        &|c| c["input"]["mean"] = serde_json::json!([3e38]),
        "span 0e0 units",
    );
    // Half a unit dropped per sample on average: most samples are the deterministic network.
    refused(
        &|c| c["dropout_sites"][0]["p"] = 0.1.into(),
        "units per sample on average",
    );
    // The same bound on the command line: a threshold no run of T samples can reach.
    let m = TinyModel::good();
    let frame = m.frame();
    for t in ["100", "1.0986123"] {
        let out = mcgate(&["gate", &m.stem(), &frame, "--threshold", t, "--seed", "1"]);
        assert_one_line_error(&out, 2, "the most mutual information this run can produce");
    }
    let out = mcgate(&[
        "gate",
        &m.stem(),
        &frame,
        "--threshold",
        "1.09",
        "--seed",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn calibrating_on_mutual_information_of_rounding_noise_is_refused() {
    // Weights of 1e-9: the samples differ by float rounding only. Their MI is not exactly 0
    // (the old check), and its 95th percentile made a threshold of noise.
    let m = uncalibrated(Variant {
        tiny_weights: true,
        ..Variant::default()
    });
    let before = std::fs::read(m.path("m.card.json")).unwrap();
    let stem = m.stem();
    let mut args = vec!["calibrate", stem.as_str()];
    args.extend(["-", "--width", "2", "--height", "2", "--seed", "1"]);
    let out = mcgate_stdin(&args, &raw_frames());
    assert_one_line_error(&out, 4, "below 1e-4");
    assert_eq!(std::fs::read(m.path("m.card.json")).unwrap(), before);
}

// --- what an attacker or a careless operator could break (rows 57–69) ---

#[test]
fn links_planted_in_an_output_directory_are_never_written_through() {
    use std::os::unix::fs::symlink;
    let m = TinyModel::good();
    let frame = m.frame();
    let accepted = m.path("accepted");
    std::fs::create_dir(&accepted).unwrap();
    let victim = m.path("victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    // The old write probe's name, and the name the first accepted frame gets.
    symlink(&victim, accepted.join(".mcgate-write-probe")).unwrap();
    symlink(&victim, accepted.join("000000_frame.png")).unwrap();
    let out = mcgate(&[
        "gate",
        &m.stem(),
        &frame,
        "--seed",
        "1",
        "--threshold",
        "1.0",
        "--accepted",
        accepted.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    let written = accepted.join("000000_frame.png");
    assert!(!std::fs::symlink_metadata(&written).unwrap().is_symlink());
    assert!(image::open(&written).is_ok());
}

#[test]
fn an_rgba_frame_passes_on_what_was_scored_without_its_alpha() {
    let m = TinyModel::good();
    // Transparent pixels hiding bright colour: a viewer shows the background, the gate scored
    // the colour (as luma: the tiny model is gray). What is passed on is what was scored: the
    // colour's luma, without alpha (row 79: no colour a gray model did not score).
    let rgba = image::RgbaImage::from_raw(
        2,
        2,
        vec![
            250, 10, 10, 0, 10, 250, 10, 0, 10, 10, 250, 255, 200, 200, 200, 128,
        ],
    )
    .unwrap();
    let path = m.path("alpha.png");
    rgba.save(&path).unwrap();
    let accepted = m.path("accepted");
    let out = mcgate(&[
        "gate",
        &m.stem(),
        path.to_str().unwrap(),
        "--seed",
        "1",
        "--threshold",
        "1.0",
        "--accepted",
        accepted.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let passed = image::open(accepted.join("000000_alpha.png")).unwrap();
    assert!(!passed.color().has_alpha(), "{:?}", passed.color());
    assert!(
        matches!(passed, image::DynamicImage::ImageLuma8(_)),
        "{passed:?}"
    );
    assert_eq!(
        passed.to_luma8().into_raw(),
        image::DynamicImage::ImageRgba8(rgba).to_luma8().into_raw()
    );
}

#[test]
fn hostile_model_sizes_are_refused_at_load_not_panicked_on() {
    let onnx = tiny_onnx(Variant::default());
    let huge_input = TinyModel::new(&onnx, |c| {
        c["input"]["shape"] = serde_json::json!([1, 1, 100000, 100000]);
    });
    assert_model_refused(&huge_input, "over the 16777216 this build holds");
    let out = mcgate(&["info", &huge_input.stem()]);
    assert_one_line_error(&out, 3, "over the 16777216");
    let huge_site = TinyModel::new(&onnx, |c| {
        c["dropout_sites"][0]["shape"] = serde_json::json!([100_000_000]);
    });
    assert_model_refused(&huge_site, "over the 67108864 this build holds");
    // A graph that expands by T: fine at T = 8, 1.6 G values at T = 4096.
    let expanding = TinyModel::new(
        &tiny_onnx(Variant {
            expand_by_t: true,
            ..Variant::default()
        }),
        |_| {},
    );
    let frame = expanding.frame();
    let out = mcgate(&["gate", &expanding.stem(), &frame, "--seed", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = mcgate(&[
        "gate",
        &expanding.stem(),
        &frame,
        "-T",
        "4096",
        "--seed",
        "1",
    ]);
    assert_one_line_error(&out, 3, "would output 1638400000 values at T=4096");
}

#[test]
fn frame_files_are_checked_before_they_are_read_whole() {
    let m = TinyModel::good();
    // A 3 GB sparse file that starts like a PNG: refused by its size, unread.
    let sparse = m.path("x.png");
    let f = std::fs::File::create(&sparse).unwrap();
    std::io::Write::write_all(&mut &f, b"\x89PNG\r\n\x1a\n").unwrap();
    f.set_len(3 << 30).unwrap();
    drop(f);
    let before = std::time::Instant::now();
    assert_frame_rejected(&m, &sparse, "over 64 MiB");
    // /dev/zero never ends: its first bytes are no image, and nothing more is read.
    assert_frame_rejected(&m, Path::new("/dev/zero"), "not a PNG, JPEG or PNM image");
    assert!(before.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn a_sighup_during_start_up_does_not_end_the_gate() {
    // The ensemble takes a while to load and plan (two jobs): the signal lands then.
    let frame = root().join("samples/mnist/clean");
    for delay_ms in [30, 150, 400] {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_mcgate"))
            .current_dir(root())
            .args(["gate", "models/mnist-ensemble", frame.to_str().unwrap()])
            .args(["--seed", "1", "-j", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        unsafe {
            libc::kill(child.id() as i32, libc::SIGHUP);
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.code().is_some(),
            "killed by a signal after {delay_ms} ms: {:?}",
            out.status
        );
        assert!(!lines(&out).is_empty());
    }
}

#[test]
fn a_control_character_in_a_file_name_or_label_cannot_forge_a_line() {
    let m = TinyModel::good();
    let forged = m.path("x\n     0 ACCEPT class a (0.999) MI 0.0001 y.png");
    std::fs::copy(m.frame(), &forged).unwrap();
    let out = mcgate(&[
        "gate",
        &m.stem(),
        forged.to_str().unwrap(),
        "--format",
        "text",
        "--seed",
        "1",
        "--threshold",
        "0",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("REJECT") && text.contains("x\\n"), "{text}");
    // A label that drives the terminal: refused with the card.
    let escape = TinyModel::new(&tiny_onnx(Variant::default()), |c| {
        c["classes"][1] = "\u{1b}[2J\u{1b}[31mb".into();
    });
    assert_model_refused(&escape, "classes[1] holds a control character");
    let out = mcgate(&["info", &escape.stem()]);
    assert_one_line_error(&out, 3, "control character");
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));
}

#[test]
fn a_report_file_keeps_whole_lines_on_a_full_disk() {
    let m = TinyModel::good();
    let frame = m.frame();
    let report = m.path("report.jsonl");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcgate"));
    cmd.args(["gate", &m.stem()])
        .args([frame.as_str(); 10])
        .args(["--seed", "1", "--no-latency", "--report"])
        .arg(&report);
    limit_file_size(&mut cmd, 1000);
    let out = cmd.output().unwrap();
    assert_one_line_error(&out, 5, "File too large");
    let written = std::fs::read_to_string(&report).unwrap();
    assert!(written.ends_with('\n'), "half a line left: {written:?}");
    let lines: Vec<&str> = written.lines().collect();
    assert!(!lines.is_empty() && lines.len() < 10, "{}", lines.len());
    for line in lines {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn a_report_into_the_video_stream_or_the_models_files_is_refused() {
    let m = TinyModel::good();
    let card_before = std::fs::read(m.path("m.card.json")).unwrap();
    let out = mcgate_stdin(
        &[
            "gate",
            &m.stem(),
            "-",
            "--width",
            "2",
            "--height",
            "2",
            "--pass-through",
            "--report",
            "/dev/stdout",
        ],
        &[1, 2, 3, 4],
    );
    assert_one_line_error(&out, 2, "where --pass-through writes the frames");
    assert!(out.stdout.is_empty());
    // `-` is not stdout here (noted by the outside probe: it made a file named "-").
    let out = mcgate(&["gate", &m.stem(), &m.frame(), "--report", "-"]);
    assert_one_line_error(&out, 2, "would be a file named \"-\"");
    for own in ["m.card.json", "m.onnx"] {
        let out = mcgate(
            &["gate", &m.stem(), &m.frame(), "--report"]
                .into_iter()
                .chain([m.path(own).to_str().unwrap()])
                .collect::<Vec<_>>(),
        );
        assert_one_line_error(&out, 2, "one of the model's own files");
    }
    assert_eq!(std::fs::read(m.path("m.card.json")).unwrap(), card_before);
    // A link planted where the report goes (found by the outside probe): not written through.
    let victim = m.path("victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    let link = m.path("verdicts.jsonl");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = mcgate(&[
        "gate",
        &m.stem(),
        &m.frame(),
        "--report",
        link.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, 5, "cannot write --report");
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
}

/// A calibratable tiny model: schema 2, no threshold yet.
fn uncalibrated(v: Variant) -> TinyModel {
    TinyModel::new(&tiny_onnx(v), |c| {
        c["schema"] = "mcgate.card/2".into();
        c["threshold"] = serde_json::Value::Null;
    })
}

/// 120 different raw 2×2 gray frames.
fn raw_frames() -> Vec<u8> {
    (0..120u32)
        .flat_map(|i| {
            [
                (i * 7) as u8,
                (i * 13) as u8,
                (i * 29) as u8,
                (i * 31) as u8,
            ]
        })
        .collect()
}

#[test]
fn calibrate_keeps_the_cards_mode_writes_through_its_link_and_refuses_a_read_only_one() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let raw = ["-", "--width", "2", "--height", "2", "--seed", "1"];
    // Read-only: refused before a frame is scored, the card untouched.
    let m = uncalibrated(Variant::default());
    let card = m.path("m.card.json");
    std::fs::set_permissions(&card, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&card).unwrap();
    let stem = m.stem();
    let out = mcgate_stdin(
        &[&["calibrate", stem.as_str()][..], &raw[..]].concat(),
        &raw_frames(),
    );
    assert_one_line_error(&out, 5, "it is read-only");
    assert_eq!(std::fs::read(&card).unwrap(), before);
    // Mode 0640 kept.
    std::fs::set_permissions(&card, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = mcgate_stdin(
        &[&["calibrate", stem.as_str()][..], &raw[..]].concat(),
        &raw_frames(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mode = std::fs::metadata(&card).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // A linked card: the link stays, its target gets the threshold.
    let l = uncalibrated(Variant::default());
    let target = l.path("real.card.json");
    std::fs::rename(l.path("m.card.json"), &target).unwrap();
    symlink(&target, l.path("m.card.json")).unwrap();
    let stem = l.stem();
    let out = mcgate_stdin(
        &[&["calibrate", stem.as_str()][..], &raw[..]].concat(),
        &raw_frames(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(l.path("m.card.json"))
        .unwrap()
        .is_symlink());
    let calibrated: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert!(calibrated["threshold"]["mutual_information"].is_f64());
}

#[test]
fn calibration_frames_unlike_the_models_input_are_warned_about() {
    let m = uncalibrated(Variant::default());
    let stem = m.stem();
    // 4×4 RGB frames for a 2×2 gray model.
    let frames: Vec<u8> = (0..120 * 48u32).map(|i| (i * 7 % 251) as u8).collect();
    let out = mcgate_stdin(
        &[
            "calibrate",
            &stem,
            "-",
            "--width",
            "4",
            "--height",
            "4",
            "--pixel-format",
            "rgb24",
            "--seed",
            "1",
        ],
        &frames,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("120 of 120 calibration frames are not what the model takes (2x2 gray)")
            && err.contains("is 4x4 RGB"),
        "{err}"
    );
}

#[test]
fn frames_in_flight_share_one_memory_budget() {
    // Six 11000 × 11000 gray frames (121 MB decoded each) under -j 2: with a limit per frame,
    // several were decoded and queued at once (580 MB measured); with one budget for all
    // frames in flight they wait for each other. A 16384² frame alone needs more than the
    // budget and is rejected unread.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big0.png");
    image::GrayImage::from_fn(11_000, 11_000, |x, _| image::Luma([(x * 7 % 256) as u8]))
        .save(&big)
        .unwrap();
    for i in 1..6 {
        std::fs::copy(&big, dir.path().join(format!("big{i}.png"))).unwrap();
    }
    let mut header = vec![];
    image::GrayImage::new(1, 1)
        .write_to(
            &mut std::io::Cursor::new(&mut header),
            image::ImageFormat::Png,
        )
        .unwrap();
    // The same PNG claiming 16384 × 16384 in its header (IHDR width and height).
    let huge = dir.path().join("huge.png");
    header[16..20].copy_from_slice(&16384u32.to_be_bytes());
    header[20..24].copy_from_slice(&16384u32.to_be_bytes());
    let crc = crc32(&header[12..29]);
    header[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&huge, &header).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mcgate"))
        .current_dir(root())
        .args([
            "gate",
            "models/mnist",
            dir.path().to_str().unwrap(),
            "-j",
            "2",
        ])
        .args(["--seed", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = child;
    let pid = child.id() as i32;
    let mut stdout = child.stdout.take().unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let max_rss_mib = usage.ru_maxrss / 1024;
    assert!(max_rss_mib < 512, "peak {max_rss_mib} MiB");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    assert!(
        lines[..6].iter().all(|l| l["measures"].is_object()),
        "{text}"
    );
    assert!(
        lines[6]["reason"]
            .as_str()
            .unwrap()
            .contains("over the 512 MiB all frames in flight"),
        "{}",
        lines[6]
    );
}

/// CRC-32 (ISO-HDLC, as PNG chunks use it), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A file-size limit for `cmd` (RLIMIT_FSIZE, SIGXFSZ ignored): writes past `bytes` fail the
/// way a full disk fails them (EFBIG instead of ENOSPC, the same code path); mounting a small
/// filesystem would need root.
fn limit_file_size(cmd: &mut std::process::Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

// --- row 70: a model folder changed under a pinned gate ---

/// A card weakened within its bounds (a threshold just under ln(classes)) is a valid card:
/// `--card-sha256` pins the one the operator checked, at start and on SIGHUP.
#[test]
fn a_pinned_card_refuses_a_model_folder_changed_under_it() {
    let m = TinyModel::good();
    let stem = m.stem();
    let card_path = m.path("m.card.json");
    let info = mcgate(&["info", &stem, "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let digest = info["card_sha256"].as_str().unwrap().to_owned();
    assert_eq!(
        digest,
        mcgate::contract::card::sha256_hex(&std::fs::read(&card_path).unwrap())
    );
    let frame = m.frame();
    let pinned = |pin: &str| mcgate(&["gate", &stem, &frame, "--seed", "1", "--card-sha256", pin]);
    assert_eq!(pinned(&digest).status.code(), Some(0));
    assert_eq!(pinned(&digest.to_uppercase()).status.code(), Some(0));
    assert_one_line_error(&pinned("abc"), 2, "a SHA-256 is 64 hex digits");

    // The SIGHUP half first, on the checked card: a weakened card is not taken.
    let mut args = raw_2x2_args(&stem);
    args.extend(["--card-sha256", &digest]);
    let (mut child, mut feed, log) = Feed::spawn(&args);
    assert_eq!(feed.next()["threshold"], 0.5);
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&card_path).unwrap()).unwrap();
    card["threshold"]["mutual_information"] = 1.09.into();
    std::fs::write(&card_path, card.to_string()).unwrap();
    unsafe {
        assert_eq!(libc::kill(child.id() as i32, libc::SIGHUP), 0);
    }
    let refused = feed.until_logged(&log, 0.5, 0.5);
    assert!(
        refused.contains("not the one pinned with --card-sha256")
            && refused.contains("keeping MI threshold 0.5"),
        "{refused}"
    );
    drop(feed);
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // At start: the weakened card is refused, not run.
    assert_one_line_error(&pinned(&digest), 3, "not the pinned");
    // Unpinned, the same card runs (the README says why a pin is needed).
    let open = mcgate(&["gate", &stem, &frame, "--seed", "1"]);
    assert_eq!(open.status.code(), Some(0), "{}", stderr(&open));
}

/// Row 71: a folder is gated by frame names; what else is in it is said, not silently passed
/// over, and a file named on the command line is gated whatever its name.
#[test]
fn a_folder_says_what_it_skipped_and_a_named_file_is_always_gated() {
    let m = TinyModel::good();
    let frames = m.path("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(m.frame(), frames.join("a.png")).unwrap();
    std::fs::write(frames.join("b.bmp"), b"BM not decoded here").unwrap();
    std::fs::write(frames.join("notes.txt"), b"hello").unwrap();
    let out = mcgate(&["gate", &m.stem(), frames.to_str().unwrap(), "--seed", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let err = stderr(&out);
    assert!(
        err.contains("skipped 2 entries that are not frame files") && err.contains("b.bmp"),
        "{err}"
    );
    let named = frames.join("b.bmp");
    assert_frame_rejected(&m, &named, "not a PNG, JPEG or PNM image");
}

/// Row 73: a JPEG whose scan data is corrupt (bit errors, garbage) but whose markers are
/// intact: the lenient decoder filled grey blocks and it was scored and accepted.
#[test]
fn a_jpeg_with_corrupt_scan_data_is_rejected_not_filled_grey() {
    let m = TinyModel::good();
    let corrupt = m.path("corrupt.jpg");
    std::fs::write(
        &corrupt,
        include_bytes!("../fuzz/seeds/decode_preprocess/testsrc-corrupt.jpg"),
    )
    .unwrap();
    assert_frame_rejected(&m, &corrupt, "Bad Huffman Code");
}

/// Row 74: what a writer of a frame folder can plant besides frames: two links to the folder
/// itself (was: a walk of ~2^40 folders, memory and log growing without end), a named pipe
/// named as a frame (was: skipped as "not named as a frame"), and a named pipe given on the
/// command line (was: the gate waited for a writer forever).
#[test]
fn links_to_folders_and_named_pipes_neither_hang_nor_loop_the_gate() {
    let m = TinyModel::good();
    let frames = m.path("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(m.frame(), frames.join("a.png")).unwrap();
    std::os::unix::fs::symlink(".", frames.join("x")).unwrap();
    std::os::unix::fs::symlink(".", frames.join("y")).unwrap();
    std::os::unix::fs::symlink("a.png", frames.join("link.png")).unwrap();
    let fifo = frames.join("b.png");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let out = within_30_s(
        &["gate", &m.stem(), frames.to_str().unwrap(), "--seed", "1"],
        "the gate did not finish on a folder with links to itself",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sources: Vec<String> = lines(&out)
        .iter()
        .map(|l| {
            l["source"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(sources, ["a.png", "link.png"]);
    let err = stderr(&out);
    assert!(
        err.contains("skipped 3 entries that are not frame files"),
        "{err}"
    );
    // Named on the command line, the pipe is a rejected frame, not a wait.
    assert_frame_rejected(&m, &fifo, "a named pipe or socket, not a file");
    // A model card that is a named pipe: refused at start (was: start-up waited forever).
    let card = m.path("m.card.json");
    std::fs::remove_file(&card).unwrap();
    let c_card = std::ffi::CString::new(card.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_card.as_ptr(), 0o600) }, 0);
    let out = within_30_s(
        &["gate", &m.stem(), &m.frame(), "--seed", "1"],
        "the gate waited on a model card that is a named pipe",
    );
    assert_one_line_error(&out, 3, "a named pipe or socket, not a file");
}

/// Row 75: threads the system will not start (found by the outside probe with `-j 64` under
/// `ulimit -v 500000`, as a memory-limited service unit sets: a panic, exit 101). Made
/// certain here by asking for 100 TiB thread stacks (`RUST_MIN_STACK`), which no system maps.
#[test]
fn threads_the_system_will_not_start_are_a_one_line_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcgate"))
        .current_dir(root())
        .env("RUST_MIN_STACK", (100u64 << 40).to_string())
        .args([
            "gate",
            "builtin:mnist",
            "samples/mnist",
            "-j",
            "2",
            "--seed",
            "1",
        ])
        .output()
        .unwrap();
    // The first thread mcgate starts: the one that cleans up on SIGTERM (row 97).
    assert_one_line_error(&out, 2, "cannot start the signal thread");
    assert!(out.stdout.is_empty(), "no frame was gated");
}

/// Row 76: outputs over the frames being gated (found by the outside probe): `--accepted`
/// into the input folder replaced an input frame with an accepted one, `--accepted` and
/// `--annotate` in one folder replaced accepted frames with annotations, `--report` named an
/// input frame and truncated it.
#[test]
fn outputs_never_write_over_the_frames_being_gated() {
    let m = TinyModel::good();
    let frames = m.path("frames");
    std::fs::create_dir(&frames).unwrap();
    let frame = frames.join("a.png");
    std::fs::copy(m.frame(), &frame).unwrap();
    let before = std::fs::read(&frame).unwrap();
    let (stem, dir, file) = (
        m.stem(),
        frames.to_str().unwrap().to_owned(),
        frame.to_str().unwrap().to_owned(),
    );
    let sub = frames.join("sub");
    let out = m.path("out");
    let refused = |extra: &[&str], needle: &str| {
        let mut args = vec!["gate", stem.as_str(), dir.as_str(), "--seed", "1"];
        args.extend(extra);
        assert_one_line_error(&mcgate(&args), 2, needle);
    };
    refused(&["--accepted", &dir], "is in the input folder");
    refused(
        &["--annotate", sub.to_str().unwrap()],
        "is in the input folder",
    );
    refused(
        &[
            "--accepted",
            out.to_str().unwrap(),
            "--annotate",
            out.to_str().unwrap(),
        ],
        "are one folder",
    );
    refused(&["--report", &file], "is a frame being gated");
    let named = mcgate(&["gate", &stem, &file, "--report", &file, "--seed", "1"]);
    assert_one_line_error(&named, 2, "is a frame being gated");
    assert_eq!(std::fs::read(&frame).unwrap(), before);
    // Beside the input folder, all is as before.
    let ok = mcgate(&[
        "gate",
        &stem,
        &dir,
        "--accepted",
        out.to_str().unwrap(),
        "--report",
        m.path("verdicts.jsonl").to_str().unwrap(),
        "--seed",
        "1",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
}

/// mcgate run with `args`, killed and the test failed with `hung` after 30 s.
fn within_30_s(args: &[&str], hung: &str) -> std::process::Output {
    let mut child = spawn_mcgate(args);
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("{hung}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Was (fourth outside probe, fail-open): the mirror of the test below — a colour model
/// scored an image file's colour, and `--pixel-format gray` passed its gray downstream: the
/// luma of an accepted colour frame (a goose whose brightness was the inverted photo) was a
/// picture the gate rejects when scored. Refused before a frame is read.
#[test]
fn a_colour_model_does_not_pass_on_gray_it_did_not_score() {
    let out = mcgate(&[
        "gate",
        "models/lite0-imagenet",
        "samples/photos/clean_imagenet_00_243.png",
        "--pass-through",
        "--pixel-format",
        "gray",
    ]);
    assert_one_line_error(&out, 2, "would pass on its gray, which it never scored");
    assert!(out.stdout.is_empty(), "a frame went downstream");
}

/// Row 102. Was (sixth outside probe): clap's errors for a bad command line took 3 to 7
/// lines (the message, a tip, the usage block, a pointer to --help); (seventh) a start-up
/// warning came before a refusal, and no command at all printed the program's description.
#[test]
fn a_bad_command_line_is_one_line() {
    for (args, needle) in [
        (
            &["gate", "models/mnist", "-", "--on-reject", "repeat"][..],
            "required arguments were not provided: --pass-through",
        ),
        (
            &["gate", "models/mnist", "samples", "--bogus"],
            "unexpected argument '--bogus' found",
        ),
        (
            &["gate", "models/mnist", "samples", "--format", "xml"],
            "[possible values: jsonl, text]",
        ),
        (
            &["gate", "models/mnist", "samples", "-T", "abc"],
            "invalid value 'abc'",
        ),
        // Seventh outside probe: a warning about T came before the error.
        (
            &[
                "gate",
                "models/mnist",
                "-",
                "--width",
                "28",
                "--height",
                "28",
                "-T",
                "0",
            ],
            "samples (T) must be in 4..=4096",
        ),
        (&[], "a command is needed: gate, validate"),
    ] {
        let out = mcgate(args);
        assert_one_line_error(&out, 2, needle);
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    let help = mcgate(&["gate", "--help"]);
    assert!(
        help.status.success() && help.stdout.len() > 1000,
        "--help still teaches"
    );
}

/// Row 100. Was (fifth outside probe): `TRACT_CPU_ISA` naming another architecture's
/// extension made tract panic while planning: Rust's panic message and, where
/// `RUST_BACKTRACE` is set, a 30-line backtrace, before the error, which blamed the model
/// alone. A caught panic now prints nothing but the one-line error, which names the variable.
#[test]
fn a_panic_inside_tract_is_one_line_that_names_the_environment() {
    let foreign = if cfg!(target_arch = "x86_64") {
        "+sve2"
    } else {
        "+avx2"
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcgate"))
        .current_dir(root())
        .args(["gate", "models/mnist", "samples"])
        .env("TRACT_CPU_ISA", foreign)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_one_line_error(&out, 3, "set in the environment: TRACT_CPU_ISA");
}

/// Row 99. Was (fifth outside probe): `- -` was told it mixed stdin with file inputs.
#[test]
fn stdin_named_twice_or_beside_files_is_refused_for_what_it_is() {
    let raw = ["--width", "28", "--height", "28"];
    let out = mcgate(&[&["gate", "models/mnist", "-", "-"], &raw[..]].concat());
    assert_one_line_error(&out, 2, "given 2 times: stdin is one stream, name it once");
    let out = mcgate(&[&["gate", "models/mnist", "-", "samples"], &raw[..]].concat());
    assert_one_line_error(&out, 2, "cannot be mixed with file inputs");
}

/// Row 97. Was (third outside probe): a SIGTERM or SIGINT while `--accepted` wrote a frame
/// left its hidden `.NAME.XXXXXX.partial` file (13 of 30 runs of the probe's loop, measured
/// on the binary of b0d49ee): the temporary file's clean-up runs on drop, which a signal
/// skips. Now the signal removes the files being written, and the gate still ends as killed
/// by the signal.
#[test]
fn a_signal_leaves_no_partial_file() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    for (run, signal) in [libc::SIGTERM, libc::SIGINT]
        .iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        let accepted = dir.path().join(format!("accepted{run}"));
        let mut child = spawn_mcgate(&[
            "gate",
            "models/mnist",
            "-",
            "--width",
            "28",
            "--height",
            "28",
            "--threshold",
            "2.2",
            "--seed",
            "1",
            "--accepted",
            accepted.to_str().unwrap(),
        ]);
        let mut stdin = child.stdin.take().unwrap();
        // Frames keep coming, as from a camera, until the signal.
        let feeder = std::thread::spawn(move || {
            let frame = [0u8; 784];
            while std::io::Write::write_all(&mut stdin, &frame).is_ok() {}
        });
        // A few frames saved first, then the signal at a different moment each run.
        let saved = || std::fs::read_dir(&accepted).map_or(0, |d| d.count());
        let start = std::time::Instant::now();
        while saved() < 3 && start.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_micros(1 + 997 * run as u64));
        unsafe { libc::kill(child.id() as i32, *signal) };
        let status = child.wait().unwrap();
        feeder.join().unwrap();
        assert_eq!(status.signal(), Some(*signal), "run {run}: {status:?}");
        let partial: Vec<_> = std::fs::read_dir(&accepted)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(partial.is_empty(), "run {run} left {partial:?}");
    }
}

/// Row 95. Was (fourth outside probe, FAIL-OPEN): a raw 56×56 frame for the 28×28 model —
/// mid-gray plus a ±(v − 128) checkerboard hiding a salt-noise picture `v` — scored near gray
/// and was accepted, then passed on byte for byte, and a nearest-neighbour downscale
/// downstream gave back the salt picture, which the gate rejects. Now the model's input is
/// what is saved, and a stream of another size than the model's is refused under
/// `--pass-through` (row 98): the picture does not come back. `--pass-unscored-detail`
/// restores byte for byte, with a warning, and needs an output.
#[test]
fn detail_the_model_never_saw_does_not_pass_on() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let hidden: Vec<i32> = (0..28 * 28)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 56) as i32
        })
        .collect();
    let frame: Vec<u8> = (0..56 * 56)
        .map(|i| {
            let (x, y) = (i % 56, i / 56);
            let v = hidden[y / 2 * 28 + x / 2] - 128;
            let sign = if (x + y) % 2 == 0 { 1 } else { -1 };
            (128 + sign * v).clamp(0, 255) as u8
        })
        .collect();
    let recovered = |passed: &[u8]| {
        (0..28 * 28)
            .filter(|i| {
                let got = passed[i / 28 * 2 * 56 + i % 28 * 2] as i32;
                (got - hidden[*i]).abs() <= 8
            })
            .count()
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let accepted = tempfile::tempdir_in(dir.path()).unwrap().keep();
        let report = dir.path().join("verdicts.jsonl");
        let mut args = vec![
            "gate",
            "models/mnist",
            "-",
            "--width",
            "56",
            "--height",
            "56",
            // Under ln(10): every frame is accepted, so what passes can be looked at.
            "--threshold",
            "2.2",
            "--seed",
            "1",
            "--accepted",
            accepted.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        (mcgate_stdin(&args, &frame), accepted)
    };
    // Saved: the model's input, which holds no trace of the hidden picture.
    let (out, accepted) = run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let saved = image::open(accepted.join("000000_stdin_0.png"))
        .unwrap()
        .to_luma8();
    assert_eq!(saved.dimensions(), (28, 28), "the model's input");
    let hits = saved
        .as_raw()
        .iter()
        .zip(&hidden)
        .filter(|(&a, &b)| (a as i32 - b).abs() <= 8)
        .count();
    assert!(hits < 28 * 28 / 5, "{hits} of 784 hidden pixels came back");
    // Passed on: a 56×56 stream cannot carry 28×28 frames to a reader of 56×56 ones.
    let (out, _) = run(&["--pass-through"]);
    assert_one_line_error(&out, 2, "they pass on as the model's 28x28 input");
    assert!(out.stdout.is_empty());
    // Unless the operator opts in to passing what the model never saw, warned.
    let (out, accepted) = run(&["--pass-through", "--pass-unscored-detail"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, frame, "byte for byte, as asked");
    assert_eq!(recovered(&out.stdout), 28 * 28);
    let saved = image::open(accepted.join("000000_stdin_0.png")).unwrap();
    assert_eq!((saved.width(), saved.height()), (56, 56));
    assert!(
        stderr(&out).contains("detail finer than the model's 28x28 input passes unscored"),
        "{}",
        stderr(&out)
    );

    let out = mcgate(&["gate", "models/mnist", "samples", "--pass-unscored-detail"]);
    assert_one_line_error(&out, 2, "--pass-unscored-detail changes what");
    let sized = ["--width", "56", "--height", "56"];
    let out = mcgate(
        &[
            &["gate", "models/mnist", "samples", "--pass-through"],
            &sized[..],
        ]
        .concat(),
    );
    assert_one_line_error(&out, 2, "frames pass on as the model's input, at its 28x28");
    let accepted = dir.path().join("unused");
    let accepted = accepted.to_str().unwrap();
    let out = mcgate(
        &[
            &["gate", "models/mnist", "samples", "--accepted", accepted],
            &sized[..],
        ]
        .concat(),
    );
    assert_one_line_error(&out, 2, "image files carry their own size");

    // Row 98 (fifth and sixth outside probes): a 14×14 stream passed on the model's input
    // shrunk back, a picture that scored otherwise; passed as it came, a 27×27 frame carries
    // detail the 27→28 enlargement cancels. Now what is saved is the model's input: gated
    // again with the same masks, each scores exactly as its frame did.
    for side in [14usize, 27] {
        let small: Vec<u8> = (0..3 * side * side)
            .map(|i| {
                if (i % side + i / side) % 2 == 0 {
                    28
                } else {
                    228
                }
            })
            .collect();
        let lines = |report: &std::path::Path| -> Vec<serde_json::Value> {
            std::fs::read_to_string(report)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let saved = dir.path().join(format!("saved{side}"));
        let first = dir.path().join(format!("first{side}.jsonl"));
        let again = dir.path().join(format!("again{side}.jsonl"));
        let side_text = side.to_string();
        let common = [
            "--threshold",
            "2.2",
            "--seed",
            "1",
            "--no-latency",
            "--report",
        ];
        let out = mcgate_stdin(
            &[
                &[
                    "gate",
                    "models/mnist",
                    "-",
                    "--width",
                    &side_text,
                    "--height",
                    &side_text,
                ][..],
                &common,
                &[
                    first.to_str().unwrap(),
                    "--accepted",
                    saved.to_str().unwrap(),
                ],
            ]
            .concat(),
            &small,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let out = mcgate(
            &[
                &["gate", "models/mnist", saved.to_str().unwrap()][..],
                &common,
                &[again.to_str().unwrap()],
            ]
            .concat(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let (first, again) = (lines(&first), lines(&again));
        assert_eq!((first.len(), again.len()), (3, 3));
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(a["measures"], b["measures"], "{side}x{side}");
        }
    }
}

/// Was (third outside probe, fail-open): a gray model scores a frame's luma only, but a colour
/// frame went downstream in colour (raw rgb24 byte for byte, and `--accepted` as RGB), so a
/// picture drawn in colours of equal luma passed unseen. Now what passes is what was scored:
/// every accepted frame downstream is the frame's luma (R = G = B), and the saved PNG is gray.
#[test]
fn a_gray_model_passes_on_no_colour_it_did_not_score() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let frames: Vec<u8> = (0..3 * 28 * 28 * 3)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 24) as u8
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let accepted = dir.path().join("accepted");
    // A threshold under ln(10) that every frame passes, so that each is passed on.
    let out = mcgate_stdin(
        &[
            "gate",
            "models/mnist",
            "-",
            "--width",
            "28",
            "--height",
            "28",
            "--pixel-format",
            "rgb24",
            "--threshold",
            "2.2",
            "--seed",
            "1",
            "--pass-through",
            "--accepted",
            accepted.to_str().unwrap(),
            "--report",
            dir.path().join("verdicts.jsonl").to_str().unwrap(),
        ],
        &frames,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        out.stdout.len(),
        frames.len(),
        "three frames passed on as rgb24"
    );
    for (sent, passed) in frames
        .chunks(28 * 28 * 3)
        .zip(out.stdout.chunks(28 * 28 * 3))
    {
        let luma = image::DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(28, 28, sent.to_vec()).unwrap(),
        )
        .to_luma8();
        for (px, &l) in passed.chunks(3).zip(luma.as_raw()) {
            assert_eq!(px, [l, l, l], "colour the model never saw went downstream");
        }
    }
    let saved = image::open(accepted.join("000000_stdin_0.png")).unwrap();
    assert!(
        matches!(saved, image::DynamicImage::ImageLuma8(_)),
        "{saved:?}"
    );
}

/// Was (third outside probe, fail-open): a model whose Monte-Carlo samples never disagree
/// (its dropout does not reach the output: a converted graph that multiplies the dropped
/// value by 0, or weights too small to matter) has MI 0 on every frame, and under
/// `--threshold` the gate accepted everything; only `calibrate` noticed. The gate now tries
/// the model on noise frames at start and refuses it, exit 3. So too (row 91) a model whose
/// samples do differ, but so little that MI stays far below any threshold (weights of 1e-3:
/// accepted every frame under `--threshold 0.01` when the check only compared probabilities).
#[test]
fn a_model_whose_samples_never_disagree_is_refused_by_the_gate() {
    for variant in [
        Variant {
            zero_weights: true,
            ..Default::default()
        },
        Variant {
            tiny_weights: true,
            ..Default::default()
        },
        Variant {
            small_weights: true,
            ..Default::default()
        },
    ] {
        let m = TinyModel::new(&tiny_onnx(variant), |_| {});
        let frame = m.frame();
        let out = mcgate(&["gate", &m.stem(), &frame, "--threshold", "0.01"]);
        assert_one_line_error(&out, 3, "Monte-Carlo samples (almost) never disagree");
        assert!(out.stdout.is_empty(), "a frame was gated");
    }
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Operator mistakes the third outside probe found, each refused before a frame is gated and
/// before anything is written: `--report` inside the `--accepted` (or `--annotate`) folder
/// (was: a frame renamed over the report, every line lost), an output folder refused for
/// being in the input folder (was: refused, but created), `--report` a named pipe nobody
/// reads (was: the gate waited forever), a malformed `--metrics` address (was: exit 5, an
/// output error a supervisor restarts), and `--pass-through` without `--report` with stderr
/// where stdout goes (was: verdict lines inside the video).
#[test]
fn output_mistakes_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("in");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(
        root().join("samples/mnist/clean/digit_7_0.png"),
        frames.join("digit_7_0.png"),
    )
    .unwrap();
    let frames = frames.to_str().unwrap();
    let out_dir = dir.path().join("accepted");
    let report = out_dir.join("000000_digit_7_0.png");
    for flag in ["--accepted", "--annotate"] {
        let out = mcgate(&[
            "gate",
            "models/mnist",
            frames,
            flag,
            out_dir.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ]);
        assert_one_line_error(&out, 2, &format!("is in the {flag} folder"));
        assert!(!out_dir.exists(), "a refused folder was created");
    }
    let inside = format!("{frames}/acc/deeper");
    let out = mcgate(&["gate", "models/mnist", frames, "--accepted", &inside]);
    assert_one_line_error(&out, 2, "is in the input folder");
    assert!(
        !Path::new(frames).join("acc").exists(),
        "a refused folder was created"
    );

    let fifo = dir.path().join("verdicts");
    mkfifo(&fifo);
    let args = [
        "gate",
        "models/mnist",
        frames,
        "--report",
        fifo.to_str().unwrap(),
    ];
    let out = within_30_s(&args, "--report on a pipe nobody reads hung the gate");
    assert_one_line_error(&out, 5, "a named pipe that no process is reading");

    for addr in ["abc", "127.0.0.1", "127.0.0.1:99999"] {
        let out = mcgate(&["gate", "models/mnist", frames, "--metrics", addr]);
        assert_one_line_error(&out, 2, "is not an address to listen on");
    }

    let both = std::fs::File::create(dir.path().join("both")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcgate"))
        .current_dir(root())
        .args(["gate", "models/mnist", frames, "--pass-through"])
        .stdout(both.try_clone().unwrap())
        .stderr(both)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let written = std::fs::read_to_string(dir.path().join("both")).unwrap();
    assert!(written.contains("stderr is where stdout goes"), "{written}");
    assert_eq!(written.lines().count(), 1, "{written}");
}

/// Sizes and reads without a bound (third outside probe): `--width/--height` for image files
/// under `--pass-through` (was: 4294967295 panicked, 100000 aborted, 65536 hung, 16384
/// took 1.09 GB); `convert --labels` and a bundle's `manifest.json` from `/dev/zero` (was:
/// 9 GB and growing) or a named pipe (was: waited forever); a frame name too long for the
/// `--accepted` file name (was: the frame rejected and the gate stopped, exit 5).
#[test]
fn sizes_and_reads_without_a_bound_are_refused() {
    let frame = "samples/mnist/clean/digit_7_0.png";
    for (w, h) in [("4294967295", "4294967295"), ("0", "0"), ("16384", "16384")] {
        let args = [
            "gate",
            "models/mnist",
            frame,
            "--pass-through",
            "--pixel-format",
            "rgb24",
            "--width",
            w,
            "--height",
            h,
            "--report",
            "/dev/null",
        ];
        let out = within_30_s(&args, "a pass-through size hung the gate");
        assert_one_line_error(&out, 2, "the pass-through frame size");
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let stem = dir.path().join("out");
    for labels in ["/dev/zero", fifo.to_str().unwrap()] {
        let args = [
            "convert",
            "models/mnist.onnx",
            stem.to_str().unwrap(),
            "--labels",
            labels,
        ];
        let out = within_30_s(&args, "convert --labels hung");
        assert_one_line_error(&out, 2, "cannot read --labels");
    }
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::os::unix::fs::symlink("/dev/zero", bundle.join("manifest.json")).unwrap();
    let out = within_30_s(
        &["validate", "models/mnist", bundle.to_str().unwrap()],
        "validate hung",
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("longer than the 16777216 bytes"),
        "{}",
        stderr(&out)
    );

    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let long = format!("{}.png", "A".repeat(251));
    std::fs::copy(root().join(frame), frames.join(&long)).unwrap();
    let accepted = dir.path().join("accepted");
    let out = mcgate(&[
        "gate",
        "models/mnist",
        frames.to_str().unwrap(),
        "--seed",
        "1",
        "--accepted",
        accepted.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let saved = format!("000000_{}.png", "A".repeat(200));
    assert!(
        accepted.join(saved).is_file(),
        "{:?}",
        files_in(accepted.to_str().unwrap())
    );
}

/// A card and a graph that disagree on the density output are refused at load (exit 3); a
/// model without one cannot fuse density (exit 2). With one, `calibrate --signals mi,density`
/// fuses it and the gate reports it: a frame far out on it (bright: low "density") is
/// rejected with density as its reason.
#[test]
fn density_output_the_card_and_graph_must_agree_on() {
    let density = tiny_onnx(Variant {
        density: true,
        ..Default::default()
    });
    let v3 = |c: &mut serde_json::Value| {
        c["schema"] = "mcgate.card/3".into();
        c["output"]["log_density"] = "log_density".into();
    };
    let unnamed = TinyModel::new(&density, |_| {});
    assert_model_refused(&unnamed, "graph has 2 outputs, the card names 1");
    let missing = TinyModel::new(&tiny_onnx(Variant::default()), v3);
    assert_model_refused(&missing, "graph has 1 outputs, the card names 2");
    let misnamed = TinyModel::new(&density, |c| {
        v3(c);
        c["output"]["log_density"] = "density".into();
    });
    assert_model_refused(
        &misnamed,
        "graph output log_density is F32 [1, 1], the card needs its density output \"density\"",
    );

    let plain = TinyModel::good();
    let frames: Vec<u8> = (0..4 * 40).map(|i| (i * 37 % 120) as u8).collect();
    let raw = [
        "-", "--width", "2", "--height", "2", "--seed", "7", "--fpr", "0.2",
    ];
    let out = mcgate_stdin(
        &[
            &["calibrate", &plain.stem()][..],
            &raw,
            &["--signals", "mi,density"],
        ]
        .concat(),
        &frames,
    );
    assert_one_line_error(
        &out,
        2,
        "--signals density: model tiny has no density output",
    );

    let m = TinyModel::new(&density, v3);
    let out = mcgate_stdin(
        &[
            &["calibrate", &m.stem()][..],
            &raw,
            &["--signals", "mi,density"],
        ]
        .concat(),
        &frames,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The calibration frames' pixels stay under 120; a white frame is far out (density
    // alone decides here: MI may be far out too).
    let out = mcgate_stdin(
        &[
            "gate",
            &m.stem(),
            "-",
            "--width",
            "2",
            "--height",
            "2",
            "--seed",
            "1",
            "--signals",
            "density",
        ],
        &[255, 255, 255, 255],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = &lines(&out)[0];
    assert_eq!(line["verdict"], "reject", "{line}");
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .starts_with("density -4.0000"),
        "{line}"
    );
    assert_eq!(line["signals"]["density"]["value"], -4.0);
    assert_eq!(line["log_density"], -4.0);
}

/// Row 115: an engine this build does not have, or onnxruntime's settings without it, is a
/// one-line usage error before any model is read; never a silent fall back to tract.
#[test]
fn engine_flags_that_cannot_be_honoured_are_refused() {
    let stem = root().join("models/mnist");
    let stem = stem.to_str().unwrap();
    let sample = root().join("samples/mnist");
    let sample = sample.to_str().unwrap();
    let out = mcgate(&["gate", stem, sample, "--ort-threads", "2"]);
    assert_one_line_error(&out, 2, "add --engine ort");
    let out = mcgate(&["info", stem, "--ort-library", "/tmp/libonnxruntime.so"]);
    assert_one_line_error(&out, 2, "add --engine ort");
    let out = mcgate(&["gate", stem, sample, "--ort-provider", "cuda"]);
    assert_one_line_error(&out, 2, "add --engine ort");
    // The ort build's refusals (a missing library, no threads): tests/ort_engine.rs.
    #[cfg(not(feature = "ort"))]
    {
        let out = mcgate(&["gate", stem, sample, "--engine", "ort"]);
        assert_one_line_error(&out, 2, "this build has no ort engine");
    }
}
