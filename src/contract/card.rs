//! The model card: the JSON file beside each ONNX model that tells the runtime how to feed it.
//!
//! This is the one definition of the schema; the training crate writes it with these types.
//! `docs/model-format.md` documents every field.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The dimension name the contract gives the Monte-Carlo sample axis of masks and output.
pub const SAMPLE_DIM: &str = "T";

/// The schema version this build writes. Bump it on any incompatible change.
pub const SCHEMA: &str = "mcgate.card/2";

/// The schema of a card with tamper checks (`mcgate calibrate --tamper`). A card without
/// them is written as [`SCHEMA`], so that an MI-only card stays byte for byte as it was.
pub const SCHEMA_V3: &str = "mcgate.card/3";

/// The first schema, still read: the shipped Fashion and int8 cards use it. A `/1` card has a threshold,
/// metrics and training provenance, and its input is stretched RGB or gray (no `/2` field).
pub const SCHEMA_V1: &str = "mcgate.card/1";

/// A model card: how to feed the ONNX file beside it, and what was measured of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// [`SCHEMA`] or [`SCHEMA_V1`], as the file says.
    pub schema: String,
    /// The model's name, e.g. `mnist`.
    pub name: String,
    /// One label per output class, in output order.
    pub classes: Vec<String>,
    /// The image input.
    pub input: InputSpec,
    /// The mask inputs, one per dropout site.
    pub dropout_sites: Vec<DropoutSite>,
    /// The probabilities output.
    pub output: OutputSpec,
    /// Monte-Carlo samples T used when `--samples` is not given.
    pub default_samples: usize,
    /// The MI threshold above which frames are rejected; `null` until calibrated
    /// (`mcgate calibrate`): the gate refuses an uncalibrated model without `--threshold`.
    pub threshold: Option<Threshold>,
    /// Accuracy measured at export; `null` for a model that was not trained here.
    pub metrics: Option<Metrics>,
    /// Lower-case hex SHA-256 of the ONNX file's bytes.
    pub onnx_sha256: String,
    /// Where the model came from.
    pub provenance: Provenance,
    /// The dropout models the graph runs side by side, their samples pooled (schema 2);
    /// absent for one model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<Ensemble>,
    /// What the red team measured of this model (schema 2): printed by `mcgate info`, never
    /// used to decide a frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
    /// Checks on the raw frame before the model runs (schema 3): a frame that fails one is
    /// rejected with its reason (`tamper:covered`, …). Absent: no tamper checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper: Option<Tamper>,
    /// Signals fused into one decision (schema 3): when present the gate rejects on their
    /// combined clean-frame tail probability instead of the MI threshold alone. Absent: the
    /// MI threshold decides, as in schema 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<Fused>,
}

/// Several signals, one decision (`score::fusion`): each signal's values on the clean
/// calibration frames, in frame order, from which the gate makes its tail tables and the
/// level that rejects `target_fpr` of those frames (`mcgate calibrate --signals`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fused {
    /// How the signals' tail probabilities combine.
    pub rule: Fusion,
    /// The share of the calibration frames the fused decision rejects.
    pub target_fpr: f64,
    /// Each signal with its calibration frames' values (one per frame, the same frames in
    /// the same order for every signal).
    pub signals: Vec<FusedSignal>,
    /// The fused decision's rate on clean frames it was not set on, if any were held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<Holdout>,
}

/// One fused signal and its clean calibration values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusedSignal {
    /// Which signal.
    pub name: Signal,
    /// Its value on each calibration frame, in frame order.
    pub clean: Vec<f64>,
}

/// A rejection rate measured on clean frames held out of a calibration (the frames after
/// those it was set on).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holdout {
    /// Clean frames held out.
    pub frames: usize,
    /// Their rejected share and its 95 % Wilson interval `[rate, low, high]`.
    pub clean_fpr: [f64; 3],
}

/// A signal the gate can fuse: each is computed from what the gate already has per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// Mutual information between prediction and weights (high is suspicious).
    Mi,
    /// Predictive entropy of the mean prediction (high is suspicious).
    Entropy,
    /// Log density of the frame's features under the training set's class-conditional
    /// Gaussians (low is suspicious: far from every class); needs `output.log_density`.
    Density,
}

impl Signal {
    /// Every signal, in the order reports list them.
    pub const ALL: [Signal; 3] = [Signal::Mi, Signal::Entropy, Signal::Density];

    /// Its name in cards, flags, reasons and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Mi => "mi",
            Signal::Entropy => "entropy",
            Signal::Density => "density",
        }
    }

    /// The signal named `name`.
    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// How tail probabilities combine into one statistic (small is suspicious).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// min(1, k × the smallest p): rejects when any one signal is far out.
    Bonferroni,
    /// The χ² (2k degrees of freedom) survival of −2 Σ ln p: rejects when the signals
    /// together are out, each maybe only a little.
    Fisher,
}

/// Clean frames a calibration expects its decision to reject, at least: fewer frames than
/// this over the target rate set the cut on a handful of frames.
pub const MIN_EXPECTED_REJECTS: f64 = 5.0;

/// Most calibration frames a fused signal may hold: the card stays small enough to read.
pub const MAX_FUSED_FRAMES: usize = 100_000;

/// Tamper checks on the raw frame (`score::tamper`), with the clean frames their cuts were
/// set on (`mcgate calibrate --tamper`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tamper {
    /// At most one per kind, run in this order; the first a frame fails names the reason.
    pub checks: Vec<TamperCheck>,
    /// The clean frames the cuts were set on.
    pub frames: usize,
    /// How each cut was set, in words.
    pub rule: String,
    /// The version of the measures the cuts were set with (`score::tamper`). Cuts set with
    /// other measures mean something else: such a card is refused, to be calibrated again.
    /// Absent in cards written before versions were recorded: version 1.
    #[serde(default = "first_tamper_measures")]
    pub measures: u32,
}

/// The version of the tamper measures this runtime computes. 2: the Laplacian at the
/// frame's own resolution, and a colour pixel clipped at its brightest channel (1: both on
/// the grid's luma).
pub const TAMPER_MEASURES: u32 = 2;

fn first_tamper_measures() -> u32 {
    1
}

/// One tamper check: its kind says which measure it reads and which side is suspicious.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TamperCheck {
    /// What it catches.
    pub kind: TamperKind,
    /// The cut: a frame whose measure is at or beyond it, on the suspicious side, is rejected.
    pub at: f64,
    /// The most extreme value on that side among the clean calibration frames (all passed).
    pub clean_extreme: f64,
}

/// What a tamper check catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TamperKind {
    /// A covered lens or a blank frame: luma contrast (standard deviation) at or under the cut.
    Covered,
    /// A blinded or blacked-out camera: the share of clipped pixels at or over the cut.
    Blinded,
    /// Defocused or smeared: the Laplacian's variance (fine detail) at or under the cut.
    Defocused,
    /// Snow: detail like independent pixel noise (`noise_like`) at or over the cut.
    Snow,
    /// Glare: the picture's blacks lifted (`black_level` at or over the cut) — light shone
    /// into the lens, or a fogged, smeared or painted-over window veiling the scene.
    Glare,
    /// Frozen: the same picture (an identical luma grid) this many frames in a row or more —
    /// a camera that stopped delivering new frames. Judged on frames in order, by the
    /// session, not frame by frame.
    Frozen,
}

impl TamperKind {
    /// Every kind, in the order the checks run.
    pub const ALL: [TamperKind; 6] = [
        TamperKind::Covered,
        TamperKind::Blinded,
        TamperKind::Defocused,
        TamperKind::Snow,
        // The least specific: noise and flat frames lift their blacks too.
        TamperKind::Glare,
        TamperKind::Frozen,
    ];

    /// Judged on one frame alone (every kind but [`TamperKind::Frozen`], which needs the
    /// frames before it).
    pub fn per_frame(self) -> bool {
        self != TamperKind::Frozen
    }

    /// Its name in reasons and metrics: `covered`, `blinded`, `defocused`, `snow`, `glare`,
    /// `frozen`.
    pub fn name(self) -> &'static str {
        match self {
            TamperKind::Covered => "covered",
            TamperKind::Blinded => "blinded",
            TamperKind::Glare => "glare",
            TamperKind::Defocused => "defocused",
            TamperKind::Snow => "snow",
            TamperKind::Frozen => "frozen",
        }
    }

    /// The measure it reads, in words.
    pub fn measure(self) -> &'static str {
        match self {
            TamperKind::Covered => "luma contrast",
            TamperKind::Blinded => "clipped share",
            TamperKind::Glare => "black level",
            TamperKind::Defocused => "sharpness",
            TamperKind::Snow => "noise likeness",
            TamperKind::Frozen => "identical frames in a row",
        }
    }

    /// Low values are the suspicious ones (else high ones).
    pub fn rejects_low(self) -> bool {
        matches!(self, TamperKind::Covered | TamperKind::Defocused)
    }
}

