//! The red team end to end on a few digits of the shipped MNIST model, a few steps of each
//! attack: the report's rows are complete, and a frame the attack reports as passing (in
//! its own check, through the runtime with its own masks) passes the gate again with the
//! same masks, as an 8-bit frame.
//!
//! Needs MNIST in data/mnist: the README's test command fetches it (scripts/fetch-mnist.sh).

use std::path::PathBuf;

use mcgate::contract::bundle::Manifest;
use mcgate::contract::card::ModelCard;
use mcgate::gate::{Gate, Seeds};
use mcgate::input::frame::Frame;
use mcgate::model::Model;
use mcgate::score::verdict::Decision;
use mcgate_training::commands::redteam::{self, Family, RedTeamArgs};
use mcgate_training::commands::{load_mnist, TrainedModel};
use mcgate_training::data::{self, Known};
use mcgate_training::redteam::judge::{frame_image, quantise};
use mcgate_training::redteam::loss::{Goal, Loss};
use mcgate_training::redteam::patch::{Patch, Placement};
use mcgate_training::redteam::pgd::{Norm, Pgd};
use mcgate_training::redteam::{self as lib, Method, NamedAttack, RedTeamConfig, Targets};
use tch::Device;

/// libtorch's random generator is one per process: a test that checks a seeded rerun holds
/// it against the other tests' attacks, which draw from it on their own threads.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Arguments for a quick run judged on a copy of the shipped model in `dir` (its card gets
/// the security block).
fn args(dir: &std::path::Path) -> RedTeamArgs {
    for ext in ["onnx", "card.json"] {
        std::fs::copy(
            root().join(format!("models/mnist.{ext}")),
            dir.join(format!("m.{ext}")),
        )
        .unwrap();
    }
    RedTeamArgs {
        source: TrainedModel {
            dataset: Known::Mnist,
            model: Some(root().join("models/mnist")),
            data: Some(root().join("data/mnist")),
        },
        judge: Some(dir.join("m")),
        photos: None,
        patch_photos: None,
        weights: root().join("data/lite0/efficientnet-lite0.safetensors"),
        bundle: None,
        bundle_frames: 20,
        card: true,
        out: Some(dir.join("security.json")),
        images: 6,
        seed: 1,
        eps: vec![0.3],
        l2: vec![3.0],
        dos_eps: vec![0.1],
        patch: vec![0.1],
        surrogate: vec![format!(
            "{}@1",
            root().join("models/mnist-ensemble").display()
        )],
        attacks: vec![
            Family::Linf,
            Family::L2,
            Family::Patch,
            Family::Transfer,
            Family::Dos,
        ],
        update: false,
        patch_steps: 2,
        patch_targets: vec![1, 7],
        patch_scale: None,
        patch_brightness: None,
        steps: 2,
        restarts: 2,
        eot: Some(4),
        lambdas: vec![1.0, 10.0],
        hinge_fraction: 0.5,
        kappa: 5.0,
        check_every: 1,
        mask_draws: 2,
        bootstrap: 50,
    }
}

