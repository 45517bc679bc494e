//! `density` end to end on a small fit (2,000 training images): both feature choices export
//! a model whose density the runtime computes as the f64 fit does (the command's own check),
//! and the gate's sparse plan — which feeds the branch from the sparse head's shared term —
//! gives the whole graph's density; the red team's tch copy of it gives the runtime's.
//!
//! Needs MNIST in data/mnist and the shipped models/mnist (the README's test command).

use std::path::PathBuf;

use mcgate::model::Model;
use mcgate::run::plan::{Plan, Strategy};
use mcgate_training::commands::{density, MnistModel, TrainedModel};
use mcgate_training::data::Known;
use mcgate_training::nets::mnist::DensityFeatures;
use mcgate_training::redteam::density::DensityAim;
use tch::{Device, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn source() -> TrainedModel {
    TrainedModel {
        dataset: Known::Mnist,
        model: Some(root().join("models/mnist")),
        data: Some(root().join("data/mnist")),
    }
}

#[test]
fn both_feature_choices_export_a_density_the_sparse_plan_reads_from_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let image: Vec<f32> = {
        let bytes = std::fs::read(root().join("data/mnist/t10k-images-idx3-ubyte")).unwrap();
        bytes[16..16 + 784]
            .iter()
            .map(|&b| b as f32 / 255.0)
            .collect()
    };
    let mut densities = vec![];
    for features in [DensityFeatures::PreRelu, DensityFeatures::Relu] {
        let out = dir.path().join(format!("{features:?}"));
        density::run(density::DensityArgs {
            source: source(),
            out: Some(out.clone()),
            // Fit on the first 2,000 training images only.
            validation: 58_000,
            check: 20,
            features,
        })
        .unwrap();
        let model = Model::load_from(&out).unwrap();
        assert_eq!(
            model.card.output.log_density.as_deref(),
            Some("log_density")
        );
        let mut sparse = Plan::with(&model, 8, Strategy::Sparse).unwrap();
        let mut whole = Plan::with(&model, 8, Strategy::Dense).unwrap();
        assert!(sparse.is_split() && !whole.is_split());
        sparse.run(&image, 1).unwrap();
        whole.run(&image, 1).unwrap();
        let (a, b) = (sparse.log_density().unwrap(), whole.log_density().unwrap());
        assert!(a.is_finite(), "{features:?}: {a}");
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{features:?}: sparse plan {a} against the whole graph {b}"
        );
        densities.push(a);

        // The red team's copy of the density, read back from the ONNX constants and
        // differentiated in tch, gives the runtime's value on the same image.
        let trained = source().load().unwrap();
        let MnistModel::Single(net) = &trained.net else {
            panic!("a single network")
        };
        let onnx = std::fs::read(out.with_extension("onnx")).unwrap();
        let clean: Vec<f64> = (0..20).map(|k| a as f64 + k as f64).collect();
        let aim = DensityAim::from_onnx(&onnx, a as f64 - 5.0, &clean, 0.5, Device::Cpu).unwrap();
        assert_eq!(aim.features, features);
        let x = Tensor::from_slice(&image).view([1, 1, 28, 28]);
        let ours = aim.log_density(net, &x).unwrap().double_value(&[0]);
        assert!(
            (ours - a as f64).abs() <= 1e-3 * (1.0 + ours.abs()),
            "{features:?}: tch {ours} against the runtime's {a}"
        );
        // Aimed halfway between the cut and the clean median.
        assert!((aim.aim - (a as f64 - 5.0 + 0.5 * (5.0 + 10.0))).abs() < 1.0);
    }
    // Two different fits: the ReLU drops what the pre-activation keeps.
    assert_ne!(densities[0], densities[1]);

    // The red team refuses what it cannot aim at: a file without the branch, clean values
    // that leave no room above the cut.
    let plain = std::fs::read(root().join("models/mnist.onnx")).unwrap();
    let clean: Vec<f64> = (0..20).map(f64::from).collect();
    let err = DensityAim::from_onnx(&plain, -5.0, &clean, 0.5, Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("no constant density.whiten"),
        "{err}"
    );
    let onnx = std::fs::read(dir.path().join("PreRelu.onnx")).unwrap();
    let err = DensityAim::from_onnx(&onnx, 50.0, &clean, 0.5, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("no room above the cut"), "{err}");
}
