//! Tamper measures: what a camera's raw frame says about the camera before any model runs —
//! covered or blank (no contrast), blinded (clipped pixels), defocused (no fine detail), snow
//! (detail like independent noise), glare (no blacks left) and frozen (the same picture frame
//! after frame).
//!
//! Each is a number per frame; none decides on its own. Which values are suspicious for a
//! given camera is calibrated on its clean frames, like every other signal: an MNIST digit is
//! half clipped black and that is its normal, a street scene's is not.
//!
//! Measured on the frame's luma (Rec. 601, 0–255), on a grid of at most [`MAX_GRID`] points
//! (every `stride`-th pixel each way, so that a 4K frame costs what a 256×256 one does). The
//! Laplacian at a grid point takes its neighbours at the frame's own resolution (one pixel
//! away, not one grid step): blur is a loss of detail at the camera's pixel scale, and on a
//! coarser grid a 1024-pixel-wide frame blurred by σ = 3 still looks sharp.
//!
//! These are the measures of version [`TAMPER_MEASURES`]; a card's cuts name the version
//! they were set with.

use image::{DynamicImage, GrayImage, RgbImage};

use crate::contract::card::{Tamper, TamperCheck, TamperKind, TAMPER_MEASURES};
use crate::score::verdict::RejectReason;

/// The grid the measures visit has at most this many points.
pub const MAX_GRID: usize = 1 << 16;

/// Luma at or below this, or at or above 255 minus it, counts as clipped.
pub const CLIP_MARGIN: f32 = 2.0;

/// The share of the grid's darkest pixels the black level is read at: a few dead, dark or
/// overlaid pixels do not make a frame's blacks.
pub const BLACK_SHARE: f64 = 0.01;

/// One frame's tamper measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TamperMeasures {
    /// Standard deviation of luma (0–255): near 0 for a covered lens or a blank frame.
    pub contrast: f64,
    /// Share of grid points that are clipped — any colour channel within [`CLIP_MARGIN`] of
    /// 255, or luma within it of 0: near 1 for a blinded or a blacked-out camera. (A channel,
    /// not luma, at the top: an overexposed colour pixel clips its brightest channel first.)
    pub clipped: f64,
    /// Black level (0–255): the level at or under which [`BLACK_SHARE`] of the grid's points
    /// lie, each point read at its darkest colour channel. A scene has some near-black
    /// pixels; light shone into the lens, or a fogged or smeared window, veils the picture
    /// and lifts them all (every channel: a dark colour pixel has one channel near 0).
    pub black_level: f64,
    /// Variance of the 4-neighbour Laplacian of luma at the frame's resolution, sampled at
    /// the grid's interior points: low when defocused or smeared.
    pub sharpness: f64,
    /// The Laplacian's variance against what independent pixel noise of the frame's own
    /// contrast would give (20 × the luma variance): about 1 for snow, far below 1 for a scene
    /// (neighbouring pixels agree); 0 for a flat frame.
    pub noise_like: f64,
}

/// Computes [`TamperMeasures`] with one reusable buffer (no allocation once it has grown to
/// the camera's grid).
#[derive(Debug, Default)]
pub struct TamperMeter {
    luma: Vec<f32>,
}

/// One pixel's luma (0–255), for the layouts a camera sends.
trait Pixels {
    fn luma(&self, x: u32, y: u32) -> f32;
    /// Its luma, brightest and darkest channel.
    fn at(&self, x: u32, y: u32) -> (f32, u8, u8);
}

impl Pixels for GrayImage {
    fn luma(&self, x: u32, y: u32) -> f32 {
        self.get_pixel(x, y).0[0] as f32
    }

    fn at(&self, x: u32, y: u32) -> (f32, u8, u8) {
        let v = self.get_pixel(x, y).0[0];
        (v as f32, v, v)
    }
}

impl Pixels for RgbImage {
    fn luma(&self, x: u32, y: u32) -> f32 {
        luma601(self.get_pixel(x, y).0)
    }

    fn at(&self, x: u32, y: u32) -> (f32, u8, u8) {
        let p = self.get_pixel(x, y).0;
        (
            luma601(p),
            p[0].max(p[1]).max(p[2]),
            p[0].min(p[1]).min(p[2]),
        )
    }
}

