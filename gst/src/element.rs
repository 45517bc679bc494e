//! The `mcgate` element: an in-place transform over raw GRAY8, RGB and BGR video.
//!
//! Per buffer: the frame (row padding dropped) goes through the library's [`Gate`] and then
//! its stream rules ([`FrameRules`]: the frozen check, tamper events, the alarm — what
//! `mcgate gate` applies, so a frozen camera is rejected here too); the
//! verdict is attached as a `GstVideoRegionOfInterestMeta` over the whole frame, type
//! `mcgate`, with one [`META_STRUCTURE`] param (the way DL Streamer attaches
//! classifications; GStreamer 1.24's analytics meta is the place for it once Debian ships
//! it); a reject posts a [`REJECT_MESSAGE`] element message on the bus, an alarm (K of the last
//! N frames rejected) an [`ALARM_MESSAGE`]. A model that cannot be loaded fails the state
//! change to PAUSED with one error naming it.

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;

use mcgate::gate::{Gate, Seeds};
use mcgate::input::frame::Frame;
use mcgate::model::Model;
use mcgate::output::report::{Format, ReportWriter};
use mcgate::score::report::Report;
use mcgate::score::verdict::{AlarmWindow, Decision};
use mcgate::session::FrameRules;

/// The name of the structure each verdict meta carries.
pub const META_STRUCTURE: &str = "mcgate";
/// The name of the element message posted for each rejected frame.
pub const REJECT_MESSAGE: &str = "mcgate-reject";
/// The name of the element message posted when the alarm fires.
pub const ALARM_MESSAGE: &str = "mcgate-alarm";

/// The alarm: K of the last N frames rejected (`mcgate gate`'s defaults).
const ALARM_REJECTS: usize = 5;
const ALARM_WINDOW: usize = 20;

/// What happens to a rejected frame downstream.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstMcGateOnReject")]
pub enum OnReject {
    /// Not passed on at all.
    #[enum_value(name = "Drop the frame", nick = "drop")]
    Drop = 0,
    /// Passed on with every byte 0 (black).
    #[enum_value(name = "Black it out", nick = "black")]
    Black = 1,
    /// Replaced by the last accepted frame (black before the first).
    #[enum_value(name = "Repeat the last accepted frame", nick = "repeat")]
    Repeat = 2,
    /// Passed on unchanged, the verdict in its meta.
    #[enum_value(name = "Pass it on, marked", nick = "mark-only")]
    MarkOnly = 3,
}