#[test]
fn one_step_of_each_attack_writes_complete_rows() {
    let _rng = torch_rng();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("security.json");
    // A copy of the shipped bundle (for the same ONNX) takes the worst rows' frames.
    let bundle = dir.path().join("bundle");
    copy_dir(&root().join("bundles/mnist"), &bundle);
    // The shipped bundle already holds the red team's groups; a run replaces them all.
    let mut shipped = Manifest::read(&bundle).unwrap();
    let red_team = |name: &str| name.starts_with("redteam_");
    assert!(shipped.groups.iter().any(|g| red_team(&g.name)));
    shipped.groups.retain(|g| !red_team(&g.name));
    shipped.frames.retain(|f| !red_team(&f.group));
    redteam::run(RedTeamArgs {
        bundle: Some(bundle.clone()),
        bundle_frames: 3,
        ..args(dir.path())
    })
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["attack"].as_str().unwrap(), r["norm"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("pgd-deterministic", "linf"),
            ("pgd-eot", "linf"),
            ("pgd-eot-two-phase", "linf"),
            ("pgd-eot", "l2"),
            ("patch-eot", "patch"),
            ("transfer-pgd", "linf"),
            ("transfer-pgd-eot", "linf"),
            ("dos-pgd-eot", "linf"),
        ]
    );
    let n = report["images"].as_u64().unwrap();
    assert!(n > 0 && n <= 6, "{n} images");
    for r in rows {
        let (key, goal) = if r["attack"] == "dos-pgd-eot" {
            ("rejected", "reject")
        } else {
            ("bypass", "bypass")
        };
        assert_eq!(r["goal"], goal);
        let crafted = if r["attack"].as_str().unwrap().starts_with("transfer") {
            "models/mnist-ensemble member 1"
        } else {
            "white box"
        };
        assert!(r["crafted_on"].as_str().unwrap().ends_with(crafted), "{r}");
        let bypass = r[key].as_f64().unwrap();
        let [lo, hi] = [0, 1].map(|k| r["interval"][k].as_f64().unwrap());
        let [dlo, dhi] = [0, 1].map(|k| r["draw_range"][k].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&bypass), "{r}");
        assert!(lo <= bypass && bypass <= hi, "{r}");
        assert!(dlo <= bypass && bypass <= dhi, "{r}");
        assert_eq!(r["n"].as_u64(), Some(n));
        assert_eq!(r["mask_draws"].as_u64(), Some(2));
        assert!(r["clean_fpr"].as_f64().is_some());
        assert!(r["passed_own_check"].as_f64().is_some());
        assert_eq!(r["settings"]["steps"].as_u64(), Some(2));
        let budget = if r["norm"] == "patch" { "area" } else { "eps" };
        assert_eq!(r["settings"][budget], r["eps"], "{r}");
    }
    assert_eq!(
        report["worst"].as_array().unwrap().len(),
        3,
        "one per budget"
    );
    assert!(report["threat_model"].as_str().unwrap().contains("secret"));
    // An MI-only card: the attacks aim under its threshold.
    assert_eq!(report["mi_aim"], report["threshold"]);
    assert!(report["mi_aim"].as_f64().unwrap() > 0.0);
    let dos = &report["dos_smallest_eps"];
    assert!(dos.is_null() || dos == 0.1, "{dos}");

    // The bundle: the paper's groups untouched, one more per budget's worst attack, each
    // with up to 3 frames scored `repeats` times, their files there.
    let grown = Manifest::read(&bundle).unwrap();
    let added: Vec<_> = grown
        .groups
        .iter()
        .filter(|g| g.name.starts_with("redteam_"))
        .collect();
    assert_eq!(added.len(), 3, "{added:?}");
    assert_eq!(grown.groups.len(), shipped.groups.len() + 3);
    let new_frames: Vec<_> = grown
        .frames
        .iter()
        .filter(|f| f.group.starts_with("redteam_"))
        .collect();
    assert_eq!(new_frames.len(), 3 * (n as usize).min(3));
    for f in &new_frames {
        assert_eq!(f.workstation_mutual_information.len(), grown.repeats);
        assert!(bundle.join(&f.file).is_file(), "{}", f.file);
    }
    assert_eq!(grown.frames.len(), shipped.frames.len() + new_frames.len());
    // Appending again replaces what the red team added before (here: with nothing).
    let stem = root().join("models/mnist");
    let card = ModelCard::read(&stem.with_extension("card.json")).unwrap();
    let (net, _vs) = load_mnist(&stem, &card, Device::Cpu).unwrap();
    let frame = |_: usize, p: &tch::Tensor| mcgate_training::bundle::plain_frame(p);
    mcgate_training::bundle::append(
        net.as_dyn(),
        &bundle,
        &shipped.onnx_sha256,
        "redteam_",
        &[],
        &frame,
    )
    .unwrap();
    assert_eq!(Manifest::read(&bundle).unwrap(), shipped);
    assert!(!bundle.join(&new_frames[0].file).exists());

    // The card carries the worst rows, and still loads.
    let model = Model::load_from(&dir.path().join("m")).unwrap();
    let security = model.card.security.expect("a security block");
    assert_eq!(security.worst.len(), 3);
    assert_eq!(security.images as u64, n);
    for (w, r) in security
        .worst
        .iter()
        .zip(report["worst"].as_array().unwrap())
    {
        assert_eq!(w.bypass, r["bypass"].as_f64().unwrap());
        assert_eq!(serde_json::to_value(w.norm).unwrap(), r["norm"]);
    }
    assert_eq!(security.date.len(), 10);

    // --update: a transfer-only run replaces the transfer rows and keeps every other row,
    // in the same order.
    let before = rows.clone();
    redteam::run(RedTeamArgs {
        attacks: vec![Family::Transfer],
        update: true,
        card: false,
        ..args(dir.path())
    })
    .unwrap();
    let updated: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let after = updated["rows"].as_array().unwrap();
    assert_eq!(after.len(), before.len());
    for (b, a) in before.iter().zip(after) {
        assert_eq!(b["attack"], a["attack"]);
        if !b["attack"].as_str().unwrap().starts_with("transfer") {
            assert_eq!(b, a, "a row this run did not make is kept as it was");
        }
        assert!(a["commit"].is_string(), "{a}");
    }
    assert!(updated["seconds"].as_f64() > report["seconds"].as_f64());
    // An earlier report of other images is not updated.
    let err = redteam::run(RedTeamArgs {
        attacks: vec![Family::Dos],
        seed: 2,
        update: true,
        card: false,
        ..args(dir.path())
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("seed"), "{err:#}");
}

