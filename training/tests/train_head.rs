//! `train-head` on a tiny generated image folder: the head learns it, the features come from
//! the cache the second time (and give the same file), unreadable files stop the run unless
//! left out on purpose, and the exported model runs in the runtime with the tch head's
//! predictions.
//!
//! Needs the weights in data/lite0: the README's test command fetches them
//! (scripts/fetch-lite0.sh).

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use mcgate::contract::card::{ModelPaths, Provenance, SCHEMA};
use mcgate::model::Model;
use mcgate_training::commands::train_head::{train_head, TrainHeadArgs};
use mcgate_training::data::photos::Photos;
use mcgate_training::eval::tract_scores::tract_scores;
use mcgate_training::nets::lite0;
use mcgate_training::nets::DropoutNet;

fn weights() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/lite0/efficientnet-lite0.safetensors")
}

/// Stripes of two colours, `period` pixels wide, across (`horizontal`) or down the image.
fn stripes(width: u32, height: u32, period: u32, horizontal: bool, seed: u32) -> RgbImage {
    let a = Rgb([(seed * 37 % 200) as u8, (seed * 91 % 200) as u8, 40]);
    let b = Rgb([230, 230, (seed * 53 % 255) as u8]);
    RgbImage::from_fn(width, height, |x, y| {
        let t = if horizontal { y } else { x };
        if (t / period).is_multiple_of(2) {
            a
        } else {
            b
        }
    })
}

/// `per_class` striped PNGs in `across/` and `down/`, sizes and periods varying.
fn folder(root: &Path, per_class: u32) {
    for (class, horizontal) in [("across", true), ("down", false)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..per_class {
            let image = stripes(120 + 10 * i, 90 + 7 * i, 6 + i, horizontal, i + 1);
            image
                .save(root.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
}

fn args(data: &Path, out: &Path, cache: &Path) -> TrainHeadArgs {
    TrainHeadArgs {
        data_dir: data.to_owned(),
        weights: weights(),
        out: out.to_owned(),
        p: 0.5,
        epochs: 40,
        batch_size: 4,
        lr: 1e-2,
        lr_decay: 1.0,
        validation_fraction: 0.25,
        samples: 10,
        target_fpr: 0.25,
        seed: 3,
        cache_dir: cache.to_owned(),
        no_cache: false,
        skip_unreadable: false,
        trunk_batch: 4,
    }
}

#[test]
fn trains_a_head_on_an_image_folder_and_exports_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cache) = (dir.path().join("data"), dir.path().join("cache"));
    folder(&data, 8);
    std::fs::write(data.join("across/Thumbs.db"), b"not an image").unwrap();

    let out = dir.path().join("models/stripes");
    let first = train_head(args(&data, &out, &cache)).unwrap();
    assert_eq!(first.classes, ["across", "down"]);
    assert_eq!((first.train_images, first.validation_images), (12, 4));
    assert!(!first.features_from_cache);
    assert_eq!(first.accuracy_deterministic, 1.0, "{first:?}");
    assert_eq!(first.accuracy_mc, 1.0, "{first:?}");
    let onnx = std::fs::read(&first.onnx).unwrap();

    // The card: schema 2, the folder's classes, the backbone it was trained on.
    let model = Model::load(&ModelPaths::resolve(&out)).unwrap();
    assert_eq!(model.card.schema, SCHEMA);
    assert_eq!(model.card.classes, ["across", "down"]);
    assert_eq!(model.card.mi_threshold(), Some(first.threshold));
    let Provenance::Trained(training) = &model.card.provenance else {
        panic!("{:?}", model.card.provenance)
    };
    assert_eq!(training.train_images, 12);
    assert_eq!(
        training.backbone.as_ref().unwrap().weights_sha256,
        lite0::WEIGHTS_SHA256
    );

    // The runtime classifies new images of each class as the head does.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let mut paths = vec![];
    for (k, horizontal) in [true, false].into_iter().enumerate() {
        let path = fresh.join(format!("{k}.png"));
        stripes(300, 200, 9, horizontal, 17).save(&path).unwrap();
        paths.push(path);
    }
    let (net, _vs) = lite0::load_backbone(&weights(), 2, 0.5, tch::Device::Cpu).unwrap();
    let photos = Photos::load(paths, &net.input_spec()).unwrap();
    let x = net.input_from_pixels(&photos.pixels);
    let input = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
    let scores = tract_scores(&model, &input, 3 * 224 * 224, 10, 5).unwrap();
    assert_eq!(scores.det_pred, [0, 1]);
    assert_eq!(scores.mc_pred, [0, 1]);

    // Again: the features come from the cache, and the same seed writes the same file.
    let again = train_head(args(&data, &out, &cache)).unwrap();
    assert!(again.features_from_cache);
    assert_eq!(std::fs::read(&again.onnx).unwrap(), onnx);

    // A file that cannot be decoded stops the run, naming it; --skip-unreadable leaves it out.
    std::fs::write(data.join("down/broken.jpg"), b"\xff\xd8 not really").unwrap();
    let err = format!("{:#}", train_head(args(&data, &out, &cache)).unwrap_err());
    assert!(err.contains("1 of 17 files cannot be read"), "{err}");
    assert!(err.contains("broken.jpg"), "{err}");
    assert!(err.contains("--skip-unreadable"), "{err}");
    let skipped = train_head(TrainHeadArgs {
        skip_unreadable: true,
        ..args(&data, &out, &cache)
    })
    .unwrap();
    assert_eq!(skipped.unreadable, [data.join("down/broken.jpg")]);
    assert_eq!((skipped.train_images, skipped.validation_images), (12, 4));
}

#[test]
fn a_class_too_small_to_hold_out_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    folder(&data, 2);
    std::fs::remove_file(data.join("down/1.png")).unwrap();
    let a = TrainHeadArgs {
        no_cache: true,
        ..args(&data, &dir.path().join("m"), &dir.path().join("c"))
    };
    let err = format!("{:#}", train_head(a).unwrap_err());
    assert!(
        err.contains("class \"down\" has 1 readable image(s)"),
        "{err}"
    );
    assert!(!dir.path().join("m.onnx").exists());
}
