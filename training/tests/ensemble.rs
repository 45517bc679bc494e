//! The dropout ensemble end to end on tiny data: two members trained for one epoch with
//! different seeds, assembled by `ensemble` into one ONNX and card; the runtime loads it,
//! its output has M·T rows, the same masks give tch's probabilities, the weights read back
//! from the ONNX are the members' own, and the mistakes a user can make are refused with
//! nothing written.
//!
//! Needs MNIST in data/mnist: the README's test command fetches it (scripts/fetch-mnist.sh).

use std::path::{Path, PathBuf};

use mcgate::contract::card::{ModelCard, Provenance};
use mcgate::model::Model;
use mcgate::run::plan::Plan;
use mcgate_training::commands::ensemble::{self, EnsembleArgs};
use mcgate_training::commands::train::{self, TrainArgs};
use mcgate_training::commands::{load_mnist, MnistModel};
use mcgate_training::data::{self, Known};
use mcgate_training::export::with_ext;
use mcgate_training::nets::DropoutNet;
use mcgate_training::train::Optimizer;
use tch::{Device, Kind, Tensor};

fn mnist_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mnist")
}

fn train_tiny(out: &Path, seed: u64) {
    train::run(TrainArgs {
        dataset: Known::Mnist,
        data: Some(mnist_dir()),
        out: Some(out.to_owned()),
        epochs: 1,
        batch_size: 64,
        optimizer: Optimizer::Adam,
        lr: 1e-3,
        lr_decay: 1.0,
        lr_cyclic: false,
        seed,
        init: Default::default(),
        validation: 1000,
        train_limit: Some(1000),
        test_limit: Some(200),
        samples: 5,
        target_fpr: 0.05,
        no_dropout: false,
        adversarial: None,
        eps: None,
        attack_steps: None,
        step_size: None,
        trades_beta: None,
        eps_warmup: 0,
    })
    .unwrap();
}

fn assemble(members: &[&Path], out: &Path, validation: usize) -> anyhow::Result<()> {
    ensemble::run(EnsembleArgs {
        dataset: Known::Mnist,
        members: members.iter().map(|p| p.to_path_buf()).collect(),
        out: Some(out.to_owned()),
        data: Some(mnist_dir()),
        samples: 5,
        validation,
        target_fpr: 0.05,
        seed: 1,
        test_limit: Some(200),
    })
}

fn load(stem: &Path) -> (ModelCard, MnistModel, tch::nn::VarStore) {
    let card = ModelCard::read(&with_ext(stem, "card.json")).unwrap();
    let (net, vs) = load_mnist(stem, &card, Device::Cpu).unwrap();
    (card, net, vs)
}

#[test]
fn two_members_assemble_into_one_graph_the_runtime_runs_with_pooled_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train_tiny(&a, 1);
    train_tiny(&b, 2);
    let stem = dir.path().join("ens");
    assemble(&[&a, &b], &stem, 1000).unwrap();

    // The card names the members, their masks and how they were trained.
    let (card, net, _vs) = load(&stem);
    let e = card.ensemble.as_ref().expect("an ensemble card");
    let names: Vec<&str> = e.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(e.members[0].sites, ["mask_0", "mask_1"]);
    assert_eq!(e.members[1].sites, ["mask_2", "mask_3"]);
    assert_eq!(
        (e.members[0].training.seed, e.members[1].training.seed),
        (1, 2)
    );
    assert!(matches!(card.provenance, Provenance::Assembled(_)));
    assert_eq!(card.output_rows(5), 10);
    let MnistModel::Ensemble(ens) = net else {
        panic!("loaded as one network")
    };

    // The weights read back from the ONNX are each member's own checkpoint's.
    let x = data::load_split(&mnist_dir(), "t10k", "")
        .unwrap()
        .slice(0..3)
        .to_tensors(Device::Cpu)
        .0;
    for (k, stem) in [&a, &b].into_iter().enumerate() {
        let (_, member, _vs) = load(stem);
        let want = tch::no_grad(|| member.as_dyn().logits(&x, false));
        let got = tch::no_grad(|| ens.members()[k].logits(&x, false));
        assert_eq!(
            Vec::<f32>::try_from(want.flatten(0, -1)).unwrap(),
            Vec::<f32>::try_from(got.flatten(0, -1)).unwrap()
        );
    }

    // The same masks in tch and in the runtime: M·T rows, member by member, within 1e-5.
    let model = Model::load_from(&stem).unwrap();
    let samples = 4i64;
    let mut plan = Plan::new(&model, samples as usize).unwrap();
    assert_eq!(plan.rows(), 8);
    let flat = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    for i in 0..3 {
        let xi = x.narrow(0, i, 1);
        let masks = ens.sample_masks(&[samples], Device::Cpu);
        let want = tch::no_grad(|| ens.head(&ens.trunk(&xi), &masks).softmax(-1, Kind::Float));
        assert_eq!(want.size(), [8, 10]);
        let want = flat(&want);
        let masks: Vec<Vec<f32>> = masks.iter().map(flat).collect();
        let masks: Vec<&[f32]> = masks.iter().map(Vec::as_slice).collect();
        let got = plan.run_with_masks(&flat(&xi), &masks).unwrap();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-5,
            "image {i}: tch and the runtime differ by {worst}"
        );
        // Rows 0..T are member a's, T..2T member b's: the members differ.
        assert_ne!(want[..10], want[40..50], "the members gave the same rows");
    }

    // With every mask 1 the ensemble's deterministic prediction is the mean of its members'
    // softmaxes, which is what its `logits` give.
    let mean = tch::no_grad(|| {
        let a = ens.members()[0].logits(&x, false).softmax(-1, Kind::Float);
        let b = ens.members()[1].logits(&x, false).softmax(-1, Kind::Float);
        (a + b) / 2.0
    });
    let got = tch::no_grad(|| ens.logits(&x, false).softmax(-1, Kind::Float));
    let gap = (mean - got).abs().max().double_value(&[]);
    assert!(gap < 1e-6, "log-mean-probs softmax is off by {gap}");
}

#[test]
fn assembling_refuses_too_few_duplicate_or_overlapping_members_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    train_tiny(&a, 1);
    let out = dir.path().join("ens");
    let refusal = |members: &[&Path], validation: usize| {
        let err = format!("{:#}", assemble(members, &out, validation).unwrap_err());
        assert!(
            !with_ext(&out, "onnx").exists(),
            "{err}: an ONNX was written"
        );
        assert!(
            !with_ext(&out, "card.json").exists(),
            "{err}: a card was written"
        );
        err
    };
    let err = refusal(&[&a], 1000);
    assert!(err.contains("at least 2 members, got 1"), "{err}");
    let err = refusal(&[&a, &a], 1000);
    assert!(err.contains("are the same model"), "{err}");
    // Member `a` trained on the first 1000 images; holding out the last 59 500 would
    // calibrate on some of them.
    let err = refusal(&[&a, &a], 59_500);
    assert!(err.contains("was trained on 1000 images"), "{err}");
}
