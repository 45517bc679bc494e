//! The `mcgate` command: gate camera frames by MC-dropout mutual information.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use mcgate::gate::{check_threshold, Pool, Seeds};
use mcgate::input::frame::{self, PixelFormat};
use mcgate::model::card::{ChannelOrder, ModelCard, ModelPaths, Resize};
use mcgate::model::rewrite::ConvertError;
use mcgate::model::Model;
use mcgate::output::frames::{same_file, same_inode, FrameDir};
use mcgate::output::passthrough::{OnReject, PassThrough};
use mcgate::output::report::{Format, ReportFile, ReportWriter};
use mcgate::score::verdict::{AlarmWindow, SharedThreshold, MAX_WINDOW};
use mcgate::session::{FrameOutputs, FrameSink, Session};
use mcgate::{calibrate, run::rng, validate, Error};

/// Process exit codes, documented in the README and in `AFTER_HELP`.
mod exit {
    /// Every frame was read and scored (rejected frames are a normal outcome).
    pub const OK: u8 = 0;
    /// Unexpected internal failure (a bug: please report it).
    pub const INTERNAL: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// The model or its card is missing, corrupt, or they do not match.
    pub const MODEL: u8 = 3;
    /// At least one input frame could not be read or scored (each was rejected).
    pub const INPUT: u8 = 4;
    /// An output (stdout, `--accepted`, `--annotate`) could not be written.
    pub const OUTPUT: u8 = 5;
    /// `validate`: the device's detection differs from the workstation's beyond the tolerance.
    pub const VALIDATION: u8 = 6;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  every frame was read and scored (rejecting frames is a normal outcome)
  1  internal error (a bug)
  2  bad command line
  3  model or card missing, corrupt, or not matching each other
  4  at least one frame could not be read or scored (each such frame was rejected)
  5  an output (stdout, --accepted, --annotate) could not be written
  6  validate: detection on this device differs from the workstation beyond --tolerance

Logs go to stderr; set RUST_LOG=info (or debug) for more.";

#[derive(Parser)]
#[command(
    name = "mcgate",
    version,
    about = "Adversarial-input gate for edge cameras",
    long_about = "Adversarial-input gate for edge cameras.\n\n\
        Runs an ONNX dropout model T times per frame with random dropout masks (Monte-Carlo \
        dropout), computes the mutual information (MI) between the prediction and the \
        weights, and rejects frames whose MI is above the model card's threshold: high MI \
        marks inputs the model has not seen the like of, such as adversarial examples.",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gate frames: one verdict line per frame on stdout, a summary on stderr.
    ///
    /// Example: mcgate gate models/mnist samples/mnist/
    ///          ffmpeg -i cam.mp4 -vf scale=28:28 -f rawvideo -pix_fmt gray - |
    ///            mcgate gate models/mnist - --width 28 --height 28
    #[command(after_help = AFTER_HELP)]
    Gate(GateArgs),
    /// Check detection on this device against the workstation: gate an eval bundle and
    /// compare, per attack, the ROC AUC of mutual information with the bundle's.
    ///
    /// Example: mcgate validate models/mnist bundles/mnist
    #[command(after_help = AFTER_HELP)]
    Validate(ValidateArgs),
    /// Turn an ONNX classifier of your own into a gated MC-dropout model: every Dropout
    /// node, and every tensor named with --site, becomes a dropout site whose masks mcgate
    /// draws. Writes OUT.onnx and OUT.card.json (no threshold yet: run `calibrate` next).
    ///
    /// Example: mcgate convert resnet.onnx --list-sites
    ///          mcgate convert resnet.onnx models/resnet --site onnx::Gemm_191=0.2 \
    ///            --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \
    ///            --resize-shorter 256 --center-crop 224 --labels classes.txt
    #[command(after_help = AFTER_HELP)]
    Convert(ConvertArgs),
    /// Set a model's MI threshold on clean frames from the camera it will guard: the
    /// (1 − FPR) quantile of their mutual information. Rewrites the model's card.
    ///
    /// Example: mcgate calibrate models/mine clean-frames/ --fpr 0.05
    #[command(after_help = AFTER_HELP)]
    Calibrate(CalibrateArgs),
    /// Print a model's card and a summary of its graph, after checking them.
    #[command(after_help = AFTER_HELP)]
    Info {
        /// Model: `models/mnist`, its `.onnx` or `.card.json` path, or `builtin:mnist`.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ValidateArgs {
    /// Model: `models/mnist`, its `.onnx` or `.card.json` path, or `builtin:mnist`.
    model: PathBuf,
    /// Bundle directory (with manifest.json), written by `mcgate-training bundle`.
    bundle: PathBuf,
    /// Largest accepted |device AUC − workstation AUC| per attack.
    #[arg(long, default_value_t = 0.02)]
    tolerance: f64,
    /// Monte-Carlo samples T [default: the bundle's].
    #[arg(short = 'T', long)]
    samples: Option<usize>,
    /// Run seed for the masks (validation is reproducible by default).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Independent MC runs over the bundle [default: as many as the workstation made].
    /// Fewer is faster (under emulation, say) but noisier: one run's AUC moves by ~0.03.
    #[arg(long)]
    runs: Option<usize>,
    /// Frames scored at once, one thread each; the results do not change.
    #[arg(short = 'j', long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Where frames come from: files and directories, or raw frames on stdin.
#[derive(Args)]
struct FrameArgs {
    /// Image files (PNG, JPEG, PGM/PPM) or directories of them; `-` reads raw frames from
    /// stdin (give --width and --height).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Raw stdin frames: width in pixels.
    #[arg(long)]
    width: Option<u32>,
    /// Raw stdin frames: height in pixels.
    #[arg(long)]
    height: Option<u32>,
    /// Raw stdin frames: pixel format [default: the model's: gray for a 1-channel model,
    /// rgb24 for a 3-channel one].
    #[arg(long, value_enum)]
    pixel_format: Option<PixelFormat>,
}

/// A frame source, checked before the model is loaded.
enum Source {
    Files(Vec<PathBuf>),
    Raw {
        width: u32,
        height: u32,
        format: Option<PixelFormat>,
    },
}

impl FrameArgs {
    /// The command-line checks that need no model.
    fn source(&self) -> Result<Source, Failure> {
        let stdin_mode = self.inputs.iter().any(|p| p.as_os_str() == "-");
        if !stdin_mode {
            return Ok(Source::Files(self.inputs.clone()));
        }
        if self.inputs.len() > 1 {
            return Err(Failure::Usage(
                "`-` (raw frames on stdin) cannot be mixed with file inputs".into(),
            ));
        }
        let (Some(width), Some(height)) = (self.width, self.height) else {
            return Err(Failure::Usage(
                "raw frames on stdin need --width and --height".into(),
            ));
        };
        frame::check_raw_size(width, height)?;
        Ok(Source::Raw {
            width,
            height,
            format: self.pixel_format,
        })
    }
}

impl Source {
    /// The frames, read as `model` takes them.
    fn frames(
        self,
        model: &Model,
    ) -> Result<Box<dyn Iterator<Item = frame::Item> + Send>, Failure> {
        Ok(match self {
            Source::Files(paths) => Box::new(frame::Files::new(&paths)),
            Source::Raw {
                width,
                height,
                format,
            } => {
                // Without --pixel-format, raw frames are read in the model's own channels: a
                // 3-channel model must not see an RGB frame as three gray ones.
                let format = format.unwrap_or_else(|| {
                    PixelFormat::for_channels(model.card.input.channels())
                        .expect("a valid card has 1 or 3 channels")
                });
                // `Stdin`, not its lock: the reader runs on its own thread under --jobs.
                Box::new(frame::Raw::new(std::io::stdin(), width, height, format)?)
            }
        })
    }

    fn is_stdin(&self) -> bool {
        matches!(self, Source::Raw { .. })
    }
}

#[derive(Args)]
struct ConvertArgs {
    /// The ONNX classifier to convert.
    input: PathBuf,
    /// Output stem: writes OUT.onnx and OUT.card.json.
    #[arg(required_unless_present = "list_sites")]
    out: Option<PathBuf>,
    /// Print the tensors a dropout site can go on (the data inputs of the Gemm, MatMul and
    /// Conv layers, the last layers last) with their shapes at batch 1, and exit.
    #[arg(long)]
    list_sites: bool,
    /// Put a dropout site with drop probability P on tensor NAME (repeatable): for graphs
    /// whose export dropped Dropout (PyTorch's eval-mode export). See --list-sites.
    #[arg(long = "site", value_name = "NAME=P", value_parser = parse_site)]
    sites: Vec<(String, f32)>,
    /// The graph output to gate, when the graph has several.
    #[arg(long, value_name = "NAME")]
    output: Option<String>,
    /// Input normalisation: value = (pixel · SCALE − mean[c]) / std[c], pixels 0–255.
    #[arg(long, default_value_t = 1.0 / 255.0)]
    scale: f32,
    /// Per-channel mean, comma-separated (one value: every channel).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    mean: Vec<f32>,
    /// Per-channel standard deviation, comma-separated (one value: every channel).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    std: Vec<f32>,
    /// The model takes its colour planes in BGR order (OpenCV/Caffe-trained models).
    #[arg(long)]
    bgr: bool,
    /// Resize frames so that the shorter side is N pixels (keeping the aspect ratio), then
    /// cut the centre (--center-crop, the model's H = W) [default: stretch to H×W].
    #[arg(long, value_name = "N", requires = "center_crop")]
    resize_shorter: Option<u32>,
    /// The centre square cut after --resize-shorter; must be the model's H and W.
    #[arg(long, value_name = "M", requires = "resize_shorter")]
    center_crop: Option<u32>,
    /// Class labels, one per line, in output order [default: the class indices].
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Default Monte-Carlo samples T written into the card.
    #[arg(short = 'T', long, default_value_t = 20)]
    samples: usize,
}

/// `NAME=P` of `--site`.
fn parse_site(arg: &str) -> Result<(String, f32), String> {
    let (name, p) = arg
        .rsplit_once('=')
        .ok_or_else(|| format!("{arg:?} is not NAME=P"))?;
    let p: f32 = p
        .parse()
        .map_err(|_| format!("{p:?} in {arg:?} is not a probability"))?;
    if name.is_empty() {
        return Err(format!("{arg:?} names no tensor"));
    }
    Ok((name.to_string(), p))
}

#[derive(Args)]
struct CalibrateArgs {
    /// Model: `models/mnist`, its `.onnx` or `.card.json` path (its card is rewritten).
    model: PathBuf,
    #[command(flatten)]
    frames: FrameArgs,
    /// Share of these clean frames the threshold may reject (the target false-positive
    /// rate); needs at least 5/FPR frames.
    #[arg(long, default_value_t = 0.05)]
    fpr: f64,
    /// Monte-Carlo samples T per frame [default: the card's default_samples].
    #[arg(short = 'T', long)]
    samples: Option<usize>,
    /// Run seed of the masks, recorded in the card [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// Frames scored at once, one thread each; the result does not change.
    #[arg(short = 'j', long, default_value_t = 1, value_name = "N")]
    jobs: usize,
}

#[derive(Args)]
struct GateArgs {
    /// Model: `models/mnist`, its `.onnx` or `.card.json` path, or `builtin:mnist`.
    model: PathBuf,
    #[command(flatten)]
    frames: FrameArgs,
    /// Monte-Carlo samples T per frame [default: the card's default_samples].
    #[arg(short = 'T', long)]
    samples: Option<usize>,
    /// Run seed: frame i's masks come from mix(SEED, i), reproducible — and predictable from
    /// any one report line, so not for a camera an attacker watches [default: a secret key
    /// from the OS; report lines then reveal nothing about other frames' masks].
    #[arg(long)]
    seed: Option<u64>,
    /// Use this mask seed for every frame: replays a verdict from its reported `seed`.
    #[arg(long, conflicts_with = "seed")]
    frame_seed: Option<u64>,
    /// Reject frames whose MI (nats) is above this [default: the card's threshold].
    #[arg(long)]
    threshold: Option<f64>,
    /// Refuse to start (exit 3) unless the model card's SHA-256 is HEX, as `mcgate info`
    /// prints it. The card holds the ONNX file's digest, so this pins the whole model:
    /// threshold, dropout rates, T, preprocessing. Whoever can write the model folder can
    /// otherwise weaken the gate within the card's bounds (a threshold just under ln(classes)
    /// accepts nearly everything); keep the pin where they cannot write (the service unit).
    /// SIGHUP then takes only a card with this digest.
    #[arg(long, value_name = "HEX", value_parser = parse_sha256)]
    card_sha256: Option<String>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Write an annotated PNG of every frame (verdict, class, MI bar) into this directory.
    #[arg(long, value_name = "DIR")]
    annotate: Option<PathBuf>,
    /// Write every accepted frame as PNG into this directory, before its verdict line (under
    /// a temporary name, then renamed). A frame that cannot be written (full disk) is reported
    /// as a reject and the gate stops with exit 5.
    #[arg(long, value_name = "DIR")]
    accepted: Option<PathBuf>,
    /// Raise an alarm when K of the last N frames were rejected (K).
    #[arg(long, default_value_t = 5, value_name = "K")]
    alarm_rejects: usize,
    /// Raise an alarm when K of the last N frames were rejected (N, at most 1024).
    #[arg(long, default_value_t = 20, value_name = "N")]
    alarm_window: usize,
    /// Put the gate in the video path: write every accepted frame to stdout as a raw frame
    /// (raw stdin frames byte for byte; image files at --width x --height in --pixel-format,
    /// by default the model's size and channels) and the verdict lines to --report or stderr.
    ///
    /// Example: ffmpeg -i cam -vf scale=28:28 -f rawvideo -pix_fmt gray - |
    ///   mcgate gate models/mnist - --width 28 --height 28 --pass-through --report verdicts.jsonl |
    ///   ffmpeg -f rawvideo -pix_fmt gray -s 28x28 -i - out.mp4
    #[arg(long)]
    pass_through: bool,
    /// With --pass-through: what downstream gets in a rejected frame's place (black or
    /// repeat keep the frame rate constant for an encoder).
    #[arg(long, value_enum, default_value_t = OnReject::Black, requires = "pass_through")]
    on_reject: OnReject,
    /// Write the verdict lines to FILE instead of stdout (stderr with --pass-through); not
    /// `-`, not stdout's own file under --pass-through, not the model's files.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9898): frames by
    /// verdict and reject reason, alarms, MI and latency histograms, threshold, model.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Leave latency out of the report lines (for byte-identical replays).
    #[arg(long)]
    no_latency: bool,
    /// Frames scored at once, one thread and one plan each (e.g. the board's core count):
    /// more frames per second, the same lines in the same order. Pipelined: each frame's line
    /// goes out as soon as it and those before it are scored, never waiting for later frames.
    #[arg(short = 'j', long, default_value_t = 1, value_name = "N")]
    jobs: usize,
}

fn main() -> ExitCode {
    // tract warns on every load of a model with an opset above those it is tested on (PyTorch
    // exports opset 20): convert loads a model several times and checks the result itself.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,tract_onnx::model=error"),
    )
    .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gate(args) => gate(args),
        Command::Info { model, json } => info(&model, json),
        Command::Validate(args) => validate(args),
        Command::Calibrate(args) => calibrate(args),
        Command::Convert(args) => convert(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(exit::USAGE)
        }
        Err(Failure::Library(e)) => {
            eprintln!("error: {}", message(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Why a command stopped: the command line itself, or what the library reported.
enum Failure {
    Usage(String),
    Library(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Library(e)
    }
}

#[cfg(feature = "metrics")]
fn with_metrics<W: Write>(
    session: Session<W>,
    model: &Model,
    addr: &str,
) -> Result<Session<W>, Failure> {
    let metrics = Arc::new(mcgate::output::metrics::Metrics::new(&model.card));
    metrics.serve(addr)?;
    Ok(session.with_metrics(metrics))
}

#[cfg(not(feature = "metrics"))]
fn with_metrics<W: Write>(_: Session<W>, _: &Model, _: &str) -> Result<Session<W>, Failure> {
    Err(Failure::Usage(
        "this build has no metrics (cargo feature metrics is off)".into(),
    ))
}

/// The report file must be neither the video stream (stdout under --pass-through: JSON would
/// be mixed into the frames) nor one of the model's own files (creating it truncates them).
fn check_report_target(path: &Path, pass_through: bool, model_arg: &Path) -> Result<(), Failure> {
    let refuse = |what: &str| {
        Err(Failure::Usage(format!(
            "--report {} is {what}: name another file",
            path.display()
        )))
    };
    if path.as_os_str() == "-" {
        return Err(Failure::Usage(
            "--report - would be a file named \"-\": without --report the lines go to stdout \
             (to stderr under --pass-through); name a file"
                .into(),
        ));
    }
    if pass_through && is_stdout(path) {
        return refuse("where --pass-through writes the frames (stdout)");
    }
    let model = ModelPaths::resolve(model_arg);
    if same_file(path, &model.card) || same_file(path, &model.onnx) {
        return refuse("one of the model's own files");
    }
    Ok(())
}

/// Whether `path` is the file (or pipe) standard output writes to.
fn is_stdout(path: &Path) -> bool {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata());
    match (stdout, std::fs::metadata(path)) {
        (Ok(out), Ok(file)) => same_inode(&out, &file),
        _ => false,
    }
}

/// SIGHUP re-reads the model's card and takes its MI threshold for the frames scored from then
/// on, without stopping; a card that cannot be read, has no threshold, belongs to another
/// model (ONNX hash) or has a threshold this run cannot reach is refused with one log line,
/// the old threshold kept; so is one whose digest is not the one pinned with --card-sha256.
/// With --threshold or the built-in model, SIGHUP is logged and ignored (it no longer ends
/// the process).
fn reload_on_sighup(
    mut signals: signal_hook::iterator::Signals,
    model_arg: &Path,
    card: &ModelCard,
    samples: usize,
    threshold_given: bool,
    pinned: Option<String>,
    threshold: Arc<SharedThreshold>,
) {
    let builtin = model_arg.as_os_str() == mcgate::model::BUILTIN;
    let card_path = ModelPaths::resolve(model_arg).card;
    let sha = card.onnx_sha256.clone();
    let card = card.clone();
    std::thread::spawn(move || {
        for _ in signals.forever() {
            let old = threshold.get();
            if threshold_given || builtin {
                log::warn!(
                    "SIGHUP ignored: the threshold comes from --threshold or the built-in model"
                );
                continue;
            }
            match ModelCard::read_with_sha256(&card_path) {
                Err(e) => log::warn!("SIGHUP: {}; keeping MI threshold {old}", message(&e)),
                Ok((_, digest)) if pinned.as_ref().is_some_and(|p| *p != digest) => log::warn!(
                    "SIGHUP: {} has SHA-256 {digest}, not the one pinned with --card-sha256; \
                     keeping MI threshold {old}",
                    card_path.display()
                ),
                Ok((card, _)) if card.onnx_sha256 != sha => log::warn!(
                    "SIGHUP: {} is for another model (ONNX {}); keeping MI threshold {old}",
                    card_path.display(),
                    card.onnx_sha256
                ),
                Ok((new_card, _)) => match new_card.mi_threshold() {
                    None => log::warn!(
                        "SIGHUP: {} has no threshold; keeping MI threshold {old}",
                        card_path.display()
                    ),
                    Some(new) => match check_threshold(&card, samples, new) {
                        Err(e) => log::warn!(
                            "SIGHUP: {}: {}; keeping MI threshold {old}",
                            card_path.display(),
                            message(&e)
                        ),
                        Ok(()) => {
                            threshold.set(new);
                            log::warn!(
                                "SIGHUP: MI threshold {old} -> {new} from {}",
                                card_path.display()
                            );
                        }
                    },
                },
            }
        }
    });
}

/// `--card-sha256`: 64 hex digits, kept in lower case.
fn parse_sha256(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("a SHA-256 is 64 hex digits, as `mcgate info MODEL` prints it".into())
    }
}

/// Refuses a model whose card is not the pinned one.
fn check_pin(model: &Model, model_arg: &Path, pinned: &str) -> Result<(), Error> {
    let found = model.card_sha256.clone().unwrap_or_default();
    if found == pinned {
        return Ok(());
    }
    let path = if model_arg.as_os_str() == mcgate::model::BUILTIN {
        model_arg.to_owned()
    } else {
        ModelPaths::resolve(model_arg).card
    };
    Err(Error::Unpinned {
        path,
        found,
        pinned: pinned.to_owned(),
    })
}

/// The run seed given, or one from the OS: an attacker must not predict the masks.
fn run_seed(given: Option<u64>) -> Result<u64, Failure> {
    match given {
        Some(seed) => Ok(seed),
        None => rng::seed_from_os().map_err(|e| {
            Failure::Usage(format!(
                "no OS randomness for the mask seed ({e}); pass --seed"
            ))
        }),
    }
}

fn convert(args: ConvertArgs) -> Result<u8, Failure> {
    let onnx = std::fs::read(&args.input).map_err(|e| Error::io("read model", &args.input, e))?;
    if args.list_sites {
        let candidates =
            mcgate::model::rewrite::list_sites(&onnx).map_err(|problem| Error::Convert {
                path: args.input.clone(),
                problem,
            })?;
        let mut text = format!("{:<40} {:<20} feeds\n", "tensor", "shape at batch 1");
        for c in candidates {
            text += &format!(
                "{:<40} {:<20} {}\n",
                c.tensor,
                format!("{:?}", c.shape),
                c.feeds
            );
        }
        print(&text)?;
        return Ok(exit::OK);
    }
    let out = args
        .out
        .clone()
        .expect("clap requires OUT without --list-sites");
    let outputs = ModelPaths::resolve(&out);
    for written in [&outputs.onnx, &outputs.card] {
        if same_file(written, &args.input) {
            return Err(Failure::Usage(format!(
                "{} would overwrite the model being converted ({}): give another OUT stem",
                written.display(),
                args.input.display()
            )));
        }
    }
    let labels = match &args.labels {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    Failure::Usage(format!("cannot read --labels {}: {e}", path.display()))
                })?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        ),
    };
    let card_options = mcgate::convert::CardOptions {
        labels,
        scale: args.scale,
        mean: args.mean.clone(),
        std: args.std.clone(),
        channel_order: if args.bgr {
            ChannelOrder::Bgr
        } else {
            ChannelOrder::Rgb
        },
        resize: match (args.resize_shorter, args.center_crop) {
            (Some(shorter_side), Some(crop)) => Resize::ShorterSideCrop { shorter_side, crop },
            _ => Resize::Stretch,
        },
        default_samples: args.samples,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let options = mcgate::model::rewrite::Options {
        sites: args.sites.clone(),
        output: args.output.clone(),
    };
    let checked = mcgate::convert::convert(&args.input, &onnx, &options, &card_options)?;
    let (onnx_path, card_path) = mcgate::convert::write(&out, &checked)?;
    let c = &checked.converted;
    let sites: Vec<String> = c
        .sites
        .iter()
        .map(|s| format!("{} p={} {:?}", s.input, s.p, s.shape))
        .collect();
    print(&format!(
        "converted {}: input {} {:?}, {} classes{}, {} dropout site(s): {}\n\
         check: with every mask 1 it matches the original within {:.1e} ({} random inputs, tract)\n\
         wrote {} and {}\n\
         next: mcgate calibrate {} CLEAN_FRAMES… (the card has no MI threshold yet)\n",
        args.input.display(),
        c.input.0,
        c.input.1,
        c.classes,
        if c.softmax_appended {
            " (softmax appended to the logits)"
        } else {
            ""
        },
        c.sites.len(),
        sites.join("; "),
        checked.max_difference,
        mcgate::convert::CHECK_INPUTS,
        onnx_path.display(),
        card_path.display(),
        out.display()
    ))?;
    Ok(exit::OK)
}

fn calibrate(args: CalibrateArgs) -> Result<u8, Failure> {
    let source = args.frames.source()?;
    if args.model.as_os_str() == mcgate::model::BUILTIN {
        return Err(Failure::Usage(
            "the built-in model's card cannot be rewritten: calibrate a model on disk".into(),
        ));
    }
    let model = Model::load_from(&args.model)?;
    // A card that cannot be rewritten fails now, not after every frame was scored.
    calibrate::card_to_write(&args.model)?;
    let opts = calibrate::Options {
        fpr: args.fpr,
        samples: args.samples.unwrap_or(model.card.default_samples),
        seed: run_seed(args.seed)?,
        jobs: args.jobs,
    };
    let result = calibrate::calibrate(&model, source.frames(&model)?, &opts)?;
    let date = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string());
    if let Some(warning) = result
        .unlike
        .warning(result.mutual_information.len(), &model.card.input)
    {
        log::warn!("{warning}");
    }
    if let Some(warning) = result.high_threshold_warning(model.card.classes.len()) {
        log::warn!("{warning}");
    }
    let card = calibrate::calibrated_card(&model.card, &result, &opts, date);
    let path = calibrate::write_card(&args.model, &card)?;
    let n = result.mutual_information.len();
    let (lo, hi) = result.clean_fpr_interval;
    let q = |q| result.mi_quantile(q);
    print(&format!(
        "{n} clean frames, T={}, seed {}: MI threshold {:.5} nats (the {}th percentile)\n\
         clean frames above it: {:.1} % (95 % interval {:.1}–{:.1} %)\n\
         MI percentiles: p50 {:.5}, p90 {:.5}, p95 {:.5}, p99 {:.5}, max {:.5}\n\
         wrote {}\n",
        opts.samples,
        opts.seed,
        result.threshold,
        100.0 * (1.0 - opts.fpr),
        100.0 * result.clean_fpr,
        100.0 * lo,
        100.0 * hi,
        q(0.5),
        q(0.9),
        q(0.95),
        q(0.99),
        q(1.0),
        path.display()
    ))?;
    Ok(exit::OK)
}