/// The red team's summary (`mcgate-training redteam --card`): the worst bypass it found at
/// each budget, white box with the masks secret, every frame 8-bit and judged by the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// `git describe` of the tree that ran it.
    pub commit: String,
    /// The full report (every attack and budget), relative to the repository.
    pub report: String,
    /// Correctly classified images attacked.
    pub images: usize,
    /// Secret mask draws each final frame was judged under.
    pub mask_draws: usize,
    /// Share of those images' clean frames the gate rejected, same draws.
    pub clean_fpr: f64,
    /// One entry per budget, at most [`MAX_SECURITY_ROWS`].
    pub worst: Vec<WorstBypass>,
}

/// The worst attack at one budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorstBypass {
    /// What `eps` measures.
    pub norm: Budget,
    /// The budget, in the unit `norm` names.
    pub eps: f64,
    /// The attack's name in the report.
    pub attack: String,
    /// Share of (image, mask draw) pairs misclassified and accepted.
    pub bypass: f64,
    /// 95 % bootstrap interval over images.
    pub interval: [f64; 2],
}

/// What an attack's budget `eps` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// Largest change of any pixel ([0, 1] units).
    Linf,
    /// Euclidean length of the change ([0, 1] units).
    L2,
    /// A patch's share of the frame's area.
    Patch,
}

/// Budgets a card's security block may list: enough for any red team, few enough to print.
pub const MAX_SECURITY_ROWS: usize = 64;

/// A dropout ensemble in one graph (Smith & Gal 2018, §4.2): every member gets the same
/// image and its own masks, T samples each, and the output stacks the members' rows, so the
/// measures run over M·T pooled samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ensemble {
    /// The members in output order: member k's T samples are output rows k·T..(k+1)·T.
    pub members: Vec<Member>,
}

/// One member of an [`Ensemble`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its name, e.g. the model it was assembled from.
    pub name: String,
    /// Its mask inputs: a consecutive run of the card's `dropout_sites`, in order.
    pub sites: Vec<String>,
    /// Its own test accuracy, from its own card.
    pub metrics: Option<Metrics>,
    /// How it was trained.
    pub training: Training,
}

/// The image input and its normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Graph input name (`x` in trained models; a converted model keeps its own).
    pub name: String,
    /// `[1, C, H, W]`.
    pub shape: [usize; 4],
    /// Always `NCHW` (schemas 1 and 2).
    pub layout: String,
    /// Model input value = (pixel * scale - mean[c]) / std[c], pixels in 0..=255.
    pub scale: f32,
    /// Per-channel mean, subtracted after scaling.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, divided by last.
    pub std: Vec<f32>,
    /// The order of the model's colour channels (schema 2; RGB when absent).
    #[serde(default, skip_serializing_if = "is_default")]
    pub channel_order: ChannelOrder,
    /// How a frame of another size becomes H×W (schema 2; stretched when absent).
    #[serde(default, skip_serializing_if = "is_default")]
    pub resize: Resize,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The order of a 3-channel model's input planes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue (PyTorch, most models).
    #[default]
    Rgb,
    /// Blue, green, red (OpenCV- and Caffe-trained models).
    Bgr,
}

impl std::fmt::Display for ChannelOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChannelOrder::Rgb => "red, green, blue",
            ChannelOrder::Bgr => "blue, green, red",
        })
    }
}

/// How a frame becomes the model's H×W.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Resize {
    /// Resize to exactly W×H, whatever the aspect ratio (bilinear).
    #[default]
    Stretch,
    /// Resize (bilinear) so that the shorter side is `shorter_side` pixels, keeping the aspect
    /// ratio, then cut the centre `crop`×`crop` square (torchvision's `Resize(256)` +
    /// `CenterCrop(224)`, what ImageNet models expect).
    ShorterSideCrop {
        /// The shorter side after resizing.
        shorter_side: u32,
        /// The side of the centre square; equals the input's H and W.
        crop: u32,
    },
}

impl std::fmt::Display for Resize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resize::Stretch => f.write_str("stretched to the input's size"),
            Resize::ShorterSideCrop { shorter_side, crop } => write!(
                f,
                "resized so that the shorter side is {shorter_side} pixels, then the centre \
                 {crop}×{crop} cut"
            ),
        }
    }
}

impl InputSpec {
    /// C.
    pub fn channels(&self) -> usize {
        self.shape[1]
    }
    /// H.
    pub fn height(&self) -> usize {
        self.shape[2]
    }
    /// W.
    pub fn width(&self) -> usize {
        self.shape[3]
    }
    /// Values in one input, C·H·W.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when the input has no values (a valid card never).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One dropout site: a mask input the runtime fills each run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutSite {
    /// Graph input carrying this site's mask, e.g. `mask_0`; its shape is `[T, ..shape]`.
    pub input: String,
    /// Drop probability: mask values are 0 with probability p, else 1/(1-p).
    pub p: f32,
    /// Shape of one sample's mask (without the leading T).
    pub shape: Vec<usize>,
}

impl DropoutSite {
    /// Values in one sample's mask.
    pub fn sample_len(&self) -> usize {
        // Saturating: a hostile card's shape may overflow; validation refuses it as too large.
        self.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }
}

/// The graph's outputs: the probabilities, and (schema 3) a feature density.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Graph output name, `probs`: softmax probabilities `[T, classes]` (the first output).
    pub name: String,
    /// Schema 3, optional: the graph output `[1, 1]` that holds the log density of the
    /// frame's features under the class-conditional Gaussians fitted on the training set,
    /// computed with every mask 1 (once per frame, whatever T): the `density` signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_density: Option<String>,
}

/// The gate's MI threshold and how it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Frames whose mutual information (nats) is above this are rejected.
    pub mutual_information: f64,
    /// How the value was chosen, in words.
    pub method: String,
    /// Target clean false-positive rate the value was chosen for, if any.
    pub target_fpr: Option<f64>,
    /// True until the value has been checked against attacks (see docs/RESULTS.md).
    pub provisional: bool,
    /// The clean frames it was calibrated on by `mcgate calibrate` (schema 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// A threshold's calibration on the camera's own clean frames (`mcgate calibrate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Clean frames scored.
    pub frames: usize,
    /// Monte-Carlo samples T per frame.
    pub samples: usize,
    /// The run seed of the masks.
    pub seed: u64,
    /// When, as UTC `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    /// The calibration frames' rate above the threshold and its 95 % Wilson interval
    /// `[rate, low, high]`, treating the frames as independent (frames of one scene are not:
    /// the real interval is wider). Absent in cards calibrated before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_fpr: Option<[f64; 3]>,
    /// The threshold's rate on clean frames it was not set on, if any were held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<Holdout>,
}

/// Test accuracy measured at export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Test accuracy with dropout off.
    pub test_accuracy_deterministic: f64,
    /// Test accuracy of the MC mean over `mc_samples` dropout samples.
    pub test_accuracy_mc: f64,
    /// T of the MC accuracy.
    pub mc_samples: usize,
    /// Test images measured.
    pub test_images: usize,
}

/// Where a model came from: trained by this project's training crate, or converted from
/// someone's own ONNX classifier by `mcgate convert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Provenance {
    /// Trained here (the only kind in schema 1).
    Trained(Training),
    /// Converted by `mcgate convert` (schema 2).
    Converted(Conversion),
    /// Exported by the training crate from published pretrained weights (schema 2).
    Pretrained(Pretrained),
    /// Assembled from trained members, each with its own provenance in `ensemble`
    /// (schema 2).
    Assembled(Assembly),
}

/// How a model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// The training data, in words.
    pub dataset: String,
    /// Images trained on.
    pub train_images: usize,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Optimiser and learning rate, in words.
    pub optimizer: String,
    /// Training seed.
    pub seed: u64,
    /// The device trained on.
    pub device: String,
    /// Training time.
    pub train_seconds: f64,
    /// `git describe --always --dirty` of the tree that trained the model.
    pub source_commit: String,
    /// The frozen pretrained backbone under a trained head (schema 2); none for a network
    /// trained whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<Backbone>,
    /// The attack the network was trained against (schema 2); none for standard training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversarial: Option<AdversarialTraining>,
}