/// What one pass over the grid gathers beside the luma buffer.
#[derive(Debug)]
struct Scan {
    /// The grid's size.
    grid: (usize, usize),
    /// Grid points clipped (see [`TamperMeasures::clipped`]).
    clipped: usize,
    /// Grid points by their darkest channel's level.
    darkest: [u32; 256],
    /// Sum, sum of squares and count of the Laplacian at full resolution, where the grid is
    /// coarser than the frame (on a stride-1 grid it is taken from the luma buffer instead).
    laplacian: Option<(f64, f64, usize)>,
}

impl TamperMeter {
    /// A meter with an empty buffer.
    pub fn new() -> TamperMeter {
        TamperMeter::default()
    }

    /// The measures of `image`.
    pub fn measure(&mut self, image: &DynamicImage) -> TamperMeasures {
        let scan = self.scan_image(image, true);
        finish(&self.luma, &scan)
    }

    /// Fills the buffer with the image's luma on the grid, nothing else; returns the grid's
    /// size.
    fn fill(&mut self, image: &DynamicImage) -> (usize, usize) {
        self.scan_image(image, false).grid
    }

    /// One pass over the grid: its luma into the buffer, and with `measures` what the
    /// measures need beside it (clipped points, the darkest channels, the Laplacian).
    fn scan_image(&mut self, image: &DynamicImage, measures: bool) -> Scan {
        match image {
            DynamicImage::ImageLuma8(g) => self.scan(g, measures),
            DynamicImage::ImageRgb8(rgb) => self.scan(rgb, measures),
            // Other layouts (16-bit, alpha, float) go through the image crate's 8-bit RGB
            // once: rare on a camera's path, and the measures need only 8 bits.
            other => self.scan(&other.to_rgb8(), measures),
        }
    }

    fn scan<P: Pixels + image::GenericImageView>(&mut self, pixels: &P, measures: bool) -> Scan {
        let (w, h) = pixels.dimensions();
        let stride = stride(w as usize, h as usize);
        let (gw, gh) = ((w as usize).div_ceil(stride), (h as usize).div_ceil(stride));
        self.luma.clear();
        let mut clipped = 0;
        let mut darkest = [0u32; 256];
        let mut lap = (0.0f64, 0.0f64, 0usize);
        for y in (0..h).step_by(stride) {
            for x in (0..w).step_by(stride) {
                if !measures {
                    self.luma.push(pixels.luma(x, y));
                    continue;
                }
                let (luma, brightest, dark) = pixels.at(x, y);
                self.luma.push(luma);
                clipped +=
                    (luma <= CLIP_MARGIN || brightest as f32 >= 255.0 - CLIP_MARGIN) as usize;
                darkest[dark as usize] += 1;
                if stride > 1 && x > 0 && y > 0 && x + 1 < w && y + 1 < h {
                    let l = pixels.luma(x - 1, y)
                        + pixels.luma(x + 1, y)
                        + pixels.luma(x, y - 1)
                        + pixels.luma(x, y + 1)
                        - 4.0 * luma;
                    let l = l as f64;
                    lap = (lap.0 + l, lap.1 + l * l, lap.2 + 1);
                }
            }
        }
        Scan {
            grid: (gw, gh),
            clipped,
            darkest,
            laplacian: (measures && stride > 1).then_some(lap),
        }
    }
}

/// Every how many pixels the grid takes one, each way, so that it has at most [`MAX_GRID`]
/// points.
pub fn stride(w: usize, h: usize) -> usize {
    let mut s = 1;
    while w.div_ceil(s) * h.div_ceil(s) > MAX_GRID {
        s += 1;
    }
    s
}

/// Rec. 601 luma of an 8-bit RGB pixel.
fn luma601([r, g, b]: [u8; 3]) -> f32 {
    0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32
}

