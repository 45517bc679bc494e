//! Per-frame cost of the photo gate (EfficientNet-Lite0, last-layer MC dropout) and of
//! getting a camera frame to its input.
//!
//! `cargo bench --bench photo` (needs scripts/fetch-lite0.sh) — results and ratios go in
//! docs/BENCHMARKS.md.
//! - lite0_gate_t{4,20,100}: one gated 256×256 frame at T (centre crop, masks, one run with
//!   the trunk once and the classifier as a sparse difference, measures);
//!   lite0_gate_dense_t{20,100}: the same on the plain plan (T classifier products)
//! - lite0_gate_tamper_t20: lite0_gate_t20 with the card's tamper checks (set on the shipped
//!   photo samples and this frame) run on the frame first; it passes them
//! - lite0_gate_fused_t20: lite0_gate_tamper_t20 with MI and entropy fused (Bonferroni,
//!   tables of the 224 photo-variants and this frame): the whole fused gate
//! - lite0_gate_t20_again: lite0_gate_t20's MI-only gate built as those two are (a copy of
//!   the model) and measured after them: the control for their ratios
//! - tamper_measure_256: the tamper measures alone on that 256×256 frame;
//!   tamper_measure_1080p: the same on the photo resized to 1920×1080 (RGB)
//! - lite0_forward_t1: one T=1 forward of the network alone, plain plan: the
//!   deterministic-cost floor
//! - lite0_gate_ort_t{20,100}, lite0_forward_ort_t1 (only with `--features ort`, the
//!   library from `ORT_DYLIB_PATH` or scripts/setup-ort.sh): the gate and onnxruntime's own
//!   T=1 forward through the onnxruntime engine, one intra-op thread
//! - decode_1080p_jpeg: decoding a 1920×1080 JPEG camera frame
//! - preprocess_1080p: a decoded 1920×1080 RGB frame to the network's input (shorter side to
//!   256, centre crop, normalisation)

use std::io::Cursor;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use image::imageops::FilterType;
use mcgate::gate::{Gate, Seeds};
use mcgate::input::frame::{decode_bytes, decode_file, Frame};
use mcgate::input::preprocess::Preprocessor;
use mcgate::model::Model;
use mcgate::run::plan::{Plan, Strategy};

mod card_variants;
use card_variants::Added;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load_from(&root.join("models/lite0-imagenet")).expect("shipped model");
    let photo_path = root.join("data/lite0/photos/foolbox/imagenet_08_915.jpg");
    let photo = decode_file(&photo_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-lite0.sh)", photo_path.display()));
    // 256×256: the gate's resize is skipped, only the crop remains (the network's share).
    let frame = Frame::new(
        0,
        "yurt",
        photo.resize_exact(256, 256, FilterType::Triangle),
    );
    let runs = [
        ("", Strategy::Sparse, &[4, 20, 100][..]),
        ("dense_", Strategy::Dense, &[20, 100]),
    ];
    for (name, strategy, samples) in runs {
        for &samples in samples {
            let mut gate =
                Gate::with_strategy(&model, samples, 0.1, Seeds::PerFrame(1), strategy).unwrap();
            c.bench_function(&format!("lite0_gate_{name}t{samples}"), |b| {
                b.iter(|| gate.score(&frame))
            });
        }
    }
    // The same frame through onnxruntime (feature ort): the gate, and its own T = 1 forward.
    #[cfg(feature = "ort")]
    {
        let engine = card_variants::ort_engine(root);
        let ort = Model::load_from_with(&root.join("models/lite0-imagenet"), &engine)
            .expect("the photo model through onnxruntime (scripts/setup-ort.sh)");
        for samples in [20, 100] {
            let mut gate = Gate::new(&ort, samples, 0.1, Seeds::PerFrame(1)).unwrap();
            c.bench_function(&format!("lite0_gate_ort_t{samples}"), |b| {
                b.iter(|| gate.score(&frame))
            });
        }
        let input = Preprocessor::new(&ort.card.input)
            .run(&frame.image)
            .unwrap()
            .to_vec();
        let mut plan = Plan::new(&ort, 1).unwrap();
        let mut seed = 0u64;
        c.bench_function("lite0_forward_ort_t1", |b| {
            b.iter(|| {
                seed += 1;
                plan.run(&input, seed).unwrap()[0]
            })
        });
    }
    // The card's tamper checks first (set on the photo samples and this frame): it passes
    // them; then with MI and entropy fused (tables of the photo-variants); then the MI-only
    // gate again, built as the two before (a copy of the model in a temporary folder) and
    // measured after them: what their ratios owe to the gate and what to drift.
    for (name, clean, added) in [
        ("lite0_gate_tamper_t20", "samples/photos", Added::Tamper),
        (
            "lite0_gate_fused_t20",
            "data/lite0/variants",
            Added::TamperAndFused,
        ),
        ("lite0_gate_t20_again", "samples/photos", Added::Nothing),
    ] {
        let (_dir, mut gate) = card_variants::gate_with(
            &root.join("models/lite0-imagenet"),
            &root.join(clean),
            &frame,
            added,
        );
        c.bench_function(name, |b| b.iter(|| gate.score(&frame)));
    }
    let mut meter = mcgate::score::tamper::TamperMeter::new();
    c.bench_function("tamper_measure_256", |b| {
        b.iter(|| meter.measure(&frame.image))
    });
    // A 1080p frame: a 57,600-point grid (stride 6), each point's Laplacian read
    // from its four neighbours in the frame.
    let hd = photo
        .resize_exact(1920, 1080, FilterType::Triangle)
        .to_rgb8()
        .into();
    c.bench_function("tamper_measure_1080p", |b| b.iter(|| meter.measure(&hd)));

    let input = Preprocessor::new(&model.card.input)
        .run(&frame.image)
        .unwrap()
        .to_vec();
    let mut plan1 = Plan::with(&model, 1, Strategy::Dense).unwrap();
    let mut seed = 0u64;
    c.bench_function("lite0_forward_t1", |b| {
        b.iter(|| {
            seed += 1;
            plan1.run(&input, seed).unwrap()[0]
        })
    });

    let hd = photo.resize_exact(1920, 1080, FilterType::Triangle);
    let mut jpeg = vec![];
    hd.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    c.bench_function("decode_1080p_jpeg", |b| {
        b.iter(|| decode_bytes(&jpeg).unwrap())
    });
    let mut pre = Preprocessor::new(&model.card.input);
    c.bench_function("preprocess_1080p", |b| b.iter(|| pre.run(&hd).unwrap()[0]));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