/// Adversarial training, as the training crate ran it: every batch attacked within an L∞
/// ball on pixels in [0, 1], the network in training mode (dropout on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdversarialTraining {
    /// How each batch was attacked.
    pub method: TrainingAttack,
    /// L∞ radius, pixels in [0, 1].
    pub eps: f64,
    /// Attack steps per batch.
    pub steps: usize,
    /// Size of each signed step, pixels in [0, 1].
    pub step_size: f64,
    /// TRADES's β (weight of the KL term); TRADES only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// Epochs over which ε ramped up from 0.
    pub eps_warmup_epochs: usize,
}

/// The training attack's method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainingAttack {
    /// Madry et al. 2018: K-step PGD from a random start; trained on the attacked batch.
    Pgd,
    /// Zhang et al. 2019: clean cross-entropy plus β × KL(clean ‖ attacked).
    Trades,
    /// Wong et al. 2020: one signed step from a uniform random start.
    FgsmRs,
}

impl std::fmt::Display for TrainingAttack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrainingAttack::Pgd => "pgd",
            TrainingAttack::Trades => "trades",
            TrainingAttack::FgsmRs => "fgsm-rs",
        })
    }
}

/// The published weights a head was trained on top of, frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backbone {
    /// The weights, in words: package, version, file.
    pub weights: String,
    /// Lower-case hex SHA-256 of the weights file as published.
    pub weights_sha256: String,
}

/// What a converted model was converted from, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversion {
    /// The original ONNX file's name.
    pub converted_from: String,
    /// Lower-case hex SHA-256 of the original file's bytes.
    pub source_sha256: String,
    /// The command line that converted it.
    pub command: String,
}

/// Which published weights a model was exported from, and by what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pretrained {
    /// The weights, in words: package, version, file.
    pub weights: String,
    /// Lower-case hex SHA-256 of the weights file as published.
    pub weights_sha256: String,
    /// The accuracy the weights' publishers report, in words, with where.
    pub published_accuracy: String,
    /// `git describe --always --dirty` of the tree that exported the model.
    pub source_commit: String,
}

/// How an ensemble was put together (its members' training is in the card's `ensemble`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assembly {
    /// The models assembled, as given on the command line.
    pub assembled_from: Vec<String>,
    /// `git describe --always --dirty` of the tree that assembled it.
    pub source_commit: String,
}

/// Where a model's two files live, from whatever the user typed: `models/mnist`,
/// `models/mnist.onnx` or `models/mnist.card.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    /// `<stem>.onnx`.
    pub onnx: PathBuf,
    /// `<stem>.card.json`.
    pub card: PathBuf,
}

impl ModelPaths {
    /// The two paths for a stem or either file's path.
    pub fn resolve(arg: &Path) -> ModelPaths {
        let s = arg.to_string_lossy();
        let stem = if let Some(stem) = s.strip_suffix(".card.json") {
            stem.to_string()
        } else if let Some(stem) = s.strip_suffix(".onnx") {
            stem.to_string()
        } else {
            s.to_string()
        };
        ModelPaths {
            onnx: PathBuf::from(format!("{stem}.onnx")),
            card: PathBuf::from(format!("{stem}.card.json")),
        }
    }
}

/// Largest T accepted: far beyond any useful value, small enough that masks fit in memory.
pub const MAX_SAMPLES: usize = 4096;

/// Smallest T the gate scores with. With one sample MI is exactly 0 and every frame would
/// pass; below this the plug-in MI estimate is biased so far down that frames the card's
/// threshold rejects at its calibrated T pass (docs/RELIABILITY.md, row 53).
pub const MIN_SAMPLES: usize = 4;

/// Smallest drop probability of a site that drops at all: below it the masks change the
/// network too little for its samples to disagree (p = 1e-7 gave MI of rounding noise).
pub const MIN_P: f32 = 0.01;

/// Largest drop probability: above it nearly every unit is dropped in every sample, and the
/// samples agree again (p = 0.9999 gave MI 0 on every frame).
pub const MAX_P: f32 = 0.99;

/// Fewest units a Monte-Carlo sample must drop on average, over all sites (Σ size·p): a
/// sample that mostly drops nothing is the deterministic network, and its samples agree.
pub const MIN_EXPECTED_DROPS: f64 = 1.0;

/// Most values in the model's input, C·H·W (64 MiB of f32; an ImageNet input is 150,528).
pub const MAX_INPUT_VALUES: usize = 1 << 24;

/// Most mask values one run may draw, T · Σ site sizes (256 MiB of f32): bounds the masks'
/// memory for any T the card or the command line asks for.
pub const MAX_MASK_VALUES: usize = 1 << 26;

/// The span the pixel range 0–255 must cover in model-input units, per channel
/// (255·scale/std): below it every frame looks alike to the model (a denormal scale; std 100
/// on 0–1 pixels), above it the input overflows what a network is trained on. Common
/// normalisations span 1 (0–1), 2 (−1–1, Lite0), 4.4 (ImageNet mean/std) or 255 (raw).
pub const INPUT_SPAN: (f32, f32) = (0.1, 1e6);

