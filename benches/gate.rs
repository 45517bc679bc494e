//! Per-frame latency of the gate on the shipped MNIST model.
//!
//! `cargo bench --bench gate` — results and ratios go in docs/BENCHMARKS.md.
//! - gate_t{1,20,100}, gate_int8_t{1,20,100}: one gated frame at T (preprocess, masks, one
//!   batched run, measures), float and int8 models
//! - forward_int8_t1: the int8 model's T=1 forward
//! - forward_t1: one T=1 forward (masks drawn, no measures): the deterministic-cost floor
//! - separate_20x_t1: 20 separate T=1 runs, the naive way to get 20 MC samples
//! - masks_t20: drawing the T=20 masks alone
//! - gate_t20_mm2 (only with `--features multithread-mm`): gate_t20 with tract's matrix
//!   products on a 2-thread pool
//! - frames20_jobs{1,2}: 20 frames at T=20 through `gate --jobs N`'s pool: throughput from
//!   overlapping frames across cores
//! - gate_ensemble_t{1,20}: the 5-member dropout ensemble (`models/mnist-ensemble`), T per
//!   member: at T=20, 100 pooled samples, to set beside gate_t100

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use mcgate::gate::{Gate, Pool, Seeds};
use mcgate::input::frame::{decode_file, Frame};
use mcgate::input::preprocess::Preprocessor;
use mcgate::model::Model;
use mcgate::run::plan::Plan;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load_from(&root.join("models/mnist")).expect("shipped model");
    let image = decode_file(&root.join("samples/mnist/clean/digit_7_0.png")).expect("sample frame");
    let frame = Frame {
        index: 0,
        source: "digit_7".into(),
        image,
    };
    let input = Preprocessor::new(&model.card.input)
        .run(&frame.image)
        .unwrap()
        .to_vec();

    let int8 = Model::load_from(&root.join("models/mnist.int8")).expect("shipped int8 model");
    for (name, model) in [("", &model), ("int8_", &int8)] {
        for samples in [1, 20, 100] {
            let mut gate = Gate::new(model, samples, 0.1, Seeds::PerFrame(1)).unwrap();
            c.bench_function(&format!("gate_{name}t{samples}"), |b| {
                b.iter(|| gate.score(&frame))
            });
        }
    }

    let ensemble = Model::load_from(&root.join("models/mnist-ensemble")).expect("shipped ensemble");
    for samples in [1, 20] {
        let mut gate = Gate::new(&ensemble, samples, 0.1, Seeds::PerFrame(1)).unwrap();
        c.bench_function(&format!("gate_ensemble_t{samples}"), |b| {
            b.iter(|| gate.score(&frame))
        });
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
        .map(|index| {
            Ok(Frame {
                index,
                source: "digit_7".into(),
                image: frame.image.clone(),
            })
        })
        .collect();
    for jobs in [1, 2] {
        let mut pool = Pool::new(&model, 20, 0.1, Seeds::PerFrame(1), jobs).unwrap();
        c.bench_function(&format!("frames20_jobs{jobs}"), |b| {
            b.iter(|| pool.score_all(&items).len())
        });
    }

    let mut seed = 0u64;
    let mut int8_plan1 = Plan::new(&int8, 1).unwrap();
    c.bench_function("forward_int8_t1", |b| {
        b.iter(|| {
            seed += 1;
            int8_plan1.run(&input, seed).unwrap()
        })
    });
    let mut plan1 = Plan::new(&model, 1).unwrap();
    c.bench_function("forward_t1", |b| {
        b.iter(|| {
            seed += 1;
            plan1.run(&input, seed).unwrap()
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
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = bench
}
criterion_main!(benches);
