//! Bring your own model, end to end through the binary: a PyTorch-style classifier without
//! Dropout (eval-mode export) → `convert --list-sites` → `convert --site` → `gate` refuses it
//! uncalibrated → `calibrate` on clean frames → `gate`. And the bad inputs of
//! docs/RELIABILITY.md's convert rows: one-line error, exit 3, no file written.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mcgate::contract::onnx::{f32_tensor, int, Dim, Graph};

/// x [1,3,4,4] → Flatten → Gemm 48→8 → Relu (`act`) → Gemm 8→3 → logits; or, with
/// `shape_after`, a Shape node reading `act` (which cannot be made batch-agnostic).
fn classifier(shape_after: bool) -> Vec<u8> {
    classifier_graph(shape_after).to_bytes("test", "0")
}

fn classifier_graph(shape_after: bool) -> Graph {
    let w1: Vec<f32> = (0..8 * 48)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 20.0)
        .collect();
    let w2: Vec<f32> = (0..3 * 8)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
        .collect();
    let mut g = Graph::new("byom");
    g.input(
        "x",
        &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(4)],
    )
    .output("logits", &[Dim::Fixed(1), Dim::Fixed(3)])
    .constant(f32_tensor("w1", &[8, 48], &w1))
    .constant(f32_tensor("b1", &[8], &[0.1; 8]))
    .constant(f32_tensor("w2", &[3, 8], &w2))
    .constant(f32_tensor("b2", &[3], &[0.0, 0.2, -0.2]))
    .node("Flatten", &["x"], "flat", vec![])
    .node(
        "Gemm",
        &["flat", "w1", "b1"],
        "hidden",
        vec![int("transB", 1)],
    )
    .node("Relu", &["hidden"], "act", vec![]);
    if shape_after {
        g.node("Shape", &["act"], "act_shape", vec![])
            .node("Reshape", &["act", "act_shape"], "act2", vec![])
            .node(
                "Gemm",
                &["act2", "w2", "b2"],
                "logits",
                vec![int("transB", 1)],
            );
    } else {
        g.node(
            "Gemm",
            &["act", "w2", "b2"],
            "logits",
            vec![int("transB", 1)],
        );
    }
    g
}

/// x [1,3,4,4] → Conv 1×1 3→2 → a feature map [1,2,4,4], not a classifier's output.
fn feature_map() -> Vec<u8> {
    let mut g = Graph::new("features");
    g.input(
        "x",
        &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(4)],
    )
    .output(
        "map",
        &[Dim::Fixed(1), Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)],
    )
    .constant(f32_tensor(
        "w",
        &[2, 3, 1, 1],
        &[0.5, -0.5, 0.25, 1.0, 0.0, -1.0],
    ))
    .node("Relu", &["x"], "r", vec![])
    .node("Conv", &["r", "w"], "map", vec![]);
    g.to_bytes("test", "0")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().to_string()
}