/// Why a card is not valid on its own; each variant renders as one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CardError {
    /// The bytes are not JSON.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// The `schema` field is missing.
    #[error("no \"schema\" field (expected {SCHEMA:?})")]
    NoSchema,
    /// The card is of another schema version.
    #[error("schema is {found:?}, this build reads {SCHEMA_V1:?}, {SCHEMA:?} and {SCHEMA_V3:?}")]
    Schema {
        /// The card's `schema`.
        found: String,
    },
    /// A field is missing, unknown, or of the wrong type (serde's words).
    #[error("{0}")]
    Fields(String),
    /// Fewer than two classes: a one-class output has no uncertainty to measure.
    #[error("{0} class(es): a gated classifier needs at least 2")]
    Classes(usize),
    /// `input.layout` is not NCHW.
    #[error("input layout {0:?} is not supported (NCHW only)")]
    Layout(String),
    /// `input.shape` is not `[1, C, H, W]` with positive C, H, W.
    #[error("input shape {0:?} must be [1, C, H, W] with C, H, W > 0")]
    InputShape([usize; 4]),
    /// The input has neither 1 nor 3 channels.
    #[error("input has {0} channels; 1 (gray) or 3 (RGB) supported")]
    Channels(usize),
    /// `mean` or `std` does not have one value per channel.
    #[error("input mean/std need one value per channel ({channels}), got {mean}/{std}")]
    MeanStdLength {
        /// Input channels.
        channels: usize,
        /// Values in `mean`.
        mean: usize,
        /// Values in `std`.
        std: usize,
    },
    /// `scale` or `std` is not finite and positive, or `mean` not finite.
    #[error("input scale/std must be finite and positive, mean finite")]
    Normalisation,
    /// The normalisation makes frames indistinguishable to the model, or overflows.
    #[error(
        "input channel {channel}: {problem} (value = (pixel·scale − mean)/std must tell \
         the 256 pixel levels apart, spanning {}–{} units; a gate fed one value per frame \
         accepts everything)",
        INPUT_SPAN.0, INPUT_SPAN.1
    )]
    InputRange {
        /// The channel.
        channel: usize,
        /// What is wrong, with the numbers.
        problem: String,
    },
    /// The input or the masks are too large to hold.
    #[error("{what} has {values} values, over the {max} this build holds")]
    TooLarge {
        /// What, e.g. "input [1, 1, 100000, 100000]".
        what: String,
        /// Its values (saturating).
        values: usize,
        /// The bound.
        max: usize,
    },
    /// No dropout sites.
    #[error("no dropout sites: MC dropout needs at least one")]
    NoSites,
    /// Every site has p = 0: the masks would never drop anything.
    #[error("every dropout site has p = 0: the samples would all agree and every frame pass")]
    NoStochasticSite,
    /// A site's p is outside [0, 1).
    #[error("dropout site {site}: p = {p} is outside [0, 1)")]
    SiteP {
        /// The site's input name.
        site: String,
        /// Its drop probability.
        p: f32,
    },
    /// A site drops with a probability too small, or too large, to make the samples disagree.
    #[error(
        "dropout site {site}: p = {p} is outside [{MIN_P}, {MAX_P}]: the masks would drop \
         almost nothing or almost everything, the samples agree and every frame passes (use \
         p = 0 to switch a site off)"
    )]
    SiteTinyP {
        /// The site's input name.
        site: String,
        /// Its drop probability.
        p: f32,
    },
    /// The sites together drop too few units per sample.
    #[error(
        "the dropout sites drop {expected:.3} units per sample on average (Σ size·p), \
         under {MIN_EXPECTED_DROPS}: most samples would be the deterministic network, agree, \
         and pass every frame"
    )]
    FewDrops {
        /// Σ size·p.
        expected: f64,
    },
    /// A site's shape is empty or has a zero.
    #[error("dropout site {site}: empty shape {shape:?}")]
    SiteShape {
        /// The site's input name.
        site: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A site has the image input's name.
    #[error("dropout site {0} has the image input's name")]
    SiteIsImage(String),
    /// A site is listed twice.
    #[error("dropout site {0} is listed twice")]
    SiteTwice(String),
    /// `default_samples` is outside [`MIN_SAMPLES`]..=[`MAX_SAMPLES`].
    #[error(
        "default_samples {0} is outside {MIN_SAMPLES}..={MAX_SAMPLES} (MI needs several \
         samples: with one it is 0 and every frame passes)"
    )]
    DefaultSamples(usize),
    /// The threshold is negative or not finite.
    #[error("threshold {0} must be finite and non-negative")]
    Threshold(f64),
    /// The threshold is at or above the largest MI the card's run can produce (ln of the
    /// classes, or of the samples at its default T if fewer): nothing is rejected.
    #[error(
        "threshold {threshold} is not below ln({count}) = {max:.4}, the most mutual \
         information {count} {of} can have: it would accept every frame"
    )]
    ThresholdUnreachable {
        /// The threshold.
        threshold: f64,
        /// Classes, or output rows at the default T.
        count: usize,
        /// What `count` counts.
        of: &'static str,
        /// ln(count).
        max: f64,
    },
    /// `onnx_sha256` is not 64 hex digits.
    #[error("onnx_sha256 is not 64 hex digits")]
    Sha256,
    /// A schema-1 card uses what only schema 2 has.
    #[error("{0} needs schema {SCHEMA:?} (the card says {SCHEMA_V1:?})")]
    NeedsV2(&'static str),
    /// A card below schema 3 uses what only schema 3 has.
    #[error("{0} needs schema {SCHEMA_V3:?}")]
    NeedsV3(&'static str),
    /// The training block's adversarial training is not one the training crate can run.
    #[error("training.adversarial: {0}")]
    AdversarialTraining(String),
    /// A tamper check that cannot be run as written.
    #[error("tamper: {0}")]
    Tamper(String),
    /// A fusion block that cannot decide as written.
    #[error("fusion: {0}")]
    Fusion(String),
    /// The resize policy does not fit the input shape.
    #[error("input resize: {0}")]
    Resize(String),
    /// A channel order was given for a gray model.
    #[error("input channel_order bgr needs 3 channels")]
    ChannelOrder,
    /// A text field holds a control or bidirectional formatting character (a newline, an ANSI
    /// escape, U+202E): printed by `info` or in a report line it would forge lines or drive
    /// the terminal.
    #[error("{field} holds a control character ({text:?}): card texts are printed as they are")]
    ControlCharacter {
        /// Where, as a JSON path, e.g. `classes[3]`.
        field: String,
        /// The text, escaped.
        text: String,
    },
    /// The ensemble's members do not split the dropout sites between them, or are too few.
    #[error("ensemble: {0}")]
    Ensemble(String),
    /// The security block holds a share outside [0, 1], an interval that does not hold its
    /// value, a budget that is not a finite non-negative number, or too many rows.
    #[error("security: {0}")]
    Security(String),
}

impl ModelCard {
    /// Parses and validates a card.
    pub fn from_json(bytes: &[u8]) -> Result<ModelCard, CardError> {
        // Read the version first so an old or future card gets a version error, not a
        // confusing field error.
        #[derive(Deserialize)]
        struct Version {
            schema: Option<String>,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| CardError::Json(e.to_string()))?;
        match version.schema {
            Some(s) if s == SCHEMA || s == SCHEMA_V1 || s == SCHEMA_V3 => {}
            Some(found) => return Err(CardError::Schema { found }),
            None => return Err(CardError::NoSchema),
        }
        let card: ModelCard =
            serde_json::from_slice(bytes).map_err(|e| CardError::Fields(e.to_string()))?;
        card.validate()?;
        Ok(card)
    }

    /// The card as pretty JSON with a final newline, as the training crate writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a card always serialises") + "\n"
    }

    /// Checks the card on its own (the graph is checked against it at load time).
    pub fn validate(&self) -> Result<(), CardError> {
        let json = serde_json::to_value(self).expect("a card always serialises");
        if let Some((field, text)) = control_character(&json, String::new()) {
            return Err(CardError::ControlCharacter { field, text });
        }
        if self.classes.len() < 2 {
            return Err(CardError::Classes(self.classes.len()));
        }
        let i = &self.input;
        if i.layout != "NCHW" {
            return Err(CardError::Layout(i.layout.clone()));
        }
        if i.shape[0] != 1 || i.shape[1..].contains(&0) {
            return Err(CardError::InputShape(i.shape));
        }
        if !matches!(i.channels(), 1 | 3) {
            return Err(CardError::Channels(i.channels()));
        }
        if i.mean.len() != i.channels() || i.std.len() != i.channels() {
            return Err(CardError::MeanStdLength {
                channels: i.channels(),
                mean: i.mean.len(),
                std: i.std.len(),
            });
        }
        if !i.scale.is_finite()
            || i.scale <= 0.0
            || i.mean.iter().any(|m| !m.is_finite())
            || i.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err(CardError::Normalisation);
        }
        for c in 0..i.channels() {
            check_input_range(c, i.scale, i.mean[c], i.std[c])?;
        }
        let input_values = i.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d));
        if input_values > MAX_INPUT_VALUES {
            return Err(CardError::TooLarge {
                what: format!("input {:?}", i.shape),
                values: input_values,
                max: MAX_INPUT_VALUES,
            });
        }
        if self.dropout_sites.is_empty() {
            return Err(CardError::NoSites);
        }
        for site in &self.dropout_sites {
            if !(0.0..1.0).contains(&site.p) {
                return Err(CardError::SiteP {
                    site: site.input.clone(),
                    p: site.p,
                });
            }
            if site.shape.is_empty() || site.shape.contains(&0) {
                return Err(CardError::SiteShape {
                    site: site.input.clone(),
                    shape: site.shape.clone(),
                });
            }
            if site.input == i.name {
                return Err(CardError::SiteIsImage(site.input.clone()));
            }
            if site.p != 0.0 && !(MIN_P..=MAX_P).contains(&site.p) {
                return Err(CardError::SiteTinyP {
                    site: site.input.clone(),
                    p: site.p,
                });
            }
        }
        // With every p = 0 the masks are all ones, MI is always 0, and every frame passes.
        if self.dropout_sites.iter().all(|s| s.p == 0.0) {
            return Err(CardError::NoStochasticSite);
        }
        let mask_values = self.mask_values_per_sample();
        if mask_values.saturating_mul(MIN_SAMPLES) > MAX_MASK_VALUES {
            return Err(CardError::TooLarge {
                what: format!("dropout sites' masks at T={MIN_SAMPLES}"),
                values: mask_values.saturating_mul(MIN_SAMPLES),
                max: MAX_MASK_VALUES,
            });
        }
        let expected: f64 = self
            .dropout_sites
            .iter()
            .map(|s| s.sample_len() as f64 * s.p as f64)
            .sum();
        if expected < MIN_EXPECTED_DROPS {
            return Err(CardError::FewDrops { expected });
        }
        for (a, site) in self.dropout_sites.iter().enumerate() {
            if self.dropout_sites[..a]
                .iter()
                .any(|s| s.input == site.input)
            {
                return Err(CardError::SiteTwice(site.input.clone()));
            }
        }
        if !(MIN_SAMPLES..=MAX_SAMPLES).contains(&self.default_samples) {
            return Err(CardError::DefaultSamples(self.default_samples));
        }
        if mask_values.saturating_mul(self.default_samples) > MAX_MASK_VALUES {
            return Err(CardError::TooLarge {
                what: format!("dropout sites' masks at T={}", self.default_samples),
                values: mask_values.saturating_mul(self.default_samples),
                max: MAX_MASK_VALUES,
            });
        }
        if let Some(t) = self.threshold.as_ref().map(|t| t.mutual_information) {
            if !t.is_finite() || t < 0.0 {
                return Err(CardError::Threshold(t));
            }
            // Was (fourth outside probe): 10 classes, default T = 4 and a threshold of 1.5
            // passed here and failed later as a command-line error (exit 2).
            let (classes, rows) = (self.classes.len(), self.output_rows(self.default_samples));
            let (count, of) = if rows < classes {
                (rows, "samples at the card's default_samples")
            } else {
                (classes, "classes")
            };
            let max = (count as f64).ln();
            if t >= max {
                return Err(CardError::ThresholdUnreachable {
                    threshold: t,
                    count,
                    of,
                    max,
                });
            }
        }
        if i.channel_order == ChannelOrder::Bgr && i.channels() != 3 {
            return Err(CardError::ChannelOrder);
        }
        if let Resize::ShorterSideCrop { shorter_side, crop } = i.resize {
            if crop as usize != i.height() || crop as usize != i.width() {
                return Err(CardError::Resize(format!(
                    "crop {crop} is not the input's H×W {}×{}",
                    i.height(),
                    i.width()
                )));
            }
            if shorter_side < crop {
                return Err(CardError::Resize(format!(
                    "shorter side {shorter_side} is less than the crop {crop}"
                )));
            }
        }
        match &self.ensemble {
            Some(ensemble) => self.validate_ensemble(ensemble)?,
            None if matches!(self.provenance, Provenance::Assembled(_)) => {
                return Err(CardError::Ensemble(
                    "assembled provenance without an `ensemble`".into(),
                ))
            }
            None => {}
        }
        if let Some(security) = &self.security {
            validate_security(security)?;
        }
        if let Provenance::Trained(Training {
            adversarial: Some(a),
            ..
        }) = &self.provenance
        {
            let beta_fits = match a.method {
                TrainingAttack::Trades => a.beta.is_some_and(|b| b.is_finite() && b > 0.0),
                _ => a.beta.is_none(),
            };
            let fits = (a.eps > 0.0 && a.eps <= 1.0)
                && a.steps > 0
                && a.step_size.is_finite()
                && a.step_size > 0.0
                && beta_fits;
            if !fits {
                return Err(CardError::AdversarialTraining(format!(
                    "{} at eps {}, {} steps of {}, beta {:?}: eps must lie in (0, 1], steps \
                     and step positive, beta positive for trades and absent otherwise",
                    a.method, a.eps, a.steps, a.step_size, a.beta
                )));
            }
        }
        if let Some(tamper) = &self.tamper {
            if self.schema != SCHEMA_V3 {
                return Err(CardError::NeedsV3("tamper checks"));
            }
            validate_tamper(tamper)?;
        }
        if let Some(fused) = &self.fusion {
            if self.schema != SCHEMA_V3 {
                return Err(CardError::NeedsV3("fused signals"));
            }
            validate_fusion(fused, self.classes.len())?;
        }
        if let Some(density) = &self.output.log_density {
            if self.schema != SCHEMA_V3 {
                return Err(CardError::NeedsV3("a density output"));
            }
            let taken = *density == self.output.name
                || *density == i.name
                || self.dropout_sites.iter().any(|s| s.input == *density);
            if taken {
                return Err(CardError::Fusion(format!(
                    "the density output {density:?} is also the card's probabilities, image or mask"
                )));
            }
        }
        // A fused density needs the output that gives it.
        let fuses_density = self
            .fusion
            .as_ref()
            .is_some_and(|f| f.signals.iter().any(|s| s.name == Signal::Density));
        if fuses_density && self.output.log_density.is_none() {
            return Err(CardError::Fusion(
                "density is fused but the card names no density output (output.log_density)".into(),
            ));
        }
        if self.schema == SCHEMA_V1 {
            self.validate_v1()?;
        }
        if self.onnx_sha256.len() != 64 || !self.onnx_sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(CardError::Sha256);
        }
        Ok(())
    }
}