/// The exit code for an error that stopped a command.
fn exit_code(e: &Error) -> u8 {
    match e {
        // convert's card options (--labels, --mean, --std) are the command line's.
        Error::Convert {
            problem: ConvertError::Card(_),
            ..
        } => exit::USAGE,
        // The converter's own check of its result failed: a bug in convert.
        Error::Convert {
            problem: ConvertError::Verify(_),
            ..
        } => exit::INTERNAL,
        Error::Io { .. }
        | Error::Card { .. }
        | Error::Model { .. }
        | Error::Mismatch { .. }
        | Error::Unpinned { .. }
        | Error::Convert { .. }
        | Error::Uncalibrated { .. } => exit::MODEL,
        Error::Bundle { .. } | Error::Calibration(_) => exit::INPUT,
        Error::OutOfRange { .. } | Error::RawFrameSize { .. } | Error::Alarm { .. } => exit::USAGE,
        Error::Output { .. } => exit::OUTPUT,
        Error::Inference(_) => exit::INTERNAL,
    }
}

/// The one-line message, naming the flag where the library names a setting.
fn message(e: &Error) -> String {
    match e {
        Error::OutOfRange {
            what: "jobs",
            expected,
            got,
        } => format!("--jobs must be {expected}, got {got}"),
        Error::OutOfRange {
            what: "fpr",
            expected,
            got,
        } => format!("--fpr must be {expected}, got {got}"),
        _ => e.to_string(),
    }
}

