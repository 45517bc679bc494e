//! The `mcgate` command: gate camera frames by MC-dropout mutual information.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use mcgate::error::exit;
use mcgate::frame::{self, PixelFormat};
use mcgate::gate::{Pool, Seeds};
use mcgate::plan::Model;
use mcgate::sinks::{Format, FrameDir, ReportWriter, Summary};
use mcgate::verdict::{AlarmWindow, Decision, Verdict, MAX_WINDOW};
use mcgate::{annotate, Error};

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
    /// Example: mcgate gate models/mnist samples/
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

#[derive(Args)]
struct GateArgs {
    /// Model: `models/mnist`, its `.onnx` or `.card.json` path, or `builtin:mnist`.
    model: PathBuf,
    /// Image files (PNG, JPEG, PGM/PPM) or directories of them; `-` reads raw frames from
    /// stdin (give --width and --height).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Monte-Carlo samples T per frame [default: the card's default_samples].
    #[arg(short = 'T', long)]
    samples: Option<usize>,
    /// Run seed: frame i's masks come from a seed derived from it and i. [default: random]
    #[arg(long)]
    seed: Option<u64>,
    /// Use this mask seed for every frame: replays a verdict from its reported `seed`.
    #[arg(long, conflicts_with = "seed")]
    frame_seed: Option<u64>,
    /// Reject frames whose MI (nats) is above this [default: the card's threshold].
    #[arg(long)]
    threshold: Option<f64>,
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
    /// Raw stdin frames: width in pixels.
    #[arg(long)]
    width: Option<u32>,
    /// Raw stdin frames: height in pixels.
    #[arg(long)]
    height: Option<u32>,
    /// Raw stdin frames: pixel format.
    #[arg(long, value_enum, default_value_t = PixelFormat::Gray)]
    pixel_format: PixelFormat,
    /// Raise an alarm when K of the last N frames were rejected (K).
    #[arg(long, default_value_t = 5, value_name = "K")]
    alarm_rejects: usize,
    /// Raise an alarm when K of the last N frames were rejected (N, at most 1024).
    #[arg(long, default_value_t = 20, value_name = "N")]
    alarm_window: usize,
    /// Leave latency out of the report lines (for byte-identical replays).
    #[arg(long)]
    no_latency: bool,
    /// Frames scored at once, one thread and one plan each (e.g. the board's core count):
    /// more frames per second, the same verdicts and order. Frames are taken in groups of
    /// N, so on a live stream a frame may wait for N-1 later ones.
    #[arg(short = 'j', long, default_value_t = 1, value_name = "N")]
    jobs: usize,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gate(args) => gate(args),
        Command::Info { model, json } => info(&model, json),
        Command::Validate(args) => validate(args),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Writes a command's whole output to stdout.
fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::Output {
            what: "stdout".into(),
            reason: e.to_string(),
        })
}

fn info(model: &std::path::Path, json: bool) -> Result<i32, Error> {
    let model = Model::load_from(model)?;
    let card = &model.card;
    let text = if json {
        serde_json::json!({ "card": card, "graph": model.summary }).to_string() + "\n"
    } else {
        let mut s = format!(
            "{} ({}): {} classes [{}]\n",
            card.name,
            card.schema,
            card.classes.len(),
            card.classes.join(", ")
        );
        s += &format!(
            "input {} {:?} {}, value = (pixel * {} - mean {:?}) / std {:?}\n",
            card.input.name,
            card.input.shape,
            card.input.layout,
            card.input.scale,
            card.input.mean,
            card.input.std
        );
        for site in &card.dropout_sites {
            let dims: Vec<String> = site.shape.iter().map(|d| d.to_string()).collect();
            s += &format!(
                "dropout site {}: p = {}, shape [T, {}]\n",
                site.input,
                site.p,
                dims.join(", ")
            );
        }
        s += &format!(
            "threshold MI > {:.5} nats rejects{} ({})\n",
            card.threshold.mutual_information,
            if card.threshold.provisional {
                " [provisional]"
            } else {
                ""
            },
            card.threshold.method
        );
        s += &format!(
            "default T = {}; test accuracy {:.2}% deterministic, {:.2}% MC (T={}, {} images)\n",
            card.default_samples,
            100.0 * card.metrics.test_accuracy_deterministic,
            100.0 * card.metrics.test_accuracy_mc,
            card.metrics.mc_samples,
            card.metrics.test_images
        );
        let p = &card.provenance;
        s += &format!(
            "trained on {} ({} images, {} epochs, batch {}, {}, seed {}, {}, {:.0} s) at {}\n",
            p.dataset,
            p.train_images,
            p.epochs,
            p.batch_size,
            p.optimizer,
            p.seed,
            p.device,
            p.train_seconds,
            p.source_commit
        );
        s += &format!(
            "onnx sha256 {} (verified)\ngraph: {} nodes\n",
            card.onnx_sha256, model.summary.nodes
        );
        for (name, fact) in &model.summary.inputs {
            s += &format!("  input  {name}: {fact}\n");
        }
        for (name, fact) in &model.summary.outputs {
            s += &format!("  output {name}: {fact}\n");
        }
        let ops: Vec<String> = model
            .summary
            .ops
            .iter()
            .map(|(op, n)| format!("{op}×{n}"))
            .collect();
        s += &format!("  ops    {}\n", ops.join(" "));
        s
    };
    print(&text)?;
    Ok(exit::OK)
}

