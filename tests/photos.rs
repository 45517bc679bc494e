//! The photo gate: the shipped EfficientNet-Lite0 model on real photos, through the runtime's
//! own decode, shorter-side resize and centre crop.
//!
//! Needs the photos in data/lite0: the README's test command fetches them
//! (scripts/fetch-lite0.sh).

mod common;

use common::{lines, mcgate, root};

/// The class after the last `_` of a file stem (`clean_imagenet_00_243` → 243).
fn class_in_name(source: &str) -> i64 {
    let stem = std::path::Path::new(source)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap();
    stem.rsplit_once('_').unwrap().1.parse().unwrap()
}

/// On all 28 fetched photos the runtime's class is the independent PyTorch reference's
/// (PIL resize, float64; `training/tests/golden/lite0/photos.json`): the resamplers differ
/// (image's triangle filter against PIL's bilinear), the classes do not. Where the reference's
/// top two are within 0.02 the runtime's class must be one of them.
#[test]
fn runtime_preprocessing_gives_the_reference_class_on_every_photo() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("training/tests/golden/lite0/photos.json")).unwrap(),
    )
    .unwrap();
    let photos = root().join("data/lite0/photos");
    assert!(
        photos.join("foolbox").is_dir(),
        "no {} (run scripts/fetch-lite0.sh)",
        photos.display()
    );
    let out = mcgate(&[
        "gate",
        "models/lite0-imagenet",
        photos.join("foolbox").to_str().unwrap(),
        photos.join("skimage").to_str().unwrap(),
        "-T",
        "100",
        "--seed",
        "1",
        "--no-latency",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts = lines(&out);
    let reference = golden["photos"].as_array().unwrap();
    assert_eq!(verdicts.len(), reference.len());
    for r in reference {
        let file = r["file"].as_str().unwrap();
        let line = verdicts
            .iter()
            .find(|v| v["source"].as_str().unwrap().ends_with(file))
            .unwrap_or_else(|| panic!("no verdict for {file}"));
        let class = line["class"].as_i64().unwrap();
        let top: Vec<i64> = r["top5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let p: Vec<f64> = r["top5_prob"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        if p[0] - p[1] > 0.02 {
            assert_eq!(
                class, top[0],
                "{file}: runtime {class}, reference {top:?} {p:?}"
            );
        } else {
            assert!(
                top[..2].contains(&class),
                "{file}: runtime {class}, reference {top:?} {p:?}"
            );
        }
    }
}

/// `mcgate gate models/lite0-imagenet samples/photos/`: every clean photo is accepted with its
/// true class, and every adversarial version (crafted against the MC model by
/// `mcgate-training photo-samples`) changes the class in the runtime too — the attack
/// survives the 8-bit file and the runtime's crop.
#[test]
fn shipped_photo_samples_gate_as_written() {
    let out = mcgate(&[
        "gate",
        "models/lite0-imagenet",
        "samples/photos/",
        "--seed",
        "1",
        "--no-latency",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts = lines(&out);
    let clean: Vec<_> = verdicts
        .iter()
        .filter(|v| v["source"].as_str().unwrap().contains("/clean_"))
        .collect();
    assert!(clean.len() >= 3, "{verdicts:?}");
    for v in &clean {
        let source = v["source"].as_str().unwrap();
        assert_eq!(v["verdict"], "accept", "{source}");
        assert_eq!(
            v["class"].as_i64().unwrap(),
            class_in_name(source),
            "{source}"
        );
    }
    let adversarial: Vec<_> = verdicts
        .iter()
        .filter(|v| !v["source"].as_str().unwrap().contains("/clean_"))
        .collect();
    assert!(adversarial.len() >= clean.len(), "{verdicts:?}");
    for v in adversarial {
        let source = v["source"].as_str().unwrap();
        assert_ne!(
            v["class"].as_i64().unwrap(),
            class_in_name(source),
            "{source}"
        );
    }
}

/// `mcgate validate` passes the shipped photo bundle (`mcgate-training photo-bundle`): the
/// runtime cuts each frame back to the pixels the workstation scored, so the MI AUCs agree.
#[test]
fn photo_bundle_validates() {
    let out = mcgate(&[
        "validate",
        "models/lite0-imagenet",
        "bundles/lite0-imagenet",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS"), "{stdout}");
}

/// Was: under `--pass-through` a crop model's accepted frame went downstream whole, squeezed to
/// 224×224, so two thirds of the pixels passed had never been scored. A clean photo inside a
/// 640×480 frame of magenta, placed where the model looks: it is accepted, and what goes
/// downstream (and into `--accepted`) is the photo, with no magenta.
#[test]
fn a_crop_model_passes_on_only_what_it_scored() {
    use mcgate::contract::card::Resize;
    use mcgate::input::preprocess::scored_region;
    let resize = Resize::ShorterSideCrop {
        shorter_side: 256,
        crop: 224,
    };
    let (x, y, w, h) = scored_region(640, 480, resize);
    let photo = image::open(root().join("samples/photos/clean_imagenet_00_243.png")).unwrap();
    let photo = photo.resize_exact(w, h, image::imageops::FilterType::Triangle);
    let mut frame = image::RgbImage::from_pixel(640, 480, image::Rgb([255, 0, 255]));
    image::imageops::replace(&mut frame, &photo.to_rgb8(), x as i64, y as i64);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("frame.png");
    frame.save(&input).unwrap();
    let accepted = dir.path().join("accepted");
    let out = mcgate(&[
        "gate",
        "models/lite0-imagenet",
        input.to_str().unwrap(),
        "--seed",
        "1",
        "--pass-through",
        "--accepted",
        accepted.to_str().unwrap(),
        "--report",
        dir.path().join("verdicts.jsonl").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(out.stdout.len(), 224 * 224 * 3, "one accepted RGB frame");
    let magenta = |p: &[u8]| p[0] > 200 && p[1] < 60 && p[2] > 200;
    let passed = out.stdout.chunks(3).filter(|p| magenta(p)).count();
    assert_eq!(passed, 0, "unscored magenta pixels went downstream");
    let saved = image::open(accepted.join("000000_frame.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(
        saved.dimensions(),
        (224, 224),
        "the model's input, not the {w}×{h} region"
    );
    assert!(!saved.pixels().any(|p| magenta(&p.0)));
}
