//! The export is unchanged: re-exporting the shipped checkpoints gives the shipped ONNX files
//! byte for byte (the SHA-256 their cards record). The float files need only the checkpoints;
//! the int8 file re-runs `quantize`'s calibration (the first 1000 MNIST training images,
//! seed 1, T = 20), so it needs MNIST in data/mnist.

use std::path::{Path, PathBuf};

use mcgate::model::card::{sha256_hex, ModelCard};
use mcgate_training::nets::{mnist::MnistCnn, Int8Export};
use mcgate_training::{data, export};
use tch::{nn, Device};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The network of `<stem>.safetensors`, on the CPU, and the variables that own it.
fn checkpoint(stem: &Path) -> (MnistCnn, nn::VarStore) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = MnistCnn::new(&vs.root());
    vs.load(export::with_ext(stem, "safetensors"))
        .expect("loading the checkpoint");
    vs.freeze();
    (net, vs)
}

/// The shipped file `<stem>.onnx` and its card agree, and `bytes` is that file.
fn assert_shipped(stem: &Path, bytes: &[u8]) {
    let card = ModelCard::read(&export::with_ext(stem, "card.json")).expect("card");
    let shipped = std::fs::read(export::with_ext(stem, "onnx")).expect("shipped ONNX");
    assert_eq!(sha256_hex(&shipped), card.onnx_sha256, "{}", stem.display());
    assert_eq!(
        sha256_hex(bytes),
        card.onnx_sha256,
        "{}: the re-export ({} bytes) differs from the shipped file ({} bytes)",
        stem.display(),
        bytes.len(),
        shipped.len()
    );
}

#[test]
fn float_exports_of_the_shipped_checkpoints_are_the_shipped_files() {
    for name in ["mnist", "fashion"] {
        let stem = repo().join("models").join(name);
        let (net, _vs) = checkpoint(&stem);
        let bytes = export::onnx_bytes(&net, &export::float_doc(&net)).unwrap();
        assert_shipped(&stem, &bytes);
    }
}

#[test]
fn int8_export_of_the_shipped_mnist_checkpoint_is_the_shipped_file() {
    let (net, _vs) = checkpoint(&repo().join("models/mnist"));
    let train = data::load_split(
        &repo().join("data/mnist"),
        "train",
        data::Known::Mnist.fetch_hint(),
    )
    .expect("MNIST data");
    // As `quantize mnist` with its defaults: --calibration 1000 --samples 20 --seed 1.
    let (x, _) = train.slice(0..1000).to_tensors(Device::Cpu);
    tch::manual_seed(1);
    let scales = net.calibrate(&x, 20);
    let bytes = export::int8_onnx_bytes(&net, &scales, &export::int8_doc(&net)).unwrap();
    assert_shipped(&repo().join("models/mnist.int8"), &bytes);
}
