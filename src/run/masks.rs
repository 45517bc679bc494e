//! Dropout mask sampling: Bernoulli(1−p)/(1−p) values written in place.
//!
//! ONNX Dropout is an identity in every edge runtime, so the model takes its masks as
//! inputs and we draw them here, T samples at once, into buffers reused across frames.

use crate::contract::card::DropoutSite;
use crate::run::rng::WyRand;

/// Fills `out` with independent mask values: 0 with probability `p`, else 1/(1−p).
///
/// Each 64-bit draw gives two 32-bit uniforms compared against (1−p)·2³²; the keep
/// probability is exact to 2⁻³². `p` must be in [0, 1); p = 0 draws nothing.
pub fn fill(out: &mut [f32], p: f32, rng: &mut WyRand) {
    debug_assert!((0.0..1.0).contains(&p));
    let Some(coin) = Coin::new(p) else {
        out.fill(1.0);
        return;
    };
    let mut pairs = out.chunks_exact_mut(2);
    for pair in &mut pairs {
        let r = rng.next_u64();
        pair[0] = coin.value(r as u32);
        pair[1] = coin.value((r >> 32) as u32);
    }
    if let [last] = pairs.into_remainder() {
        *last = coin.value(rng.next_u64() as u32);
    }
}

/// The 64-bit draws [`fill`] takes for `values` mask values.
pub fn draws(p: f32, values: usize) -> u64 {
    if p == 0.0 {
        0
    } else {
        (values as u64).div_ceil(2)
    }
}

/// Where each site's masks start in a frame's stream (draws before them): the sites are
/// drawn one after another in card order, T samples each, whichever path reads them.
pub fn site_starts(sites: &[DropoutSite], samples: usize) -> Vec<u64> {
    sites
        .iter()
        .scan(0, |next, site| {
            let start = *next;
            *next += draws(site.p, samples * site.sample_len());
            Some(start)
        })
        .collect()
}

/// One site's mask values as [`fill`] writes them, read one at a time without drawing the
/// others: value `i` of the site is half of draw `start + i/2` of the frame's generator (the
/// low half for even `i`). The sparse path reads only the values where the activation is
/// non-zero; the bits, hence the masks, are the same (tested).
#[derive(Debug, Clone, Copy)]
pub struct SiteMasks {
    coin: Option<Coin>,
    start: u64,
}

impl SiteMasks {
    /// A site with drop probability `p` whose first value uses draw `start`.
    pub fn new(p: f32, start: u64) -> SiteMasks {
        SiteMasks {
            coin: Coin::new(p),
            start,
        }
    }

    /// The site's value `index` (flat over `[T, ..shape]`) for the frame seeded `seed`.
    #[inline]
    pub fn value(&self, seed: u64, index: usize) -> f32 {
        self.coin
            .as_ref()
            .map_or(1.0, |coin| coin.at(seed, self.start, index))
    }

    /// Values `index`, `index + stride`, `index + 2·stride`, … into `out`: input `index`'s
    /// mask value in each of `out.len()` samples of `stride` values.
    #[inline]
    pub fn column(&self, seed: u64, stride: usize, index: usize, out: &mut [f32]) {
        let Some(coin) = &self.coin else {
            out.fill(1.0);
            return;
        };
        let mut index = index;
        for m in out {
            *m = coin.at(seed, self.start, index);
            index += stride;
        }
    }

    /// The kept value 1/(1−p): what [`value`](SiteMasks::value) returns for a kept unit.
    pub fn kept(&self) -> f32 {
        self.coin.as_ref().map_or(1.0, |c| f32::from_bits(c.scale))
    }
}

/// A Bernoulli(1−p) coin on 32-bit uniforms; `None` for p = 0 (nothing to draw).
#[derive(Debug, Clone, Copy)]
struct Coin {
    threshold: u32,
    scale: u32,
}

impl Coin {
    fn new(p: f32) -> Option<Coin> {
        if p == 0.0 {
            return None;
        }
        let keep = 1.0 - p as f64;
        Some(Coin {
            // p > 0, so keep < 1 and the threshold fits in 32 bits.
            threshold: (keep * 4_294_967_296.0) as u32,
            scale: ((1.0 / keep) as f32).to_bits(),
        })
    }

    /// Value `index` of a site whose first draw is `start`: half of draw `start + index/2`
    /// (the low half for even `index`), as [`fill`] uses it.
    #[inline]
    fn at(&self, seed: u64, start: u64, index: usize) -> f32 {
        let r = WyRand::nth(seed, start + (index / 2) as u64);
        self.value((r >> (32 * (index % 2))) as u32)
    }

    /// Branch-free select of the bit pattern (0.0 is all zero bits): the keep decision is a
    /// coin flip, so a branch would mispredict half the time.
    #[inline]
    fn value(&self, u: u32) -> f32 {
        f32::from_bits(self.scale & 0u32.wrapping_sub((u < self.threshold) as u32))
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

    /// Sites drawn one after another from one generator (what `fill` has always done) give
    /// the same values as each site read value by value from its own start: the sparse
    /// path's masks are bit for bit today's, odd lengths and p = 0 included.
    #[test]
    fn addressed_values_are_the_filled_ones() {
        let sites = [
            (0.25f32, 20 * 9),
            (0.5, 7),
            (0.0, 4),
            (0.9, 3 * 5),
            (0.1, 1),
        ];
        for seed in [0, 1, 0x1234_5678_9abc_def0, u64::MAX] {
            let mut rng = WyRand::new(seed);
            let mut start = 0;
            for &(p, len) in &sites {
                let mut filled = vec![-1.0; len];
                fill(&mut filled, p, &mut rng);
                let site = SiteMasks::new(p, start);
                let read: Vec<f32> = (0..len).map(|i| site.value(seed, i)).collect();
                assert_eq!(read, filled, "p={p} len={len} seed={seed}");
                // Column by column ([T, n] with n = 3 where the length allows).
                if len % 3 == 0 {
                    let mut column = vec![-1.0; len / 3];
                    for i in 0..3 {
                        site.column(seed, 3, i, &mut column);
                        let want: Vec<f32> = filled.iter().skip(i).step_by(3).copied().collect();
                        assert_eq!(column, want, "p={p} len={len} seed={seed} column {i}");
                    }
                }
                assert!(filled.iter().all(|&v| v == 0.0 || v == site.kept()));
                start += draws(p, len);
            }
            // The next draw after the last site is where the generator stands.
            assert_eq!(WyRand::nth(seed, start), rng.next_u64());
        }
    }
}
