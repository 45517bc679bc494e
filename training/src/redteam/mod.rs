//! The red team: the gate attacked by an adversary who knows all of it, judged as deployed.
//!
//! Threat model ([`THREAT_MODEL`]): white box — the architecture, the weights, every signal
//! the gate decides on and its threshold, T and every dropout p — but the masks are secret,
//! drawn per frame by the gate. Attacks ([`pgd`]) are crafted on the float tch network;
//! every final frame is rounded to 8 bits and judged by the runtime library ([`judge`]) with
//! R independent secret mask draws. Bypass = the gate accepts the frame *and* reports
//! another class than its true label. Intervals: a 95 % percentile bootstrap over images
//! (each image's bypass averaged over the draws), and the range over the draws.

pub mod density;
pub mod judge;
pub mod loss;
pub mod patch;
pub mod pgd;

use anyhow::{ensure, Context, Result};
pub use mcgate::contract::card::Budget;
use mcgate::model::Model;
use mcgate::run::rng::{mix, WyRand};
use serde::Serialize;
use tch::Tensor;

use crate::nets::DropoutNet;
use judge::{Judge, Outcome};
use loss::Goal;
use patch::Patch;
use pgd::{Norm, Pgd};

/// What the attacker knows and does not, as the report states it.
pub const THREAT_MODEL: &str = "white box: the attacker knows the architecture and weights, \
every signal the gate decides on (the mutual information, and the predictive entropy and the \
feature density where the card fuses them) and where each rejects, the \
number of Monte-Carlo samples T and every dropout probability; the gate's masks are secret, \
drawn per frame. The attacker perturbs the frame within the stated budget (pixels in [0, 1]); \
the frame reaching the gate is 8-bit. Bypass: the gate accepts the frame and reports a class \
other than its true label.";

/// How an attack perturbs a frame.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Method {
    /// Per frame, within an L∞ or L2 ball.
    Pgd(Pgd),
    /// One universal patch for every frame.
    Patch(Patch),
}

impl Method {
    fn goal(&self) -> Goal {
        match self {
            Method::Pgd(p) => p.loss.goal,
            Method::Patch(p) => p.loss.goal,
        }
    }

    fn budget(&self) -> (Budget, f64) {
        match self {
            Method::Pgd(p) => (
                match p.norm {
                    Norm::Linf => Budget::Linf,
                    Norm::L2 => Budget::L2,
                },
                p.eps,
            ),
            Method::Patch(p) => (Budget::Patch, p.area),
        }
    }
}

/// One attack in the report: a name, its settings, and the network it is crafted on.
#[derive(Debug, Clone, Serialize)]
pub struct NamedAttack {
    pub name: String,
    pub method: Method,
    /// Index into the surrogates: crafted on another network and transferred, the attacker
    /// never querying the judged model (its checks run the surrogate in tch). `None`: white
    /// box on the judged model's own network.
    pub surrogate: Option<usize>,
}

/// A network the attacker trained or obtained instead of the judged one.
pub struct Surrogate<'a> {
    /// How the report names it.
    pub name: String,
    pub net: &'a dyn DropoutNet,
}

/// The attacker's check of a transfer attack, on the surrogate alone as if it were the gate:
/// its own MC prediction and MI (its masks, tch); or, for an attack on the deterministic
/// network (a surrogate trained without dropout), its plain prediction, always "accepted".
fn surrogate_check(
    net: &dyn DropoutNet,
    pixels: &Tensor,
    samples: usize,
    threshold: f64,
    deterministic: bool,
) -> Result<Vec<Outcome>> {
    let input = net.input_from_pixels(pixels);
    if deterministic {
        let probs = crate::nets::deterministic_probs(net, &input)?;
        return Ok(probs
            .chunks(net.classes())
            .map(|row| Outcome {
                accepted: true,
                class: Some(mcgate::score::measures::argmax(row)),
                mi: None,
                seed: 0,
            })
            .collect());
    }
    let measures = crate::nets::mc_measures(net, &input, samples as i64)?;
    Ok(measures
        .iter()
        .map(|m| Outcome {
            accepted: m.mutual_information <= threshold,
            class: Some(m.predicted_class),
            mi: Some(m.mutual_information),
            seed: 0,
        })
        .collect())
}

