//! One frame through the whole pipeline: preprocess → masks + plan → measures → verdict;
//! and a pool of gates that scores frames on several cores.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::contract::card::{ModelCard, Signal, MAX_SAMPLES, MIN_SAMPLES};
use crate::engine::EngineError;
use crate::input::frame::{self, Frame, Unreadable};
use crate::input::preprocess::Preprocessor;
use crate::model::{LoadError, Model};
use crate::run::plan::{Plan, Strategy};
use crate::run::rng;
use crate::score::fusion::{self, FusedGate};
use crate::score::measures::{self, Measures};
use crate::score::report::Report;
use crate::score::tamper::TamperChecks;
use crate::score::verdict::{self, RejectReason, SharedThreshold, Verdict};
use crate::Error;

/// How each frame's mask seed is chosen.
#[derive(Debug, Clone, Copy)]
pub enum Seeds {
    /// Frame i uses a keyed hash of i under a secret run key: fresh masks that no report
    /// line gives away (runs without `--seed`).
    Secret(rng::RunKey),
    /// Frame i uses `rng::mix(run_seed, i)`: fresh masks, reproducible from the run seed
    /// (`--seed`; anyone who reads one line's seed can work out the others).
    PerFrame(u64),
    /// Every frame uses this seed: replays a verdict reported with it.
    Fixed(u64),
}

impl Seeds {
    /// Frame `index`'s mask seed.
    pub fn for_frame(self, index: u64) -> u64 {
        match self {
            Seeds::Secret(key) => key.frame_seed(index),
            Seeds::PerFrame(run) => rng::mix(run, index),
            Seeds::Fixed(seed) => seed,
        }
    }
}

/// One model's plan and buffers, scoring one frame at a time.
pub struct Gate {
    card: ModelCard,
    plan: Plan,
    preprocessor: Preprocessor,
    scratch: Vec<f64>,
    threshold: Arc<SharedThreshold>,
    seeds: Seeds,
    /// The card's tamper checks, run before the model; none for a card without them.
    tamper: Option<TamperChecks>,
    /// The card's fused decision, which replaces the MI threshold; none: the threshold decides.
    fused: Option<FusedGate>,
}

/// Which of a card's signals decide (`gate --signals`); the default is all the card has.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Model signals. MI alone: the card's MI threshold decides; any other set: the card's
    /// fused decision over them, its level set anew for them.
    pub signals: Vec<Signal>,
    /// The card's tamper checks.
    pub tamper: bool,
}

impl Gate {
    /// A gate running `model` with `samples` MC samples per frame, rejecting MI above
    /// `threshold`.
    pub fn new(model: &Model, samples: usize, threshold: f64, seeds: Seeds) -> Result<Gate, Error> {
        Self::with_strategy(model, samples, threshold, seeds, Strategy::default())
    }

    /// [`Gate::new`] with the plan's [`Strategy`] chosen (the dense plan, to compare).
    pub fn with_strategy(
        model: &Model,
        samples: usize,
        threshold: f64,
        seeds: Seeds,
        strategy: Strategy,
    ) -> Result<Gate, Error> {
        check_settings(&model.card, samples, threshold)?;
        Self::build(
            model,
            Plan::with(model, samples, strategy)?,
            Arc::new(SharedThreshold::new(threshold)),
            seeds,
        )
    }

    /// A gate whose threshold is `threshold`, shared with others and changeable.
    pub fn sharing(
        model: &Model,
        samples: usize,
        threshold: Arc<SharedThreshold>,
        seeds: Seeds,
    ) -> Result<Gate, Error> {
        check_settings(&model.card, samples, threshold.get())?;
        Self::build(model, Plan::new(model, samples)?, threshold, seeds)
    }