/// Each check can run and passes the clean frames it was set on: finite, non-negative
/// values, the cut beyond the clean extreme on the suspicious side, one check per kind.
fn validate_tamper(t: &Tamper) -> Result<(), CardError> {
    let fail = |m: String| Err(CardError::Tamper(m));
    if t.checks.is_empty() {
        return fail("no checks: leave the block out instead".into());
    }
    if t.measures != TAMPER_MEASURES {
        return fail(format!(
            "the cuts were set with tamper measures version {}, this mcgate measures version \
             {TAMPER_MEASURES}: set them again with `mcgate calibrate --tamper`",
            t.measures
        ));
    }
    for (i, c) in t.checks.iter().enumerate() {
        let name = c.kind.name();
        if t.checks[..i].iter().any(|o| o.kind == c.kind) {
            return fail(format!("two {name} checks"));
        }
        if !(c.at.is_finite()
            && c.at >= 0.0
            && c.clean_extreme.is_finite()
            && c.clean_extreme >= 0.0)
        {
            return fail(format!(
                "{name}: at {} and clean_extreme {} must be finite and non-negative",
                c.at, c.clean_extreme
            ));
        }
        if c.kind == TamperKind::Frozen && !(c.at >= 2.0 && c.at.fract() == 0.0) {
            return fail(format!(
                "frozen: the cut {} is not a whole number of frames of at least 2",
                c.at
            ));
        }
        // A bounded measure's cut past its bound never fires: the check would be a silent
        // no-op (a hand-edited card; `calibrate` leaves such a check out).
        let bound = match c.kind {
            TamperKind::Blinded => Some(1.0),
            TamperKind::Glare => Some(255.0),
            _ => None,
        };
        if let Some(bound) = bound.filter(|&b| c.at > b) {
            return fail(format!(
                "{name}: the cut {} lies past {bound}, the most the measure can read: it would \
                 reject nothing (leave the check out instead)",
                c.at
            ));
        }
        let beyond = if c.kind.rejects_low() {
            c.at < c.clean_extreme
        } else {
            c.at > c.clean_extreme
        };
        if !beyond {
            return fail(format!(
                "{name}: the cut {} does not lie beyond the clean frames' extreme {} (it would reject them)",
                c.at, c.clean_extreme
            ));
        }
    }
    Ok(())
}

/// Every signal once, each with the same number of finite calibration values, enough of them
/// for the target rate, and a target rate in (0, 1); MI and entropy values within what
/// `classes` classes allow. The level itself is made and checked where the gate builds its
/// tables (`score::fusion::FusedGate::new`).
fn validate_fusion(f: &Fused, classes: usize) -> Result<(), CardError> {
    let fail = |m: String| Err(CardError::Fusion(m));
    if !(f.target_fpr > 0.0 && f.target_fpr < 1.0) {
        return fail(format!("target_fpr {} is not in (0, 1)", f.target_fpr));
    }
    let Some(first) = f.signals.first() else {
        return fail("no signals: leave the block out instead".into());
    };
    let frames = first.clean.len();
    for (i, s) in f.signals.iter().enumerate() {
        let name = s.name.name();
        if f.signals[..i].iter().any(|o| o.name == s.name) {
            return fail(format!("{name} twice"));
        }
        if s.clean.len() != frames {
            return fail(format!(
                "{name} has {} calibration values, {} has {frames}: each signal needs one per frame",
                s.clean.len(),
                first.name.name()
            ));
        }
        if let Some(v) = s.clean.iter().find(|v| !v.is_finite()) {
            return fail(format!("{name} has a calibration value {v}"));
        }
        // As with the MI threshold: clean values no frame can reach (MI ≤ entropy ≤ ln C)
        // put every real frame inside the clean range, and the gate would accept them all.
        let most = (classes as f64).ln();
        if matches!(s.name, Signal::Mi | Signal::Entropy) {
            if let Some(v) = s.clean.iter().find(|v| !(0.0..=most).contains(*v)) {
                return fail(format!(
                    "{name} has a calibration value {v} outside [0, ln({classes}) = {most:.4}], \
                     which no frame can have: the card was not made by calibrate"
                ));
            }
        }
    }
    let needed = (MIN_EXPECTED_REJECTS / f.target_fpr).ceil() as usize;
    if frames < needed || frames > MAX_FUSED_FRAMES {
        return fail(format!(
            "{frames} calibration frames: a target rate of {} needs {needed} to {MAX_FUSED_FRAMES}",
            f.target_fpr
        ));
    }
    if let Some(h) = &f.holdout {
        let [rate, low, high] = h.clean_fpr;
        if !(0.0..=1.0).contains(&low) || !(low..=high).contains(&rate) || high > 1.0 {
            return fail(format!(
                "holdout clean_fpr {:?} is not a rate in its interval",
                h.clean_fpr
            ));
        }
    }
    Ok(())
}