fn s(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

#[test]
fn a_classifier_of_ones_own_is_converted_calibrated_and_gated() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "net.onnx", &classifier(false));
    let labels = write(dir.path(), "labels.txt", b"cat\ndog\nbird\n");
    let stem = dir.path().join("gated");

    let out = mcgate(&["convert", &input, "--list-sites"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("act") && listing.contains("[1, 8]"),
        "{listing}"
    );
    assert!(
        listing.contains("flat") && listing.contains("[1, 48]"),
        "{listing}"
    );

    let out = mcgate(&[
        "convert",
        &input,
        &s(&stem),
        "--site",
        "act=0.5",
        "--labels",
        &labels,
        "--mean",
        "0.5",
        "--std",
        "0.25",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("softmax appended"), "{said}");
    assert!(said.contains("matches the original within"), "{said}");
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stem.with_extension("card.json")).unwrap()).unwrap();
    assert_eq!(card["schema"], "mcgate.card/2");
    assert_eq!(card["threshold"], serde_json::Value::Null);
    assert_eq!(card["classes"], serde_json::json!(["cat", "dog", "bird"]));
    assert_eq!(card["dropout_sites"][0]["shape"], serde_json::json!([8]));
    assert_eq!(card["input"]["mean"], serde_json::json!([0.5, 0.5, 0.5]));
    assert!(card["provenance"]["command"]
        .as_str()
        .unwrap()
        .contains("--site act=0.5"));

    // Uncalibrated: refused, and told how to calibrate.
    let frame = write(dir.path(), "f.ppm", b"P6 4 4 255\n");
    let out = mcgate(&["gate", &s(&stem), &frame]);
    assert_one_line_error(&out, 3, "has no MI threshold yet");

    // Calibrate on 100 raw RGB frames, then gate them.
    let frames: Vec<u8> = (0..100 * 48).map(|i| (i * 31 % 256) as u8).collect();
    let raw = ["-", "--width", "4", "--height", "4", "--seed", "5"];
    let mut args = vec!["calibrate", &s(&stem)]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.extend(raw.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = mcgate_stdin(&args, &frames);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut gate_args = args.clone();
    gate_args[0] = "gate";
    let out = mcgate_stdin(&gate_args, &frames);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = lines(&out);
    assert_eq!(lines.len(), 100);
    let rejected = lines.iter().filter(|l| l["verdict"] == "reject").count();
    assert!(
        rejected <= 5,
        "{rejected} of 100 calibration frames rejected"
    );
    assert!(["cat", "dog", "bird"].contains(&lines[0]["label"].as_str().unwrap()));
}

/// Converts `input` to `<dir>/out` with `extra` flags: must fail with exit 3 and `needle`, and
/// leave no file behind.
fn assert_refused(dir: &Path, input: &str, extra: &[&str], needle: &str) {
    let stem: PathBuf = dir.join("out");
    let mut args = vec!["convert", input];
    let stem_s = s(&stem);
    args.push(&stem_s);
    args.extend(extra);
    let out = mcgate(&args);
    assert_one_line_error(&out, 3, needle);
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("out") || n.starts_with(".out"))
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

/// `--output` picks the classifier among several outputs, and the check compares that one.
#[test]
fn output_picks_one_of_several_and_is_the_one_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = classifier_graph(false);
    g.outputs.insert(
        0,
        mcgate::contract::onnx::value_info("act", &[Dim::Fixed(1), Dim::Fixed(8)]),
    );
    let input = write(dir.path(), "two.onnx", &g.to_bytes("test", "0"));
    let stem = s(&dir.path().join("out"));
    let out = mcgate(&["convert", &input, &stem, "--site", "act=0.5"]);
    assert_one_line_error(&out, 3, "act");
    let out = mcgate(&[
        "convert", &input, &stem, "--site", "act=0.5", "--output", "logits",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 classes"));
}

#[test]
fn bad_models_and_sites_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "net.onnx", &classifier(false));
    let garbage = write(dir.path(), "garbage.onnx", b"\x08\x08not protobuf\xff\xff");
    assert_refused(
        dir.path(),
        &garbage,
        &["--site", "act=0.5"],
        "not an ONNX model",
    );
    assert_refused(dir.path(), &good, &["--site", "nope=0.5"], "nope");
    assert_refused(dir.path(), &good, &["--site", "act=1.5"], "1.5");
    assert_refused(dir.path(), &good, &[], "no dropout site");
    let unbatchable = write(dir.path(), "shape.onnx", &classifier(true));
    assert_refused(dir.path(), &unbatchable, &["--site", "act=0.5"], "Shape");
    let features = write(dir.path(), "features.onnx", &feature_map());
    assert_refused(
        dir.path(),
        &features,
        &["--site", "r=0.5"],
        "a classifier's output is [1, classes]",
    );
    // Probabilities behind a node convert does not read as the Softmax: a second Softmax
    // would flatten them, so it refuses.
    let mut g = classifier_graph(false);
    let last = g.nodes.last_mut().unwrap();
    (last.name, last.output[0]) = ("l".into(), "l".into());
    g.node("Softmax", &["l"], "p", vec![])
        .node("Identity", &["p"], "logits", vec![]);
    let probs = write(dir.path(), "probs.onnx", &g.to_bytes("test", "0"));
    assert_refused(
        dir.path(),
        &probs,
        &["--site", "act=0.5"],
        "already gives probabilities",
    );
    let missing = dir.path().join("missing.onnx");
    let out = mcgate(&["convert", &s(&missing), &s(&dir.path().join("out"))]);
    assert_one_line_error(&out, 3, "cannot read model");
}