    fn build(
        model: &Model,
        plan: Plan,
        threshold: Arc<SharedThreshold>,
        seeds: Seeds,
    ) -> Result<Gate, Error> {
        let card = model.card.clone();
        let fused = card
            .fusion
            .as_ref()
            .map(|f| FusedGate::new(f, None))
            .transpose()
            .map_err(|e| Error::Setting(format!("the card's fused signals: {e}")))?;
        Ok(Gate {
            plan,
            preprocessor: Preprocessor::new(&card.input),
            scratch: vec![0.0; card.classes.len()],
            tamper: card.tamper.as_ref().map(TamperChecks::new),
            fused,
            card,
            threshold,
            seeds,
        })
    }

    /// Scores frames on the card's MI alone, without its tamper checks or fused signals:
    /// calibration sets them anew on clean frames that the old ones might reject.
    pub fn without_tamper(&mut self) {
        self.tamper = None;
        self.fused = None;
    }

    /// Decides on `selection` of the card's signals only (`gate --signals`). A signal or
    /// check the card does not have is refused, never left out.
    pub fn select(&mut self, selection: &Selection) -> Result<(), Error> {
        let card = &self.card;
        if selection.tamper && card.tamper.is_none() {
            return Err(Error::Setting(
                "--signals tamper: the card has no tamper checks (mcgate calibrate --tamper)"
                    .into(),
            ));
        }
        if !selection.tamper {
            self.tamper = None;
        }
        self.fused = match (&card.fusion, selection.signals.as_slice()) {
            (_, []) => {
                return Err(Error::Setting(
                    "--signals names no model signal: the gate needs at least one (mi)".into(),
                ))
            }
            (_, [Signal::Mi]) => None,
            (None, _) => {
                return Err(Error::Setting(format!(
                    "--signals {}: the card fuses no signals, only its MI threshold decides \
                     (mcgate calibrate --signals)",
                    fusion::names(selection.signals.iter().copied())
                )))
            }
            (Some(f), chosen) => Some(
                FusedGate::new(f, Some(chosen))
                    .map_err(|e| Error::Setting(format!("--signals: {e}")))?,
            ),
        };
        Ok(())
    }

    /// The card's frozen check (identical frames in a row at which frames are rejected), when
    /// its tamper checks are in force: the session judges it, on frames in order.
    pub fn frozen_at(&self) -> Option<u64> {
        self.tamper.as_ref().and_then(TamperChecks::frozen_at)
    }

    /// The fused decision in force, if any (else the MI threshold decides).
    pub fn fused(&self) -> Option<&FusedGate> {
        self.fused.as_ref()
    }

    /// The model's card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Monte-Carlo samples T per frame.
    pub fn samples(&self) -> usize {
        self.plan.samples()
    }

    /// The MI threshold in force now.
    pub fn threshold(&self) -> f64 {
        self.threshold.get()
    }

    /// The shared threshold, to change it while the gate runs.
    pub fn threshold_handle(&self) -> Arc<SharedThreshold> {
        self.threshold.clone()
    }

