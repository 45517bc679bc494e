//! Adversarial training on tiny MNIST subsets: the loss is taken on attacked inputs within ε,
//! it goes down, the guard measures PGD accuracy, and `train --adversarial` exports a model
//! whose card records the attack and whose ONNX file tract runs exactly as tch does.
//!
//! Needs MNIST in data/mnist: the README's test command fetches it (scripts/fetch-mnist.sh).

use std::path::PathBuf;

use mcgate::contract::card::{ModelPaths, Provenance, TrainingAttack};
use mcgate::model::Model;
use mcgate::run::plan::Plan;
use mcgate_training::adversarial::{Adversarial, Method, RobustCheck};
use mcgate_training::commands::{self, train::TrainArgs};
use mcgate_training::nets::{mnist::MnistCnn, DropoutNet};
use mcgate_training::{data, train};
use tch::{nn, Device, Kind, Tensor};

fn mnist_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mnist")
}

#[test]
fn the_training_loss_is_taken_on_attacked_inputs_within_eps_and_goes_down() {
    let full =
        data::load_split(&mnist_dir(), "train", "scripts/fetch-mnist.sh").expect("MNIST data");
    let tiny = full.slice(0..960);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = MnistCnn::new(&vs.root());
    let attack = Adversarial::new(Method::Pgd, 0.1).with_steps(3);
    let (pixels, labels) = full.slice(2000..2064).to_tensors(Device::Cpu);
    let check = RobustCheck {
        pixels,
        labels,
        eps: 0.1,
        steps: 5,
        max_drop: 0.2,
    };
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
        adversarial: Some(attack),
        eps_warmup: 0,
    };
    let stats = train::train(&net, &vs, &tiny, &cfg, Some(&check)).unwrap();
    let s = stats[0];
    assert!(
        s.last_loss < 0.8 * s.first_loss,
        "loss on attacked batches did not go down: {s:?}"
    );
    let robust = s.robust_accuracy.expect("the guard ran");
    assert!((0.0..=1.0).contains(&robust), "{s:?}");

    // The attacked batch of a training step: within ε of the clean one, in [0, 1], not the
    // clean batch, and the loss the step minimises is the cross-entropy on it.
    let (x, y) = full.slice(3000..3032).to_tensors(Device::Cpu);
    let train_mode = |px: &Tensor| net.logits(px, true);
    let adv = attack.attack(&train_mode, &x, &y);
    let moved = (&adv - &x).abs().max().double_value(&[]);
    assert!(moved <= 0.1 + 1e-6 && moved > 0.05, "moved {moved}");
    assert!(adv.min().double_value(&[]) >= 0.0 && adv.max().double_value(&[]) <= 1.0);
    let deterministic = |px: &Tensor| net.logits(px, false);
    let (loss, _) = attack.loss(&deterministic, &x, &adv, &y);
    let on_adv = deterministic(&adv).cross_entropy_for_logits(&y);
    let on_clean = deterministic(&x).cross_entropy_for_logits(&y);
    assert_eq!(loss.double_value(&[]), on_adv.double_value(&[]));
    assert!(on_adv.double_value(&[]) > on_clean.double_value(&[]));

    // `fit` trains on whatever its closure takes (a head's features): it refuses to attack them.
    let err = train::fit(&vs, &x, &y, &cfg, |f| net.logits(f, true)).unwrap_err();
    assert!(err.to_string().contains("attacks pixels"), "{err}");
}

/// `train --adversarial fgsm-rs --eps 0.3 --eps-warmup 1 --lr-cyclic` on 640 images.
fn tiny_args(out: PathBuf) -> TrainArgs {
    TrainArgs {
        dataset: data::Known::Mnist,
        data: Some(mnist_dir()),
        out: Some(out),
        epochs: 1,
        batch_size: 64,
        optimizer: train::Optimizer::Adam,
        lr: 1e-3,
        lr_decay: 1.0,
        lr_cyclic: true,
        seed: 4,
        init: Default::default(),
        validation: 600,
        train_limit: Some(640),
        test_limit: Some(100),
        samples: 5,
        target_fpr: 0.05,
        no_dropout: false,
        adversarial: Some(Method::FgsmRs),
        eps: Some(0.3),
        attack_steps: None,
        step_size: None,
        trades_beta: None,
        eps_warmup: 1,
    }
}

#[test]
fn bad_adversarial_settings_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let mut args = tiny_args(out.clone());
    args.attack_steps = Some(3);
    let err = commands::train::run(args).unwrap_err().to_string();
    assert!(err.contains("fgsm-rs takes one step"), "{err}");
    let mut args = tiny_args(out.clone());
    args.no_dropout = true;
    let err = commands::train::run(args).unwrap_err().to_string();
    assert!(err.contains("--no-dropout"), "{err}");
    let mut args = tiny_args(out.clone());
    args.eps = Some(1.5);
    let err = commands::train::run(args).unwrap_err().to_string();
    assert!(err.contains("outside (0, 1]"), "{err}");
    let mut args = tiny_args(out.clone());
    args.trades_beta = Some(3.0);
    let err = commands::train::run(args).unwrap_err().to_string();
    assert!(err.contains("--trades-beta is TRADES's weight"), "{err}");
    assert!(!out.with_extension("card.json").exists());
}

#[test]
fn train_adversarial_records_the_attack_and_exports_what_tract_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("robust");
    commands::train::run(tiny_args(out.clone())).unwrap();

    let loaded = Model::load(&ModelPaths::resolve(&out)).expect("tract loads the export");
    let Provenance::Trained(training) = &loaded.card.provenance else {
        panic!("not a trained provenance")
    };
    let a = training
        .adversarial
        .as_ref()
        .expect("the card records the attack");
    assert_eq!(a.method, TrainingAttack::FgsmRs);
    assert_eq!((a.eps, a.steps, a.eps_warmup_epochs), (0.3, 1, 1));
    assert!((a.step_size - 0.375).abs() < 1e-12, "{a:?}");
    assert_eq!(a.beta, None);

    // The checkpoint in tch and the ONNX file in tract, same masks: same probabilities.
    let vs_ = {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = MnistCnn::new(&vs.root());
        vs.load(out.with_extension("safetensors")).unwrap();
        (vs, net)
    };
    let net = &vs_.1;
    let test = data::load_split(&mnist_dir(), "t10k", "scripts/fetch-mnist.sh").unwrap();
    let samples = 6i64;
    let mut plan = Plan::new(&loaded, samples as usize).unwrap();
    let flat = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    for i in [0usize, 7] {
        let (x, _) = test.slice(i..i + 1).to_tensors(Device::Cpu);
        let masks = net.sample_masks(&[samples], Device::Cpu);
        let want = tch::no_grad(|| net.head(&net.trunk(&x), &masks).softmax(-1, Kind::Float));
        let want = flat(&want);
        let masks: Vec<Vec<f32>> = masks.iter().map(flat).collect();
        let masks: Vec<&[f32]> = masks.iter().map(Vec::as_slice).collect();
        let got = plan.run_with_masks(&flat(&x), &masks).unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "image {i}: tch and tract differ by {worst}");
    }
}
