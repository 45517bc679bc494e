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
//!
//! With `jobs` above 1 the frames are pipelined over that many threads, each with its own
//! gate (the library's [`Pool`]): frame i goes to thread i mod N, and the frames leave in
//! order, once scored, when a later frame comes in (the base class asks for output only then)
//! — one frame interval later than with one job when the scoring keeps up, N − 1 at most;
//! the latency query says so. Serialized events (end of stream, caps, segments) wait until
//! the frames before them have left. The verdicts are the same (frame i's masks depend on
//! the run seed and i).

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;

use mcgate::gate::{Gate, Pool, Seeds};
use mcgate::input::frame::{Frame, ReadError, Unreadable};
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
        jobs: u32,
        mqtt: Option<String>,
        camera: String,
        mqtt_ca: Option<String>,
        mqtt_credentials: Option<String>,
        mqtt_cert: Option<String>,
        mqtt_key: Option<String>,
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
                jobs: 1,
                mqtt: None,
                camera: "camera".into(),
                mqtt_ca: None,
                mqtt_credentials: None,
                mqtt_cert: None,
                mqtt_key: None,
                metrics: None,
            }
        }
    }

    /// Where frames are scored.
    enum Scorer {
        /// On the streaming thread, in `transform_ip` (boxed: a gate is large, the other
        /// variant small).
        Inline(Box<Gate>),
        /// On `jobs` threads, frame i on thread i mod N; the buffers wait in `pending`.
        Workers(Workers),
    }

    /// The threads of `jobs` > 1 and the frames they hold.
    struct Workers {
        deal: Vec<mpsc::Sender<(u64, Option<image::DynamicImage>)>>,
        take: Vec<mpsc::Receiver<(Report, Option<Frame>)>>,
        /// Submitted frames, oldest first, waiting for their reports.
        pending: VecDeque<(u64, gst::Buffer)>,
    }

    impl Workers {
        fn start(gates: Vec<Gate>) -> Result<Workers, String> {
            let (mut deal, mut take) = (vec![], vec![]);
            for mut gate in gates {
                let (deal_tx, deal_rx) = mpsc::channel::<(u64, Option<image::DynamicImage>)>();
                let (take_tx, take_rx) = mpsc::channel();
                std::thread::Builder::new()
                    .name("mcgate-job".into())
                    .spawn(move || {
                        // Ends when the element stops (the senders dropped).
                        for (index, image) in deal_rx {
                            if take_tx.send(score(&mut gate, index, image)).is_err() {
                                return;
                            }
                        }
                    })
                    .map_err(|e| format!("cannot start a scoring thread ({e}): fewer jobs"))?;
                deal.push(deal_tx);
                take.push(take_rx);
            }
            Ok(Workers {
                deal,
                take,
                pending: VecDeque::new(),
            })
        }

        fn worker(&self, index: u64) -> usize {
            (index % self.deal.len() as u64) as usize
        }
    }

    /// What a running element holds.
    struct State {
        scorer: Scorer,
        info: Option<gst_video::VideoInfo>,
        index: u64,
        /// The frozen check, tamper events and the alarm (the library's session rules).
        rules: FrameRules,
        /// The report line writer, its buffer reused frame after frame.
        lines: ReportWriter<Vec<u8>>,
        /// The card's class labels, for the meta.
        labels: Vec<String>,
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
                    glib::ParamSpecUInt::builder("jobs")
                        .nick("Jobs")
                        .blurb(
                            "Frames scored at once, one thread each (e.g. the board's cores): \
                             more frames per second, the same verdicts, frames held back by \
                             up to jobs - 1 frames",
                        )
                        .minimum(1)
                        .maximum(Pool::MAX_JOBS as u32)
                        .default_value(1)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("mqtt")
                        .nick("MQTT")
                        .blurb(
                            "Publish events as `mcgate gate --mqtt` does: mqtt[s]://HOST:PORT/PREFIX",
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
                    glib::ParamSpecString::builder("mqtt-cert")
                        .nick("MQTT client certificate")
                        .blurb(
                            "With mqtts://: PEM certificate (chain) shown to a broker that asks \
                             for one; with mqtt-key",
                        )
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("mqtt-key")
                        .nick("MQTT client key")
                        .blurb("PEM private key of mqtt-cert")
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
                "jobs" => s.jobs = value.get().unwrap_or(1),
                "mqtt" => s.mqtt = value.get().unwrap_or(None),
                "mqtt-ca" => s.mqtt_ca = value.get().unwrap_or(None),
                "mqtt-credentials" => s.mqtt_credentials = value.get().unwrap_or(None),
                "mqtt-cert" => s.mqtt_cert = value.get().unwrap_or(None),
                "mqtt-key" => s.mqtt_key = value.get().unwrap_or(None),
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
                "jobs" => s.jobs.to_value(),
                "mqtt" => s.mqtt.to_value(),
                "camera" => s.camera.to_value(),
                "mqtt-ca" => s.mqtt_ca.to_value(),
                "mqtt-credentials" => s.mqtt_credentials.to_value(),
                "mqtt-cert" => s.mqtt_cert.to_value(),
                "mqtt-key" => s.mqtt_key.to_value(),
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
            let Scorer::Inline(gate) = &mut state.scorer else {
                // Several jobs go through submit_input_buffer and generate_output.
                return Err(gst::FlowError::Error);
            };
            let index = state.index;
            state.index += 1;
            // One mapping for reading the frame and for what `on-reject` writes into it.
            let settled = {
                let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, &info)
                    .map_err(|_| gst::FlowError::Error)?;
                let (report, scored) = score(gate, index, to_image(&frame));
                settle(state, &mut frame, index, report, scored.as_ref())
            };
            drop(guard);
            self.announce(buf, &info, settled)
        }

        fn submit_input_buffer(
            &self,
            is_discont: bool,
            inbuf: gst::Buffer,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
            let info = state.info.clone().ok_or(gst::FlowError::NotNegotiated)?;
            let Scorer::Workers(workers) = &mut state.scorer else {
                drop(guard);
                return self.parent_submit_input_buffer(is_discont, inbuf);
            };
            let index = state.index;
            state.index += 1;
            let image = read_image(&inbuf, &info);
            workers.deal[workers.worker(index)]
                .send((index, image))
                .map_err(|_| gst::FlowError::Error)?;
            workers.pending.push_back((index, inbuf));
            Ok(gst::FlowSuccess::Ok)
        }

        fn generate_output(
            &self,
        ) -> Result<gst_base::subclass::base_transform::GenerateOutputSuccess, gst::FlowError>
        {
            use gst_base::subclass::base_transform::GenerateOutputSuccess;
            loop {
                // Wait for the oldest frame only when all jobs are busy.
                match self.next_settled(false)? {
                    Pending::Inline => return self.parent_generate_output(),
                    Pending::None => return Ok(GenerateOutputSuccess::NoOutput),
                    Pending::Ready(buffer) => return Ok(GenerateOutputSuccess::Buffer(buffer)),
                    // Dropped (`on-reject=drop`): the next one may be ready too.
                    Pending::Dropped => continue,
                }
            }
        }

        fn sink_event(&self, event: gst::Event) -> bool {
            match event.view() {
                // Flushed frames are not passed on; their reports are taken and thrown away
                // (the threads answer in order).
                gst::EventView::FlushStop(_) => self.discard_pending(),
                // The frames still scoring go out before any serialized event (end of
                // stream, caps, a segment) overtakes them.
                _ if event.is_serialized() => loop {
                    match self.next_settled(true) {
                        Ok(Pending::Ready(buffer)) => {
                            if self.obj().src_pad().push(buffer).is_err() {
                                // Downstream is gone: the rest cannot go out either.
                                self.discard_pending();
                                break;
                            }
                        }
                        Ok(Pending::Dropped) => {}
                        _ => break,
                    }
                },
                _ => {}
            }
            self.parent_sink_event(event)
        }

        fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
            if !BaseTransformImplExt::parent_query(self, direction, query) {
                return false;
            }
            if let (gst::PadDirection::Src, gst::QueryViewMut::Latency(q)) =
                (direction, query.view_mut())
            {
                if let Some(extra) = self.held_back() {
                    let (live, min, max) = q.result();
                    q.set(live, min + extra, max.map(|m| m + extra));
                }
            }
            true
        }
    }

    /// What [`McGate::next_settled`] found.
    enum Pending {
        /// One job: the base class's in-place path.
        Inline,
        /// Nothing to pass on now.
        None,
        /// The oldest frame, settled, to pass on.
        Ready(gst::Buffer),
        /// The oldest frame, settled and dropped.
        Dropped,
    }

    impl McGate {
        /// How long `jobs` frames may be held back: jobs − 1 frame intervals (at least one);
        /// `None` with one job or no fixed frame rate.
        fn held_back(&self) -> Option<gst::ClockTime> {
            let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let state = guard.as_ref()?;
            let Scorer::Workers(workers) = &state.scorer else {
                return None;
            };
            let fps = state.info.as_ref()?.fps();
            let (n, d) = (fps.numer(), fps.denom());
            if n <= 0 || d <= 0 {
                return None;
            }
            let frames = (workers.deal.len() as u64 - 1).max(1);
            gst::ClockTime::SECOND.mul_div_floor(frames * d as u64, n as u64)
        }

        /// Takes the oldest pending frame's report (waiting for it when `wait`, or when every
        /// job holds a frame) and settles it.
        fn next_settled(&self, wait: bool) -> Result<Pending, gst::FlowError> {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(state) = guard.as_mut() else {
                return Ok(Pending::None);
            };
            let Scorer::Workers(workers) = &mut state.scorer else {
                return Ok(Pending::Inline);
            };
            let Some(&(index, _)) = workers.pending.front() else {
                return Ok(Pending::None);
            };
            let take = &workers.take[workers.worker(index)];
            let (report, scored) = match wait || workers.pending.len() >= workers.deal.len() {
                true => take.recv().map_err(|_| gst::FlowError::Error)?,
                false => match take.try_recv() {
                    Ok(result) => result,
                    Err(mpsc::TryRecvError::Empty) => return Ok(Pending::None),
                    Err(mpsc::TryRecvError::Disconnected) => return Err(gst::FlowError::Error),
                },
            };
            let (_, mut buffer) = workers.pending.pop_front().ok_or(gst::FlowError::Error)?;
            let info = state.info.clone().ok_or(gst::FlowError::NotNegotiated)?;
            let buf = buffer.make_mut();
            let settled = {
                let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, &info)
                    .map_err(|_| gst::FlowError::Error)?;
                settle(state, &mut frame, index, report, scored.as_ref())
            };
            drop(guard);
            Ok(match self.announce(buf, &info, settled)? {
                gst_base::BASE_TRANSFORM_FLOW_DROPPED => Pending::Dropped,
                _ => Pending::Ready(buffer),
            })
        }

        fn discard_pending(&self) {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(State {
                scorer: Scorer::Workers(workers),
                ..
            }) = guard.as_mut()
            {
                while let Some((index, _)) = workers.pending.pop_front() {
                    let _ = workers.take[workers.worker(index)].recv();
                }
            }
        }

        /// The verdict's meta on the buffer, the bus messages; drops a rejected frame under
        /// `on-reject=drop`.
        fn announce(
            &self,
            buf: &mut gst::BufferRef,
            info: &gst_video::VideoInfo,
            settled: Settled,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            let Settled {
                index,
                report,
                line,
                label,
                on_reject,
            } = settled;
            let rejected = report.verdict.decision() == Decision::Reject;
            let params = meta_structure(&report, &line, &label);
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
            if report.alarm {
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

    /// A frame's report once the stream's rules have had their say.
    struct Settled {
        index: u64,
        report: Report,
        line: String,
        /// The class's label ("" when not scored).
        label: String,
        on_reject: OnReject,
    }

    /// The frame as the library's image, row padding dropped; `None` when the buffer does not
    /// hold one.
    fn read_image(
        buf: &gst::BufferRef,
        info: &gst_video::VideoInfo,
    ) -> Option<image::DynamicImage> {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, info).ok()?;
        to_image(&frame)
    }

    /// One frame through the gate; a frame that cannot be read is rejected like any
    /// unscorable frame.
    fn score(
        gate: &mut Gate,
        index: u64,
        image: Option<image::DynamicImage>,
    ) -> (Report, Option<Frame>) {
        let frame = image.map(|image| Frame::new(index, "gst", image));
        let report = match &frame {
            Some(frame) => gate.score(frame),
            None => gate.unreadable(&Unreadable {
                index,
                source: "gst".into(),
                reason: ReadError::Decode("the buffer does not hold a whole frame".into()),
            }),
        };
        (report, frame)
    }

    /// In frame order: the stream's rules (the frozen check, tamper events, the alarm — as
    /// `mcgate gate` applies them), `on-reject` on the bytes, the sinks, the report line.
    fn settle(
        state: &mut State,
        frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
        index: u64,
        mut report: Report,
        scored: Option<&Frame>,
    ) -> Settled {
        state.rules.apply(&mut report, scored);
        apply(state, frame, &report);
        if let Some(mqtt) = &mut state.mqtt {
            // Never an error: the sink drops and counts what the broker cannot take.
            let _ = mcgate::output::Sink::observe(mqtt, &report, None);
        }
        if let Some(metrics) = &state.metrics {
            metrics.metrics().record(&report);
        }
        let line = report_line(&mut state.lines, &report);
        let label = report
            .measures
            .and_then(|m| state.labels.get(m.predicted_class))
            .cloned()
            .unwrap_or_default();
        Settled {
            index,
            report,
            line,
            label,
            on_reject: state.on_reject,
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
        let jobs = s.jobs.max(1) as usize;
        let mut gates = Pool::new(&model, samples, threshold, seeds, jobs)
            .map_err(|e| e.to_string())?
            .into_gates();
        let metrics = match &s.metrics {
            None => None,
            Some(addr) => {
                let metrics =
                    std::sync::Arc::new(mcgate::output::metrics::Metrics::new(&model.card));
                Some(metrics.serve(addr).map_err(|e| e.to_string())?)
            }
        };
        let mqtt = match &s.mqtt {
            None if s.mqtt_ca.is_some()
                || s.mqtt_credentials.is_some()
                || s.mqtt_cert.is_some()
                || s.mqtt_key.is_some() =>
            {
                return Err(
                    "mqtt-ca, mqtt-credentials, mqtt-cert and mqtt-key are for the mqtt \
                     property: set it"
                        .into(),
                )
            }
            None => None,
            Some(url) => {
                let sink = mcgate::output::mqtt::MqttSink::open(&mcgate::output::MqttSettings {
                    url: url.clone(),
                    camera: s.camera.clone(),
                    ca: s.mqtt_ca.as_ref().map(Into::into),
                    credentials: s.mqtt_credentials.as_ref().map(Into::into),
                    client_cert: s.mqtt_cert.as_ref().map(Into::into),
                    client_key: s.mqtt_key.as_ref().map(Into::into),
                })
                .map_err(|e| format!("mqtt: {e}"))?;
                if let Some(metrics) = &metrics {
                    metrics.metrics().watch_mqtt(sink.stats());
                }
                Some(sink)
            }
        };
        let rules = FrameRules::new(
            &gates[0],
            AlarmWindow::new(ALARM_REJECTS, ALARM_WINDOW).map_err(|e| e.to_string())?,
        );
        let lines = ReportWriter::new(
            Vec::with_capacity(512),
            Format::Jsonl,
            false,
            &model.card,
            samples,
        );
        let scorer = match jobs {
            1 => Scorer::Inline(Box::new(gates.remove(0))),
            _ => Scorer::Workers(Workers::start(gates)?),
        };
        Ok(State {
            labels: model.card.classes.clone(),
            scorer,
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
    fn to_image<T>(frame: &gst_video::VideoFrameRef<T>) -> Option<image::DynamicImage> {
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
    fn meta_structure(report: &Report, line: &str, label: &str) -> gst::Structure {
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
            .field("label", label)
            .field("mi", m.map_or(f64::NAN, |m| m.mutual_information))
            .field("entropy", m.map_or(f64::NAN, |m| m.predictive_entropy))
            .field("log-density", report.log_density.unwrap_or(f64::NAN))
            .field("seed", report.seed.map_or(String::new(), |s| s.to_string()))
            .field("report", line)
            .build()
    }
}
