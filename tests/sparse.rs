//! The sparse-difference plan (`engine::tract::split`, `engine::tract::sparse`) against the
//! plain plan on every shipped model: the path each dropout site takes, the same probabilities
//! within 1e-5 and the same verdicts on every shipped frame and bundle frame, masks drawn from the same seeds.

mod common;

use std::path::PathBuf;

use common::{pngs, root};
use mcgate::engine::SitePath;
use mcgate::gate::{Gate, Seeds};
use mcgate::input::frame::{decode_file, Frame};
use mcgate::input::preprocess::Preprocessor;
use mcgate::model::Model;
use mcgate::run::plan::{Plan, Strategy};
use mcgate::score::verdict::Decision;

fn load(stem: &str) -> Model {
    Model::load_from(&root().join("models").join(stem)).unwrap()
}

fn paths(model: &Model) -> Vec<String> {
    model
        .site_paths()
        .iter()
        .map(|p| match p {
            SitePath::Sparse { layer, .. } => format!("sparse {layer}"),
            SitePath::Dense { .. } => "dense".to_string(),
        })
        .collect()
}

/// Scores every frame with both plans (seed per frame from 7, the card's T and threshold):
/// the probabilities of the first `compared` frames agree within 1e-5, every frame's
/// verdict is the same and its MI within 1e-5. Returns how many frames were rejected.
fn same_verdicts(model: &Model, frames: &[PathBuf], compared: usize) -> usize {
    let samples = model.card.default_samples;
    let threshold = model.card.mi_threshold().unwrap();
    let gate = |strategy| {
        Gate::with_strategy(model, samples, threshold, Seeds::PerFrame(7), strategy).unwrap()
    };
    let (mut sparse, mut dense) = (gate(Strategy::Sparse), gate(Strategy::Dense));
    let mut plans =
        [Strategy::Sparse, Strategy::Dense].map(|s| Plan::with(model, samples, s).unwrap());
    assert!(plans[0].is_split() && !plans[1].is_split());
    let mut preprocessor = Preprocessor::new(&model.card.input);
    let mut rejected = 0;
    for (index, path) in frames.iter().enumerate() {
        let frame = Frame::new(
            index as u64,
            path.display().to_string(),
            decode_file(path).unwrap(),
        );
        let (a, b) = (sparse.score(&frame), dense.score(&frame));
        assert_eq!(
            a.verdict.decision(),
            b.verdict.decision(),
            "{}",
            frame.source
        );
        let (ma, mb) = (a.measures.unwrap(), b.measures.unwrap());
        assert!(
            (ma.mutual_information - mb.mutual_information).abs() < 1e-5,
            "{}: MI {} sparse, {} dense",
            frame.source,
            ma.mutual_information,
            mb.mutual_information
        );
        assert_eq!(ma.predicted_class, mb.predicted_class, "{}", frame.source);
        rejected += (a.verdict.decision() == Decision::Reject) as usize;
        if index < compared {
            let input = preprocessor.run(&frame.image).unwrap().to_vec();
            let [ps, pd] = [0, 1].map(|k| plans[k].run(&input, index as u64).unwrap().to_vec());
            assert_eq!(ps.len(), pd.len());
            let worst = ps
                .iter()
                .zip(&pd)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                worst <= 1e-5,
                "{}: probabilities differ by {worst}",
                frame.source
            );
        }
    }
    rejected
}

#[test]
fn shipped_models_take_the_sparse_path_where_it_applies() {
    assert_eq!(paths(&load("mnist")), ["sparse fc1.ab", "dense"]);
    assert_eq!(paths(&load("fashion")), ["sparse fc1.ab", "dense"]);
    assert_eq!(paths(&load("lite0-imagenet")), ["sparse logits.ab"]);
    let ensemble = paths(&load("mnist-ensemble"));
    let expected: Vec<String> = (0..5)
        .flat_map(|m| [format!("sparse m{m}.fc1.ab"), "dense".into()])
        .collect();
    assert_eq!(ensemble, expected);
    // In the int8 models the masked value is quantised, then two quantised products whose
    // outputs a Concat joins (`fc1.q`): the integer form of the same path.
    for stem in [
        "mnist.int8",
        "fashion.int8",
        "mnist-robust.int8",
        "fashion-robust.int8",
    ] {
        assert_eq!(paths(&load(stem)), ["sparse fc1.q", "dense"]);
    }
    // The second site multiplies an activation that already has T rows (it depends on the
    // first site's mask): the plain plan.
    let mnist = load("mnist");
    let SitePath::Dense { reason } = &mnist.site_paths()[1] else {
        unreachable!()
    };
    assert!(reason.contains("depends on mask_0"), "{reason}");
}

#[test]
fn mnist_models_give_the_dense_plans_verdicts_on_every_shipped_frame() {
    let frames = pngs(&["samples/mnist", "bundles/mnist"]);
    for stem in [
        "mnist",
        "fashion",
        "mnist-ensemble",
        "mnist.int8",
        "fashion.int8",
        "mnist-robust",
        "mnist-robust.int8",
    ] {
        let rejected = same_verdicts(&load(stem), &frames, 60);
        // Both verdicts occur, so the comparison is not all-pass against all-pass.
        assert!(
            rejected > 0 && rejected < frames.len(),
            "{stem}: {rejected}"
        );
    }
}

#[test]
fn photo_model_gives_the_dense_plans_verdicts_on_every_shipped_frame() {
    let frames = pngs(&["samples/photos", "bundles/lite0-imagenet"]);
    let rejected = same_verdicts(&load("lite0-imagenet"), &frames, frames.len());
    assert!(rejected < frames.len(), "{rejected}");
}