#[test]
fn a_frame_the_attack_reports_passing_passes_the_gate_with_the_same_masks() {
    let _rng = torch_rng();
    let stem = root().join("models/mnist");
    let card = ModelCard::read(&root().join("models/mnist.card.json")).unwrap();
    let (net, _vs) = load_mnist(&stem, &card, Device::Cpu).unwrap();
    let model = Model::load_from(&stem).unwrap();
    let test = data::load_split(&root().join("data/mnist"), "t10k", "").unwrap();
    let picked = test.pick(16, 3);
    let (pixels, _) = picked.to_tensors(Device::Cpu);
    let all = quantise(&pixels);
    let labels: Vec<i64> = picked.labels.iter().map(|&l| l as i64).collect();
    let targets = Targets {
        clean: all.narrow(0, 0, 8),
        labels: labels[..8].to_vec(),
        patch_train: all.narrow(0, 8, 8),
        patch_labels: labels[8..].to_vec(),
    };
    let threshold = card.mi_threshold().unwrap();
    let samples = card.default_samples;
    let loss = Loss {
        eot: 4,
        hinge_fraction: 0.5,
        kappa: 5.0,
        deterministic: false,
        targeted: false,
        goal: Goal::Bypass,
        entropy_cut: None,
        density: None,
    };
    let cfg = RedTeamConfig {
        attacks: vec![
            NamedAttack {
                name: "pgd-eot".into(),
                method: Method::Pgd(Pgd {
                    norm: Norm::Linf,
                    eps: 0.3,
                    steps: 6,
                    restarts: 1,
                    lambdas: vec![10.0],
                    two_phase: false,
                    check_every: 2,
                    loss: loss.clone(),
                }),
                surrogate: None,
            },
            NamedAttack {
                name: "patch-eot".into(),
                method: Method::Patch(Patch {
                    area: 0.3,
                    steps: 20,
                    step: 0.05,
                    lambda: 10.0,
                    targets: vec![],
                    placement: Placement::FIXED,
                    loss,
                }),
                surrogate: None,
            },
        ],
        samples,
        threshold,
        mi_aim: threshold,
        mask_draws: 1,
        judge_seed: 11,
        check_seed: 12,
        bootstrap: 0,
        commit: "test".into(),
    };
    let (attacked, _) = lib::run(net.as_dyn(), &[], &model, &targets, &cfg).unwrap();
    for a in &attacked {
        replay(a, &model, &targets.labels, samples, threshold);
    }
    // The attacker's own random draws are seeded: a rerun crafts the same frames.
    let (again, _) = lib::run(net.as_dyn(), &[], &model, &targets, &cfg).unwrap();
    for (a, b) in attacked.iter().zip(&again) {
        assert!(a.adversarial.equal(&b.adversarial), "{}", a.row.attack);
    }
}