    /// Refuses a model whose Monte-Carlo samples (almost) never disagree (dropout that does
    /// not reach the output, or reaches it too weakly to matter: a conversion or a hand-made
    /// graph): its MI stays in float rounding on every frame, so under any threshold above
    /// that every frame would pass. Tried on a few noise frames at the model's size; one frame
    /// whose MI reaches [`measures::MI_SIGNAL_FLOOR`] is enough (every shipped model gives
    /// 0.01 nats or more on each of them).
    pub fn check_samples_disagree(&mut self, model_path: &std::path::Path) -> Result<(), Error> {
        const FRAMES: usize = 3;
        let input = &self.card.input;
        let (w, h, channels) = (
            input.width() as u32,
            input.height() as u32,
            input.channels(),
        );
        let classes = self.card.classes.len();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut largest: Option<f64> = None;
        for frame in 0..FRAMES {
            let pixels: Vec<u8> = (0..w as usize * h as usize * channels)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 32) as u8
                })
                .collect();
            let image = match channels {
                1 => image::GrayImage::from_raw(w, h, pixels).map(image::DynamicImage::ImageLuma8),
                _ => image::RgbImage::from_raw(w, h, pixels).map(image::DynamicImage::ImageRgb8),
            }
            .expect("the buffer has the image's size");
            let Ok(x) = self.preprocessor.run(&image) else {
                continue;
            };
            // A plan that fails, or gives what cannot be scored, says nothing about the
            // masks: frames it gives are rejected at run time anyway.
            let Ok(probs) = self.plan.run(x, frame as u64) else {
                continue;
            };
            let Ok(m) = measures::compute(probs, classes, &mut self.scratch) else {
                continue;
            };
            if m.mutual_information >= measures::MI_SIGNAL_FLOOR {
                return Ok(());
            }
            largest = Some(largest.map_or(m.mutual_information, |l| l.max(m.mutual_information)));
        }
        let Some(largest) = largest else {
            return Ok(());
        };
        Err(LoadError::Model {
            path: model_path.to_owned(),
            problem: crate::model::ModelError::SamplesAgree {
                rows: self.plan.rows(),
                frames: FRAMES,
                largest_mi: largest,
                floor: measures::MI_SIGNAL_FLOOR,
            },
        }
        .into())
    }

    /// Scores one frame. Never fails: anything that goes wrong becomes a reject.
    pub fn score(&mut self, frame: &Frame) -> Report {
        let start = Instant::now();
        let seed = self.seeds.for_frame(frame.index);
        let threshold = self.threshold.get();
        // A tampered camera is rejected before the model runs: what the model says of a
        // covered lens or of snow is no evidence about the scene.
        let tampered = self.tamper.as_mut().and_then(|t| t.check(&frame.image));
        let (mut fused, mut log_density) = (None, None);
        let (verdict, measures) = match tampered {
            Some(reason) => (Verdict::Reject(reason), None),
            None => match self.measure(frame, seed) {
                Ok(m) => {
                    log_density = self.plan.log_density().map(f64::from);
                    match &self.fused {
                        Some(gate) => {
                            let score = gate.score(&m, log_density);
                            let verdict = verdict::decide_fused(&score);
                            fused = Some(score);
                            (verdict, Some(m))
                        }
                        None => (verdict::decide(&m, threshold), Some(m)),
                    }
                }
                Err(reason) => (Verdict::Reject(reason), None),
            },
        };
        Report {
            index: frame.index,
            source: frame.source.clone(),
            verdict,
            measures,
            seed: Some(seed),
            latency: start.elapsed(),
            alarm: false,
            tamper_event: None,
            log_density,
            threshold,
            fused,
        }
    }

    fn measure(&mut self, frame: &Frame, seed: u64) -> Result<Measures, RejectReason> {
        let inference = |e: EngineError| match e {
            EngineError::Inference(e) => RejectReason::Inference(e),
            other => RejectReason::Inference(other.to_string()),
        };
        let input = self
            .preprocessor
            .run(&frame.image)
            .map_err(RejectReason::Preprocess)?;
        let rows = self.plan.rows();
        let probs = self.plan.run(input, seed).map_err(inference)?;
        let classes = self.card.classes.len();
        // T rows (M·T for an ensemble), not fewer: one row alone has MI 0 and would pass.
        if probs.len() != rows * classes {
            return Err(RejectReason::Unscorable(measures::Unscorable::Samples {
                len: probs.len(),
                samples: rows,
                classes,
            }));
        }
        measures::compute(probs, classes, &mut self.scratch).map_err(RejectReason::Unscorable)
    }

    /// The report for a frame that could not be read.
    pub fn unreadable(&self, u: &Unreadable) -> Report {
        Report {
            index: u.index,
            source: u.source.clone(),
            verdict: Verdict::Reject(RejectReason::Unreadable(u.reason.clone())),
            measures: None,
            seed: None,
            latency: Duration::ZERO,
            alarm: false,
            tamper_event: None,
            log_density: None,
            threshold: self.threshold.get(),
            fused: None,
        }
    }
}

