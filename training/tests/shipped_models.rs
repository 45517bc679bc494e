//! The export is unchanged: re-exporting the shipped checkpoints gives the shipped ONNX files
//! byte for byte (the SHA-256 their cards record). The float files need only the checkpoints;
//! the ensemble, only its own ONNX file.
//! The int8 file is rebuilt from the checkpoint and the activation scales it records; the
//! calibration that chose those scales (`quantize`'s: the first 1000 MNIST training images,
//! seed 1, T = 20; needs MNIST in data/mnist) is re-run and must find them again within float
//! rounding: its maxima come out of libtorch matrix products whose summation order, and so
//! last bits, follow the BLAS thread split (a fresh clone on a busy machine gave other bits).

use std::path::{Path, PathBuf};

use mcgate::contract::card::{sha256_hex, ModelCard};
use mcgate_training::commands::{load_mnist, MnistModel};
use mcgate_training::nets::mnist::{Int8Scales, MnistCnn};
use mcgate_training::nets::Int8Export;
use mcgate_training::{data, export};
use tch::{nn, Device};

/// libtorch's random generator is global: building a network draws its initial weights from
/// it, so a test that seeds it and samples dropout masks must not run beside one that builds a
/// network (seen: the int8 calibration 3e-4 off under a parallel test run). Every test here
/// holds this lock.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    let _rng = torch_rng();
    for name in ["mnist", "fashion", "mnist-robust", "fashion-robust"] {
        let stem = repo().join("models").join(name);
        let (net, _vs) = checkpoint(&stem);
        let bytes = export::onnx_bytes(&net, &export::float_doc(&net)).unwrap();
        assert_shipped(&stem, &bytes);
    }
}

/// The shipped ensemble ships no checkpoint: its members' weights, read back from its own ONNX
/// file, re-export to that file byte for byte, and its member 0 is the shipped single model.
#[test]
fn the_shipped_ensemble_re_exports_from_its_own_weights() {
    let _rng = torch_rng();
    let stem = repo().join("models/mnist-ensemble");
    let card = ModelCard::read(&export::with_ext(&stem, "card.json")).expect("card");
    let (net, _vs) = load_mnist(&stem, &card, Device::Cpu).unwrap();
    let bytes = export::onnx_bytes(net.as_dyn(), &export::float_doc(net.as_dyn())).unwrap();
    assert_shipped(&stem, &bytes);
    let MnistModel::Ensemble(ensemble) = net else {
        panic!("models/mnist-ensemble loaded as one network")
    };
    let first = &ensemble.members()[0];
    let single = export::onnx_bytes(first, &export::float_doc(first)).unwrap();
    assert_shipped(&repo().join("models/mnist"), &single);
}

/// A float32 scalar initializer of the ONNX file `path`.
fn scalar(path: &Path, name: &str) -> f32 {
    use prost::Message;
    let model =
        mcgate::contract::pb::ModelProto::decode(&std::fs::read(path).unwrap()[..]).unwrap();
    let t = model
        .graph
        .unwrap()
        .initializer
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} in {}", path.display()));
    f32::from_le_bytes(t.raw_data[..4].try_into().unwrap())
}

#[test]
fn int8_exports_of_the_shipped_checkpoints_are_the_shipped_files() {
    let _rng = torch_rng();
    let train = data::load_split(
        &repo().join("data/mnist"),
        "train",
        data::Known::Mnist.fetch_hint(),
    )
    .expect("MNIST data");
    // As `quantize` with its defaults: --calibration 1000 --samples 20 --seed 1.
    let (calibration, _) = train.slice(0..1000).to_tensors(Device::Cpu);
    for name in ["mnist", "fashion", "mnist-robust", "fashion-robust"] {
        let (net, _vs) = checkpoint(&repo().join("models").join(name));
        let int8 = repo().join("models").join(format!("{name}.int8"));
        let onnx = export::with_ext(&int8, "onnx");
        let shipped = Int8Scales {
            conv1: scalar(&onnx, "conv1.y_scale"),
            conv2: scalar(&onnx, "conv2.y_scale"),
            fc1: scalar(&onnx, "fc1.y_scale"),
        };
        let bytes = export::int8_onnx_bytes(&net, &shipped, &export::int8_doc(&net)).unwrap();
        assert_shipped(&int8, &bytes);

        // The scales themselves, where the test command fetches the training images.
        if !name.starts_with("mnist") {
            continue;
        }
        tch::manual_seed(1);
        let again = net.calibrate(&calibration, 20);
        for (what, got, want) in [
            ("conv1", again.conv1, shipped.conv1),
            ("conv2", again.conv2, shipped.conv2),
            ("fc1", again.fc1, shipped.fc1),
        ] {
            assert!(
                ((got - want) / want).abs() < 1e-5,
                "{name} {what}: calibration found {got}, the shipped file has {want}"
            );
        }
    }
}
