//! `density` end to end on a small fit (2,000 training images): both feature choices export
//! a model whose density the runtime computes as the f64 fit does (the command's own check),
//! and the gate's sparse plan — which feeds the branch from the sparse head's shared term —
//! gives the whole graph's density.
//!
//! Needs MNIST in data/mnist and the shipped models/mnist (the README's test command).

use std::path::PathBuf;

use mcgate::model::Model;
use mcgate::run::plan::{Plan, Strategy};
use mcgate_training::commands::{density, TrainedModel};
use mcgate_training::data::Known;
use mcgate_training::nets::mnist::DensityFeatures;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
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
            source: TrainedModel {
                dataset: Known::Mnist,
                model: Some(root().join("models/mnist")),
                data: Some(root().join("data/mnist")),
            },
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
    }
    // Two different fits: the ReLU drops what the pre-activation keeps.
    assert_ne!(densities[0], densities[1]);
}
