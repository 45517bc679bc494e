//! `mcgate gate`: gate frames.

use std::path::PathBuf;

use clap::Args;

use mcgate::output::passthrough::OnReject;
use mcgate::output::report::Format;
use mcgate::session::config::{GateConfig, PassThroughConfig, Prepared, SeedChoice};

use super::engine::EngineArgs;
use super::exit::{self};
use super::frames::FrameArgs;
use super::{parse_signals, Failure};

#[derive(Args)]
pub(crate) struct GateArgs {
    /// Model: `models/mnist`, its `.onnx` or `.card.json` path, or `builtin:mnist`.
    model: PathBuf,
    #[command(flatten)]
    frames: FrameArgs,
    #[command(flatten)]
    engine: EngineArgs,
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
    /// a temporary name, then renamed): the pixels the model was fed, at its input size (see
    /// --pass-unscored-detail). A frame that cannot be written (full disk) is reported as a
    /// reject and the gate stops with exit 5.
    #[arg(long, value_name = "DIR")]
    accepted: Option<PathBuf>,
    /// Raise an alarm when K of the last N frames were rejected (K).
    #[arg(long, default_value_t = 5, value_name = "K")]
    alarm_rejects: usize,
    /// Raise an alarm when K of the last N frames were rejected (N, at most 1024).
    #[arg(long, default_value_t = 20, value_name = "N")]
    alarm_window: usize,
    /// Put the gate in the video path: write every accepted frame to stdout as a raw frame
    /// and the verdict lines to --report or stderr. What passes is what the model was fed, at
    /// its input size, in --pixel-format (by default the model's channels): raw frames of the
    /// model's size and channels byte for byte; an image file of any size as the model's
    /// input; a crop model's cut centre only, whatever the stream's size (a warning names the
    /// size to read downstream). A stretching model's raw stream must be at its size (scale it
    /// before the gate). With --pass-unscored-detail, frames pass at --width x --height.
    ///
    /// Example: ffmpeg -i cam -vf scale=28:28 -f rawvideo -pix_fmt gray - |
    ///   mcgate gate models/mnist - --width 28 --height 28 --pass-through --report verdicts.jsonl |
    ///   ffmpeg -f rawvideo -pix_fmt gray -s 28x28 -i - out.mp4
    #[arg(long)]
    pass_through: bool,
    /// With --pass-through or --accepted: pass accepted frames on at their own resolution
    /// (the part the model scored, resized only to --width x --height) instead of the
    /// model's input. UNSAFE where an attacker controls the frames: detail the resize to the
    /// model's input removes or cancels passes unseen, such as a picture hidden at the finest
    /// pixel pitch (docs/RELIABILITY.md, rows 95 and 98). Warns at start.
    #[arg(long)]
    pass_unscored_detail: bool,
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
    /// Publish the gate's events to an MQTT broker, shaped like Frigate's: `PREFIX/events`
    /// (`new` when a run of rejects starts, `update` while it lasts, `end` when frames pass
    /// again) and `PREFIX/available` (`online`; `offline` as the last will). QoS 1; never
    /// blocks the gate (a full queue drops and counts). E.g. mqtt://127.0.0.1:1883/mcgate;
    /// mqtts://HOST:8883/PREFIX for TLS.
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// The camera's name in the MQTT events.
    #[arg(long, default_value = "camera", value_name = "NAME", requires = "mqtt")]
    camera: String,
    /// With mqtts://: the PEM file of the CA that signed the broker's certificate [default:
    /// the system's CA certificates].
    #[arg(long, value_name = "FILE", requires = "mqtt")]
    mqtt_ca: Option<PathBuf>,
    /// The broker's user name and password: a file holding one line USER:PASSWORD, readable
    /// by the gate's user alone (never on the command line, where ps shows it).
    #[arg(long, value_name = "FILE", requires = "mqtt")]
    mqtt_credentials: Option<PathBuf>,
    /// With mqtts://: the PEM certificate (chain) the gate shows a broker that asks for a
    /// client certificate; with --mqtt-key.
    #[arg(long, value_name = "FILE", requires_all = ["mqtt", "mqtt_key"])]
    mqtt_cert: Option<PathBuf>,
    /// The PEM private key of --mqtt-cert, readable by the gate's user alone.
    #[arg(long, value_name = "FILE", requires_all = ["mqtt", "mqtt_cert"])]
    mqtt_key: Option<PathBuf>,
    /// Leave latency out of the report lines (for byte-identical replays).
    #[arg(long)]
    no_latency: bool,
    /// Frames scored at once, one thread and one plan each (e.g. the board's core count):
    /// more frames per second, the same lines in the same order. Pipelined: each frame's line
    /// goes out as soon as it and those before it are scored, never waiting for later frames.
    #[arg(short = 'j', long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Decide on these of the card's signals only, comma separated: mi, entropy, density,
    /// tamper (`mcgate info` lists what the card has). `mi` alone: the card's MI threshold
    /// decides; any other set of model signals: the card's fused decision over them, its level set
    /// anew for them at the card's rate; tamper: the card's tamper checks. A signal the card
    /// lacks is refused. [default: all the card has]
    #[arg(long, value_delimiter = ',', value_name = "SIGNAL,...")]
    signals: Option<Vec<String>>,
}

pub(crate) fn run(args: GateArgs) -> Result<u8, Failure> {
    // Before anything slow (loading, planning): until the handler is in, a SIGHUP would end
    // the gate. Signals that arrive before the reload thread runs wait for it.
    let sighup = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| Failure::Usage(format!("cannot handle SIGHUP: {e}")))?;
    let source = args.frames.source(args.pass_through)?;
    let stdin_mode = source.is_stdin();
    let config = GateConfig {
        model: args.model,
        engine: args.engine.engine()?,
        samples: args.samples,
        seeds: match (args.frame_seed, args.seed) {
            (Some(seed), _) => SeedChoice::Frame(seed),
            (None, Some(seed)) => SeedChoice::Run(seed),
            (None, None) => SeedChoice::Secret,
        },
        threshold: args.threshold,
        card_sha256: args.card_sha256,
        alarm_rejects: args.alarm_rejects,
        alarm_window: args.alarm_window,
        accepted: args.accepted,
        annotate: args.annotate,
        pass_through: args.pass_through.then_some(PassThroughConfig {
            on_reject: args.on_reject,
            width: args.frames.width,
            height: args.frames.height,
            format: args.frames.pixel_format,
        }),
        pass_unscored_detail: args.pass_unscored_detail,
        report: args.report,
        format: args.format,
        latency: !args.no_latency,
        metrics: args.metrics,
        mqtt: args.mqtt.map(|url| mcgate::output::MqttSettings {
            url,
            camera: args.camera,
            ca: args.mqtt_ca,
            credentials: args.mqtt_credentials,
            client_cert: args.mqtt_cert,
            client_key: args.mqtt_key,
        }),
        jobs: args.jobs,
        signals: match &args.signals {
            None => None,
            Some(names) => {
                let (signals, tamper) = parse_signals(names, true)?;
                Some(mcgate::gate::Selection { signals, tamper })
            }
        },
    };
    let Prepared {
        mut session,
        frames,
        reload,
    } = config.build(source)?;
    reload.listen(sighup)?;
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

/// `--card-sha256`: 64 hex digits, kept in lower case.
fn parse_sha256(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("a SHA-256 is 64 hex digits, as `mcgate info MODEL` prints it".into())
    }
}
