//! The latent-space study's commands end to end on a VAE trained for one epoch on 2000 digits:
//! each writes its figures and numbers, and the numbers hang together (grid sizes, AUCs in
//! [0, 1], holes that satisfy the search's own conditions, runtime rejections among them).
//!
//! Needs MNIST in data/mnist and the shipped models/mnist (the README's test command).

use std::path::{Path, PathBuf};

use mcgate_training::commands::{holes, interpolations, latent_maps, train_vae, LatentInputs};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn maps_interpolations_and_holes_from_a_small_vae() {
    let dir = tempfile::tempdir().unwrap();
    let vae = dir.path().join("vae.safetensors");
    let data = root().join("data/mnist");
    train_vae::run(train_vae::TrainVaeArgs {
        data: data.clone(),
        out: vae.clone(),
        epochs: 1,
        batch_size: 128,
        lr: 1e-3,
        seed: 1,
        train_limit: Some(2000),
    })
    .unwrap();

    let inputs = LatentInputs {
        vae,
        model: root().join("models/mnist"),
        data,
    };
    let out = dir.path().join("maps");
    latent_maps::run(latent_maps::LatentMapsArgs {
        inputs: inputs.clone(),
        side: 8,
        extent: 10.0,
        samples: 5,
        points: 100,
        seed: 1,
        out: out.clone(),
    })
    .unwrap();
    let map = json(&out.with_extension("json"));
    assert_eq!(map["mutual_information"].as_array().unwrap().len(), 64);
    assert_eq!(map["points"].as_array().unwrap().len(), 100);
    let s = &map["summary"];
    assert!(s["near_cells"].as_u64().unwrap() + s["far_cells"].as_u64().unwrap() <= 64);
    for ext in ["png", "svg"] {
        assert!(out.with_extension(ext).metadata().unwrap().len() > 1000);
    }

    let out = dir.path().join("interp");
    interpolations::run(interpolations::InterpolationsArgs {
        inputs: inputs.clone(),
        from_class: 6,
        to_class: 8,
        steps: 5,
        pairs: 50,
        samples: 5,
        bootstrap: 50,
        seed: 1,
        out: out.clone(),
    })
    .unwrap();
    let it = json(&out.with_extension("json"));
    assert_eq!(
        it["pixel"]["mutual_information"].as_array().unwrap().len(),
        5
    );
    let mid = json(&dir.path().join("interp-midpoints.json"));
    for key in ["auc_mutual_information", "auc_predictive_entropy"] {
        let auc = mid[key][0].as_f64().unwrap();
        let (lo, hi) = (
            mid[key][1][0].as_f64().unwrap(),
            mid[key][1][1].as_f64().unwrap(),
        );
        assert!(
            (0.0..=1.0).contains(&auc) && lo <= hi,
            "{key}: {auc} [{lo}, {hi}]"
        );
    }
    assert!(dir.path().join("interp-images.png").exists());

    let out = dir.path().join("holes");
    holes::run(holes::HolesArgs {
        inputs: inputs.clone(),
        side: 12,
        extent: 10.0,
        min_distance: 1.0,
        confidence: 0.9,
        samples: 5,
        frames: 3,
        seed: 1,
        out: out.clone(),
        also: vec![root().join("models/mnist.int8")],
        raw: Some(dir.path().join("holes.raw")),
        near_raw: Some(dir.path().join("near.raw")),
    })
    .unwrap();
    let h = json(&out.with_extension("json"));
    let threshold = h["search"]["threshold"].as_f64().unwrap();
    let found = h["holes"].as_array().unwrap();
    assert!(h["far_points"].as_u64().unwrap() <= 144);
    let total = h["holes_total"].as_u64().unwrap();
    assert!(found.len() as u64 == total.min(200));
    assert!(total <= h["far_confident"].as_u64().unwrap());
    for hole in found {
        assert!(hole["distance"].as_f64().unwrap() >= 1.0);
        assert!(hole["max_probability"].as_f64().unwrap() >= 0.9);
        assert!(hole["mutual_information"].as_f64().unwrap() < threshold);
    }
    assert!(h["runtime"]["holes_rejected"].as_u64().unwrap() <= total);
    // Another gate on the same holes, at its own card's threshold.
    let also = &h["also"][0];
    assert!(also["model"]
        .as_str()
        .unwrap()
        .ends_with("models/mnist.int8"));
    assert!(also["holes_rejected"].as_u64().unwrap() <= total);
    // Every hole, and every grid point near the data, as one 28×28 frame each.
    let raw = std::fs::read(dir.path().join("holes.raw")).unwrap();
    assert_eq!(raw.len() as u64, total * 784);
    let near = std::fs::read(dir.path().join("near.raw")).unwrap();
    assert_eq!(
        near.len() as u64,
        (144 - h["far_points"].as_u64().unwrap()) * 784
    );
    let frames = std::fs::read_dir(dir.path().join("holes-frames"))
        .unwrap()
        .count();
    assert_eq!(frames, found.len().min(3));
}
