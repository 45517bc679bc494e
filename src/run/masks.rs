//! Dropout mask sampling: Bernoulli(1−p)/(1−p) values written in place.
//!
//! ONNX Dropout is an identity in every edge runtime, so the model takes its masks as
//! inputs and we draw them here, T samples at once, into buffers reused across frames.

use crate::run::rng::WyRand;

/// Fills `out` with independent mask values: 0 with probability `p`, else 1/(1−p).
///
/// Each 64-bit draw gives two 32-bit uniforms compared against (1−p)·2³²; the keep
/// probability is exact to 2⁻³². `p` must be in [0, 1).
pub fn fill(out: &mut [f32], p: f32, rng: &mut WyRand) {
    debug_assert!((0.0..1.0).contains(&p));
    if p == 0.0 {
        out.fill(1.0);
        return;
    }
    let keep = 1.0 - p as f64;
    let scale = ((1.0 / keep) as f32).to_bits();
    // p > 0, so keep < 1 and the threshold fits in 32 bits.
    let threshold = (keep * 4_294_967_296.0) as u32;
    // Branch-free select of the bit pattern (0.0 is all zero bits): the keep decision is a coin
    // flip, so a branch would mispredict half the time.
    let value = |u: u32| f32::from_bits(scale & 0u32.wrapping_sub((u < threshold) as u32));
    let mut pairs = out.chunks_exact_mut(2);
    for pair in &mut pairs {
        let r = rng.next_u64();
        pair[0] = value(r as u32);
        pair[1] = value((r >> 32) as u32);
    }
    if let [last] = pairs.into_remainder() {
        *last = value(rng.next_u64() as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_rate_and_values_match_p() {
        for p in [0.25f32, 0.5, 0.9] {
            let mut m = vec![0.0; 100_001];
            fill(&mut m, p, &mut WyRand::new(3));
            let scale = 1.0 / (1.0 - p);
            assert!(m.iter().all(|&v| v == 0.0 || v == scale));
            let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
            // 5 standard deviations of a Bernoulli mean over 1e5 draws is < 0.008.
            assert!((kept - (1.0 - p as f64)).abs() < 0.008, "p={p} kept={kept}");
            // The mask preserves the expected activation: E[m] = 1.
            let mean = m.iter().map(|&v| v as f64).sum::<f64>() / m.len() as f64;
            assert!((mean - 1.0).abs() < 0.05, "p={p} mean={mean}");
        }
        let mut m = vec![0.0; 5];
        fill(&mut m, 0.0, &mut WyRand::new(3));
        assert_eq!(m, vec![1.0; 5]);
    }
}
