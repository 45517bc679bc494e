//! The sparse-difference dense layer: T masked copies of one activation through one weight
//! matrix, at the cost of one product plus the dropped rows (`split` has the
//! derivation and the pattern it applies to).
//!
//! With `a` the activation (`inputs` values), `s` the kept mask value 1/(1−p) and `W_i` the
//! weights of input `i` (a contiguous row of `outputs` values):
//! `y_t = Σ_i m_ti·a_i·W_i = Σ_{a_i≠0} s·a_i·W_i + Σ_{a_i≠0, m_ti≠s} (m_ti·a_i − s·a_i)·W_i`.
//! The first sum is computed once per frame; a drawn mask is 0 or s, so the second sum runs
//! over the dropped non-zero units only (p × the non-zero fraction of the rows). Any other
//! mask value (caller-supplied masks) is exact too: it is just one more correction row.
//! For p > 1/2 the reference value is 0 instead of s (no shared sum; each sample sums its
//! kept rows): fewer rows, and no cancellation of s·(shared sum), which grows with s.

use tract_onnx::tract_core::ops::quant::quantize_linear_f32_u8;
use tract_onnx::tract_core::tract_linalg::mmm::RoundingPolicy;
use tract_onnx::tract_core::tract_linalg::{ScaleShiftAndRound, Scaler};

use super::split::{Int8Weights, LayerWeights, SparseLayer};

/// A sparse layer, float or quantised.
pub enum Head {
    /// F32 weights: writes an F32 `[T, outputs]` output.
    Float(SparseHead),
    /// The quantised form: writes the u8 `[T, outputs]` output of the requantisation.
    Int8(SparseHeadI8),
}

impl Head {
    /// The head for `layer` (its weights move in) at drop probability `p` whose kept mask
    /// value is `kept`.
    pub fn new(layer: SparseLayer, p: f32, kept: f32) -> Head {
        let SparseLayer {
            weights,
            inputs,
            outputs,
            ..
        } = layer;
        match weights {
            LayerWeights::Float(rows) => {
                Head::Float(SparseHead::new(rows, inputs, outputs, p, kept))
            }
            LayerWeights::Int8(weights) => {
                Head::Int8(SparseHeadI8::new(weights, inputs, outputs, kept))
            }
        }
    }

    /// Values in one activation (and in one sample's mask).
    pub fn inputs(&self) -> usize {
        match self {
            Head::Float(h) => h.inputs,
            Head::Int8(h) => h.inputs,
        }
    }

    /// The last run's shared term `W·(s·a)` and its s, where the head keeps one (a float
    /// head at p ≤ 1/2): the unmasked product times s, which a density branch reads.
    pub fn shared_term(&self) -> Option<(&[f32], f32)> {
        match self {
            Head::Float(h) if h.reference != 0.0 => Some((&h.base, h.reference)),
            _ => None,
        }
    }
}

/// One sparse layer's weights and its reusable per-frame buffers.
pub struct SparseHead {
    rows: Vec<f32>,
    inputs: usize,
    outputs: usize,
    /// The mask value the shared sum assumes: s for p ≤ 1/2, else 0.
    reference: f32,
    /// Non-zero activation indices and their values, refilled each frame.
    nonzero: Vec<u32>,
    values: Vec<f32>,
    base: Vec<f32>,
    /// One input's mask values for every sample.
    column: Vec<f32>,
    /// The samples whose mask at that input is not r, with their row coefficients.
    corrections: Vec<(u32, f32)>,
    simd: Simd,
}

impl SparseHead {
    /// A head for F32 `rows` (row-major `[inputs, outputs]`) at drop probability `p` whose
    /// kept mask value is `kept` (1/(1−p)).
    pub fn new(rows: Vec<f32>, inputs: usize, outputs: usize, p: f32, kept: f32) -> SparseHead {
        SparseHead {
            rows,
            inputs,
            outputs,
            reference: reference_value(p, kept),
            nonzero: Vec::with_capacity(inputs),
            values: Vec::with_capacity(inputs),
            base: vec![0.0; outputs],
            column: vec![],
            corrections: vec![],
            simd: Simd::detect(),
        }
    }

    /// Values in one activation (and in one sample's mask).
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Writes `out` (`[samples, outputs]`, row t = sample t) from the activation `a` and the
    /// masks: `column(i, m)` writes sample t's mask value at input i into `m[t]`, for every
    /// sample. It is called only for the inputs where `a_i ≠ 0`.
    pub fn run(&mut self, a: &[f32], out: &mut [f32], column: impl FnMut(usize, &mut [f32])) {
        debug_assert_eq!(a.len(), self.inputs);
        debug_assert_eq!(out.len() % self.outputs, 0);
        self.simd.run(
            #[inline(always)]
            || self.run_inline(a, out, column),
        )
    }