/// The measures from the grid's luma `values` (row-major) and what the scan gathered.
fn finish(values: &[f32], scan: &Scan) -> TamperMeasures {
    let (w, h) = scan.grid;
    debug_assert_eq!(values.len(), w * h);
    let n = values.len().max(1) as f64;
    let (mut sum, mut sq) = (0.0f64, 0.0f64);
    for &v in values {
        sum += v as f64;
        sq += (v as f64) * (v as f64);
    }
    let mean = sum / n;
    let variance = (sq / n - mean * mean).max(0.0);
    // The Laplacian on interior points only: a frame narrower than 3 has no fine detail.
    let (lsum, lsq, ln) = scan.laplacian.unwrap_or_else(|| {
        let (mut lsum, mut lsq, mut ln) = (0.0f64, 0.0f64, 0usize);
        for y in 1..h.saturating_sub(1) {
            for x in 1..w.saturating_sub(1) {
                let at = |x: usize, y: usize| values[y * w + x] as f64;
                let lap =
                    at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y);
                lsum += lap;
                lsq += lap * lap;
                ln += 1;
            }
        }
        (lsum, lsq, ln)
    });
    let sharpness = if ln == 0 {
        0.0
    } else {
        let m = lsum / ln as f64;
        (lsq / ln as f64 - m * m).max(0.0)
    };
    // Below a hundredth of a gray level of spread there is no texture to call noise.
    let noise_like = if variance < 1e-4 {
        0.0
    } else {
        sharpness / (20.0 * variance)
    };
    TamperMeasures {
        contrast: variance.sqrt(),
        clipped: scan.clipped as f64 / n,
        black_level: black_level(&scan.darkest),
        sharpness,
        noise_like,
    }
}

/// The lowest level at or under which [`BLACK_SHARE`] of the points counted in `histogram`
/// lie (0 for none).
fn black_level(histogram: &[u32; 256]) -> f64 {
    let n: u64 = histogram.iter().map(|&c| c as u64).sum();
    let wanted = ((n as f64 * BLACK_SHARE).ceil() as u64).max(1);
    let mut below = 0u64;
    for (level, &count) in histogram.iter().enumerate() {
        below += count as u64;
        if below >= wanted {
            return level as f64;
        }
    }
    0.0
}

/// The measure a tamper check of `kind` reads; NaN for [`TamperKind::Frozen`], which one
/// frame's measures cannot tell (the session counts it, [`FrozenCounter`]).
pub fn value(m: &TamperMeasures, kind: TamperKind) -> f64 {
    match kind {
        TamperKind::Covered => m.contrast,
        TamperKind::Blinded => m.clipped,
        TamperKind::Glare => m.black_level,
        TamperKind::Defocused => m.sharpness,
        TamperKind::Snow => m.noise_like,
        TamperKind::Frozen => f64::NAN,
    }
}

/// A card's tamper checks, run on each raw frame before the model.
#[derive(Debug)]
pub struct TamperChecks {
    checks: Vec<TamperCheck>,
    meter: TamperMeter,
}

impl TamperChecks {
    /// The checks of a card's tamper block.
    pub fn new(tamper: &Tamper) -> TamperChecks {
        TamperChecks {
            checks: tamper.checks.clone(),
            meter: TamperMeter::new(),
        }
    }

    /// The frozen check's cut (identical frames in a row), if the card has one: the session
    /// judges it, on frames in order.
    pub fn frozen_at(&self) -> Option<u64> {
        self.checks
            .iter()
            .find(|c| c.kind == TamperKind::Frozen)
            .map(|c| c.at as u64)
    }

    /// The first per-frame check `image` fails, as a reject reason; `None` when it passes
    /// them all. A measure that is not a number fails (fail closed).
    pub fn check(&mut self, image: &DynamicImage) -> Option<RejectReason> {
        let m = self.meter.measure(image);
        first_failed(&self.checks, &m)
    }
}

/// The first of the per-frame `checks` that measures `m` fail, as a reject reason (the frozen
/// check is the session's). A measure that is not a number fails (fail closed).
pub fn first_failed(checks: &[TamperCheck], m: &TamperMeasures) -> Option<RejectReason> {
    checks.iter().filter(|c| c.kind.per_frame()).find_map(|c| {
        let v = value(m, c.kind);
        let fails = v.is_nan()
            || if c.kind.rejects_low() {
                v <= c.at
            } else {
                v >= c.at
            };
        fails.then_some(RejectReason::Tamper {
            kind: c.kind,
            value: v,
            at: c.at,
        })
    })
}

/// A low check's cut is the clean frames' lowest value divided by this.
pub const LOW_MARGIN: f64 = 4.0;

/// What a tamper makes of a high check's measure: every pixel clipped (blinded), detail
/// exactly as independent noise gives it (snow). A high cut lies halfway from the clean
/// frames' highest value to it.
const TAMPERED_HIGH: f64 = 1.0;

/// A glare cut is the clean frames' highest black level doubled (a light twice as bright as
/// the brightest they saw) plus this many levels: video-range black sits at 16, not 0, so a
/// camera calibrated in full range and switched to video range stays 16 levels under it.
pub const GLARE_MARGIN: f64 = 32.0;

