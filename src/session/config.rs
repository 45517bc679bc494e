//! From what a user asked for to a session ready to run: the model loaded and pinned, the
//! threshold, seeds and T settled, the outputs opened and checked. The command line fills a
//! [`GateConfig`]; so can a program that embeds the gate.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::reload::CardReload;
use super::{FrameOutputs, Session};
use crate::contract::card::{ModelPaths, Resize};
use crate::engine::Engine;
use crate::gate::{Pool, Seeds, Selection};
use crate::input::budget::FRAME_MEMORY;
use crate::input::frame::{PixelFormat, MAX_SIDE};
use crate::input::preprocess::PassedPixels;
use crate::input::source::{Frames, Source};
use crate::model::Model;
use crate::output::annotate::Annotator;
use crate::output::frames::{same_file, same_inode, will_be_same_file, FrameDir, FrameSink};
use crate::output::passthrough::{OnReject, PassThrough};
use crate::output::report::{Format, ReportFile, ReportWriter};
use crate::run::rng;
use crate::score::fusion;
use crate::score::verdict::{AlarmWindow, MAX_WINDOW};
use crate::Error;

/// How frame masks are seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeedChoice {
    /// A secret key from the OS: no report line gives away another frame's masks.
    #[default]
    Secret,
    /// Frame i's masks from mix(seed, i): reproducible, and predictable from one line.
    Run(u64),
    /// This seed for every frame: replays one verdict.
    Frame(u64),
}

/// The video path: accepted frames to stdout as raw frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassThroughConfig {
    /// What replaces a rejected frame.
    pub on_reject: OnReject,
    /// Frame width; `None`: the model's.
    pub width: Option<u32>,
    /// Frame height; `None`: the model's.
    pub height: Option<u32>,
    /// Pixel format; `None`: the model's channels.
    pub format: Option<PixelFormat>,
}

/// Everything a gate run is made of.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// The model as named: a stem, a file of it, or `builtin:mnist`.
    pub model: PathBuf,
    /// The engine that runs the model's plans.
    pub engine: Engine,
    /// Monte-Carlo samples T; `None`: the card's.
    pub samples: Option<usize>,
    /// Mask seeds.
    pub seeds: SeedChoice,
    /// The MI threshold; `None`: the card's.
    pub threshold: Option<f64>,
    /// The card's SHA-256 the run is pinned to.
    pub card_sha256: Option<String>,
    /// Alarm: K rejects …
    pub alarm_rejects: usize,
    /// … of the last N frames.
    pub alarm_window: usize,
    /// Accepted frames as PNGs into this directory, before their lines.
    pub accepted: Option<PathBuf>,
    /// Annotated PNGs of every frame into this directory.
    pub annotate: Option<PathBuf>,
    /// The video path, if the gate is in it.
    pub pass_through: Option<PassThroughConfig>,
    /// Pass on (and save) accepted frames at their own resolution, detail finer than the
    /// model's input included, instead of the pixels the model was fed.
    pub pass_unscored_detail: bool,
    /// Report lines to this file; `None`: stdout (stderr under pass-through).
    pub report: Option<PathBuf>,
    /// Report line format.
    pub format: Format,
    /// Latency in the report lines.
    pub latency: bool,
    /// Serve Prometheus metrics at this address.
    pub metrics: Option<String>,
    /// Publish events to a broker (`--mqtt` and its companions).
    pub mqtt: Option<crate::output::MqttSettings>,
    /// Frames scored at once.
    pub jobs: usize,
    /// The card's signals that decide; `None`: all the card has.
    pub signals: Option<Selection>,
}

/// A session ready to run, with its frames and its card reload (start it with
/// [`CardReload::listen`]).
pub struct Prepared {
    /// The gate loop.
    pub session: Session<Box<dyn Write>>,
    /// The frames to run it on.
    pub frames: Frames,
    /// Takes a new threshold from the card on request.
    pub reload: CardReload,
}