    /// The kernel, compiled once per instruction set (8-wide on AVX2, 4-wide SSE2 or NEON
    /// otherwise). Unfused multiply then add in either, so both give the same bits.
    #[inline(always)]
    fn run_inline(
        &mut self,
        a: &[f32],
        out: &mut [f32],
        mut column: impl FnMut(usize, &mut [f32]),
    ) {
        let n = self.outputs;
        let samples = out.len() / n;
        self.nonzero.clear();
        self.values.clear();
        for (i, &v) in a.iter().enumerate() {
            if v != 0.0 {
                self.nonzero.push(i as u32);
                self.values.push(v);
            }
        }
        // Once per frame: r·a through every non-zero row (r = s; nothing when r = 0).
        self.base.fill(0.0);
        if self.reference != 0.0 {
            for (&i, &v) in self.nonzero.iter().zip(&self.values) {
                let row = &self.rows[i as usize * n..][..n];
                axpy(&mut self.base, self.reference * v, row);
            }
        }
        for sample in out.chunks_exact_mut(n) {
            sample.copy_from_slice(&self.base);
        }
        // Per sample, the rows whose mask is not r. Row-outer: each row is read from memory
        // once and stays in L1 while the samples' accumulators take their turn; the row's
        // mask values for all samples are read first, in one tight loop.
        self.column.resize(samples, 0.0);
        self.corrections.resize(samples, (0, 0.0));
        for (&i, &v) in self.nonzero.iter().zip(&self.values) {
            let row = &self.rows[i as usize * n..][..n];
            let base = self.reference * v;
            column(i as usize, &mut self.column);
            // Which samples need the row, listed without a branch: whether a unit is
            // dropped is a coin flip, and a branch on it would mispredict a quarter of the
            // time (measured: a third of the kernel's time at T = 20).
            let mut count = 0;
            for (t, &m) in self.column.iter().enumerate() {
                let c = m * v - base;
                self.corrections[count] = (t as u32, c);
                count += (c != 0.0) as usize;
            }
            for &(t, c) in &self.corrections[..count] {
                axpy(&mut out[t as usize * n..][..n], c, row);
            }
        }
    }
}

/// The quantised sparse layer. Its integer sums are exact in any order, so it gives the plain
/// plan's u8 output bit for bit: `x_q,ti = quantize(m_ti·a_i)`, and with `q_i` the kept value's
/// `quantize(s·a_i)`, `acc_t = bias + Σ_i q_i·W_i + Σ_{i: x_q,ti ≠ q_i} (x_q,ti − q_i)·W_i`
/// (a drop gives `x_q = 0`, the zero point), then tract's requantisation.
pub struct SparseHeadI8 {
    rows: Vec<i8>,
    inputs: usize,
    outputs: usize,
    kept: f32,
    quantise: f32,
    bias: Vec<i32>,
    scalers: Vec<Scaler>,
    zero_point: Vec<i32>,
    nonzero: Vec<u32>,
    values: Vec<f32>,
    quantised: Vec<i32>,
    acc: Vec<i32>,
    column: Vec<f32>,
    corrections: Vec<(u32, i32)>,
    simd: Simd,
}

impl SparseHeadI8 {
    /// A head for `weights` (`inputs` × `outputs`), whose kept mask value is `kept`.
    pub fn new(weights: Int8Weights, inputs: usize, outputs: usize, kept: f32) -> SparseHeadI8 {
        SparseHeadI8 {
            inputs,
            outputs,
            kept,
            quantise: weights.quantise,
            // As tract's QScale: round half to even.
            scalers: weights
                .scale
                .iter()
                .map(|&s| Scaler::new(s, RoundingPolicy::Even))
                .collect(),
            zero_point: weights.zero_point,
            rows: weights.rows,
            bias: weights.bias,
            nonzero: Vec::with_capacity(inputs),
            values: Vec::with_capacity(inputs),
            quantised: Vec::with_capacity(inputs),
            acc: vec![],
            column: vec![],
            corrections: vec![],
            simd: Simd::detect(),
        }
    }

    /// Writes `out` (`[samples, outputs]` u8) from the activation `a` and the masks, read as
    /// [`SparseHead::run`] reads them.
    pub fn run(&mut self, a: &[f32], out: &mut [u8], column: impl FnMut(usize, &mut [f32])) {
        self.simd.run(
            #[inline(always)]
            || self.run_inline(a, out, column),
        )
    }