/// Writes a command's whole output to stdout.
fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::Output {
            what: "stdout".into(),
            cause: e.to_string(),
        })
}

fn info(model: &std::path::Path, json: bool) -> Result<u8, Failure> {
    let model = Model::load_from(model)?;
    let text = if json {
        serde_json::json!({
            "card": model.card,
            "card_sha256": model.card_sha256,
            "graph": model.summary,
            "site_paths": model.site_paths(),
        })
        .to_string()
            + "\n"
    } else {
        model.describe()
    };
    print(&text)?;
    Ok(exit::OK)
}

fn validate(args: ValidateArgs) -> Result<u8, Failure> {
    let ValidateArgs {
        model,
        bundle,
        tolerance,
        samples,
        seed,
        runs,
        jobs,
        json,
    } = args;
    if !(0.0..=1.0).contains(&tolerance) {
        return Err(Failure::Usage(format!(
            "--tolerance must be in [0, 1], got {tolerance}"
        )));
    }
    if runs == Some(0) {
        return Err(Failure::Usage("--runs must be at least 1".into()));
    }
    let manifest = validate::Manifest::read(&bundle)?;
    let args_model = model;
    let model = Model::load_from(&args_model)?;
    let opts = validate::Options {
        samples,
        seed,
        runs,
        jobs,
    };
    let result = validate::run(&model, &args_model, &manifest, &bundle, &opts)?;
    print(&if json {
        result.to_json(tolerance)
    } else {
        result.to_text(tolerance)
    })?;
    Ok(if result.failed(tolerance).is_empty() {
        exit::OK
    } else {
        exit::VALIDATION
    })
}

