//! EfficientNet-Lite0 in tch against the independent PyTorch reference's golden outputs
//! (`training/tests/golden/lite0/`, written by `scripts/lite0_reference.py`), and its ONNX
//! export run by tract against tch with the same masks.
//!
//! Needs the weights in data/lite0: the README's test command fetches them
//! (scripts/fetch-lite0.sh).

use std::path::{Path, PathBuf};

use mcgate::contract::card::{sha256_hex, Pretrained, Provenance};
use mcgate::model::Model;
use mcgate::run::plan::Plan;
use mcgate_training::export;
use mcgate_training::nets::lite0::{self, EfficientNetLite0};
use mcgate_training::nets::DropoutNet;
use tch::{nn, Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn golden(name: &str) -> serde_json::Value {
    let path = root().join("training/tests/golden/lite0").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The pretrained network, or a panic naming the fetch script.
fn pretrained(vs: &mut nn::VarStore) -> EfficientNetLite0 {
    let net = EfficientNetLite0::new(&vs.root(), lite0::IMAGENET_CLASSES, lite0::IMAGENET_DROP_P);
    let weights = root().join("data/lite0/efficientnet-lite0.safetensors");
    vs.load(&weights)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-lite0.sh)", weights.display()));
    vs.freeze();
    net
}

/// The golden input: x[0,c,h,w] = (f32) sin(0.01·(c·50176 + h·224 + w)), sin in f64.
fn synthetic_input() -> Tensor {
    let values: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| (0.01 * i as f64).sin() as f32)
        .collect();
    Tensor::from_slice(&values).view([1, 3, 224, 224])
}

#[test]
fn same_padding_is_tensorflows() {
    // 224 → 112 with a 3×3 stride-2 kernel: one pixel of padding, at the bottom/right.
    assert_eq!(lite0::same_pad(224, 3, 2), (0, 1));
    // 28 → 14 with 5×5 stride 2: three pixels, one before and two after.
    assert_eq!(lite0::same_pad(28, 5, 2), (1, 2));
    // Stride 1 keeps the size: k − 1 split evenly.
    assert_eq!(lite0::same_pad(14, 5, 1), (2, 2));
    assert_eq!(lite0::same_pad(7, 1, 1), (0, 0));
}

#[test]
fn tch_matches_the_pytorch_reference_and_tract_matches_tch() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = pretrained(&mut vs);
    let want = golden("synthetic.json");
    let x = synthetic_input();
    let (features, logits) = tch::no_grad(|| {
        let f = net.trunk(&x);
        let l = net.logits(&x, false);
        (f, l)
    });
    let features = flat(&features);
    let got16 = &features[..16];
    let d = max_diff(got16, &floats(&want["features_first16"]));
    assert!(d < 1e-4, "pooled features differ from the reference by {d}");
    let sum: f64 = features.iter().map(|&v| v as f64).sum();
    let want_sum = want["features_sum"].as_f64().unwrap();
    assert!(
        (sum - want_sum).abs() < 1e-3 * want_sum.abs(),
        "feature sum {sum} vs {want_sum}"
    );
    let d = max_diff(&flat(&logits), &floats(&want["logits"]));
    assert!(d < 1e-3, "logits differ from the reference by {d}");

    // The export (batch norms folded, SAME as explicit pads) through tract, same masks.
    let onnx = export::onnx_bytes(&net, "test").unwrap();
    let labels = std::fs::read_to_string(root().join("models/imagenet-labels.txt")).unwrap();
    let card = export::card_for(
        &net,
        "lite0-test",
        labels.lines().map(String::from).collect(),
        &onnx,
        20,
        None,
        None,
        Provenance::Pretrained(Pretrained {
            weights: "test".into(),
            weights_sha256: "0".repeat(64),
            published_accuracy: "test".into(),
            source_commit: "test".into(),
        }),
    );
    assert_eq!(card.onnx_sha256, sha256_hex(&onnx));
    let model = Model::from_parts(card, &onnx, Path::new("lite0-test.onnx"))
        .expect("tract loads the export");
    let samples = 3i64;
    let masks = net.sample_masks(&[samples], Device::Cpu);
    let want = tch::no_grad(|| net.head(&net.trunk(&x), &masks).softmax(-1, Kind::Float));
    let want = flat(&want);
    let mut plan = Plan::new(&model, samples as usize).unwrap();
    let image = flat(&x);
    let mask = flat(&masks[0]);
    let got = plan.run_with_masks(&image, &[&mask]).unwrap();
    let d = max_diff(got, &want);
    assert!(d < 1e-4, "tract and tch differ by {d}");
    assert!(want[..1000] != want[1000..2000], "masks had no effect");
}