    /// The kernel, compiled once per instruction set; integers, so the same result on each.
    #[inline(always)]
    fn run_inline(&mut self, a: &[f32], out: &mut [u8], mut column: impl FnMut(usize, &mut [f32])) {
        let n = self.outputs;
        let samples = out.len() / n;
        self.nonzero.clear();
        self.values.clear();
        self.quantised.clear();
        for (i, &v) in a.iter().enumerate() {
            if v != 0.0 {
                self.nonzero.push(i as u32);
                self.values.push(v);
                self.quantised
                    .push(quantize_linear_f32_u8(self.kept * v, self.quantise, 0) as i32);
            }
        }
        self.acc.resize(samples * n, 0);
        let (base, rest) = self.acc.split_at_mut(n);
        base.copy_from_slice(&self.bias);
        for (&i, &q) in self.nonzero.iter().zip(&self.quantised) {
            if q != 0 {
                axpy_i8(base, q, &self.rows[i as usize * n..][..n]);
            }
        }
        for sample in rest.chunks_exact_mut(n) {
            sample.copy_from_slice(base);
        }
        self.column.resize(samples, 0.0);
        self.corrections.resize(samples, (0, 0));
        for ((&i, &v), &q) in self.nonzero.iter().zip(&self.values).zip(&self.quantised) {
            column(i as usize, &mut self.column);
            let mut count = 0;
            for (t, &m) in self.column.iter().enumerate() {
                // A drawn mask is 0 (x_q = 0, the zero point) or s (x_q = q): no rounding
                // needed, and no branch on the coin flip; any other value is quantised.
                let d = if m == 0.0 || m == self.kept {
                    -(q & 0i32.wrapping_sub((m == 0.0) as i32))
                } else {
                    quantize_linear_f32_u8(m * v, self.quantise, 0) as i32 - q
                };
                self.corrections[count] = (t as u32, d);
                count += (d != 0) as usize;
            }
            let row = &self.rows[i as usize * n..][..n];
            for &(t, d) in &self.corrections[..count] {
                axpy_i8(&mut self.acc[t as usize * n..][..n], d, row);
            }
        }
        for (sample, acc) in out.chunks_exact_mut(n).zip(self.acc.chunks_exact(n)) {
            for (((y, &x), scaler), &zp) in sample
                .iter_mut()
                .zip(acc)
                .zip(&self.scalers)
                .zip(&self.zero_point)
            {
                *y = (x.q_scale(*scaler) + zp).clamp(0, 255) as u8;
            }
        }
    }
}

/// The mask value the float head's shared sum assumes: s for p ≤ 1/2 (per sample, the
/// dropped rows), else 0 (per sample, the kept rows: fewer, and nothing cancels).
pub fn reference_value(p: f32, kept: f32) -> f32 {
    if p <= 0.5 {
        kept
    } else {
        0.0
    }
}

#[inline(always)]
fn axpy_i8(y: &mut [i32], c: i32, x: &[i8]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += c * x as i32;
    }
}

#[inline(always)]
fn axpy(y: &mut [f32], c: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += c * x;
    }
}

/// The instruction set the kernel runs with, probed once.
#[derive(Debug, Clone, Copy)]
enum Simd {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Baseline,
}

