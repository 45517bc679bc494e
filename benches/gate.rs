//! Per-frame latency of the gate on the shipped MNIST model.
//!
//! `cargo bench --bench gate` — results and ratios go in docs/BENCHMARKS.md.
//! - gate_t{1,20,100}, gate_int8_t{1,20,100}: one gated frame at T (preprocess, masks, one
//!   batched run, measures), float and int8 models, the plan the gate builds (the first
//!   dropout site as a sparse difference)
//! - gate_dense_t{1,20,100}, gate_int8_dense_t20: on the plain plan (`Strategy::Dense`), as
//!   before the sparse path
//! - forward_int8_t1: the int8 model's T=1 forward, plain plan
//! - forward_t1: one T=1 forward of the plain plan (masks drawn, no measures): the cost of
//!   one deterministic forward as tract runs the graph, the floor the T=20 ratio is taken to
//! - forward_sparse_t1: the same through the sparse plan
//! - separate_20x_t1: 20 separate plain T=1 runs, the naive way to get 20 MC samples
//! - masks_t20: drawing the T=20 masks in full (what the plain plan does per frame)
//! - sparse_head_t{20,100}: the sparse layer alone on digit 7's activation (9216 → 128,
//!   20.4 % non-zero): reading the masks where it is non-zero and the per-sample rows
//! - gate_t20_mm2 (only with `--features multithread-mm`): gate_t20 with tract's matrix
//!   products on a 2-thread pool
//! - frames20_jobs{1,2}: 20 frames at T=20 through `gate --jobs N`'s pool: throughput from
//!   overlapping frames across cores
//! - gate_tamper_t20: gate_t20 with the card's tamper checks (set on the bundle's 50 clean
//!   digits) run on the frame first; it passes them, so the model runs too
//! - gate_fused_t20: gate_tamper_t20 with MI and entropy fused (Bonferroni, tables of the
//!   bundle's 490 frames and this one): the whole fused gate
//! - gate_density_model_t20, gate_density_fused_t20 (only where runs/density/mnist-density
//!   exists: `mcgate-training density mnist --out runs/density/mnist-density`): the model
//!   with a log_density branch, MI alone; and after the tamper checks, MI fused with density
//! - gate_ort_t{4,20,100}, forward_ort_t1 (only with `--features ort`, the library from
//!   `ORT_DYLIB_PATH` or scripts/setup-ort.sh): gate_t* and a T=1 forward through the
//!   onnxruntime engine, one intra-op thread
//! - gate_ensemble_t{1,20}: the 5-member dropout ensemble (`models/mnist-ensemble`), T per
//!   member: at T=20, 100 pooled samples, to set beside gate_t100; gate_ensemble_dense_t20
//!   on the plain plan

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use mcgate::engine::tract::sparse::SparseHead;
use mcgate::engine::tract::split::{self, LayerWeights};
use mcgate::engine::tract::TractGraph;
use mcgate::gate::{Gate, Pool, Seeds};
use mcgate::input::frame::{decode_file, Frame};
use mcgate::input::preprocess::Preprocessor;
use mcgate::model::Model;
use mcgate::run::masks::SiteMasks;
use mcgate::run::plan::{Plan, Strategy};
use tract_onnx::prelude::*;