/// The red team's settings.
pub struct RedTeamConfig {
    pub attacks: Vec<NamedAttack>,
    /// Samples per frame, as the gate runs (the card's default).
    pub samples: usize,
    /// The card's MI threshold: the judges' (a card that fuses signals decides by them).
    pub threshold: f64,
    /// The MI value the attacks aim under: the threshold, or MI's own cut on a card that fuses
    /// signals.
    pub mi_aim: f64,
    /// Independent secret mask draws each final frame is judged under.
    pub mask_draws: usize,
    /// Seeds the judge's draws; the attacker's own checks use another stream.
    pub judge_seed: u64,
    pub check_seed: u64,
    /// Bootstrap resamples of images behind each interval.
    pub bootstrap: usize,
    /// `git describe` of the tree the attacks ran from, recorded in every row.
    pub commit: String,
}

/// One attack at one budget.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub attack: String,
    /// The network the attack was crafted on: `white box`, or the surrogate's name.
    pub crafted_on: String,
    pub goal: Goal,
    pub norm: Budget,
    /// The budget: pixel units ([0, 1]) for L∞ and L2, the area fraction for a patch.
    pub eps: f64,
    /// Evasion: share of (image, mask draw) pairs that got through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypass: Option<f64>,
    /// Evasion: share of (image, mask draw) pairs the gate classifies wrong, accepted or not
    /// (what the attack did to the network; `bypass` is what got past the gate too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub misclassified: Option<f64>,
    /// 95 % bootstrap interval over images of `misclassified`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub misclassified_interval: Option<[f64; 2]>,
    /// Evasion: share of (image, mask draw) pairs classified wrong *and* rejected — what the
    /// gate adds over the network alone (`misclassified` = this + `bypass`, pair by pair).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caught: Option<f64>,
    /// 95 % bootstrap interval over images of `caught`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caught_interval: Option<[f64; 2]>,
    /// Denial of service: share of (image, mask draw) pairs rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<f64>,
    /// 95 % bootstrap interval over images of `bypass` or `rejected`.
    pub interval: [f64; 2],
    /// Lowest and highest share over the mask draws.
    pub draw_range: [f64; 2],
    /// Images attacked.
    pub n: usize,
    pub mask_draws: usize,
    /// Share of the clean versions of these images the gate rejects, same draws.
    pub clean_fpr: f64,
    /// Share of images whose kept iterate reached the goal in the attacker's own check (its
    /// masks).
    pub passed_own_check: f64,
    pub settings: Method,
    /// The class a targeted patch aims at (the best of those tried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_class: Option<i64>,
    pub seconds: f64,
    /// `git describe` of the tree that ran this row (a report updated in parts has several).
    pub commit: String,
}

/// Judged outcomes: `[draw][image]`.
pub type Judged = Vec<Vec<Outcome>>;

/// The judges: one gate per secret draw.
pub struct Referee {
    judges: Vec<Judge>,
}

impl Referee {
    pub fn new(model: &Model, cfg: &RedTeamConfig) -> Result<Referee> {
        ensure!(
            cfg.mask_draws > 0,
            "at least one mask draw judges the frames"
        );
        let judges = (0..cfg.mask_draws as u64)
            .map(|r| Judge::new(model, cfg.samples, cfg.threshold, mix(cfg.judge_seed, r)))
            .collect::<Result<_>>()?;
        Ok(Referee { judges })
    }

    /// Every frame of 8-bit pixels `[N, C, H, W]` under every draw.
    pub fn judge(&mut self, pixels: &Tensor) -> Result<Judged> {
        self.judges.iter_mut().map(|j| j.judge(pixels)).collect()
    }

    /// Draw r judges the frames `frames(r)`: a patch lands elsewhere in each draw.
    pub fn judge_each(&mut self, mut frames: impl FnMut(usize) -> Tensor) -> Result<Judged> {
        self.judges
            .iter_mut()
            .enumerate()
            .map(|(r, j)| j.judge(&frames(r)))
            .collect()
    }
}