fn gate(args: GateArgs) -> Result<u8, Failure> {
    // Before anything slow (loading, planning): until the handler is in, a SIGHUP would end
    // the gate. Signals that arrive before the reload thread runs wait for it.
    let sighup = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| Failure::Usage(format!("cannot handle SIGHUP: {e}")))?;
    let source = args.frames.source()?;
    if args.alarm_window > MAX_WINDOW {
        return Err(Failure::Usage(format!(
            "--alarm-window is at most {MAX_WINDOW}"
        )));
    }
    let alarm = AlarmWindow::new(args.alarm_rejects, args.alarm_window)?;
    let model = Model::load_from(&args.model)?;
    if let Some(pinned) = &args.card_sha256 {
        check_pin(&model, &args.model, pinned)?;
    }
    let stdin_mode = source.is_stdin();
    let frames = source.frames(&model)?;
    let samples = args.samples.unwrap_or(model.card.default_samples);
    let threshold = match (args.threshold, model.card.mi_threshold()) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => {
            return Err(Error::Uncalibrated {
                path: args.model.clone(),
                hint: " or pass --threshold",
            }
            .into())
        }
    };
    let seeds = match (args.frame_seed, args.seed) {
        (Some(seed), _) => Seeds::Fixed(seed),
        (None, Some(seed)) => Seeds::PerFrame(seed),
        (None, None) => Seeds::Secret(rng::RunKey::from_os().map_err(|e| {
            Failure::Usage(format!(
                "no OS randomness for the mask seeds ({e}); pass --seed"
            ))
        })?),
    };
    // The card's threshold was set at its calibration's T, or (trained cards) its default T.
    let threshold_t = model
        .card
        .threshold
        .as_ref()
        .and_then(|t| t.calibration.as_ref())
        .map_or(model.card.default_samples, |c| c.samples);
    if args.threshold.is_none() && threshold_t != samples {
        log::warn!(
            "the threshold was set at T={threshold_t}, this run uses T={samples}: MI estimates \
             shift with T{}",
            if samples < threshold_t {
                " (down: fewer frames are rejected)"
            } else {
                ""
            }
        );
    }
    let frame_dir = |dir: &Option<PathBuf>, flag| -> Result<Option<Box<dyn FrameSink>>, Error> {
        Ok(match dir {
            Some(d) => Some(Box::new(FrameDir::open(d, flag)?)),
            None => None,
        })
    };
    let pass_through = args.pass_through.then(|| {
        let input = &model.card.input;
        let format = args.frames.pixel_format.unwrap_or_else(|| {
            PixelFormat::for_channels(input.channels()).expect("a valid card has 1 or 3 channels")
        });
        let width = args.frames.width.unwrap_or(input.width() as u32);
        let height = args.frames.height.unwrap_or(input.height() as u32);
        let out: Box<dyn Write> = Box::new(std::io::stdout().lock());
        PassThrough::new(out, format, width, height, args.on_reject)
    });
    let outputs = FrameOutputs {
        accepted: frame_dir(&args.accepted, "--accepted")?,
        annotated: frame_dir(&args.annotate, "--annotate")?,
        pass_through,
    };
    let pool = Pool::new(&model, samples, threshold, seeds, args.jobs)?;
    reload_on_sighup(
        sighup,
        &args.model,
        &model.card,
        samples,
        args.threshold.is_some(),
        args.card_sha256.clone(),
        pool.gate().threshold_handle(),
    );
    if let Some(path) = &args.report {
        check_report_target(path, args.pass_through, &args.model)?;
    }
    let (out, name): (Box<dyn Write>, String) = match (&args.report, args.pass_through) {
        (Some(path), _) => (
            // Never through a link planted where the report goes.
            Box::new(ReportFile::create(path).map_err(|e| Error::Output {
                what: format!("--report {}", path.display()),
                cause: e.to_string(),
            })?),
            format!("report to {}", path.display()),
        ),
        (None, true) => (Box::new(std::io::stderr()), "report to stderr".into()),
        (None, false) => (
            Box::new(std::io::stdout().lock()),
            "report to stdout".into(),
        ),
    };
    let lines =
        ReportWriter::new(out, args.format, !args.no_latency, &model.card, samples).named(name);
    let mut session = Session::new(pool, alarm, lines, outputs);
    if let Some(addr) = &args.metrics {
        session = with_metrics(session, &model, addr)?;
    }
    session.run(frames)?;
    let summary = session.summary();
    eprintln!("{}", summary.to_text());
    if summary.frames == 0 {
        eprintln!(
            "error: no frames to gate{}",
            if stdin_mode { " (stdin was empty)" } else { "" }
        );
        return Ok(exit::INPUT);
    }
    Ok(if summary.unscored > 0 {
        exit::INPUT
    } else {
        exit::OK
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