mod card_variants;
use card_variants::Added;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load_from(&root.join("models/mnist")).expect("shipped model");
    let image = decode_file(&root.join("samples/mnist/clean/digit_7_0.png")).expect("sample frame");
    let frame = Frame::new(0, "digit_7", image);
    let input = Preprocessor::new(&model.card.input)
        .run(&frame.image)
        .unwrap()
        .to_vec();

    let int8 = Model::load_from(&root.join("models/mnist.int8")).expect("shipped int8 model");
    let ensemble = Model::load_from(&root.join("models/mnist-ensemble")).expect("shipped ensemble");
    let runs = [
        ("", &model, Strategy::Sparse, &[4, 20, 100][..]),
        ("dense_", &model, Strategy::Dense, &[4, 20, 100]),
        ("int8_", &int8, Strategy::Sparse, &[4, 20, 100]),
        ("int8_dense_", &int8, Strategy::Dense, &[20]),
        ("ensemble_", &ensemble, Strategy::Sparse, &[4, 20]),
        ("ensemble_dense_", &ensemble, Strategy::Dense, &[20]),
    ];
    for (name, model, strategy, samples) in runs {
        for &samples in samples {
            let mut gate =
                Gate::with_strategy(model, samples, 0.1, Seeds::PerFrame(1), strategy).unwrap();
            c.bench_function(&format!("gate_{name}t{samples}"), |b| {
                b.iter(|| gate.score(&frame))
            });
        }
    }

    // The same frame through onnxruntime (feature ort): the whole graph, every mask in full.
    #[cfg(feature = "ort")]
    {
        let engine = card_variants::ort_engine(root);
        let ort = Model::load_from_with(&root.join("models/mnist"), &engine)
            .expect("models/mnist through onnxruntime (scripts/setup-ort.sh)");
        for samples in [4, 20, 100] {
            let mut gate = Gate::new(&ort, samples, 0.1, Seeds::PerFrame(1)).unwrap();
            c.bench_function(&format!("gate_ort_t{samples}"), |b| {
                b.iter(|| gate.score(&frame))
            });
        }
        let mut plan = Plan::new(&ort, 1).unwrap();
        let mut seed = 0u64;
        c.bench_function("forward_ort_t1", |b| {
            b.iter(|| {
                seed += 1;
                plan.run(&input, seed).unwrap()[0]
            })
        });
    }

    let (_dir, mut gate) = card_variants::gate_with(
        &root.join("models/mnist"),
        &root.join("bundles/mnist/clean"),
        &frame,
        Added::Tamper,
    );
    c.bench_function("gate_tamper_t20", |b| b.iter(|| gate.score(&frame)));
    let (_dir, mut gate) = card_variants::gate_with(
        &root.join("models/mnist"),
        &root.join("bundles/mnist"),
        &frame,
        Added::TamperAndFused,
    );
    c.bench_function("gate_fused_t20", |b| b.iter(|| gate.score(&frame)));
    // The density model (`mcgate-training density mnist --out runs/density/mnist-density`,
    // not shipped): its MI-only gate, and MI fused with density after the tamper checks.
    let density = root.join("runs/density/mnist-density");
    if density.with_extension("onnx").exists() {
        let model = Model::load_from(&density).expect("the density model");
        let mut gate = Gate::new(&model, 20, 0.1, Seeds::PerFrame(1)).unwrap();
        c.bench_function("gate_density_model_t20", |b| b.iter(|| gate.score(&frame)));
        let (_dir, mut gate) = card_variants::gate_with(
            &density,
            &root.join("bundles/mnist"),
            &frame,
            Added::TamperAndDensity,
        );
        c.bench_function("gate_density_fused_t20", |b| b.iter(|| gate.score(&frame)));
    } else {
        eprintln!(
            "no {}: gate_density_* skipped (mcgate-training density mnist --out runs/density/mnist-density)",
            density.display()
        );
    }

    #[cfg(feature = "multithread-mm")]
    {
        use tract_linalg::multithread::{set_default_executor, Executor};
        let mut gate = Gate::new(&model, 20, 0.1, Seeds::PerFrame(1)).unwrap();
        set_default_executor(Executor::multithread(2));
        c.bench_function("gate_t20_mm2", |b| b.iter(|| gate.score(&frame)));
        set_default_executor(Executor::SingleThread);
    }

    // 20 frames through a Pool (`gate --jobs N`): N frames scored at once, one thread each.
    let items: Vec<mcgate::input::frame::Item> = (0..20)
        .map(|index| Ok(Frame::new(index, "digit_7", frame.image.clone())))
        .collect();
    for jobs in [1, 2] {
        let mut pool = Pool::new(&model, 20, 0.1, Seeds::PerFrame(1), jobs).unwrap();
        c.bench_function(&format!("frames20_jobs{jobs}"), |b| {
            b.iter(|| pool.score_all(&items).len())
        });
    }

    let mut seed = 0u64;
    let mut int8_plan1 = Plan::with(&int8, 1, Strategy::Dense).unwrap();
    c.bench_function("forward_int8_t1", |b| {
        b.iter(|| {
            seed += 1;
            int8_plan1.run(&input, seed).unwrap()[0]
        })
    });
    let mut sparse1 = Plan::new(&model, 1).unwrap();
    c.bench_function("forward_sparse_t1", |b| {
        b.iter(|| {
            seed += 1;
            sparse1.run(&input, seed).unwrap()[0]
        })
    });
    let mut plan1 = Plan::with(&model, 1, Strategy::Dense).unwrap();
    c.bench_function("forward_t1", |b| {
        b.iter(|| {
            seed += 1;
            plan1.run(&input, seed).unwrap()[0]
        })
    });
    c.bench_function("separate_20x_t1", |b| {
        b.iter(|| {
            for _ in 0..20 {
                seed += 1;
                plan1.run(&input, seed).unwrap();
            }
        })
    });

    let sites: Vec<(usize, f32)> = model
        .card
        .dropout_sites
        .iter()
        .map(|s| (20 * s.sample_len(), s.p))
        .collect();
    let mut buffers: Vec<Vec<f32>> = sites.iter().map(|(n, _)| vec![0.0; *n]).collect();
    let mut rng = mcgate::run::rng::WyRand::new(9);
    c.bench_function("masks_t20", |b| {
        b.iter(|| {
            for (buf, (_, p)) in buffers.iter_mut().zip(&sites) {
                mcgate::run::masks::fill(buf, *p, &mut rng);
            }
        })
    });

    // The sparse layer alone, on the activation the trunk gives for this frame.
    let split = split::split(
        TractGraph::of(model.graph())
            .expect("tract read the model")
            .typed(),
        &model.card,
    )
    .unwrap()
    .expect("models/mnist has a sparse site");
    let trunk = split
        .trunk
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let image =
        tract_ndarray::Array::from_shape_vec(model.card.input.shape.to_vec(), input.clone())
            .unwrap()
            .into_tensor();
    let activation = trunk.run(tvec![image.into_tvalue()]).unwrap().remove(0);
    let a = mcgate::engine::tract::plan::output_slice(&activation)
        .unwrap()
        .to_vec();
    let layer = &split.layers[0];
    let p = model.card.dropout_sites[layer.site].p;
    let masks = SiteMasks::new(p, 0);
    let LayerWeights::Float(rows) = &layer.weights else {
        unreachable!("models/mnist is float")
    };
    let mut head = SparseHead::new(rows.clone(), layer.inputs, layer.outputs, p, masks.kept());
    for samples in [20, 100] {
        let mut out = vec![0.0; samples * layer.outputs];
        c.bench_function(&format!("sparse_head_t{samples}"), |b| {
            b.iter(|| {
                seed += 1;
                head.run(&a, &mut out, |i, m| masks.column(seed, layer.inputs, i, m));
                out[0]
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = bench
}
criterion_main!(benches);