/// docs/RELIABILITY.md rows 55 (convert), 64 and 65: masks that drop nothing, an output that
/// would overwrite its input, weights that are not finite and an input shape that overflows.
#[test]
fn convert_refuses_what_would_accept_everything_overwrite_its_input_or_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "net.onnx", &classifier(false));
    for p in ["1e-12", "0.005", "0.9999"] {
        assert_refused(
            dir.path(),
            &good,
            &["--site", &format!("act={p}")],
            "or [0.01, 0.99] (masks that drop almost nothing or almost everything",
        );
    }
    // A Dropout whose ratio drops nothing.
    let mut g = classifier_graph(false);
    for node in &mut g.nodes {
        if node.op_type == "Relu" {
            (node.name, node.output[0]) = ("act0".into(), "act0".into());
        }
    }
    g.node(
        "Dropout",
        &["act0"],
        "act",
        vec![mcgate::contract::onnx::float("ratio", 1e-12)],
    );
    let tiny_dropout = write(dir.path(), "tiny.onnx", &g.to_bytes("test", "0"));
    assert_refused(
        dir.path(),
        &tiny_dropout,
        &[],
        "is outside [0.01, 0.99]: masks that drop almost nothing",
    );

    // `convert net.onnx net`: the output would replace the original.
    let before = std::fs::read(&good).unwrap();
    let stem = s(&dir.path().join("net"));
    let out = mcgate(&["convert", &good, &stem, "--site", "act=0.5"]);
    assert_one_line_error(&out, 2, "would overwrite the model being converted");
    // Through a folder convert would create (found by the outside probe): the same file.
    let through = s(&dir.path().join("sub/../net"));
    let out = mcgate(&["convert", &good, &through, "--site", "act=0.5"]);
    assert_one_line_error(&out, 2, "would overwrite the model being converted");
    assert_eq!(std::fs::read(&good).unwrap(), before);

    // A NaN weight made convert's own check fail as if convert were at fault (exit 1).
    let mut g = classifier_graph(false);
    let mut w2: Vec<f32> = (0..24).map(|i| i as f32 / 24.0).collect();
    w2[5] = f32::NAN;
    g.initializers.retain(|t| t.name != "w2");
    g.constant(f32_tensor("w2", &[3, 8], &w2));
    let nan = write(dir.path(), "nan.onnx", &g.to_bytes("test", "0"));
    assert_refused(
        dir.path(),
        &nan,
        &["--site", "act=0.5"],
        "weight w2 is not all finite",
    );

    // An input of 1e10 × 1e10 pixels.
    let mut g = classifier_graph(false);
    g.inputs[0] = mcgate::contract::onnx::value_info(
        "x",
        &[
            Dim::Fixed(1),
            Dim::Fixed(3),
            Dim::Fixed(10_000_000_000),
            Dim::Fixed(10_000_000_000),
        ],
    );
    let huge = write(dir.path(), "huge.onnx", &g.to_bytes("test", "0"));
    assert_refused(
        dir.path(),
        &huge,
        &["--site", "act=0.5"],
        "over the 16777216 the gate holds",
    );
}