/// Share of (image, draw) pairs for which `hit` holds; per-draw shares; the bootstrap
/// interval over images.
pub fn rate(
    judged: &Judged,
    labels: &[i64],
    hit: impl Fn(&Outcome, i64) -> bool,
    bootstrap: usize,
    seed: u64,
) -> (f64, [f64; 2], [f64; 2]) {
    let n = labels.len();
    let draws = judged.len();
    let per_image: Vec<f64> = (0..n)
        .map(|i| judged.iter().filter(|d| hit(&d[i], labels[i])).count() as f64 / draws as f64)
        .collect();
    let per_draw: Vec<f64> = judged
        .iter()
        .map(|d| d.iter().zip(labels).filter(|(o, &l)| hit(o, l)).count() as f64 / n as f64)
        .collect();
    let mean = per_image.iter().sum::<f64>() / n.max(1) as f64;
    let range = [
        per_draw.iter().cloned().fold(f64::INFINITY, f64::min),
        per_draw.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    ];
    (mean, bootstrap_mean(&per_image, bootstrap, seed), range)
}

/// 95 % percentile-bootstrap interval of the mean of `values`.
pub fn bootstrap_mean(values: &[f64], reps: usize, seed: u64) -> [f64; 2] {
    if values.is_empty() || reps == 0 {
        return [f64::NAN, f64::NAN];
    }
    let mut rng = WyRand::new(seed);
    let n = values.len();
    let mut means: Vec<f64> = (0..reps)
        .map(|_| {
            (0..n)
                .map(|_| values[(rng.next_u64() % n as u64) as usize])
                .sum::<f64>()
                / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * reps as f64) as usize).min(reps - 1)];
    [at(0.025), at(0.975)]
}

/// One attack's result: its row, its final 8-bit frames (a patch's: at the attacker's own
/// check placements), and how each fared in the attacker's own last check (the seed there
/// replays it: `mcgate gate --frame-seed`).
pub struct Attacked {
    pub row: Row,
    pub adversarial: Tensor,
    pub own: Vec<Outcome>,
}

/// The images a red team attacks: 8-bit pixels in [0, 1] `[N, C, H, W]` and their labels,
/// each classified right; and other such images a universal patch is trained on.
pub struct Targets {
    pub clean: Tensor,
    pub labels: Vec<i64>,
    pub patch_train: Tensor,
    pub patch_labels: Vec<i64>,
}