/// Every frame the attack's own check saw pass passes again with the masks of that check.
fn replay(a: &lib::Attacked, model: &Model, labels: &[i64], samples: usize, threshold: f64) {
    // 8-bit frames: what the camera can deliver.
    let levels = &a.adversarial * 255.0;
    assert!(
        f64::try_from((&levels - levels.round()).abs().max()).unwrap() < 1e-3,
        "frames are not 8-bit"
    );
    let mut replayed = 0;
    for (i, own) in a.own.iter().enumerate() {
        if !own.bypass(labels[i]) {
            continue;
        }
        let mut gate = Gate::new(model, samples, threshold, Seeds::Fixed(own.seed)).unwrap();
        let image = frame_image(&a.adversarial, i as i64).unwrap();
        let report = gate.score(&Frame::new(0, "replay", image));
        assert_eq!(report.verdict.decision(), Decision::Accept, "image {i}");
        let m = report.measures.unwrap();
        assert_ne!(m.predicted_class as i64, labels[i], "image {i}");
        assert_eq!(Some(m.predicted_class), own.class);
        assert_eq!(Some(m.mutual_information), own.mi);
        replayed += 1;
    }
    assert!(
        replayed > 0,
        "{}: no frame passed: {:?}",
        a.row.attack,
        a.own
    );
}

#[test]
fn dates_are_utc_civil_dates() {
    use std::time::{Duration, UNIX_EPOCH};
    for (secs, date) in [
        (0, "1970-01-01"),
        (951_782_400, "2000-02-29"),
        (1_764_979_199, "2025-12-05"),
        (4_107_542_400, "2100-03-01"),
    ] {
        assert_eq!(
            redteam::utc_date(UNIX_EPOCH + Duration::from_secs(secs)),
            date
        );
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Photos: with --patch-photos the universal patch trains on unlabelled scenes, so every
/// labelled photo is judged (none is left over to train on, which alone is refused), and
/// the patch lands at drawn scales and brightness. Needs data/lite0 (scripts/fetch-lite0.sh).
#[test]
fn a_photo_patch_trains_on_other_scenes_and_lands_scaled_and_lit() {
    let _rng = torch_rng();
    let dir = tempfile::tempdir().unwrap();
    for ext in ["onnx", "card.json"] {
        std::fs::copy(
            root().join(format!("models/lite0-imagenet.{ext}")),
            dir.path().join(format!("lite0.{ext}")),
        )
        .unwrap();
    }
    let photos = || RedTeamArgs {
        photos: Some(root().join("data/lite0/photos/foolbox")),
        judge: Some(dir.path().join("lite0")),
        // More than there are: every photo classified right is attacked.
        images: 100,
        eps: vec![],
        l2: vec![],
        dos_eps: vec![],
        surrogate: vec![],
        patch_targets: vec![859],
        patch_steps: 1,
        card: false,
        ..args(dir.path())
    };
    let err = redteam::run(photos()).expect_err("no photo is left to train on");
    assert!(
        format!("{err:#}").contains("no images to train the patch on"),
        "{err:#}"
    );
    redteam::run(RedTeamArgs {
        patch_photos: Some(root().join("data/lite0/photos/skimage")),
        ..photos()
    })
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("security.json")).unwrap())
            .unwrap();
    let row = &report["rows"][0];
    assert_eq!(row["attack"], "patch-eot");
    assert_eq!(row["n"], report["images"]);
    assert!(report["images"].as_u64().unwrap() >= 15, "{report}");
    assert_eq!(row["target_class"], 859);
    assert_eq!(row["settings"]["targeted"], true);
    assert_eq!(
        row["settings"]["placement"]["scale"],
        serde_json::json!([0.8, 1.25])
    );
    assert_eq!(
        row["settings"]["placement"]["brightness"],
        serde_json::json!([0.7, 1.3])
    );
}