/// Gates on `jobs` threads, scoring consecutive frames at once: throughput from the board's
/// other cores. Frame i's masks depend only on the run seed and i, so the reports are the ones
/// a single gate writes, in the same order.
pub struct Pool {
    gates: Vec<Gate>,
}

impl Pool {
    /// Each job holds its own plan and buffers; more than this is a typo.
    pub const MAX_JOBS: usize = 64;

    /// `jobs` gates, each as [`Gate::new`] makes it.
    pub fn new(
        model: &Model,
        samples: usize,
        threshold: f64,
        seeds: Seeds,
        jobs: usize,
    ) -> Result<Pool, Error> {
        if jobs == 0 || jobs > Self::MAX_JOBS {
            return Err(Error::out_of_range(
                "jobs",
                format!("between 1 and {}", Self::MAX_JOBS),
                jobs,
            ));
        }
        check_settings(&model.card, samples, threshold)?;
        let shared = Arc::new(SharedThreshold::new(threshold));
        let gates = (0..jobs)
            .map(|_| Gate::sharing(model, samples, shared.clone(), seeds))
            .collect::<Result<_, _>>()?;
        Ok(Pool { gates })
    }

    /// Gates (threads) in the pool.
    pub fn jobs(&self) -> usize {
        self.gates.len()
    }

    /// The first gate, for what all share (card, samples, threshold).
    pub fn gate(&self) -> &Gate {
        &self.gates[0]
    }

    /// The gates, for a caller that runs them on its own threads (the GStreamer element): frame
    /// i scored by any of them gets the same report.
    pub fn into_gates(self) -> Vec<Gate> {
        self.gates
    }

    /// [`Gate::without_tamper`] on every gate.
    pub fn without_tamper(&mut self) {
        self.gates.iter_mut().for_each(Gate::without_tamper);
    }

    /// [`Gate::select`] on every gate.
    pub fn select(&mut self, selection: &Selection) -> Result<(), Error> {
        self.gates.iter_mut().try_for_each(|g| g.select(selection))
    }

    /// [`Gate::check_samples_disagree`] on the first gate.
    pub fn check_samples_disagree(&mut self, model_path: &std::path::Path) -> Result<(), Error> {
        self.gates[0].check_samples_disagree(model_path)
    }

