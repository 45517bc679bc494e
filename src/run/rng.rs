//! wyrand: a tiny, fast, seedable 64-bit generator (Wang Yi's wyhash family).
//!
//! Masks need speed and exact replay from a seed, not cryptographic strength: at T=20 the
//! MNIST sites draw ~46 k Bernoulli values per frame. The attacker model is covered by
//! seeding each run from the OS (see `seed_from_os`), so masks are not predictable.

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

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.state as u128).wrapping_mul((self.state ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    }
}

/// SplitMix64 finaliser: turns (run seed, frame index) into well-spread frame seeds.
pub fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64 bits from the operating system, for runs without `--seed`.
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
    fn frame_seeds_differ() {
        assert_ne!(mix(1, 0), mix(1, 1));
        assert_ne!(mix(1, 0), mix(2, 0));
    }
}