/// No glare check is set where its cut would reach this (three quarters of the range): a
/// scene without dark parts has no blacks to lift.
const GLARE_LIMIT: f64 = 192.0;

/// Identical frames in a row at which a camera counts as frozen, at least: a second at 30
/// frames per second.
pub const FROZEN_FRAMES: u64 = 30;

/// How [`calibrate`] sets each cut, in words (recorded in the card).
pub const RULE: &str = "low checks (covered, defocused): the clean frames' lowest value / 4; \
high checks (blinded, snow): halfway from the clean frames' highest value to 1; glare: twice \
the clean frames' highest black level + 32; a check whose clean frames come too near what a \
tamper gives (a flat clean frame, a clipped share of 0.99, a noise likeness of 0.5, a glare \
cut of 192) is left out; frozen: 30 identical frames in a row, or twice \
the clean frames' longest such run and one more if that is longer";

/// Tamper checks set on clean frames' measures by [`RULE`]: every calibration frame passes
/// each check with a margin. `longest_run`: the most identical frames in a row among them, in
/// order. `None` when no per-frame check can be set (no frames, or every check's clean frames
/// reach its tampered value): a frozen check alone is no tamper check worth the name.
pub fn calibrate(clean: &[TamperMeasures], longest_run: u64) -> Option<Tamper> {
    let mut checks = vec![];
    for kind in TamperKind::ALL.into_iter().filter(|k| k.per_frame()) {
        let values = clean.iter().map(|m| value(m, kind));
        let check = if kind == TamperKind::Glare {
            let highest = values.fold(f64::NEG_INFINITY, f64::max);
            let at = 2.0 * highest + GLARE_MARGIN;
            (highest.is_finite() && at < GLARE_LIMIT).then_some(TamperCheck {
                kind,
                at,
                clean_extreme: highest,
            })
        } else if kind.rejects_low() {
            let lowest = values.fold(f64::INFINITY, f64::min);
            (lowest.is_finite() && lowest > 0.0).then(|| TamperCheck {
                kind,
                at: lowest / LOW_MARGIN,
                clean_extreme: lowest,
            })
        } else {
            let highest = values.fold(f64::NEG_INFINITY, f64::max);
            // Too near the tampered value to leave a margin.
            let limit = if kind == TamperKind::Blinded {
                0.99
            } else {
                0.5
            };
            (highest.is_finite() && highest < limit).then(|| TamperCheck {
                kind,
                at: highest + (TAMPERED_HIGH - highest) / 2.0,
                clean_extreme: highest,
            })
        };
        checks.extend(check);
    }
    if checks.is_empty() {
        return None;
    }
    checks.push(TamperCheck {
        kind: TamperKind::Frozen,
        at: FROZEN_FRAMES.max(2 * longest_run + 1) as f64,
        clean_extreme: longest_run as f64,
    });
    Some(Tamper {
        checks,
        frames: clean.len(),
        rule: RULE.into(),
        measures: TAMPER_MEASURES,
    })
}

/// Counts how many frames in a row showed the same picture: a camera that stopped delivering
/// new frames repeats its last buffer exactly. "The same" is an identical luma grid (the
/// measures' grid, [`MAX_GRID`] points at most): a live camera on a still scene differs frame
/// to frame by sensor noise, and any tolerance that forgave that noise would call every quiet
/// night scene frozen. A frozen picture re-encoded with codec noise is not caught.
#[derive(Debug, Default)]
pub struct FrozenCounter {
    previous: Vec<f32>,
    previous_grid: (usize, usize),
    run: u64,
    meter: TamperMeter,
}

impl FrozenCounter {
    /// A counter that has seen no frame.
    pub fn new() -> FrozenCounter {
        FrozenCounter::default()
    }

    /// Feeds the next frame; returns how many frames in a row, itself included, showed its
    /// picture (1: it differs from the last, or it is the first).
    pub fn push(&mut self, image: &DynamicImage) -> u64 {
        let grid = self.meter.fill(image);
        let same = self.run > 0 && grid == self.previous_grid && self.meter.luma == self.previous;
        self.run = if same { self.run + 1 } else { 1 };
        std::mem::swap(&mut self.previous, &mut self.meter.luma);
        self.previous_grid = grid;
        self.run
    }
}