    /// Scores every frame of `source` and hands each report, with its frame when it could be
    /// read, to `each` in frame order; stops at `each`'s first error, or before any frame
    /// with an error when its threads cannot start.
    ///
    /// With several jobs the frames are pipelined, for a live stream: a reader thread deals
    /// frame i to worker i mod N (each owning its gate), and the reports are taken back in
    /// frame order, so a frame's report goes out as soon as it and those before it are done,
    /// never waiting for later frames. The reader is detached: an error from `each` ends the
    /// run even while the reader waits on an idle stream (the pool has no gates after that).
    pub fn score_stream<E: From<Error>>(
        &mut self,
        source: impl Iterator<Item = frame::Item> + Send + 'static,
        mut each: impl FnMut(Report, Option<&Frame>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.gates.len() == 1 {
            let mut failed = false;
            for item in source {
                let report = score_guarded(&mut self.gates[0], &item, &mut failed);
                each(report, item.as_ref().ok())?;
            }
            return Ok(());
        }
        let jobs = self.gates.len();
        let (mut deal, mut take, mut workers) = (vec![], vec![], vec![]);
        // A thread the system will not start (a memory limit, a thread limit) stops the run
        // before any frame, with one line: not a panic.
        let cannot_start = |what: String, e: std::io::Error| {
            Error::Setting(format!(
                "cannot start {what} ({e}): run with fewer --jobs than {jobs}"
            ))
        };
        for (index, mut gate) in std::mem::take(&mut self.gates).into_iter().enumerate() {
            // Bounded: a slow consumer holds the workers back, and they the reader.
            let (to_worker, items) = mpsc::sync_channel::<frame::Item>(1);
            let (reports, from_worker) = mpsc::sync_channel::<(Report, frame::Item)>(1);
            let worker = std::thread::Builder::new().spawn(move || {
                let mut failed = false;
                for item in items {
                    let report = score_guarded(&mut gate, &item, &mut failed);
                    if reports.send((report, item)).is_err() {
                        break;
                    }
                }
                gate
            });
            match worker {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    // The started workers end when their channels close; their gates come
                    // back (the one that could not start is gone with its closure).
                    drop(deal);
                    self.gates = workers.into_iter().filter_map(|w| w.join().ok()).collect();
                    return Err(cannot_start(format!("scoring thread {}", index + 1), e).into());
                }
            }
            deal.push(to_worker);
            take.push(from_worker);
        }
        let reader = std::thread::Builder::new().spawn(move || {
            for (i, item) in source.enumerate() {
                if deal[i % jobs].send(item).is_err() {
                    return;
                }
            }
        });
        if let Err(e) = reader {
            // The closure, and with it every worker's channel, is gone: the workers end.
            self.gates = workers.into_iter().filter_map(|w| w.join().ok()).collect();
            return Err(cannot_start("the frame reader thread".into(), e).into());
        }
        // Frame i is worker i mod N's next report; when that worker has none, the stream ended.
        for i in 0.. {
            let Ok((report, item)) = take[i % jobs].recv() else {
                break;
            };
            each(report, item.as_ref().ok())?;
        }
        self.gates = workers
            .into_iter()
            .map(|w| w.join().expect("a worker catches its gate's panics"))
            .collect();
        Ok(())
    }

    /// Scores `items`, `jobs()` at a time, one per thread (the first of each group on this
    /// one); reports in item order. Never fails: a thread that dies rejects its frame.
    pub fn score_all(&mut self, items: &[frame::Item]) -> Vec<Report> {
        let mut reports = Vec::with_capacity(items.len());
        for group in items.chunks(self.gates.len()) {
            self.score_group(group, &mut reports);
        }
        reports
    }

    fn score_group(&mut self, items: &[frame::Item], reports: &mut Vec<Report>) {
        let score = score_item;
        let (first_gate, other_gates) = self.gates.split_first_mut().expect("at least one job");
        let Some((first, rest)) = items.split_first() else {
            return;
        };
        std::thread::scope(|scope| {
            let workers: Vec<_> = other_gates
                .iter_mut()
                .zip(rest)
                .map(|(gate, item)| (item, scope.spawn(move || score(gate, item))))
                .collect();
            reports.push(score(first_gate, first));
            let threshold = first_gate.threshold();
            for (item, worker) in workers {
                reports.push(
                    worker
                        .join()
                        .unwrap_or_else(|_| thread_failed(item, threshold)),
                );
            }
        })
    }
}

/// Settings that can still reject a frame: T of at least [`MIN_SAMPLES`] (one sample has MI
/// 0), and a threshold below the most MI the run can produce, ln(min(classes, rows)): the
/// mutual information of `rows` distributions over `classes` classes is at most both logs.
pub fn check_settings(card: &ModelCard, samples: usize, threshold: f64) -> Result<(), Error> {
    if !(MIN_SAMPLES..=MAX_SAMPLES).contains(&samples) {
        return Err(Error::out_of_range(
            "samples (T)",
            format!(
                "in {MIN_SAMPLES}..={MAX_SAMPLES} (mutual information needs several samples: \
                 with one it is 0 and every frame passes)"
            ),
            samples,
        ));
    }
    check_threshold(card, samples, threshold)
}