impl Simd {
    /// Runs `kernel` (inlined into it) compiled for this instruction set.
    #[inline(always)]
    fn run<R>(self, kernel: impl FnOnce() -> R) -> R {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Simd::Avx2` is chosen only when the CPU reports AVX2.
            Simd::Avx2 => unsafe { avx2(kernel) },
            Simd::Baseline => kernel(),
        }
    }

    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Simd::Avx2;
        }
        Simd::Baseline
    }
}

/// `kernel` compiled with AVX2: what it inlines (the kernels are `inline(always)`) uses
/// 8-wide vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<R>(kernel: impl FnOnce() -> R) -> R {
    kernel()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The layer as the graph computes it: every sample's masked activation through every
    /// row, in f64.
    fn reference(rows: &[f32], outputs: usize, a: &[f32], masks: &[f32]) -> Vec<f64> {
        let inputs = a.len();
        let mut out = vec![0.0f64; masks.len() / inputs * outputs];
        for (t, mask) in masks.chunks(inputs).enumerate() {
            for i in 0..inputs {
                let x = (mask[i] * a[i]) as f64;
                for o in 0..outputs {
                    out[t * outputs + o] += x * rows[i * outputs + o] as f64;
                }
            }
        }
        out
    }

    proptest! {
        /// Random shapes, ReLU-like activations (about half zero), masks of 0 and s with a
        /// few arbitrary values: the sparse head matches the dense reference.
        #[test]
        fn matches_the_dense_reference(
            inputs in 1usize..80,
            outputs in 1usize..40,
            samples in 1usize..12,
            p in prop_oneof![Just(0.0f32), Just(0.25), Just(0.5), 0.01f32..0.95],
            seed in any::<u64>(),
        ) {
            let mut rng = crate::run::rng::WyRand::new(seed);
            let mut uniform = || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            let rows: Vec<f32> = (0..inputs * outputs).map(|_| uniform() * 2.0 - 1.0).collect();
            let a: Vec<f32> = (0..inputs).map(|_| (uniform() * 4.0 - 2.0).max(0.0)).collect();
            let kept = (1.0 / (1.0 - p as f64)) as f32;
            let masks: Vec<f32> = (0..samples * inputs)
                .map(|_| {
                    let u = uniform();
                    if u < 0.05 { u * 10.0 } else if u < p { 0.0 } else { kept }
                })
                .collect();
            let mut head = SparseHead::new(rows.clone(), inputs, outputs, p, kept);
            let mut out = vec![f32::NAN; samples * outputs];
            head.run(&a, &mut out, |i, m| {
                for (t, m) in m.iter_mut().enumerate() {
                    *m = masks[t * inputs + i];
                }
            });
            let want = reference(&rows, outputs, &a, &masks);
            for (got, want) in out.iter().zip(&want) {
                prop_assert!((*got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "got {got} want {want}");
            }
        }
    }

    proptest! {
        /// The quantised head against the layer computed whole, in integers: equal.
        #[test]
        fn int8_matches_the_whole_integer_product(
            inputs in 1usize..60,
            outputs in 1usize..30,
            samples in 1usize..10,
            p in prop_oneof![Just(0.25f32), Just(0.5), 0.01f32..0.95],
            seed in any::<u64>(),
        ) {
            let mut rng = crate::run::rng::WyRand::new(seed);
            let mut next = || rng.next_u64();
            let rows: Vec<i8> = (0..inputs * outputs).map(|_| next() as i8).collect();
            let a: Vec<f32> = (0..inputs)
                .map(|_| ((next() % 1000) as f32 / 250.0 - 1.5).max(0.0))
                .collect();
            let weights = Int8Weights {
                rows: rows.clone(),
                quantise: 40.0 + (next() % 100) as f32 / 7.0,
                bias: (0..outputs).map(|_| (next() % 2001) as i32 - 1000).collect(),
                scale: (0..outputs).map(|_| 1e-4 + (next() % 1000) as f32 * 1e-6).collect(),
                zero_point: (0..outputs).map(|_| (next() % 256) as i32).collect(),
            };
            let kept = (1.0 / (1.0 - p as f64)) as f32;
            let masks: Vec<f32> = (0..samples * inputs)
                .map(|_| match next() % 20 {
                    0 => 0.7,
                    k if (k as f32) < 20.0 * p => 0.0,
                    _ => kept,
                })
                .collect();
            let mut head = SparseHeadI8::new(weights.clone(), inputs, outputs, kept);
            let mut out = vec![0u8; samples * outputs];
            head.run(&a, &mut out, |i, m| {
                for (t, m) in m.iter_mut().enumerate() {
                    *m = masks[t * inputs + i];
                }
            });
            for t in 0..samples {
                for o in 0..outputs {
                    let mut acc = weights.bias[o];
                    for i in 0..inputs {
                        let x = quantize_linear_f32_u8(masks[t * inputs + i] * a[i], weights.quantise, 0);
                        acc += x as i32 * rows[i * outputs + o] as i32;
                    }
                    let scaler = Scaler::new(weights.scale[o], RoundingPolicy::Even);
                    let want = (acc.q_scale(scaler) + weights.zero_point[o]).clamp(0, 255) as u8;
                    prop_assert_eq!(out[t * outputs + o], want, "t={} o={}", t, o);
                }
            }
        }
    }

    #[test]
    fn baseline_and_avx2_give_the_same_bits() {
        let (inputs, outputs, samples) = (300, 37, 5);
        let rows: Vec<f32> = (0..inputs * outputs)
            .map(|k| ((k * 7919) % 97) as f32 / 50.0 - 1.0)
            .collect();
        let a: Vec<f32> = (0..inputs)
            .map(|i| ((i * 31) % 11) as f32 / 4.0 - 1.0)
            .map(|v| v.max(0.0))
            .collect();
        let mask = |i: usize, m: &mut [f32]| {
            for (t, m) in m.iter_mut().enumerate() {
                *m = if (t * 13 + i * 7).is_multiple_of(4) {
                    0.0
                } else {
                    4.0 / 3.0
                };
            }
        };
        let mut head = SparseHead::new(rows, inputs, outputs, 0.25, 4.0 / 3.0);
        let mut simd = vec![0.0; samples * outputs];
        head.run(&a, &mut simd, mask);
        head.simd = Simd::Baseline;
        let mut baseline = vec![0.0; samples * outputs];
        head.run(&a, &mut baseline, mask);
        assert_eq!(simd, baseline);
    }
}