glib::wrapper! {
    /// The `mcgate` element.
    pub struct McGate(ObjectSubclass<imp::McGate>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

mod imp {
    use super::*;

    /// Properties, as set; read at start.
    #[derive(Debug, Clone)]
    struct Settings {
        model: Option<String>,
        threshold: f64,
        samples: u32,
        seed: i64,
        on_reject: OnReject,
        mqtt: Option<String>,
        camera: String,
        mqtt_ca: Option<String>,
        mqtt_credentials: Option<String>,
        metrics: Option<String>,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                model: None,
                threshold: -1.0,
                samples: 0,
                seed: -1,
                on_reject: OnReject::Drop,
                mqtt: None,
                camera: "camera".into(),
                mqtt_ca: None,
                mqtt_credentials: None,
                metrics: None,
            }
        }
    }

    /// What a running element holds.
    struct State {
        gate: Gate,
        info: Option<gst_video::VideoInfo>,
        index: u64,
        /// The frozen check, tamper events and the alarm (the library's session rules).
        rules: FrameRules,
        /// The report line writer, its buffer reused frame after frame.
        lines: ReportWriter<Vec<u8>>,
        /// The last accepted frame's plane (`on-reject=repeat`).
        last_accepted: Option<Vec<u8>>,
        on_reject: OnReject,
        /// Events to an MQTT broker (`mqtt` property), as `gate --mqtt` publishes them.
        mqtt: Option<mcgate::output::mqtt::MqttSink>,
        /// Prometheus metrics served at the `metrics` address, as `gate --metrics` serves them.
        metrics: Option<mcgate::output::metrics::Served>,
    }

    /// The element's instance.
    #[derive(Default)]
    pub struct McGate {
        settings: Mutex<Settings>,
        state: Mutex<Option<State>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for McGate {
        const NAME: &'static str = "GstMcGate";
        type Type = super::McGate;
        type ParentType = gst_base::BaseTransform;
    }

    impl ObjectImpl for McGate {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
                vec![
                    glib::ParamSpecString::builder("model")
                        .nick("Model")
                        .blurb("Model stem, card or ONNX path (or builtin:mnist)")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecDouble::builder("threshold")
                        .nick("MI threshold")
                        .blurb("MI threshold in nats; -1: the card's")
                        .minimum(-1.0)
                        .maximum(100.0)
                        .default_value(-1.0)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt::builder("samples")
                        .nick("Samples")
                        .blurb("Monte-Carlo samples T; 0: the card's")
                        .maximum(10_000)
                        .default_value(0)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecInt64::builder("seed")
                        .nick("Seed")
                        .blurb(
                            "Run seed for reproducible masks (each frame's seed is in its \
                             meta); -1: secret masks, as a deployed gate should draw them",
                        )
                        .minimum(-1)
                        .default_value(-1)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecEnum::builder_with_default("on-reject", OnReject::Drop)
                        .nick("On reject")
                        .blurb("What happens to a rejected frame")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("mqtt")
                        .nick("MQTT")
                        .blurb(
                            "Publish events as `mcgate gate --mqtt` does: mqtt://HOST:PORT/PREFIX",
                        )
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("camera")
                        .nick("Camera")
                        .blurb("The camera's name in the MQTT events")
                        .default_value(Some("camera"))
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("mqtt-ca")
                        .nick("MQTT CA")
                        .blurb(
                            "With mqtts://: PEM file of the CA that signed the broker's \
                             certificate (unset: the system's)",
                        )
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("mqtt-credentials")
                        .nick("MQTT credentials")
                        .blurb("File holding one line USER:PASSWORD for the broker")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("metrics")
                        .nick("Metrics")
                        .blurb(
                            "Serve Prometheus metrics at http://ADDR/metrics (e.g. \
                             127.0.0.1:9898), as `mcgate gate --metrics` does",
                        )
                        .mutable_ready()
                        .build(),
                ]
            });
            PROPERTIES.as_ref()
        }

        fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
            let mut s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            match pspec.name() {
                "model" => s.model = value.get().unwrap_or(None),
                "threshold" => s.threshold = value.get().unwrap_or(-1.0),
                "samples" => s.samples = value.get().unwrap_or(0),
                "seed" => s.seed = value.get().unwrap_or(-1),
                "on-reject" => s.on_reject = value.get().unwrap_or(OnReject::Drop),
                "mqtt" => s.mqtt = value.get().unwrap_or(None),
                "mqtt-ca" => s.mqtt_ca = value.get().unwrap_or(None),
                "mqtt-credentials" => s.mqtt_credentials = value.get().unwrap_or(None),
                "metrics" => s.metrics = value.get().unwrap_or(None),
                "camera" => {
                    s.camera = value
                        .get::<Option<String>>()
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "camera".into())
                }
                _ => {}
            }
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            let s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            match pspec.name() {
                "model" => s.model.to_value(),
                "threshold" => s.threshold.to_value(),
                "samples" => s.samples.to_value(),
                "seed" => s.seed.to_value(),
                "on-reject" => s.on_reject.to_value(),
                "mqtt" => s.mqtt.to_value(),
                "camera" => s.camera.to_value(),
                "mqtt-ca" => s.mqtt_ca.to_value(),
                "mqtt-credentials" => s.mqtt_credentials.to_value(),
                "metrics" => s.metrics.to_value(),
                // Only the names above are registered.
                _ => glib::Value::from_type(pspec.value_type()),
            }
        }
    }

    impl GstObjectImpl for McGate {}

    impl ElementImpl for McGate {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "mcgate adversarial-input gate",
                    "Filter/Analyzer/Video",
                    "Scores each frame with an MC-dropout model's uncertainty (mutual \
                     information, fused signals, tamper checks) and drops, blacks out, \
                     repeats or marks the frames it rejects",
                    "mcgate developers",
                )
            });
            Some(&*METADATA)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                let caps = gst_video::VideoCapsBuilder::new()
                    .format_list([
                        gst_video::VideoFormat::Gray8,
                        gst_video::VideoFormat::Rgb,
                        gst_video::VideoFormat::Bgr,
                    ])
                    .build();
                [gst::PadDirection::Src, gst::PadDirection::Sink]
                    .into_iter()
                    .map(|direction| {
                        let name = match direction {
                            gst::PadDirection::Src => "src",
                            _ => "sink",
                        };
                        gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &caps)
                            .expect("a valid pad template")
                    })
                    .collect()
            });
            TEMPLATES.as_ref()
        }
    }

    impl BaseTransformImpl for McGate {
        const MODE: gst_base::subclass::BaseTransformMode =
            gst_base::subclass::BaseTransformMode::AlwaysInPlace;
        const PASSTHROUGH_ON_SAME_CAPS: bool = false;
        const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

        fn start(&self) -> Result<(), gst::ErrorMessage> {
            let settings = self
                .settings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let state = open(&settings)
                .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ["mcgate: {e}"]))?;
            *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
            Ok(())
        }

        fn stop(&self) -> Result<(), gst::ErrorMessage> {
            *self.state.lock().unwrap_or_else(|p| p.into_inner()) = None;
            Ok(())
        }

        fn set_caps(
            &self,
            incaps: &gst::Caps,
            _outcaps: &gst::Caps,
        ) -> Result<(), gst::LoggableError> {
            let info = gst_video::VideoInfo::from_caps(incaps)
                .map_err(|_| gst::loggable_error!(gst::CAT_RUST, "not raw video caps"))?;
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let state = state
                .as_mut()
                .ok_or_else(|| gst::loggable_error!(gst::CAT_RUST, "caps before start"))?;
            state.info = Some(info);
            state.last_accepted = None;
            Ok(())
        }

        fn transform_ip(
            &self,
            buf: &mut gst::BufferRef,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
            let info = state.info.clone().ok_or(gst::FlowError::NotNegotiated)?;
            let index = state.index;
            state.index += 1;
            let report = {
                let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, &info)
                    .map_err(|_| gst::FlowError::Error)?;
                // A frame that cannot be read is rejected like any unscorable frame.
                let scored = to_image(&frame).map(|image| Frame::new(index, "gst", image));
                let mut report = match &scored {
                    Some(scored) => state.gate.score(scored),
                    None => state.gate.unreadable(&mcgate::input::frame::Unreadable {
                        index,
                        source: "gst".into(),
                        reason: mcgate::input::frame::ReadError::Decode(
                            "the buffer does not hold a whole frame".into(),
                        ),
                    }),
                };
                // The stream's rules, as `mcgate gate` applies them: the frozen check, tamper
                // events, the alarm.
                state.rules.apply(&mut report, scored.as_ref());
                apply(state, &mut frame, &report);
                report
            };
            let alarm = report.alarm;
            if let Some(mqtt) = &mut state.mqtt {
                // Never an error: the sink drops and counts what the broker cannot take.
                let _ = mcgate::output::Sink::observe(mqtt, &report, None);
            }
            if let Some(metrics) = &state.metrics {
                metrics.metrics().record(&report);
            }
            let line = report_line(&mut state.lines, &report);
            let rejected = report.verdict.decision() == Decision::Reject;
            let on_reject = state.on_reject;
            drop(guard);

            let params = meta_structure(&report, &line);
            let mut meta = gst_video::VideoRegionOfInterestMeta::add(
                buf,
                META_STRUCTURE,
                (0, 0, info.width(), info.height()),
            );
            meta.add_param(params);
            let element = self.obj();
            if rejected {
                let s = gst::Structure::builder(REJECT_MESSAGE)
                    .field("frame", index)
                    .field(
                        "reason",
                        report
                            .verdict
                            .reason()
                            .map(|r| r.to_string())
                            .unwrap_or_default(),
                    )
                    .field("report", line.as_str())
                    .build();
                let _ =
                    element.post_message(gst::message::Element::builder(s).src(&*element).build());
            }
            if alarm {
                let s = gst::Structure::builder(ALARM_MESSAGE)
                    .field("frame", index)
                    .field("rejects", ALARM_REJECTS as u32)
                    .field("window", ALARM_WINDOW as u32)
                    .build();
                let _ =
                    element.post_message(gst::message::Element::builder(s).src(&*element).build());
            }
            match (rejected, on_reject) {
                (true, OnReject::Drop) => Ok(gst_base::BASE_TRANSFORM_FLOW_DROPPED),
                _ => Ok(gst::FlowSuccess::Ok),
            }
        }
    }

    /// Loads the model and makes the gate the properties describe.
    fn open(s: &Settings) -> Result<State, String> {
        let path = s
            .model
            .as_deref()
            .ok_or("no model set (the `model` property: a stem, card or ONNX path)")?;
        let model = Model::load_from(std::path::Path::new(path)).map_err(|e| e.to_string())?;
        let samples = match s.samples {
            0 => model.card.default_samples,
            n => n as usize,
        };
        let threshold = match s.threshold {
            t if t < 0.0 => model
                .card
                .mi_threshold()
                .ok_or_else(|| format!("{path}: the card has no MI threshold; set `threshold`"))?,
            t => t,
        };
        let seeds = match s.seed {
            -1 => Seeds::Secret(
                mcgate::run::rng::RunKey::from_os()
                    .map_err(|e| format!("no secret run key from the OS: {e}"))?,
            ),
            seed => Seeds::PerFrame(seed as u64),
        };
        let gate = Gate::new(&model, samples, threshold, seeds).map_err(|e| e.to_string())?;
        let metrics = match &s.metrics {
            None => None,
            Some(addr) => {
                let metrics =
                    std::sync::Arc::new(mcgate::output::metrics::Metrics::new(&model.card));
                Some(metrics.serve(addr).map_err(|e| e.to_string())?)
            }
        };
        let mqtt = match &s.mqtt {
            None => None,
            Some(url) => {
                let sink = mcgate::output::mqtt::MqttSink::open(&mcgate::output::MqttSettings {
                    url: url.clone(),
                    camera: s.camera.clone(),
                    ca: s.mqtt_ca.as_ref().map(Into::into),
                    credentials: s.mqtt_credentials.as_ref().map(Into::into),
                })
                .map_err(|e| format!("mqtt: {e}"))?;
                if let Some(metrics) = &metrics {
                    metrics.metrics().watch_mqtt(sink.stats());
                }
                Some(sink)
            }
        };
        let rules = FrameRules::new(
            &gate,
            AlarmWindow::new(ALARM_REJECTS, ALARM_WINDOW).map_err(|e| e.to_string())?,
        );
        let lines = ReportWriter::new(
            Vec::with_capacity(512),
            Format::Jsonl,
            false,
            &model.card,
            samples,
        );
        Ok(State {
            gate,
            info: None,
            index: 0,
            rules,
            lines,
            last_accepted: None,
            on_reject: s.on_reject,
            mqtt,
            metrics,
        })
    }

    /// The frame without its row padding, as the library's image.
    fn to_image(
        frame: &gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Option<image::DynamicImage> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let stride = usize::try_from(*frame.plane_stride().first()?).ok()?;
        let data = frame.plane_data(0).ok()?;
        let channels = match frame.format() {
            gst_video::VideoFormat::Gray8 => 1,
            gst_video::VideoFormat::Rgb | gst_video::VideoFormat::Bgr => 3,
            _ => return None,
        };
        let row = w * channels;
        let mut pixels = Vec::with_capacity(row * h);
        for y in 0..h {
            pixels.extend_from_slice(data.get(y * stride..y * stride + row)?);
        }
        if frame.format() == gst_video::VideoFormat::Bgr {
            for px in pixels.chunks_exact_mut(3) {
                px.swap(0, 2);
            }
        }
        match channels {
            1 => image::GrayImage::from_raw(w as u32, h as u32, pixels)
                .map(image::DynamicImage::ImageLuma8),
            _ => image::RgbImage::from_raw(w as u32, h as u32, pixels)
                .map(image::DynamicImage::ImageRgb8),
        }
    }

    /// `on-reject` on the frame's bytes, and the repeat policy's memory.
    fn apply(
        state: &mut State,
        frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
        report: &Report,
    ) {
        let rejected = report.verdict.decision() == Decision::Reject;
        let Ok(data) = frame.plane_data_mut(0) else {
            return;
        };
        match (rejected, state.on_reject) {
            (false, OnReject::Repeat) => {
                // One buffer for the whole run: the frame size is fixed by the caps.
                let last = state.last_accepted.get_or_insert_with(Vec::new);
                last.clear();
                last.extend_from_slice(data);
            }
            (true, OnReject::Black) => data.fill(0),
            (true, OnReject::Repeat) => match &state.last_accepted {
                Some(last) if last.len() == data.len() => data.copy_from_slice(last),
                _ => data.fill(0),
            },
            _ => {}
        }
    }

    /// The frame's line as `mcgate gate` writes it (JSON).
    fn report_line(lines: &mut ReportWriter<Vec<u8>>, report: &Report) -> String {
        lines.get_mut().clear();
        match lines.write(report) {
            Ok(()) => String::from_utf8_lossy(lines.get_ref())
                .trim_end()
                .to_string(),
            Err(e) => format!("{{\"error\":\"{e}\"}}"),
        }
    }

    /// The verdict's structure: the fields a pipeline reads, and the whole report line.
    fn meta_structure(report: &Report, line: &str) -> gst::Structure {
        let m = report.measures;
        gst::Structure::builder(META_STRUCTURE)
            .field(
                "verdict",
                match report.verdict.decision() {
                    Decision::Accept => "accept",
                    Decision::Reject => "reject",
                },
            )
            .field(
                "reason",
                report.verdict.reason().map(|r| r.kind()).unwrap_or(""),
            )
            .field("class", m.map_or(-1, |m| m.predicted_class as i32))
            .field("mi", m.map_or(f64::NAN, |m| m.mutual_information))
            .field("entropy", m.map_or(f64::NAN, |m| m.predictive_entropy))
            .field("log-density", report.log_density.unwrap_or(f64::NAN))
            .field("seed", report.seed.map_or(String::new(), |s| s.to_string()))
            .field("report", line)
            .build()
    }
}