fn validate(args: ValidateArgs) -> Result<i32, Error> {
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
    let (model, bundle) = (model.as_path(), bundle.as_path());
    if !(0.0..=1.0).contains(&tolerance) {
        return Err(Error::Usage(format!(
            "--tolerance must be in [0, 1], got {tolerance}"
        )));
    }
    if runs == Some(0) {
        return Err(Error::Usage("--runs must be at least 1".into()));
    }
    let manifest = mcgate::bundle::Manifest::read(bundle)?;
    let model = Model::load_from(model)?;
    if manifest.onnx_sha256 != model.card.onnx_sha256 {
        return Err(Error::Mismatch {
            path: bundle.to_owned(),
            reason: format!(
                "the bundle was scored with ONNX {}, this model is {}",
                manifest.onnx_sha256, model.card.onnx_sha256
            ),
        });
    }
    let threshold = model.card.threshold.mutual_information;
    let samples = samples.unwrap_or(manifest.samples);
    let mut images = Vec::with_capacity(manifest.frames.len());
    for (index, f) in manifest.frames.iter().enumerate() {
        let path = bundle.join(&f.file);
        let image = frame::decode_file(&path).map_err(|reason| Error::Bundle {
            path: path.clone(),
            reason,
        })?;
        images.push(Ok(frame::Frame {
            index: index as u64,
            source: f.file.clone(),
            image,
        }));
    }
    // One gate per run, each with its own run seed; by default as many runs as the bundle has.
    let runs = runs.unwrap_or(manifest.repeats);
    let mut device_mi = vec![Vec::with_capacity(runs); images.len()];
    let mut class_agreement = 0usize;
    for run in 0..runs {
        let run_seed = mcgate::rng::mix(seed, run as u64);
        let mut pool = Pool::new(&model, samples, threshold, Seeds::PerFrame(run_seed), jobs)?;
        let reports = pool.score_all(&images);
        for ((report, f), mi) in reports
            .into_iter()
            .zip(&manifest.frames)
            .zip(&mut device_mi)
        {
            let m = report.measures.ok_or_else(|| Error::Bundle {
                path: bundle.join(&f.file),
                reason: format!(
                    "frame could not be scored: {}",
                    report.verdict.reason.unwrap_or_default()
                ),
            })?;
            class_agreement += (m.predicted_class == f.workstation_class) as usize;
            mi.push(m.mutual_information);
        }
    }
    let checks = mcgate::bundle::compare(&manifest, &device_mi, threshold);
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.within(tolerance))
        .map(|c| c.group.as_str())
        .collect();
    let agreement = class_agreement as f64 / (manifest.frames.len() * runs).max(1) as f64;
    let text = if json {
        serde_json::json!({
            "frames": manifest.frames.len(),
            "samples": samples,
            "runs": runs,
            "seed": seed,
            "threshold": threshold,
            "tolerance": tolerance,
            "class_agreement": agreement,
            "attacks": checks,
            "passed": failed.is_empty(),
        })
        .to_string()
            + "\n"
    } else {
        let mut s = format!(
            "{} frames, T={samples}, {runs} MC runs each on the device, {} on the workstation (seed {seed}); predicted class agrees with the workstation on {:.1} %\n",
            manifest.frames.len(),
            manifest.repeats,
            100.0 * agreement
        );
        s += "means over the runs:\nattack               MI AUC device  workstation  |Δ|     TPR device  workstation  noise FPR\n";
        for c in &checks {
            s += &format!(
                "{:<20} {:>13.3}  {:>11.3}  {:<6.3}{} {:>9.1} %  {:>9.1} %  {:>7.1} %\n",
                c.group,
                c.device_auc,
                c.workstation_auc,
                c.auc_delta(),
                if c.within(tolerance) { " " } else { "!" },
                100.0 * c.device_tpr,
                100.0 * c.workstation_tpr,
                100.0 * c.device_noise_fpr
            );
        }
        s += &if failed.is_empty() {
            format!("PASS: every MI AUC within {tolerance} of the workstation's\n")
        } else {
            format!(
                "FAIL: MI AUC differs by more than {tolerance} for {}\n",
                failed.join(", ")
            )
        };
        s
    };
    print(&text)?;
    Ok(if failed.is_empty() {
        exit::OK
    } else {
        exit::VALIDATION
    })
}

