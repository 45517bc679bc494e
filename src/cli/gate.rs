//! `mcgate gate`: gate frames.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use mcgate::gate::{Pool, Seeds};
use mcgate::input::frame::PixelFormat;
use mcgate::model::card::ModelPaths;
use mcgate::model::Model;
use mcgate::output::frames::{same_file, same_inode, FrameDir};
use mcgate::output::passthrough::{OnReject, PassThrough};
use mcgate::output::report::{Format, ReportFile, ReportWriter};
use mcgate::score::verdict::{AlarmWindow, MAX_WINDOW};
use mcgate::session::reload::CardReload;
use mcgate::session::{FrameOutputs, FrameSink, Session};
use mcgate::{run::rng, Error};

use super::exit::{self};
use super::frames::FrameArgs;
use super::Failure;

#[derive(Args)]
pub(crate) struct GateArgs {
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

pub(crate) fn run(args: GateArgs) -> Result<u8, Failure> {
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
    CardReload::new(
        &args.model,
        &model.card,
        samples,
        args.threshold.is_some(),
        args.card_sha256.clone(),
        pool.gate().threshold_handle(),
    )
    .listen(sighup);
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
