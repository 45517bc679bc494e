//! wyrand: a tiny, fast, seedable 64-bit generator (Wang Yi's wyhash family).
//!
//! Masks need speed and exact replay from a seed, not cryptographic strength: at T=20 the
//! MNIST sites draw ~46 k Bernoulli values per frame. What must not be predictable is the
//! *seed* of each frame: without `--seed`, frame seeds come from a keyed PRF of a secret run
//! key ([`RunKey`]), so the seed a report line shows says nothing about other frames'.

/// The generator's state.
#[derive(Debug, Clone)]
pub struct WyRand {
    state: u64,
}

impl WyRand {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> WyRand {
        WyRand { state: seed }
    }

    /// The generator `WyRand::new(seed)` becomes after `skipped` draws. wyrand's state only
    /// counts (seed + k·increment), so any point of the stream is one multiply away.
    pub fn at(seed: u64, skipped: u64) -> WyRand {
        WyRand {
            state: seed.wrapping_add(skipped.wrapping_mul(INCREMENT)),
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(INCREMENT);
        let t = (self.state as u128).wrapping_mul((self.state ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Draw number `index` (from 0) of `WyRand::new(seed)`, without drawing the ones before.
    #[inline]
    pub fn nth(seed: u64, index: u64) -> u64 {
        WyRand::at(seed, index).next_u64()
    }
}

const INCREMENT: u64 = 0xa076_1d64_78bd_642f;

/// SplitMix64 finaliser: turns (run seed, frame index) into well-spread frame seeds, for runs
/// with a given `--seed` (reproducible). It is invertible: one frame's seed and index give
/// the run seed, so it is not used for runs that must keep their masks secret.
pub fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A secret 256-bit key drawn from the operating system for one run; frame seeds are
/// BLAKE3 keyed hashes of the frame index, so knowing any number of them does not give
/// another frame's (as it would with [`mix`]).
#[derive(Clone, Copy)]
pub struct RunKey([u8; 32]);

impl RunKey {
    /// A fresh key from the operating system.
    pub fn from_os() -> std::io::Result<RunKey> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(RunKey(key))
    }

    /// Frame `index`'s seed.
    pub fn frame_seed(&self, index: u64) -> u64 {
        let hash = blake3::keyed_hash(&self.0, &index.to_le_bytes());
        u64::from_le_bytes(
            hash.as_bytes()[..8]
                .try_into()
                .expect("a hash has 32 bytes"),
        )
    }
}

impl std::fmt::Debug for RunKey {
    // Never print the key: it is what keeps the masks secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunKey(..)")
    }
}

/// 64 bits from the operating system (a calibration's seed, recorded in the card).
pub fn seed_from_os() -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_bits_are_balanced() {
        let a: Vec<u64> = {
            let mut r = WyRand::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let mut r = WyRand::new(7);
        assert!(a.iter().all(|&x| x == r.next_u64()));
        let mut r = WyRand::new(1);
        let ones: u32 = (0..10_000).map(|_| r.next_u64().count_ones()).sum();
        let frac = ones as f64 / 640_000.0;
        assert!((frac - 0.5).abs() < 0.005, "fraction of one bits {frac}");
    }

    #[test]
    fn nth_is_the_stream_at_that_point() {
        let mut r = WyRand::new(0xdead_beef);
        for index in 0..1000 {
            assert_eq!(WyRand::nth(0xdead_beef, index), r.next_u64());
        }
        let mut far = WyRand::at(5, u64::MAX - 1);
        assert_eq!(far.next_u64(), WyRand::nth(5, u64::MAX - 1));
    }

    #[test]
    fn frame_seeds_differ() {
        assert_ne!(mix(1, 0), mix(1, 1));
        assert_ne!(mix(1, 0), mix(2, 0));
    }

    /// The inverse of `mix`'s finaliser, as an attacker who reads the reports would write it.
    fn run_seed_from(frame_seed: u64, index: u64) -> u64 {
        let unshift = |x: u64, k: u32| {
            let mut y = x;
            let mut s = k;
            while s < 64 {
                y ^= x >> s;
                s += k;
            }
            y
        };
        // Odd constants are invertible mod 2^64 (Newton's iteration).
        let inverse = |c: u64| {
            (0..6).fold(c, |i, _| {
                i.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(i)))
            })
        };
        let mut z = unshift(frame_seed, 31);
        z = unshift(z.wrapping_mul(inverse(0x94d0_49bb_1331_11eb)), 27);
        z = unshift(z.wrapping_mul(inverse(0xbf58_476d_1ce4_e5b9)), 30);
        z.wrapping_sub(0x9e37_79b9_7f4a_7c15) ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn a_reported_seed_gives_the_next_frames_only_with_a_given_run_seed() {
        // With --seed (mix), frame 5's reported seed gives the run seed, hence frame 6's masks.
        let run = 0x1234_5678_9abc_def0;
        let recovered = run_seed_from(mix(run, 5), 5);
        assert_eq!(recovered, run);
        assert_eq!(mix(recovered, 6), mix(run, 6));
        // Without --seed (a secret run key), the same attack predicts nothing.
        let key = RunKey::from_os().unwrap();
        let guess = mix(run_seed_from(key.frame_seed(5), 5), 6);
        assert_ne!(guess, key.frame_seed(6));
        assert_ne!(key.frame_seed(5), key.frame_seed(6));
        assert_eq!(
            key.frame_seed(6),
            key.frame_seed(6),
            "a key gives one seed per frame"
        );
        assert_eq!(format!("{key:?}"), "RunKey(..)");
    }
}