fn gate(args: GateArgs) -> Result<i32, Error> {
    let stdin_mode = args.inputs.iter().any(|p| p.as_os_str() == "-");
    if stdin_mode && args.inputs.len() > 1 {
        return Err(Error::Usage(
            "`-` (raw frames on stdin) cannot be mixed with file inputs".into(),
        ));
    }
    if args.alarm_window > MAX_WINDOW {
        return Err(Error::Usage(format!(
            "--alarm-window is at most {MAX_WINDOW}"
        )));
    }
    let mut window =
        AlarmWindow::new(args.alarm_rejects, args.alarm_window).map_err(Error::Usage)?;
    let source: Box<dyn Iterator<Item = frame::Item>> = if stdin_mode {
        let (Some(w), Some(h)) = (args.width, args.height) else {
            return Err(Error::Usage(
                "raw frames on stdin need --width and --height".into(),
            ));
        };
        Box::new(
            frame::Raw::new(std::io::stdin().lock(), w, h, args.pixel_format)
                .map_err(Error::Usage)?,
        )
    } else {
        Box::new(frame::Files::new(&args.inputs))
    };

    let model = Model::load_from(&args.model)?;
    let samples = args.samples.unwrap_or(model.card.default_samples);
    let threshold = args
        .threshold
        .unwrap_or(model.card.threshold.mutual_information);
    let seeds = match (args.frame_seed, args.seed) {
        (Some(seed), _) => Seeds::Fixed(seed),
        (None, Some(seed)) => Seeds::PerFrame(seed),
        (None, None) => {
            let seed = mcgate::rng::seed_from_os().map_err(|e| {
                Error::Usage(format!(
                    "no OS randomness for the mask seed ({e}); pass --seed"
                ))
            })?;
            Seeds::PerFrame(seed)
        }
    };
    if let Seeds::PerFrame(seed) = seeds {
        log::info!("run seed {seed}");
    }
    let accepted = args
        .accepted
        .as_deref()
        .map(|d| FrameDir::open(d, "--accepted"))
        .transpose()?;
    let annotated = args
        .annotate
        .as_deref()
        .map(|d| FrameDir::open(d, "--annotate"))
        .transpose()?;
    let mut pool = Pool::new(&model, samples, threshold, seeds, args.jobs)?;
    let card = pool.gate().card().clone();
    let max_mi = (card.classes.len() as f64).ln();
    let stdout = std::io::stdout().lock();
    let mut writer = ReportWriter::new(
        stdout,
        args.format,
        !args.no_latency,
        &card,
        threshold,
        samples,
    );
    let mut summary = Summary::default();

    let mut source = source.peekable();
    let mut batch = Vec::with_capacity(pool.jobs());
    while source.peek().is_some() {
        batch.extend(source.by_ref().take(pool.jobs()));
        let reports = pool.score_all(&batch);
        for (mut report, item) in reports.into_iter().zip(batch.drain(..)) {
            let frame = item.ok();
            if let Some(reason) = report
                .measures
                .is_none()
                .then_some(report.verdict.reason.as_deref())
                .flatten()
            {
                log::warn!(
                    "frame {} ({}) rejected unscored: {reason}",
                    report.index,
                    report.source
                );
            }
            report.alarm = window.push(report.verdict.decision);
            if report.alarm {
                log::warn!(
                    "ALARM at frame {}: {} of the last {} frames rejected",
                    report.index,
                    window.rejected_in_window(),
                    args.alarm_window
                );
            }
            // An accepted frame is passed on before its verdict line: if it cannot be written
            // (full disk), its line says reject, and the gate stops with exit 5.
            let mut passed_on = Ok(());
            if let (Some(dir), Some(frame), Decision::Accept) =
                (&accepted, &frame, report.verdict.decision)
            {
                passed_on = dir.save_frame(frame);
                if let Err(e) = &passed_on {
                    report.verdict = Verdict {
                        decision: Decision::Reject,
                        reason: Some(format!("accepted but not passed on: {e}")),
                    };
                }
            }
            writer.write(&report)?;
            passed_on?;
            if let Some(frame) = &frame {
                if let Some(dir) = &annotated {
                    let label = report
                        .measures
                        .and_then(|m| card.classes.get(m.predicted_class))
                        .map(String::as_str);
                    let image = annotate::annotate(&frame.image, &report, label, threshold, max_mi);
                    dir.save(frame.index, &frame.source, &image.into())?;
                }
            }
            summary.record(&report);
        }
    }
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