/// A threshold must be a finite number of nats, at least 0 and below the most MI the run can
/// produce (else every frame passes).
pub fn check_threshold(card: &ModelCard, samples: usize, threshold: f64) -> Result<(), Error> {
    if !threshold.is_finite() || threshold < 0.0 {
        return Err(Error::out_of_range(
            "threshold",
            "a finite number >= 0",
            threshold,
        ));
    }
    let (classes, rows) = (card.classes.len(), card.output_rows(samples));
    let max = (classes.min(rows) as f64).ln();
    if threshold >= max {
        return Err(Error::out_of_range(
            "threshold",
            format!(
                "below {max:.4} = ln(min({classes} classes, {rows} samples)), the most mutual \
                 information this run can produce (at or above it every frame passes)"
            ),
            threshold,
        ));
    }
    Ok(())
}

/// A frame's report, or an unreadable frame's.
fn score_item(gate: &mut Gate, item: &frame::Item) -> Report {
    match item {
        Ok(frame) => gate.score(frame),
        Err(unreadable) => gate.unreadable(unreadable),
    }
}

/// [`score_item`], with a panic rejecting the frame (fail closed) and every frame after it:
/// a gate that panicked is not trusted again. One job and many behave alike.
fn score_guarded(gate: &mut Gate, item: &frame::Item, failed: &mut bool) -> Report {
    if *failed {
        return thread_failed(item, gate.threshold());
    }
    crate::panic::catch(|| score_item(gate, item)).unwrap_or_else(|panic| {
        *failed = true;
        log::error!("scoring panicked ({panic}); this and every later frame is rejected");
        thread_failed(item, gate.threshold())
    })
}

/// The report for a frame whose scoring thread failed.
fn thread_failed(item: &frame::Item, threshold: f64) -> Report {
    let (index, source) = match item {
        Ok(f) => (f.index, f.source.clone()),
        Err(u) => (u.index, u.source.clone()),
    };
    Report {
        index,
        source,
        verdict: Verdict::Reject(RejectReason::ScoringThread),
        measures: None,
        seed: None,
        latency: Duration::ZERO,
        alarm: false,
        tamper_event: None,
        log_density: None,
        threshold,
        fused: None,
    }
}

#[cfg(all(test, feature = "builtin-model"))]
mod tests {
    use super::*;

    #[test]
    fn a_pool_reports_what_one_gate_reports_in_order() {
        let model = Model::load_from(std::path::Path::new("builtin:mnist")).unwrap();
        let items: Vec<frame::Item> = (0..7u64)
            .map(|index| {
                if index == 3 {
                    return Err(Unreadable {
                        index,
                        source: "missing".into(),
                        reason: frame::ReadError::Empty,
                    });
                }
                // A different image per frame: a bright square at a different place.
                let mut pixels = vec![0u8; 28 * 28];
                for row in 4..14 {
                    for col in 0..10 {
                        pixels[(row + index as usize) * 28 + col + 2 * index as usize] = 255;
                    }
                }
                Ok(Frame::new(
                    index,
                    format!("frame{index}"),
                    image::GrayImage::from_raw(28, 28, pixels).unwrap().into(),
                ))
            })
            .collect();
        let mut gate = Gate::new(&model, 5, 0.1, Seeds::PerFrame(11)).unwrap();
        let want: Vec<Report> = items
            .iter()
            .map(|item| match item {
                Ok(f) => gate.score(f),
                Err(u) => gate.unreadable(u),
            })
            .collect();
        let mut pool = Pool::new(&model, 5, 0.1, Seeds::PerFrame(11), 3).unwrap();
        let got = pool.score_all(&items);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.index, &g.source, g.seed), (w.index, &w.source, w.seed));
            assert_eq!(g.verdict, w.verdict);
            let mi = |r: &Report| r.measures.map(|m| m.mutual_information);
            assert_eq!(mi(g), mi(w), "frame {}", g.index);
        }
        assert!(got[3].measures.is_none());
        assert!(Pool::new(&model, 5, 0.1, Seeds::PerFrame(11), 0).is_err());
    }
}
