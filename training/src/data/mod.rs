//! Labelled gray images: the IDX files they come from (`idx`), the datasets known by name
//! (`known`), seeded subsets, and the tensors the networks take.

mod idx;
pub mod image_folder;
mod known;
pub mod photos;
pub mod variants;

pub use idx::{load_split, parse_idx};
pub use known::Known;

use tch::{Device, Kind, Tensor};

/// Images as 0..=255 bytes, row-major `[n, rows, cols]`, with their labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.pixels();
        &self.images[i * n..(i + 1) * n]
    }

    /// Images `range` as a new dataset.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        let n = self.pixels();
        Dataset {
            images: self.images[range.start * n..range.end * n].to_vec(),
            labels: self.labels[range].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// `n` images drawn without replacement (see [`pick_indices`]), in draw order.
    pub fn pick(&self, n: usize, seed: u64) -> Dataset {
        let picks = pick_indices(self.len(), n, seed);
        let mut images = Vec::with_capacity(picks.len() * self.pixels());
        let mut labels = Vec::with_capacity(picks.len());
        for &i in &picks {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            images,
            labels,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// `[N, 1, rows, cols]` float images scaled to [0, 1], and `[N]` int64 labels.
    pub fn to_tensors(&self, device: Device) -> (Tensor, Tensor) {
        let n = self.len() as i64;
        let x = Tensor::from_slice(&self.images).to_kind(Kind::Float).view([
            n,
            1,
            self.rows as i64,
            self.cols as i64,
        ]) / 255.0;
        let y = Tensor::from_slice(&self.labels).to_kind(Kind::Int64);
        (x.to_device(device), y.to_device(device))
    }

    /// The images scaled to [0, 1] as row-major floats, the runtime's input for a card with
    /// scale 1/255, mean 0 and std 1.
    pub fn unit_floats(&self) -> Vec<f32> {
        self.images.iter().map(|&v| v as f32 / 255.0).collect()
    }
}

/// `n` distinct indices of `0..len`, chosen by a seeded Fisher–Yates shuffle (the runtime's
/// wyrand generator).
pub fn pick_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    let mut rng = mcgate::run::rng::WyRand::new(seed);
    for i in (1..len).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx.truncate(n.min(len));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_without_replacement() {
        let picks = pick_indices(100, 30, 4);
        let mut sorted = picks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 30);
        assert_eq!(picks, pick_indices(100, 30, 4));
    }
}