impl ModelCard {
    /// Members, in order, own consecutive runs of the dropout sites that together are all of
    /// them: every mask belongs to exactly one member's samples.
    fn validate_ensemble(&self, ensemble: &Ensemble) -> Result<(), CardError> {
        let fail = |what: String| Err(CardError::Ensemble(what));
        if ensemble.members.len() < 2 {
            return fail(format!(
                "{} member(s): an ensemble needs at least 2",
                ensemble.members.len()
            ));
        }
        match &self.provenance {
            Provenance::Assembled(a) if a.assembled_from.len() == ensemble.members.len() => {}
            Provenance::Assembled(a) => {
                return fail(format!(
                    "{} members, assembled from {} models",
                    ensemble.members.len(),
                    a.assembled_from.len()
                ))
            }
            _ => return fail("an ensemble's provenance is `assembled_from`".into()),
        }
        let mut next = self.dropout_sites.iter().map(|s| s.input.as_str());
        for member in &ensemble.members {
            if member.sites.is_empty() {
                return fail(format!("member {} has no dropout sites", member.name));
            }
            for site in &member.sites {
                match next.next() {
                    Some(expected) if expected == site => {}
                    Some(expected) => {
                        return fail(format!(
                            "member {}'s site {site} is not the next dropout site ({expected})",
                            member.name
                        ))
                    }
                    None => {
                        return fail(format!(
                            "member {}'s site {site} is not among the dropout sites",
                            member.name
                        ))
                    }
                }
            }
        }
        if let Some(left) = next.next() {
            return fail(format!("dropout site {left} belongs to no member"));
        }
        Ok(())
    }

    /// Mask values one sample draws over all sites (saturating: a hostile card may overflow).
    pub fn mask_values_per_sample(&self) -> usize {
        self.dropout_sites
            .iter()
            .map(DropoutSite::sample_len)
            .fold(0usize, usize::saturating_add)
    }

    /// Models whose samples the output pools: the ensemble's members, or 1.
    pub fn members(&self) -> usize {
        self.ensemble.as_ref().map_or(1, |e| e.members.len())
    }

    /// Probability rows one run with `samples` masks per site gives: T per member.
    pub fn output_rows(&self, samples: usize) -> usize {
        samples * self.members()
    }

    /// A schema-1 card has only what schema 1 had.
    fn validate_v1(&self) -> Result<(), CardError> {
        if self.threshold.is_none() {
            return Err(CardError::NeedsV2("an uncalibrated threshold (null)"));
        }
        if self.metrics.is_none() {
            return Err(CardError::NeedsV2("a card without metrics"));
        }
        match &self.provenance {
            Provenance::Trained(t) if t.backbone.is_some() => {
                return Err(CardError::NeedsV2("a trained head's backbone"));
            }
            Provenance::Trained(t) if t.adversarial.is_some() => {
                return Err(CardError::NeedsV2("adversarial training"));
            }
            Provenance::Trained(_) => {}
            _ => {
                return Err(CardError::NeedsV2(
                    "converted, pretrained or assembled provenance",
                ))
            }
        }
        if self.ensemble.is_some() {
            return Err(CardError::NeedsV2("an ensemble"));
        }
        if self.security.is_some() {
            return Err(CardError::NeedsV2("a security block"));
        }
        if self.input.channel_order != ChannelOrder::Rgb {
            return Err(CardError::NeedsV2("input channel_order"));
        }
        if self.input.resize != Resize::Stretch {
            return Err(CardError::NeedsV2("input resize"));
        }
        if self
            .threshold
            .as_ref()
            .is_some_and(|t| t.calibration.is_some())
        {
            return Err(CardError::NeedsV2("threshold calibration"));
        }
        Ok(())
    }

    /// The MI threshold, if the model has been calibrated.
    pub fn mi_threshold(&self) -> Option<f64> {
        self.threshold.as_ref().map(|t| t.mutual_information)
    }
}

/// Shares in [0, 1], intervals that hold their value, budgets finite and non-negative.
fn validate_security(s: &Security) -> Result<(), CardError> {
    let bad = |what: String| Err(CardError::Security(what));
    let share = |x: f64| (0.0..=1.0).contains(&x);
    if !share(s.clean_fpr) {
        return bad(format!(
            "clean_fpr {} is not a share in [0, 1]",
            s.clean_fpr
        ));
    }
    if s.worst.len() > MAX_SECURITY_ROWS {
        return bad(format!(
            "{} rows, at most {MAX_SECURITY_ROWS}",
            s.worst.len()
        ));
    }
    for w in &s.worst {
        let [lo, hi] = w.interval;
        if !share(w.bypass) || !share(lo) || !share(hi) || lo > w.bypass || w.bypass > hi {
            return bad(format!(
                "{} {:?} at {}: bypass {} with interval [{lo}, {hi}]",
                w.attack, w.norm, w.eps, w.bypass
            ));
        }
        if !w.eps.is_finite() || w.eps < 0.0 {
            return bad(format!("{} {:?}: budget {}", w.attack, w.norm, w.eps));
        }
    }
    Ok(())
}

/// The first string in `value` (a card as JSON) holding a control character: its path and
/// the text, escaped.
fn control_character(value: &serde_json::Value, path: String) -> Option<(String, String)> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.chars().any(crate::text::is_unprintable) => {
            Some((path, s.escape_debug().to_string()))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| control_character(v, format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            let path = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            control_character(v, path)
        }),
        _ => None,
    }
}