/// Runs every attack on the targets, crafted on `net` (or an attack's surrogate) and judged
/// on `model`. Also returns the clean frames' rejection rate under the referee's draws.
pub fn run(
    net: &dyn DropoutNet,
    surrogates: &[Surrogate],
    model: &Model,
    targets: &Targets,
    cfg: &RedTeamConfig,
) -> Result<(Vec<Attacked>, f64)> {
    let (clean, labels) = (&targets.clean, &targets.labels[..]);
    let mut referee = Referee::new(model, cfg)?;
    let mut checker = Judge::new(model, cfg.samples, cfg.threshold, cfg.check_seed)?;
    let clean_judged = referee.judge(clean)?;
    let (clean_fpr, _, _) = rate(&clean_judged, labels, |o, _| !o.accepted, 0, 0);
    let size = clean.size();
    let (h, w) = (size[2], size[3]);
    let mut rows = vec![];
    for (k, attack) in cfg.attacks.iter().enumerate() {
        let start = std::time::Instant::now();
        let mut target_class = None;
        let (adv, own, judged) = match &attack.method {
            Method::Pgd(p) => {
                // The attacker's random starts and EOT mask draws (libtorch's generator):
                // seeded per attack, as the patch's are, so a rerun crafts the same frames.
                tch::manual_seed(mix(cfg.check_seed, 4000 + k as u64) as i64);
                let (adv, own) = match attack.surrogate {
                    None => pgd::run(net, clean, labels, cfg.mi_aim, p, &mut |x| checker.judge(x))?,
                    Some(i) => {
                        let s = surrogates.get(i).context("no such surrogate")?.net;
                        pgd::run(s, clean, labels, cfg.mi_aim, p, &mut |x| {
                            surrogate_check(s, x, cfg.samples, cfg.mi_aim, p.loss.deterministic)
                        })?
                    }
                };
                let judged = referee.judge(&adv)?;
                (adv, own, judged)
            }
            Method::Patch(p) => {
                ensure!(
                    attack.surrogate.is_none(),
                    "a patch is crafted on the judged model's own network"
                );
                ensure!(
                    !targets.patch_labels.is_empty(),
                    "no images to train the patch on"
                );
                let seed = mix(cfg.check_seed, 2000 + k as u64);
                let (sticker, aim) = patch::craft(
                    net,
                    &targets.patch_train,
                    &targets.patch_labels,
                    cfg.mi_aim,
                    p,
                    seed,
                    &mut |x| checker.judge(x),
                )?;
                target_class = aim;
                let side = sticker.size()[1];
                let mut own_rng = WyRand::new(mix(seed, 1));
                let placed =
                    patch::placements(&mut own_rng, labels.len(), side, h, w, &p.placement);
                let adv = patch::apply(clean, &sticker, &placed);
                let own = checker.judge(&adv)?;
                // The judge's placements: a stream the attacker never draws from.
                let judged = referee.judge_each(|r| {
                    let mut rng =
                        WyRand::new(mix(cfg.judge_seed, 3000 + 100 * k as u64 + r as u64));
                    patch::apply(
                        clean,
                        &sticker,
                        &patch::placements(&mut rng, labels.len(), side, h, w, &p.placement),
                    )
                })?;
                (adv, own, judged)
            }
        };
        let goal = attack.method.goal();
        let hit = |o: &Outcome, l: i64| match goal {
            Goal::Bypass => o.bypass(l),
            Goal::Reject => !o.accepted,
        };
        let (share, interval, draw_range) = rate(
            &judged,
            labels,
            hit,
            cfg.bootstrap,
            mix(cfg.judge_seed, 1000 + k as u64),
        );
        let (misclassified, misclassified_interval, _) = rate(
            &judged,
            labels,
            |o, l| o.class.is_some_and(|c| c as i64 != l),
            cfg.bootstrap,
            mix(cfg.judge_seed, 5000 + k as u64),
        );
        let (caught, caught_interval, _) = rate(
            &judged,
            labels,
            |o, l| !o.accepted && o.class.is_some_and(|c| c as i64 != l),
            cfg.bootstrap,
            mix(cfg.judge_seed, 6000 + k as u64),
        );
        let passed = own.iter().zip(labels).filter(|(o, &l)| hit(o, l)).count();
        let (norm, eps) = attack.method.budget();
        let row = Row {
            attack: attack.name.clone(),
            crafted_on: match attack.surrogate {
                None => "white box".into(),
                Some(i) => surrogates[i].name.clone(),
            },
            goal,
            norm,
            eps,
            bypass: (goal == Goal::Bypass).then_some(share),
            misclassified: (goal == Goal::Bypass).then_some(misclassified),
            misclassified_interval: (goal == Goal::Bypass).then_some(misclassified_interval),
            caught: (goal == Goal::Bypass).then_some(caught),
            caught_interval: (goal == Goal::Bypass).then_some(caught_interval),
            rejected: (goal == Goal::Reject).then_some(share),
            interval,
            draw_range,
            n: labels.len(),
            mask_draws: cfg.mask_draws,
            clean_fpr,
            passed_own_check: passed as f64 / labels.len().max(1) as f64,
            settings: attack.method.clone(),
            target_class,
            seconds: start.elapsed().as_secs_f64(),
            commit: cfg.commit.clone(),
        };
        log::info!(
            "{} {:?} eps {:.4}: {} {:.1} % [{:.1}, {:.1}]{} ({:.0} s)",
            row.attack,
            row.norm,
            row.eps,
            if goal == Goal::Bypass {
                "bypass"
            } else {
                "rejected"
            },
            100.0 * share,
            100.0 * interval[0],
            100.0 * interval[1],
            match (row.misclassified, row.caught) {
                (Some(m), Some(c)) => format!(
                    ", misclassified {:.1} % (of which rejected {:.1} %)",
                    100.0 * m,
                    100.0 * c
                ),
                _ => String::new(),
            },
            row.seconds
        );
        rows.push(Attacked {
            row,
            adversarial: adv,
            own,
        });
    }
    Ok((rows, clean_fpr))
}