impl GateConfig {
    /// The command line's defaults for `model`: T, threshold and seeds from the card and the
    /// OS, alarm at 5 rejects of 20, JSON lines with latency, one job, no other output.
    pub fn new(model: impl Into<PathBuf>) -> GateConfig {
        GateConfig {
            model: model.into(),
            engine: Engine::Tract,
            samples: None,
            seeds: SeedChoice::Secret,
            threshold: None,
            card_sha256: None,
            alarm_rejects: 5,
            alarm_window: 20,
            accepted: None,
            annotate: None,
            pass_through: None,
            pass_unscored_detail: false,
            report: None,
            format: Format::Jsonl,
            latency: true,
            metrics: None,
            mqtt: None,
            jobs: 1,
            signals: None,
        }
    }

    /// Loads, checks and opens everything `self` names, in the order the errors are worth
    /// reading: settings, model (and pin), frames, threshold and seeds, outputs.
    pub fn build(self, source: Source) -> Result<Prepared, Error> {
        if self.alarm_window > MAX_WINDOW {
            return Err(Error::Setting(format!(
                "--alarm-window is at most {MAX_WINDOW}"
            )));
        }
        let alarm = AlarmWindow::new(self.alarm_rejects, self.alarm_window)?;
        if self.pass_unscored_detail && self.pass_through.is_none() && self.accepted.is_none() {
            return Err(Error::Setting(
                "--pass-unscored-detail changes what --pass-through and --accepted pass on; \
                 give one of them, or leave it out"
                    .into(),
            ));
        }
        let model = Model::load_from_with(&self.model, &self.engine)?;
        if let Some(pinned) = &self.card_sha256 {
            model.check_pin(&self.model, pinned)?;
        }
        let source_kind = source.clone();
        let frames = source.frames(&model.card)?;
        let samples = self.samples.unwrap_or(model.card.default_samples);
        let threshold = match (self.threshold, model.card.mi_threshold()) {
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => {
                return Err(Error::Uncalibrated {
                    path: self.model.clone(),
                    hint: " or pass --threshold",
                })
            }
        };
        let seeds = match self.seeds {
            SeedChoice::Frame(seed) => Seeds::Fixed(seed),
            SeedChoice::Run(seed) => Seeds::PerFrame(seed),
            SeedChoice::Secret => Seeds::Secret(rng::RunKey::from_os().map_err(|e| {
                Error::Setting(format!(
                    "no OS randomness for the mask seeds ({e}); pass --seed"
                ))
            })?),
        };
        // Said once the run is known to start (seventh outside probe: a warning printed
        // before a refusal made the one-line error three).
        let mut warnings = vec![];
        if self.threshold.is_none() {
            warnings.extend(other_t_warning(&model, samples));
        }
        let frame_dir =
            |dir: &Option<PathBuf>, flag| -> Result<Option<Box<dyn FrameSink>>, Error> {
                Ok(match dir {
                    Some(d) => Some(Box::new(FrameDir::open(d, flag)?)),
                    None => None,
                })
            };
        // Before any output folder is created: a refused one is not left behind.
        let inputs: &[PathBuf] = match &source_kind {
            Source::Files(inputs) => inputs,
            _ => &[],
        };
        self.check_apart_from_inputs(inputs)?;
        let pass_through = match self.pass_through {
            None => None,
            Some(p) => {
                let input = &model.card.input;
                let format = p.format.unwrap_or_else(|| {
                    PixelFormat::for_channels(input.channels())
                        .expect("a valid card has 1 or 3 channels")
                });
                // Was (fourth outside probe, FAIL-OPEN): a colour model scored an image
                // file's colour while gray went downstream — a picture never scored (the luma
                // of an accepted colour frame can be one the gate rejects). Raw gray frames
                // are scored gray, so they may pass on gray.
                if format == PixelFormat::Gray
                    && input.channels() == 3
                    && matches!(source_kind, Source::Files(_))
                {
                    return Err(Error::Setting(format!(
                        "--pixel-format gray with the colour model {}: the gate scores each \
                         image's colour and would pass on its gray, which it never scored; \
                         pass rgb24 (the default) and convert downstream",
                        crate::text::path_name(&self.model)
                    )));
                }
                let model_size = (input.width() as u32, input.height() as u32);
                let asked = (
                    p.width.unwrap_or(model_size.0),
                    p.height.unwrap_or(model_size.1),
                );
                check_pass_through_size(asked.0, asked.1, format)?;
                // What passes is what the model was fed, at its size (fifth and sixth outside
                // probes: at any other size a resampling either hides detail from the model
                // or makes a picture that scores otherwise than the one scored).
                let ((w, h), (mw, mh)) = (asked, model_size);
                let (width, height) = if self.pass_unscored_detail || asked == model_size {
                    asked
                } else if let Source::Files(_) = source_kind {
                    return Err(Error::Setting(format!(
                        "--width/--height {w}x{h} under --pass-through: frames pass on as the \
                         model's input, at its {mw}x{mh}; leave them out, or give \
                         --pass-unscored-detail to pass frames at {w}x{h}"
                    )));
                } else if input.resize == Resize::Stretch {
                    // Seventh outside probe: a reader of the stream's size (the camera unit's
                    // encoder) misread model-size frames, tiling four into one, exit 0.
                    return Err(Error::Setting(format!(
                        "raw frames of {w}x{h} under --pass-through: they pass on as the model's \
                         {mw}x{mh} input, which a reader of {w}x{h} frames would misread; scale \
                         the stream to {mw}x{mh} before the gate (ffmpeg -vf scale={mw}:{mh}), \
                         or give --pass-unscored-detail to pass {w}x{h} frames"
                    )));
                } else {
                    // A crop model cuts every stream but one of its shorter side: its frames
                    // pass on at its input size whatever the stream's.
                    warnings.push(format!(
                        "--pass-through: frames pass on as the model scored them, its {mw}x{mh} \
                         centre cut (not the stream's {w}x{h}): read them downstream at {mw}x{mh}"
                    ));
                    model_size
                };
                let out: Box<dyn Write> = Box::new(std::io::stdout().lock());
                Some(PassThrough::new(out, format, width, height, p.on_reject))
            }
        };
        let passed = if self.pass_unscored_detail {
            let input = &model.card.input;
            warnings.push(format!(
                "--pass-unscored-detail: accepted frames pass on at their own resolution; \
                 detail finer than the model's {}x{} input passes unscored (a picture hidden \
                 at a larger frame's finest pixel pitch is never seen by the gate)",
                input.width(),
                input.height()
            ));
            PassedPixels::ScoredPart
        } else {
            PassedPixels::ModelInput
        };
        let outputs = FrameOutputs {
            accepted: frame_dir(&self.accepted, "--accepted")?,
            pass_through,
            scored: Some(model.card.input.clone()),
            passed,
        };
        let annotated = frame_dir(&self.annotate, "--annotate")?;
        let mut pool = Pool::new(&model, samples, threshold, seeds, self.jobs)?;
        if let Some(selection) = &self.signals {
            pool.select(selection)?;
            warnings.extend(left_out(&model.card, selection));
        }
        // An MI threshold that would decide nothing is refused, not ignored.
        if let (Some(t), Some(fused)) = (self.threshold, pool.gate().fused()) {
            return Err(Error::Setting(format!(
                "--threshold {t} sets the MI-only gate, but the card fuses {}: add --signals mi \
                 to gate on MI alone",
                fusion::names(fused.signals())
            )));
        }
        pool.check_samples_disagree(&self.model)?;
        let reload = CardReload::new(
            &self.model,
            &model.card,
            samples,
            self.threshold.is_some(),
            self.card_sha256.clone(),
            pool.gate().threshold_handle(),
        );
        let reload = match pool.gate().fused() {
            Some(_) => {
                reload.ignoring("the fused signals decide, with the card the run started with")
            }
            None => reload,
        };
        let under_pass_through = self.pass_through.is_some();
        if let Some(path) = &self.report {
            check_report_target(path, under_pass_through, &self.model)?;
        }
        let (out, name): (Box<dyn Write>, String) = match (&self.report, under_pass_through) {
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
            ReportWriter::new(out, self.format, self.latency, &model.card, samples).named(name);
        let mut session = Session::new(pool, alarm, lines, outputs);
        if let Some(frames) = annotated {
            session =
                session.with_sink(Box::new(Annotator::new(frames, model.card.classes.clone())));
        }
        let metrics = match &self.metrics {
            Some(addr) => Some(start_metrics(&model, addr)?),
            None => None,
        };
        if let Some(settings) = &self.mqtt {
            session = with_mqtt(session, settings, metrics.as_ref())?;
        }
        #[cfg(feature = "metrics")]
        if let Some(metrics) = metrics {
            session = session.with_sink(Box::new(metrics));
        }
        for warning in warnings {
            log::warn!("{warning}");
        }
        Ok(Prepared {
            session,
            frames,
            reload,
        })
    }
}

impl GateConfig {
    /// Outputs never write over the frames being gated (found by the outside probe):
    /// `--accepted` or `--annotate` in an input folder (a written `000001_b.png` replaced an
    /// input frame), both in one folder (annotations replaced accepted frames), `--report`
    /// naming an input frame. Checked once the output folders exist.
    fn check_apart_from_inputs(&self, inputs: &[PathBuf]) -> Result<(), Error> {
        let refuse = |what: String| Err(Error::Setting(format!("{what}: name another")));
        if let (Some(a), Some(b)) = (&self.accepted, &self.annotate) {
            if same_file(a, b) || resolved(a) == resolved(b) {
                return refuse(format!(
                    "--accepted and --annotate are one folder ({}): annotations would replace \
                     accepted frames",
                    a.display()
                ));
            }
        }
        if let Some(report) = &self.report {
            let folder = report.parent().unwrap_or(Path::new(""));
            for (flag, dir) in [
                ("--accepted", &self.accepted),
                ("--annotate", &self.annotate),
            ] {
                if let Some(dir) = dir.as_ref().filter(|d| is_within(folder, d)) {
                    return refuse(format!(
                        "--report {} is in the {flag} folder {}: a frame written there could \
                         replace it",
                        report.display(),
                        dir.display()
                    ));
                }
            }
        }
        if self.pass_through.is_some() && self.report.is_none() && stderr_is_stdout() {
            return Err(Error::Setting(
                "under --pass-through without --report the verdict lines go to stderr, and \
                 stderr is where stdout goes: they would enter the video; give --report FILE \
                 or send stderr elsewhere"
                    .into(),
            ));
        }
        for input in inputs {
            let input_dir = input.is_dir();
            for (flag, dir) in [
                ("--accepted", &self.accepted),
                ("--annotate", &self.annotate),
            ] {
                if let Some(dir) = dir.as_ref().filter(|d| input_dir && is_within(d, input)) {
                    return refuse(format!(
                        "{flag} {} is in the input folder {}: frames written there would \
                         replace frames being gated",
                        dir.display(),
                        input.display()
                    ));
                }
            }
            if let Some(report) = &self.report {
                let in_folder = input_dir
                    && crate::input::frame::is_image_name(report)
                    && report.parent().is_some_and(|p| is_within(p, input));
                if in_folder || will_be_same_file(report, input) {
                    return refuse(format!(
                        "--report {} is a frame being gated, or named as one in their folder ({})",
                        report.display(),
                        input.display()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether folder `dir` is `folder` or inside it, links resolved; either may not exist yet
/// (an output folder is created after this check).
fn is_within(dir: &Path, folder: &Path) -> bool {
    match (resolved(dir), resolved(folder)) {
        (Some(d), Some(f)) => d.starts_with(f),
        _ => false,
    }
}

/// `path` with links resolved as far as it exists and the rest appended as named: where a
/// writer that creates it will put it. `None` if the part that does not exist yet goes
/// through `..` (not resolvable before it exists).
fn resolved(path: &Path) -> Option<PathBuf> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let mut rest = vec![];
    let mut existing = path;
    let base = loop {
        if let Ok(real) = existing.canonicalize() {
            break real;
        }
        rest.push(existing.file_name()?.to_owned());
        existing = existing
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
    };
    // `file_name` is never `.` or `..` (a path ending in `..` gives `None` above).
    let mut out = base;
    out.extend(rest.iter().rev());
    Some(out)
}

/// Whether standard error writes where standard output does (`2>&1`, one file or pipe); a
/// terminal shared by both is left alone.
fn stderr_is_stdout() -> bool {
    use std::os::fd::AsFd;
    match (
        fd_metadata(std::io::stdout().as_fd()),
        fd_metadata(std::io::stderr().as_fd()),
    ) {
        (Ok(out), Ok(err)) => {
            use std::os::unix::fs::FileTypeExt;
            let kind = out.file_type();
            same_inode(&out, &err) && !kind.is_char_device()
        }
        _ => false,
    }
}

/// The warning for a `--signals` choice that leaves out what the card has: a weaker gate than
/// the card's, on purpose or by a slip of the flag.
fn left_out(card: &crate::contract::card::ModelCard, selection: &Selection) -> Option<String> {
    let mut missing: Vec<&str> = card
        .fusion
        .iter()
        .flat_map(|f| f.signals.iter().map(|s| s.name))
        .filter(|s| !selection.signals.contains(s))
        .map(|s| s.name())
        .collect();
    if card.tamper.is_some() && !selection.tamper {
        missing.push("tamper");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "--signals leaves out the card's {}: the gate decides without them",
            missing.join(", ")
        )
    })
}

/// A card's threshold holds at the T it was set at (its calibration's, or a trained card's
/// default): say so when the run uses another.
fn other_t_warning(model: &Model, samples: usize) -> Option<String> {
    let threshold_t = model
        .card
        .threshold
        .as_ref()
        .and_then(|t| t.calibration.as_ref())
        .map_or(model.card.default_samples, |c| c.samples);
    (threshold_t != samples).then(|| {
        format!(
            "the threshold was set at T={threshold_t}, this run uses T={samples}: MI estimates \
             shift with T{}",
            if samples < threshold_t {
                " (down: fewer frames are rejected)"
            } else {
                ""
            }
        )
    })
}

#[cfg(feature = "metrics")]
type MetricsHandle = crate::output::metrics::Served;
#[cfg(not(feature = "metrics"))]
type MetricsHandle = std::convert::Infallible;

#[cfg(feature = "metrics")]
fn start_metrics(model: &Model, addr: &str) -> Result<MetricsHandle, Error> {
    // A malformed address is a setting (exit 2), not a failed output: a supervisor must not
    // restart the gate into the same typo.
    std::net::ToSocketAddrs::to_socket_addrs(addr).map_err(|e| {
        Error::Setting(format!(
            "--metrics {addr:?} is not an address to listen on (HOST:PORT, e.g. \
             127.0.0.1:9898): {e}"
        ))
    })?;
    let metrics = std::sync::Arc::new(crate::output::metrics::Metrics::new(&model.card));
    Ok(metrics.serve(addr)?)
}

#[cfg(not(feature = "metrics"))]
fn start_metrics(_: &Model, _: &str) -> Result<MetricsHandle, Error> {
    Err(Error::Setting(
        "this build has no metrics (cargo feature metrics is off)".into(),
    ))
}

#[cfg(feature = "mqtt")]
fn with_mqtt<W: Write>(
    session: Session<W>,
    settings: &crate::output::MqttSettings,
    metrics: Option<&MetricsHandle>,
) -> Result<Session<W>, Error> {
    let sink = crate::output::mqtt::MqttSink::open(settings)
        .map_err(|e| Error::Setting(format!("--mqtt: {e}")))?;
    #[cfg(feature = "metrics")]
    if let Some(metrics) = metrics {
        metrics.metrics().watch_mqtt(sink.stats());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = metrics;
    Ok(session.with_sink(Box::new(sink)))
}

#[cfg(not(feature = "mqtt"))]
fn with_mqtt<W: Write>(
    _: Session<W>,
    _: &crate::output::MqttSettings,
    _: Option<&MetricsHandle>,
) -> Result<Session<W>, Error> {
    Err(Error::Setting(
        "this build has no MQTT (cargo feature mqtt is off)".into(),
    ))
}

/// The most bytes one pass-through frame may take (a quarter of the frame budget: the stream
/// keeps the last frame beside the one being written).
const MAX_PASS_THROUGH_BYTES: u64 = FRAME_MEMORY / 4;

/// Was (third outside probe): `--width/--height` for image files under `--pass-through` were
/// not checked, and 4294967295 panicked, 100000 aborted, 65536 hung.
fn check_pass_through_size(width: u32, height: u32, format: PixelFormat) -> Result<(), Error> {
    let bytes = (width as u64)
        .saturating_mul(height as u64)
        .saturating_mul(format.bytes_per_pixel() as u64);
    if !(1..=MAX_SIDE).contains(&width)
        || !(1..=MAX_SIDE).contains(&height)
        || bytes > MAX_PASS_THROUGH_BYTES
    {
        return Err(Error::out_of_range(
            "the pass-through frame size (--width x --height)",
            format!(
                "1..={MAX_SIDE} per side and at most {} MiB per frame",
                MAX_PASS_THROUGH_BYTES >> 20
            ),
            format!("{width}x{height} ({bytes} bytes)"),
        ));
    }
    Ok(())
}

/// The report file must be neither the video stream (stdout under pass-through: JSON would
/// be mixed into the frames) nor one of the model's own files (creating it truncates them).
fn check_report_target(path: &Path, pass_through: bool, model_arg: &Path) -> Result<(), Error> {
    let refuse = |what: &str| {
        Err(Error::Setting(format!(
            "--report {} is {what}: name another file",
            path.display()
        )))
    };
    if path.as_os_str() == "-" {
        return Err(Error::Setting(
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
    match (
        fd_metadata(std::io::stdout().as_fd()),
        std::fs::metadata(path),
    ) {
        (Ok(out), Ok(file)) => same_inode(&out, &file),
        _ => false,
    }
}

/// What an open descriptor (stdout, stderr) writes to.
fn fd_metadata(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<std::fs::Metadata> {
    fd.try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
}

#[cfg(all(test, feature = "builtin-model"))]
mod tests {
    use super::*;
    use crate::model::BUILTIN;

    /// A folder with two 28×28 frames: a blank one and a bright bar.
    fn frames(dir: &Path) -> Source {
        let frames = dir.join("frames");
        std::fs::create_dir(&frames).unwrap();
        image::GrayImage::new(28, 28)
            .save(frames.join("0.png"))
            .unwrap();
        image::GrayImage::from_fn(28, 28, |x, _| {
            image::Luma([if (12..16).contains(&x) { 255 } else { 0 }])
        })
        .save(frames.join("1.png"))
        .unwrap();
        Source::new(&[frames], None, None, None).unwrap()
    }

    #[test]
    fn a_config_builds_the_session_the_command_line_runs() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("verdicts.jsonl");
        let accepted = dir.path().join("accepted");
        let config = GateConfig {
            samples: Some(8),
            seeds: SeedChoice::Run(1),
            threshold: Some(0.5),
            report: Some(report.clone()),
            accepted: Some(accepted.clone()),
            latency: false,
            jobs: 2,
            ..GateConfig::new(BUILTIN)
        };
        let Prepared {
            mut session,
            frames,
            reload,
        } = config.clone().build(self::frames(dir.path())).unwrap();
        // The threshold came from the config: a reload has no card to take one from.
        assert!(matches!(
            reload.reload(),
            super::super::reload::Reloaded::Ignored(_)
        ));
        session.run(frames).unwrap();
        let summary = session.summary();
        assert_eq!((summary.frames, summary.unscored), (2, 0));
        drop(session);
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&report)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["frame"], i);
            assert_eq!(
                (line["samples"].as_u64(), line["threshold"].as_f64()),
                (Some(8), Some(0.5))
            );
            assert_eq!(line["seed"], rng::mix(1, i as u64));
            assert!(line.get("latency_ms").is_none());
        }
        let accepted_files = std::fs::read_dir(&accepted).unwrap().count();
        let accepts = lines.iter().filter(|l| l["verdict"] == "accept").count();
        assert_eq!(accepted_files, accepts);
    }

    #[test]
    fn a_config_the_run_cannot_keep_is_refused_before_any_frame() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |config: GateConfig, needle: &str| {
            let e = config
                .build(frames_once(dir.path()))
                .err()
                .expect("refused");
            assert!(e.to_string().contains(needle), "{e}");
        };
        let base = || GateConfig {
            seeds: SeedChoice::Run(1),
            ..GateConfig::new(BUILTIN)
        };
        refused(
            GateConfig {
                alarm_window: MAX_WINDOW + 1,
                ..base()
            },
            "--alarm-window is at most",
        );
        refused(
            GateConfig {
                report: Some("-".into()),
                ..base()
            },
            "would be a file named",
        );
        refused(
            GateConfig {
                card_sha256: Some("0".repeat(64)),
                ..base()
            },
            "not the pinned",
        );
        refused(
            GateConfig {
                samples: Some(1),
                ..base()
            },
            "samples (T) must be in 4..=4096",
        );
        refused(
            GateConfig {
                pass_unscored_detail: true,
                ..base()
            },
            "give one of them",
        );
    }

    /// A fresh frame folder per call (the folder name is taken once).
    fn frames_once(dir: &Path) -> Source {
        let sub = tempfile::tempdir_in(dir).unwrap().keep();
        frames(&sub)
    }
}
