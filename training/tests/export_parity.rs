//! Tiny end-to-end check of the training contract: a few hundred MNIST images, one epoch
//! (loss goes down), export, then the same fixed masks in tch and in tract on the exported
//! file give the same probabilities; the int8 export, run by tract, stays close to them; and
//! `evaluate --runtime` scores the attacked images through the exported file.
//!
//! Needs MNIST in data/mnist: the README's test command fetches it (scripts/fetch-mnist.sh).

use std::path::PathBuf;

use mcgate::contract::card::{Metrics, ModelPaths, Provenance, Threshold, Training};
use mcgate::model::Model;
use mcgate::run::plan::Plan;
use mcgate_training::eval::{self, markdown::markdown, tract_scores::tract_scores};
use mcgate_training::nets::{mnist::MnistCnn, DropoutNet, Int8Export};
use mcgate_training::{data, export, train};
use tch::{nn, Device, Kind, Tensor};

fn mnist_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mnist")
}

#[test]
fn one_epoch_on_a_tiny_subset_learns_and_export_matches_tract() {
    let full =
        data::load_split(&mnist_dir(), "train", "scripts/fetch-mnist.sh").expect("MNIST data");
    let tiny = full.slice(0..640);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = MnistCnn::new(&vs.root());
    let cfg = train::TrainConfig {
        epochs: 1,
        batch_size: 32,
        optimizer: train::Optimizer::Adam,
        learning_rate: 1e-3,
        lr_decay: 1.0,
        cyclic_lr: false,
        seed: 0,
        progress: false,
        dropout: true,
        adversarial: None,
        eps_warmup: 0,
    };
    let stats = train::train(&model, &vs, &tiny, &cfg, None).unwrap();
    let s = stats[0];
    assert!(
        s.last_loss < 0.7 * s.first_loss,
        "loss did not go down: {s:?}"
    );

    // Export, with a card, into a temporary directory.
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("tiny");
    let onnx = export::onnx_bytes(&model, "test").unwrap();
    let card = export::card_for(
        &model,
        "tiny",
        data::Known::Mnist.classes(),
        &onnx,
        20,
        Some(Threshold {
            mutual_information: 0.1,
            method: "test".into(),
            target_fpr: None,
            provisional: true,
            calibration: None,
        }),
        Some(Metrics {
            test_accuracy_deterministic: 0.0,
            test_accuracy_mc: 0.0,
            mc_samples: 20,
            test_images: 0,
        }),
        Provenance::Trained(Training {
            dataset: "MNIST subset".into(),
            train_images: tiny.len(),
            epochs: 1,
            batch_size: 32,
            optimizer: "adam".into(),
            seed: 0,
            device: "Cpu".into(),
            train_seconds: 0.0,
            source_commit: "test".into(),
            backbone: None,
            adversarial: None,
        }),
    );
    std::fs::write(stem.with_extension("onnx"), &onnx).unwrap();
    std::fs::write(stem.with_extension("card.json"), card.to_json()).unwrap();
    let loaded = Model::load(&ModelPaths::resolve(&stem)).expect("tract loads the export");

    // The int8 variant, activation scales from 200 of the training images.
    let (calib, _) = tiny.slice(0..200).to_tensors(Device::Cpu);
    let scales = model.calibrate(&calib, 4);
    let int8_onnx = export::int8_onnx_bytes(&model, &scales, "test").unwrap();
    assert!(
        int8_onnx.len() * 10 < onnx.len() * 3,
        "int8 file {} bytes, float {}",
        int8_onnx.len(),
        onnx.len()
    );
    let mut int8_card = card.clone();
    int8_card.onnx_sha256 = mcgate::contract::card::sha256_hex(&int8_onnx);
    let int8_model = Model::from_parts(int8_card, &int8_onnx, &stem.with_extension("int8.onnx"))
        .expect("tract loads the int8 export");

    // The same masks through tch and tract, on three different test images.
    let samples = 7i64;
    let mut plan = Plan::new(&loaded, samples as usize).unwrap();
    let mut int8_plan = Plan::new(&int8_model, samples as usize).unwrap();
    let classes = model.classes();
    for i in [0usize, 1, 2] {
        let (x, _) = full.slice(i..i + 1).to_tensors(Device::Cpu);
        let masks = model.sample_masks(&[samples], Device::Cpu);
        let want = tch::no_grad(|| {
            model
                .head(&model.trunk(&x), &masks)
                .softmax(-1, Kind::Float)
        });
        let want = Vec::<f32>::try_from(want.flatten(0, -1)).unwrap();
        let flat = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        let image = flat(&x);
        let masks: Vec<Vec<f32>> = masks.iter().map(flat).collect();
        let masks: Vec<&[f32]> = masks.iter().map(Vec::as_slice).collect();
        let got = plan.run_with_masks(&image, &masks).unwrap();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "image {i}: tch and tract differ by {worst}");
        // The masks matter: samples differ from each other.
        assert!(
            want[..classes] != want[classes..2 * classes],
            "masks had no effect"
        );

        // The int8 variant runs in the runtime with the same masks and stays close to float.
        let int8_probs = int8_plan.run_with_masks(&image, &masks).unwrap();
        let worst = int8_probs
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.1, "image {i}: int8 and float differ by {worst}");
    }

    // `evaluate --runtime`: the exported file's deterministic predictions agree with tch's.
    let held_out = full.slice(1000..1040);
    let cfg = eval::EvalConfig {
        seed: 3,
        samples: 4,
        eps_255: vec![25.5],
        methods: vec![mcgate_training::attack::Method::Fgm],
        mc_targets: false,
        deterministic_targets: true,
        eot: false,
        true_labels: false,
        adaptive_lambdas: vec![],
        adaptive_eps_255: vec![],
        threshold: 0.1,
        batch: 40,
        exported: vec![eval::ExportedModel {
            name: "tiny".into(),
            model: loaded,
        }],
        correct_only: false,
        bootstrap: 200,
    };
    let images = eval::EvalImages::from_dataset(&held_out, Device::Cpu);
    let report = eval::evaluate(
        &model,
        eval::Crafter::Itself,
        &images,
        None,
        &cfg,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(report.exported.len(), 1);
    assert_eq!(
        report.exported[0].clean_accuracy_deterministic, report.clean_accuracy_deterministic,
        "tract and tch disagree on clean predictions"
    );
    let row = &report.rows[0].exported["tiny"];
    assert!((0.0..=1.0).contains(&row.mi.auc), "{row:?}");
    // Every tch AUC has its bootstrap interval around it.
    let mi = &report.rows[0].all[&mcgate_training::measures::Measure::MutualInformation];
    let (lo, hi) = mi.auc_interval.expect("an interval");
    assert!(lo <= mi.auc && mi.auc <= hi, "{mi:?}");
    assert!(markdown(&report).contains("Through the runtime"));

    // Same seed, same masks: scoring twice gives identical MI.
    let pixels = held_out.pixels();
    let images: Vec<f32> = held_out.images[..pixels * 5]
        .iter()
        .map(|&v| v as f32 / 255.0)
        .collect();
    let a = tract_scores(&cfg.exported[0].model, &images, pixels, 4, 9).unwrap();
    let b = tract_scores(&cfg.exported[0].model, &images, pixels, 4, 9).unwrap();
    assert_eq!(a.mi, b.mi);
    assert_eq!(a.mi.len(), 5);
}