/// Channel `c`'s normalisation must keep the 256 pixel levels apart, as f32 computes them in
/// the preprocessor, and span [`INPUT_SPAN`].
fn check_input_range(c: usize, scale: f32, mean: f32, std: f32) -> Result<(), CardError> {
    let fail = |problem: String| {
        Err(CardError::InputRange {
            channel: c,
            problem,
        })
    };
    let value = |pixel: u8| (pixel as f32 * scale - mean) / std;
    let (lo, hi) = (value(0), value(255));
    if !lo.is_finite() || !hi.is_finite() {
        return fail(format!("pixels 0 and 255 become {lo} and {hi}"));
    }
    let span = (hi - lo).abs();
    if !(INPUT_SPAN.0..=INPUT_SPAN.1).contains(&span) {
        return fail(format!("pixels 0–255 span {span:e} units"));
    }
    if let Some(p) = (0..255u8).find(|&p| value(p) == value(p + 1)) {
        return fail(format!(
            "pixels {p} and {} both become {} (mean {mean:e} swamps the scale)",
            p + 1,
            value(p)
        ));
    }
    Ok(())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn long_floats_read_back_exactly() {
        // Found by the `card` fuzz target: with serde_json's default float parser, a threshold
        // written with 18 digits read back 1 ULP away after one round trip.
        let text = include_str!("../../models/mnist.card.json").replace(
            "\"mutual_information\": 0.11344639163348419",
            "\"mutual_information\": 0.113446391633484192",
        );
        assert!(text.contains("0.113446391633484192"));
        let card = ModelCard::from_json(text.as_bytes()).unwrap();
        let again = ModelCard::from_json(card.to_json().as_bytes()).unwrap();
        assert_eq!(
            again.mi_threshold().unwrap().to_bits(),
            card.mi_threshold().unwrap().to_bits()
        );
        assert_eq!(again.to_json(), card.to_json());
    }

    pub(crate) fn sample_card() -> ModelCard {
        ModelCard {
            schema: SCHEMA.into(),
            name: "t".into(),
            classes: vec!["a".into(), "b".into()],
            input: InputSpec {
                name: "x".into(),
                shape: [1, 1, 4, 4],
                layout: "NCHW".into(),
                scale: 1.0 / 255.0,
                mean: vec![0.0],
                std: vec![1.0],
                channel_order: ChannelOrder::Rgb,
                resize: Resize::Stretch,
            },
            dropout_sites: vec![DropoutSite {
                input: "mask_0".into(),
                p: 0.5,
                shape: vec![3],
            }],
            output: OutputSpec {
                name: "probs".into(),
                log_density: None,
            },
            default_samples: 20,
            threshold: Some(Threshold {
                mutual_information: 0.1,
                method: "test".into(),
                target_fpr: None,
                provisional: true,
                calibration: None,
            }),
            metrics: Some(Metrics {
                test_accuracy_deterministic: 0.0,
                test_accuracy_mc: 0.0,
                mc_samples: 20,
                test_images: 0,
            }),
            onnx_sha256: "0".repeat(64),
            provenance: Provenance::Trained(Training {
                dataset: "none".into(),
                train_images: 0,
                epochs: 0,
                batch_size: 0,
                optimizer: "none".into(),
                seed: 0,
                device: "cpu".into(),
                train_seconds: 0.0,
                source_commit: "none".into(),
                backbone: None,
                adversarial: None,
            }),
            ensemble: None,
            security: None,
            tamper: None,
            fusion: None,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let card = sample_card();
        assert_eq!(
            ModelCard::from_json(card.to_json().as_bytes()).unwrap(),
            card
        );
    }

    #[test]
    fn rejects_wrong_schema_and_bad_p() {
        let mut card = sample_card();
        card.schema = "mcgate.card/0".into();
        let err = ModelCard::from_json(card.to_json().as_bytes()).unwrap_err();
        assert_eq!(
            err,
            CardError::Schema {
                found: "mcgate.card/0".into()
            }
        );
        assert!(err.to_string().contains("mcgate.card/0"), "{err}");
        let mut card = sample_card();
        card.dropout_sites[0].p = 1.0;
        let err = ModelCard::from_json(card.to_json().as_bytes()).unwrap_err();
        assert!(
            matches!(err, CardError::SiteP { p, .. } if p == 1.0),
            "{err}"
        );
        assert!(err.to_string().contains("outside [0, 1)"), "{err}");
        assert!(ModelCard::from_json(b"{")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
    }

    #[test]
    fn a_security_block_is_schema_2_and_holds_shares_with_their_intervals() {
        let worst = WorstBypass {
            norm: Budget::Linf,
            eps: 0.1,
            attack: "pgd-eot".into(),
            bypass: 0.3,
            interval: [0.2, 0.4],
        };
        let mut card = sample_card();
        card.schema = SCHEMA.into();
        card.security = Some(Security {
            date: "2026-12-05".into(),
            commit: "abc1234".into(),
            report: "docs/results/security-mnist.json".into(),
            images: 100,
            mask_draws: 5,
            clean_fpr: 0.05,
            worst: vec![worst.clone()],
        });
        let back = ModelCard::from_json(card.to_json().as_bytes()).unwrap();
        assert_eq!(back, card);

        let refused = |edit: &dyn Fn(&mut Security), needle: &str| {
            let mut c = card.clone();
            edit(c.security.as_mut().unwrap());
            let err = ModelCard::from_json(c.to_json().as_bytes()).unwrap_err();
            assert!(matches!(err, CardError::Security(_)), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        };
        refused(&|s| s.clean_fpr = 1.5, "clean_fpr 1.5");
        refused(&|s| s.worst[0].bypass = 0.5, "interval [0.2, 0.4]");
        refused(
            &|s| s.worst[0].interval = [0.35, 0.4],
            "interval [0.35, 0.4]",
        );
        refused(&|s| s.worst[0].eps = -1.0, "budget -1");
        refused(
            &|s| s.worst = vec![worst.clone(); MAX_SECURITY_ROWS + 1],
            "65 rows, at most 64",
        );
        let mut v1 = card.clone();
        v1.schema = SCHEMA_V1.into();
        let err = ModelCard::from_json(v1.to_json().as_bytes()).unwrap_err();
        assert_eq!(err, CardError::NeedsV2("a security block"));
    }

    #[test]
    fn tamper_checks_need_schema_3_and_cuts_beyond_the_clean_frames() {
        let mut card = sample_card();
        card.schema = SCHEMA_V3.into();
        let check = |kind, at, clean_extreme| TamperCheck {
            kind,
            at,
            clean_extreme,
        };
        card.tamper = Some(Tamper {
            checks: vec![
                check(TamperKind::Covered, 10.0, 40.0),
                check(TamperKind::Snow, 0.6, 0.2),
            ],
            frames: 1000,
            rule: "test".into(),
            measures: TAMPER_MEASURES,
        });
        let back = ModelCard::from_json(card.to_json().as_bytes()).unwrap();
        assert_eq!(back, card);
        let refused = |edit: &dyn Fn(&mut ModelCard), needle: &str| {
            let mut c = card.clone();
            edit(&mut c);
            let err = ModelCard::from_json(c.to_json().as_bytes()).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        };
        refused(
            &|c| c.schema = SCHEMA.into(),
            "tamper checks needs schema \"mcgate.card/3\"",
        );
        refused(
            &|c| c.schema = SCHEMA_V1.into(),
            "needs schema \"mcgate.card/3\"",
        );
        refused(&|c| c.tamper.as_mut().unwrap().checks.clear(), "no checks");
        // Cuts set with the first measures (a card without the field) mean something else.
        let json = card.to_json().replace("\"measures\": 2", "\"measures\": 1");
        let err = ModelCard::from_json(json.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("tamper measures version 1"), "{err}");
        let mut value: serde_json::Value = serde_json::from_str(&card.to_json()).unwrap();
        value["tamper"].as_object_mut().unwrap().remove("measures");
        let err = ModelCard::from_json(value.to_string().as_bytes()).unwrap_err();
        assert!(err
            .to_string()
            .contains("set them again with `mcgate calibrate --tamper`"));
        refused(
            &|c| c.tamper.as_mut().unwrap().checks[1].kind = TamperKind::Covered,
            "two covered checks",
        );
        refused(
            &|c| c.tamper.as_mut().unwrap().checks[0].at = 50.0,
            "covered: the cut 50 does not lie beyond the clean frames' extreme 40",
        );
        refused(
            &|c| c.tamper.as_mut().unwrap().checks[1].at = 0.1,
            "snow: the cut 0.1 does not lie beyond",
        );
        refused(
            &|c| c.tamper.as_mut().unwrap().checks[0].clean_extreme = -1.0,
            "must be finite and non-negative",
        );
        // Cuts no frame can reach: a check that rejects nothing.
        refused(
            &|c| c.tamper.as_mut().unwrap().checks[1] = check(TamperKind::Glare, 256.0, 0.0),
            "glare: the cut 256 lies past 255, the most the measure can read",
        );
        refused(
            &|c| c.tamper.as_mut().unwrap().checks[1] = check(TamperKind::Blinded, 1.5, 0.2),
            "blinded: the cut 1.5 lies past 1",
        );
        let mut at_the_bound = card.clone();
        at_the_bound.tamper.as_mut().unwrap().checks[1] = check(TamperKind::Glare, 255.0, 0.0);
        assert!(ModelCard::from_json(at_the_bound.to_json().as_bytes()).is_ok());
        let frozen = |at| {
            move |c: &mut ModelCard| {
                c.tamper.as_mut().unwrap().checks[1] = check(TamperKind::Frozen, at, 1.0)
            }
        };
        refused(
            &frozen(1.5),
            "frozen: the cut 1.5 is not a whole number of frames",
        );
        refused(
            &frozen(1.0),
            "frozen: the cut 1 is not a whole number of frames of at least 2",
        );
        let mut with_frozen = card.clone();
        frozen(30.0)(&mut with_frozen);
        assert!(ModelCard::from_json(with_frozen.to_json().as_bytes()).is_ok());
        // A schema-3 card without tamper checks reads too.
        card.tamper = None;
        assert!(ModelCard::from_json(card.to_json().as_bytes()).is_ok());
    }

    #[test]
    fn fused_signals_need_schema_3_and_one_finite_value_per_frame_each() {
        let mut card = sample_card();
        card.schema = SCHEMA_V3.into();
        // Within ln 2, the most MI or entropy the sample card's 2 classes allow.
        let values: Vec<f64> = (0..100).map(|i| i as f64 / 200.0).collect();
        card.fusion = Some(Fused {
            rule: Fusion::Fisher,
            target_fpr: 0.05,
            signals: vec![
                FusedSignal {
                    name: Signal::Mi,
                    clean: values.clone(),
                },
                FusedSignal {
                    name: Signal::Entropy,
                    clean: values,
                },
            ],
            holdout: Some(Holdout {
                frames: 20,
                clean_fpr: [0.05, 0.01, 0.2],
            }),
        });
        let back = ModelCard::from_json(card.to_json().as_bytes()).unwrap();
        assert_eq!(back, card);
        let refused = |edit: &dyn Fn(&mut ModelCard), needle: &str| {
            let mut c = card.clone();
            edit(&mut c);
            let err = ModelCard::from_json(c.to_json().as_bytes()).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        };
        fn fusion(c: &mut ModelCard) -> &mut Fused {
            c.fusion.as_mut().unwrap()
        }
        refused(
            &|c| c.schema = SCHEMA.into(),
            "fused signals needs schema \"mcgate.card/3\"",
        );
        refused(&|c| fusion(c).signals.clear(), "no signals");
        refused(
            &|c| fusion(c).signals[1].name = Signal::Mi,
            "fusion: mi twice",
        );
        refused(
            &|c| {
                fusion(c).signals[1].clean.pop();
            },
            "entropy has 99 calibration values, mi has 100",
        );
        refused(
            &|c| fusion(c).target_fpr = 0.01,
            "100 calibration frames: a target rate of 0.01 needs 500",
        );
        refused(
            &|c| fusion(c).target_fpr = 1.0,
            "target_fpr 1 is not in (0, 1)",
        );
        refused(
            &|c| fusion(c).holdout.as_mut().unwrap().clean_fpr = [0.5, 0.01, 0.2],
            "is not a rate in its interval",
        );
        refused(&|c| fusion(c).signals[0].clean[3] = f64::INFINITY, "");
        refused(
            &|c| fusion(c).signals[0].clean[3] = 10.0,
            "mi has a calibration value 10 outside [0, ln(",
        );
        refused(
            &|c| fusion(c).signals[1].clean[3] = -0.5,
            "entropy has a calibration value -0.5 outside",
        );
        let mut nan = card.clone();
        fusion(&mut nan).signals[0].clean[3] = f64::NAN;
        assert_eq!(
            validate_fusion(nan.fusion.as_ref().unwrap(), 2),
            Err(CardError::Fusion("mi has a calibration value NaN".into()))
        );
    }

    #[test]
    fn reads_schema_1_and_2_and_keeps_schema_1_to_its_fields() {
        let shipped =
            ModelCard::from_json(include_bytes!("../../models/fashion.int8.card.json")).unwrap();
        assert_eq!(shipped.schema, SCHEMA_V1);
        assert_eq!(shipped.input.resize, Resize::Stretch);
        // A schema-1 card written back is byte for byte what it was.
        assert_eq!(
            shipped.to_json(),
            include_str!("../../models/fashion.int8.card.json")
        );

        // Schema 2: a converted, uncalibrated photo model.
        let mut card = sample_card();
        card.input.shape = [1, 3, 224, 224];
        card.input.mean = vec![0.485, 0.456, 0.406];
        card.input.std = vec![0.229, 0.224, 0.225];
        card.input.channel_order = ChannelOrder::Bgr;
        card.input.resize = Resize::ShorterSideCrop {
            shorter_side: 256,
            crop: 224,
        };
        card.threshold = None;
        card.metrics = None;
        card.provenance = Provenance::Converted(Conversion {
            converted_from: "net.onnx".into(),
            source_sha256: "1".repeat(64),
            command: "mcgate convert net.onnx m".into(),
        });
        let json = card.to_json();
        assert!(json.contains("\"policy\": \"shorter_side_crop\""), "{json}");
        assert_eq!(ModelCard::from_json(json.as_bytes()).unwrap(), card);
        assert_eq!(card.mi_threshold(), None);

        // The same card claiming schema 1 is refused, naming what needs schema 2.
        card.schema = SCHEMA_V1.into();
        let err = ModelCard::from_json(card.to_json().as_bytes()).unwrap_err();
        assert!(matches!(err, CardError::NeedsV2(_)), "{err}");

        // A head trained on a pretrained backbone says which, in schema 2 only.
        let mut card = sample_card();
        card.schema = SCHEMA.into();
        let Provenance::Trained(training) = &mut card.provenance else {
            unreachable!()
        };
        training.backbone = Some(Backbone {
            weights: "some.pth".into(),
            weights_sha256: "2".repeat(64),
        });
        assert_eq!(
            ModelCard::from_json(card.to_json().as_bytes()).unwrap(),
            card
        );
        card.schema = SCHEMA_V1.into();
        let err = ModelCard::from_json(card.to_json().as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "a trained head's backbone needs schema {SCHEMA:?} (the card says {SCHEMA_V1:?})"
            )
        );

        // Adversarial training is recorded in schema 2 only, and only as the crate runs it.
        let mut card = sample_card();
        card.schema = SCHEMA.into();
        let Provenance::Trained(training) = &mut card.provenance else {
            unreachable!()
        };
        training.adversarial = Some(AdversarialTraining {
            method: TrainingAttack::FgsmRs,
            eps: 0.3,
            steps: 1,
            step_size: 0.375,
            beta: None,
            eps_warmup_epochs: 2,
        });
        let json = card.to_json();
        assert!(json.contains("\"method\": \"fgsm-rs\""), "{json}");
        assert_eq!(ModelCard::from_json(json.as_bytes()).unwrap(), card);
        let mut v1 = card.clone();
        v1.schema = SCHEMA_V1.into();
        let err = ModelCard::from_json(v1.to_json().as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("adversarial training needs schema {SCHEMA:?} (the card says {SCHEMA_V1:?})")
        );
        let bad: [fn(&mut AdversarialTraining); 5] = [
            |a| a.eps = 0.0,
            |a| a.eps = 2.0,
            |a| a.steps = 0,
            |a| a.step_size = f64::NAN,
            |a| a.beta = Some(6.0), // β on a method without one
        ];
        for spoil in bad {
            let mut c = card.clone();
            let Provenance::Trained(t) = &mut c.provenance else {
                unreachable!()
            };
            spoil(t.adversarial.as_mut().unwrap());
            let err = c.validate().unwrap_err();
            assert!(matches!(err, CardError::AdversarialTraining(_)), "{err}");
        }

        // A crop that is not the input size, or a shorter side below it.
        let mut card = sample_card();
        card.input.resize = Resize::ShorterSideCrop {
            shorter_side: 8,
            crop: 3,
        };
        assert!(matches!(card.validate(), Err(CardError::Resize(_))));
        card.input.resize = Resize::ShorterSideCrop {
            shorter_side: 3,
            crop: 4,
        };
        assert!(matches!(card.validate(), Err(CardError::Resize(_))));
        card.input.resize = Resize::Stretch;
        card.input.channel_order = ChannelOrder::Bgr;
        assert_eq!(card.validate(), Err(CardError::ChannelOrder));

        // Degenerate models would accept every frame: one class, or masks that drop nothing.
        let mut card = sample_card();
        card.classes.truncate(1);
        assert_eq!(card.validate(), Err(CardError::Classes(1)));
        let mut card = sample_card();
        card.dropout_sites[0].p = 0.0;
        assert_eq!(card.validate(), Err(CardError::NoStochasticSite));
    }

    #[test]
    fn an_ensemble_card_gives_each_member_a_consecutive_run_of_the_sites() {
        let mut card = sample_card();
        let site = |name: &str| DropoutSite {
            input: name.into(),
            p: 0.5,
            shape: vec![3],
        };
        card.dropout_sites = vec![site("m0"), site("m1"), site("m2")];
        let Provenance::Trained(training) = card.provenance.clone() else {
            unreachable!()
        };
        card.provenance = Provenance::Assembled(Assembly {
            assembled_from: vec!["a".into(), "b".into()],
            source_commit: "test".into(),
        });
        let member = |name: &str, sites: &[&str]| Member {
            name: name.into(),
            sites: sites.iter().map(|s| s.to_string()).collect(),
            metrics: None,
            training: training.clone(),
        };
        let with = |members: Vec<Member>| {
            let mut c = card.clone();
            c.ensemble = Some(Ensemble { members });
            c
        };
        let good = with(vec![member("a", &["m0", "m1"]), member("b", &["m2"])]);
        assert_eq!(
            ModelCard::from_json(good.to_json().as_bytes()).unwrap(),
            good
        );
        assert_eq!((good.members(), good.output_rows(20)), (2, 40));
        assert_eq!((card.members(), card.output_rows(20)), (1, 20));

        let refused = |c: ModelCard| match c.validate() {
            Err(CardError::Ensemble(why)) => why,
            other => panic!("{other:?}"),
        };
        let why = refused(with(vec![member("a", &["m0", "m1", "m2"])]));
        assert_eq!(why, "1 member(s): an ensemble needs at least 2");
        let why = refused(with(vec![member("a", &["m0"]), member("b", &["m2"])]));
        assert_eq!(why, "member b's site m2 is not the next dropout site (m1)");
        let why = refused(with(vec![member("a", &["m0"]), member("b", &["m1"])]));
        assert_eq!(why, "dropout site m2 belongs to no member");
        let why = refused(with(vec![
            member("a", &["m0", "m1", "m2"]),
            member("b", &["m3"]),
        ]));
        assert_eq!(why, "member b's site m3 is not among the dropout sites");
        let why = refused(with(vec![
            member("a", &["m0", "m1", "m2"]),
            member("b", &[]),
        ]));
        assert_eq!(why, "member b has no dropout sites");

        // Provenance and members go together.
        let mut lone = good.clone();
        lone.ensemble = None;
        assert!(matches!(lone.validate(), Err(CardError::Ensemble(_))));
        let mut trained = good.clone();
        trained.provenance = sample_card().provenance;
        assert_eq!(
            refused(trained),
            "an ensemble's provenance is `assembled_from`"
        );
        let mut three = good.clone();
        let Provenance::Assembled(a) = &mut three.provenance else {
            unreachable!()
        };
        a.assembled_from.push("c".into());
        assert_eq!(refused(three), "2 members, assembled from 3 models");

        let mut v1 = good.clone();
        v1.schema = SCHEMA_V1.into();
        assert!(matches!(v1.validate(), Err(CardError::NeedsV2(_))));
    }

    #[test]
    fn resolves_model_paths() {
        let want = ModelPaths {
            onnx: "m/a.onnx".into(),
            card: "m/a.card.json".into(),
        };
        for arg in ["m/a", "m/a.onnx", "m/a.card.json"] {
            assert_eq!(ModelPaths::resolve(Path::new(arg)), want);
        }
    }
}