/// The longest run of identical frames among `images`, in order (0 for none).
pub fn longest_run<'a>(images: impl IntoIterator<Item = &'a DynamicImage>) -> u64 {
    let mut counter = FrozenCounter::new();
    images
        .into_iter()
        .map(|i| counter.push(i))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    /// A reproducible pseudo-random byte stream (xorshift).
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    fn gray(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| Luma([f(x, y)])))
    }

    /// A smooth scene: a diagonal ramp with a soft disc.
    fn scene(x: u32, y: u32) -> u8 {
        let (dx, dy) = (x as f64 - 40.0, y as f64 - 30.0);
        let disc = 80.0 * (-(dx * dx + dy * dy) / 400.0).exp();
        (30.0 + (x + y) as f64 * 0.8 + disc).min(250.0) as u8
    }

    /// Float64 reference over the full frame, written from the definitions: contrast,
    /// sharpness, noise likeness, black level.
    fn reference(img: &GrayImage) -> (f64, f64, f64, f64) {
        let (w, h) = img.dimensions();
        let v = |x: u32, y: u32| img.get_pixel(x, y).0[0] as f64;
        let all: Vec<f64> = img.pixels().map(|p| p.0[0] as f64).collect();
        let mut sorted = all.clone();
        sorted.sort_by(f64::total_cmp);
        // The k-th darkest, k the smallest count that is at least 1 % of the points.
        let k = (1..=sorted.len())
            .find(|&k| k as f64 >= 0.01 * sorted.len() as f64)
            .unwrap();
        let black = sorted[k - 1];
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let var = all.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / all.len() as f64;
        let mut laps = vec![];
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                laps.push(v(x - 1, y) + v(x + 1, y) + v(x, y - 1) + v(x, y + 1) - 4.0 * v(x, y));
            }
        }
        let lm = laps.iter().sum::<f64>() / laps.len() as f64;
        let lv = laps.iter().map(|a| (a - lm).powi(2)).sum::<f64>() / laps.len() as f64;
        (var.sqrt(), lv, lv / (20.0 * var), black)
    }

    #[test]
    fn small_frames_match_the_float64_reference() {
        for (w, h, seed) in [(3, 3, 1), (28, 28, 2), (64, 48, 3), (255, 256, 4)] {
            let noise = bytes(seed, (w * h) as usize);
            for img in [
                GrayImage::from_fn(w, h, |x, y| Luma([noise[(y * w + x) as usize]])),
                GrayImage::from_fn(w, h, |x, y| Luma([scene(x, y)])),
            ] {
                let (contrast, sharpness, noise_like, black) = reference(&img);
                let m = TamperMeter::new().measure(&DynamicImage::ImageLuma8(img));
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
                assert!(close(m.contrast, contrast), "{m:?} vs {contrast}");
                assert!(close(m.sharpness, sharpness), "{m:?} vs {sharpness}");
                assert!(close(m.noise_like, noise_like), "{m:?} vs {noise_like}");
                assert_eq!(m.black_level, black, "{m:?}");
            }
        }
    }

    #[test]
    fn each_measure_tells_its_tamper_from_a_scene() {
        let mut meter = TamperMeter::new();
        let clean = meter.measure(&gray(96, 72, scene));
        let covered = meter.measure(&gray(96, 72, |_, _| 17));
        assert_eq!(
            (covered.contrast, covered.sharpness, covered.noise_like),
            (0.0, 0.0, 0.0)
        );
        let blinded = meter.measure(&gray(96, 72, |x, y| scene(x, y).saturating_add(200)));
        assert!(
            blinded.clipped > 0.9 && clean.clipped < 0.1,
            "{blinded:?} {clean:?}"
        );
        // Glare: the scene veiled, its darkest parts lifted, nothing clipped.
        let veiled = meter.measure(&gray(96, 72, |x, y| {
            (100 + scene(x, y) as u32 * 3 / 5) as u8
        }));
        assert!(
            veiled.black_level >= 100.0 && clean.black_level < 40.0 && veiled.clipped == 0.0,
            "{veiled:?} {clean:?}"
        );
        let noise = bytes(7, 96 * 72);
        let snow = meter.measure(&gray(96, 72, |x, y| noise[(y * 96 + x) as usize]));
        assert!((snow.noise_like - 1.0).abs() < 0.1, "{snow:?}");
        assert!(clean.noise_like < 0.05, "{clean:?}");
        // A 3×3 box blur of the noise: far less fine detail than the noise itself.
        let at = |x: i64, y: i64| noise[(y.clamp(0, 71) * 96 + x.clamp(0, 95)) as usize] as u32;
        let blurred = meter.measure(&gray(96, 72, |x, y| {
            let (x, y) = (x as i64, y as i64);
            let s: u32 = (-1..=1)
                .flat_map(|dy| (-1..=1).map(move |dx| (dx, dy)))
                .map(|(dx, dy)| at(x + dx, y + dy))
                .sum();
            (s / 9) as u8
        }));
        assert!(
            blurred.sharpness < snow.sharpness / 10.0,
            "{blurred:?} {snow:?}"
        );
    }

    #[test]
    fn colour_frames_use_rec601_luma() {
        let rgb = RgbImage::from_fn(20, 10, |x, _| {
            Rgb([(x * 12) as u8, 100, 255 - (x * 12) as u8])
        });
        let luma = GrayImage::from_fn(20, 10, |x, _| {
            let [r, g, b] = [(x * 12) as f64, 100.0, 255.0 - (x * 12) as f64];
            Luma([(0.299 * r + 0.587 * g + 0.114 * b).round() as u8])
        });
        let a = TamperMeter::new().measure(&DynamicImage::ImageRgb8(rgb));
        let b = TamperMeter::new().measure(&DynamicImage::ImageLuma8(luma));
        assert!((a.contrast - b.contrast).abs() < 0.5, "{a:?} {b:?}");
    }

    #[test]
    fn the_grid_stays_small_for_large_frames() {
        for (w, h) in [
            (1, 1),
            (256, 256),
            (257, 256),
            (1920, 1080),
            (3840, 2160),
            (1, 100_000),
        ] {
            let s = stride(w, h);
            assert!(
                w.div_ceil(s) * h.div_ceil(s) <= MAX_GRID,
                "{w}×{h} stride {s}"
            );
            assert!(s == 1 || w.div_ceil(s - 1) * h.div_ceil(s - 1) > MAX_GRID);
        }
        // A large snow frame still reads as noise on its grid.
        let noise = bytes(11, 1280 * 720);
        let m = TamperMeter::new().measure(&gray(1280, 720, |x, y| noise[(y * 1280 + x) as usize]));
        assert!((m.noise_like - 1.0).abs() < 0.1, "{m:?}");
    }

    #[test]
    fn large_frames_take_the_laplacian_at_their_own_resolution() {
        // 600×400: a stride-2 grid. The reference takes every grid point inside the frame's
        // border and its four neighbours one pixel away.
        let (w, h) = (600u32, 400u32);
        assert_eq!(stride(w as usize, h as usize), 2);
        let noise = bytes(5, (w * h) as usize);
        let img = GrayImage::from_fn(w, h, |x, y| Luma([noise[(y * w + x) as usize]]));
        let v = |x: u32, y: u32| img.get_pixel(x, y).0[0] as f64;
        let laps: Vec<f64> = (0..h)
            .step_by(2)
            .flat_map(|y| (0..w).step_by(2).map(move |x| (x, y)))
            .filter(|&(x, y)| x > 0 && y > 0 && x + 1 < w && y + 1 < h)
            .map(|(x, y)| v(x - 1, y) + v(x + 1, y) + v(x, y - 1) + v(x, y + 1) - 4.0 * v(x, y))
            .collect();
        let mean = laps.iter().sum::<f64>() / laps.len() as f64;
        let var = laps.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / laps.len() as f64;
        let m = TamperMeter::new().measure(&DynamicImage::ImageLuma8(img));
        assert!((m.sharpness - var).abs() <= 1e-6 * var, "{m:?} vs {var}");
        // A 2×2 box blur leaves the grid's own two-pixel-apart samples nearly independent,
        // but removes most of the detail between neighbouring pixels.
        let at = |x: u32, y: u32| noise[(y.min(h - 1) * w + x.min(w - 1)) as usize] as u32;
        let blurred = gray(w, h, |x, y| {
            ((at(x, y) + at(x + 1, y) + at(x, y + 1) + at(x + 1, y + 1)) / 4) as u8
        });
        let b = TamperMeter::new().measure(&blurred);
        assert!(b.sharpness < m.sharpness / 5.0, "{b:?} {m:?}");
    }

    #[test]
    fn a_colour_pixel_clips_at_its_brightest_channel() {
        // Pure red at full scale: luma 76, far from clipped, but the sensor's red is burnt.
        let red = RgbImage::from_fn(40, 30, |x, _| {
            if x < 30 {
                Rgb([255, 0, 0])
            } else {
                Rgb([120, 90, 60])
            }
        });
        let m = TamperMeter::new().measure(&DynamicImage::ImageRgb8(red));
        assert!((m.clipped - 0.75).abs() < 1e-9, "{m:?}");
        // Black stays clipped by luma, as for a gray frame.
        let dark = RgbImage::from_fn(40, 30, |x, _| Rgb([0, 0, if x < 10 { 1 } else { 200 }]));
        let m = TamperMeter::new().measure(&DynamicImage::ImageRgb8(dark));
        assert!((m.clipped - 0.25).abs() < 1e-9, "{m:?}");
        // A saturated blue's darkest channel is black, though its luma is 23: its blacks
        // are there to be lifted.
        assert_eq!(m.black_level, 0.0, "{m:?}");
        let lifted = RgbImage::from_fn(40, 30, |_, _| Rgb([60, 60, 200]));
        let m = TamperMeter::new().measure(&DynamicImage::ImageRgb8(lifted));
        assert_eq!(m.black_level, 60.0, "{m:?}");
    }

    #[test]
    fn a_frozen_camera_counts_up_and_a_live_one_resets() {
        let mut frozen = FrozenCounter::new();
        let still = gray(64, 48, scene);
        let counts: Vec<u64> = (0..4).map(|_| frozen.push(&still)).collect();
        assert_eq!(counts, [1, 2, 3, 4]);
        // A live sensor on the same scene: ±1 gray level of noise is a new frame.
        let jitter = bytes(3, 64 * 48);
        let noisy = gray(64, 48, |x, y| {
            scene(x, y).saturating_add(jitter[(y * 64 + x) as usize] % 2)
        });
        assert_eq!(frozen.push(&noisy), 1);
        assert_eq!(frozen.push(&noisy), 2);
        // A frame of another size is another picture.
        assert_eq!(frozen.push(&gray(32, 24, scene)), 1);
        assert_eq!(
            longest_run([&still, &still, &noisy, &still, &still, &still]),
            3
        );
        assert_eq!(longest_run([]), 0);
    }

    /// Clean "camera" frames: the smooth scene shifted, with a little sensor noise.
    fn clean_frames() -> Vec<DynamicImage> {
        (0..20u32)
            .map(|k| {
                let noise = bytes(k as u64 + 1, 80 * 60);
                gray(80, 60, |x, y| {
                    let n = noise[(y * 80 + x) as usize] as i32 % 7 - 3;
                    (scene((x + k) % 80, y) as i32 + n).clamp(0, 255) as u8
                })
            })
            .collect()
    }

    #[test]
    fn cuts_lie_beyond_every_clean_frame_and_each_tamper_is_named() {
        let frames = clean_frames();
        let mut meter = TamperMeter::new();
        let clean: Vec<TamperMeasures> = frames.iter().map(|f| meter.measure(f)).collect();
        let tamper = calibrate(&clean, 0).expect("checks");
        assert_eq!(tamper.frames, 20);
        let kinds: Vec<TamperKind> = tamper.checks.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            TamperKind::ALL,
            "every check can be set on these frames"
        );
        for c in &tamper.checks {
            let extreme = clean.iter().map(|m| value(m, c.kind));
            if c.kind == TamperKind::Frozen {
                // No two frames alike: the floor.
                assert_eq!((c.clean_extreme, c.at), (0.0, FROZEN_FRAMES as f64));
            } else if c.kind.rejects_low() {
                let lowest = extreme.fold(f64::INFINITY, f64::min);
                assert_eq!((c.clean_extreme, c.at), (lowest, lowest / LOW_MARGIN));
            } else if c.kind == TamperKind::Glare {
                let highest = extreme.fold(f64::NEG_INFINITY, f64::max);
                assert_eq!((c.clean_extreme, c.at), (highest, 2.0 * highest + 32.0));
            } else {
                let highest = extreme.fold(f64::NEG_INFINITY, f64::max);
                assert_eq!((c.clean_extreme, c.at), (highest, (highest + 1.0) / 2.0));
            }
        }
        let mut checks = TamperChecks::new(&tamper);
        for f in &frames {
            assert_eq!(checks.check(f), None, "a calibration frame passes");
        }
        let mut reason = |img: &DynamicImage| match checks.check(img) {
            Some(RejectReason::Tamper { kind, .. }) => Some(kind),
            _ => None,
        };
        // A lens cap: flat, with a trace of noise.
        let cap = bytes(99, 80 * 60);
        let covered = gray(80, 60, |x, y| 12 + cap[(y * 80 + x) as usize] % 2);
        assert_eq!(reason(&covered), Some(TamperKind::Covered));
        // Blinded: most of the frame burnt white, the rest black.
        let blinded = gray(80, 60, |x, _| if x < 70 { 255 } else { 0 });
        assert_eq!(reason(&blinded), Some(TamperKind::Blinded));
        // Glare: a clean frame veiled — its blacks lifted, its detail (and noise) kept.
        let first = frames[0].to_luma8();
        let veiled = gray(80, 60, |x, y| {
            (100 + first.get_pixel(x, y).0[0] as u32 * 4 / 5) as u8
        });
        assert_eq!(reason(&veiled), Some(TamperKind::Glare));
        // Defocused: the scene's contrast, no fine detail (a wide smooth ramp).
        let smooth = gray(80, 60, |x, _| (40 + 2 * x) as u8);
        assert_eq!(reason(&smooth), Some(TamperKind::Defocused));
        // Snow: independent noise.
        let snow_bytes = bytes(7, 80 * 60);
        let snow = gray(80, 60, |x, y| snow_bytes[(y * 80 + x) as usize]);
        assert_eq!(reason(&snow), Some(TamperKind::Snow));
    }

    #[test]
    fn video_range_black_passes_and_lifted_black_is_glare() {
        // A camera whose picture has true black (a dark border), in full range.
        let framed = |k: u32, map: &dyn Fn(u32) -> u32| {
            gray(80, 60, move |x, y| {
                let v = if x < 10 {
                    0
                } else {
                    scene((x + k) % 80, y) as u32
                };
                map(v) as u8
            })
        };
        let frames: Vec<DynamicImage> = (0..10).map(|k| framed(k, &|v| v)).collect();
        let mut meter = TamperMeter::new();
        let clean: Vec<TamperMeasures> = frames.iter().map(|f| meter.measure(f)).collect();
        let tamper = calibrate(&clean, 0).expect("checks");
        let glare = tamper.checks.iter().find(|c| c.kind == TamperKind::Glare);
        assert_eq!(glare.map(|c| (c.clean_extreme, c.at)), Some((0.0, 32.0)));
        let mut checks = TamperChecks::new(&tamper);
        // The same camera switched to video range (black at 16, white at 235): no tamper.
        let video = framed(0, &|v| 16 + v * 219 / 255);
        assert_eq!(checks.check(&video), None);
        // Its picture veiled by light shone into the lens: the blacks at 60.
        let lifted = framed(0, &|v| 60 + v * 3 / 4);
        assert!(
            matches!(
                checks.check(&lifted),
                Some(RejectReason::Tamper {
                    kind: TamperKind::Glare,
                    ..
                })
            ),
            "{:?}",
            meter.measure(&lifted)
        );
    }

    #[test]
    fn no_check_is_set_where_clean_frames_reach_the_tampered_value() {
        let flat = TamperMeasures {
            contrast: 0.0,
            clipped: 1.0,
            black_level: 255.0,
            sharpness: 0.0,
            noise_like: 0.0,
        };
        // A flat, clipped (white) clean frame leaves no margin for covered, blinded, glare or
        // defocused; snow alone is set (its highest clean value, 0, is far from 1).
        let t = calibrate(&[flat], 0).unwrap();
        let kinds: Vec<TamperKind> = t.checks.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [TamperKind::Snow, TamperKind::Frozen]);
        // A clean sequence with runs of 20 identical frames: frozen from 41 on.
        let t = calibrate(&[flat], 20).unwrap();
        assert_eq!((t.checks[1].at, t.checks[1].clean_extreme), (41.0, 20.0));
        let snowy = TamperMeasures {
            noise_like: 0.9,
            ..flat
        };
        assert_eq!(calibrate(&[snowy], 0), None);
        // A scene without dark parts: a black level of 80 would put the glare cut at 192.
        let kinds = |black_level| {
            let m = TamperMeasures {
                black_level,
                ..flat
            };
            let t = calibrate(&[m], 0).unwrap();
            t.checks.iter().map(|c| c.kind).collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(79.0),
            [TamperKind::Snow, TamperKind::Glare, TamperKind::Frozen]
        );
        assert_eq!(kinds(80.0), [TamperKind::Snow, TamperKind::Frozen]);
        assert_eq!(calibrate(&[], 0), None);
    }
}
