//! The gate loop: frames from a source → the pool of gates → the per-frame rules → outputs.
//!
//! The rules that belong to the gate, not to any one output:
//! - a frozen camera: from the card's count of identical frames in a row on, each further
//!   one is rejected (`tamper:frozen`) — judged here, on frames in order, whichever job
//!   scored them;
//! - a tamper event: the first frame of a run rejected by the same tamper check starts one
//!   (logged, marked in its line, counted), the first frame after the run ends it — a camera
//!   that stays covered is one event, not a reject per frame;
//! - the alarm: K of the last N frames rejected raises it, on the frame that does;
//! - an accepted frame is passed on (e.g. to `--accepted`) *before* its verdict line, so a
//!   consumer that trusts the line finds the frame;
//! - a frame that cannot be passed on is not accepted: its line says reject, with why, and
//!   the session stops with that output error.

pub mod config;
pub mod reload;

use std::borrow::Cow;
use std::io::Write;

use crate::contract::card::{InputSpec, TamperKind};
use crate::gate::Pool;
use crate::input::frame::{self, Frame};
use crate::input::preprocess::{scored_pixels, PassedPixels};
use crate::output::frames::FrameSink;
use crate::output::passthrough::PassThrough;
use crate::output::report::ReportWriter;
use crate::output::summary::Summary;
use crate::output::OutputError;
use crate::output::Sink;
use crate::score::report::Report;
use crate::score::tamper::FrozenCounter;
use crate::score::verdict::{AlarmWindow, Decision, RejectReason, Verdict};
use crate::Error;

/// The frame writers that pass accepted frames on: they run before a frame's verdict line,
/// and a frame they cannot pass on is rejected.
#[derive(Default)]
pub struct FrameOutputs {
    /// Accepted frames, written before their verdict line (`--accepted`).
    pub accepted: Option<Box<dyn FrameSink>>,
    /// The video path: accepted frames downstream, rejected ones replaced (`--pass-through`).
    pub pass_through: Option<PassThrough>,
    /// The model's input: only the pixels of a frame it scored are passed on (a gray model's
    /// luma, a crop model's centre, at its size the very pixels it was fed). `None` (tests
    /// only): frames pass as they came.
    pub scored: Option<InputSpec>,
    /// Which of the scored pixels pass on: the model's input (the default), or the scored
    /// part at the frame's own resolution (`--pass-unscored-detail`).
    pub passed: PassedPixels,
}

/// One run of the gate over a stream of frames.
pub struct Session<W: Write> {
    pool: Pool,
    outputs: Outputs<W>,
}

/// The rules that belong to the gate on a stream of frames in order (the module's list):
/// the frozen check, tamper events, the alarm. Every front end that gates a stream — this
/// session, the GStreamer element — applies them, so none of them lets a frozen camera pass.
pub struct FrameRules {
    /// The frozen check: the counter and the run at which frames are rejected.
    frozen: Option<(FrozenCounter, u64)>,
    /// The tamper event in progress: its check and how many frames it has lasted.
    tamper: Option<(TamperKind, u64)>,
    alarm: AlarmWindow,
}

/// What happens to a scored frame: the rules and the outputs.
struct Outputs<W: Write> {
    rules: FrameRules,
    lines: ReportWriter<W>,
    frames: FrameOutputs,
    /// Observers after the line, in the order added (annotations, metrics, …).
    sinks: Vec<Box<dyn Sink>>,
    summary: Summary,
}

impl<W: Write> Session<W> {
    /// A session scoring with `pool`, raising `alarm`, writing verdicts to `lines` and frames
    /// to `frames`.
    pub fn new(
        pool: Pool,
        alarm: AlarmWindow,
        lines: ReportWriter<W>,
        frames: FrameOutputs,
    ) -> Session<W> {
        let rules = FrameRules::new(pool.gate(), alarm);
        Session {
            pool,
            outputs: Outputs {
                rules,
                lines,
                frames,
                sinks: vec![],
                summary: Summary::default(),
            },
        }
    }

    /// Also shows every decided frame to `sink`, after its line and the sinks added before.
    pub fn with_sink(mut self, sink: Box<dyn Sink>) -> Self {
        self.outputs.sinks.push(sink);
        self
    }

    /// Gates every frame of `source`, `jobs` at a time, in order. Stops at the first output
    /// that cannot be written; a frame that cannot be read or scored is a reject, not an
    /// error.
    pub fn run(
        &mut self,
        source: impl Iterator<Item = frame::Item> + Send + 'static,
    ) -> Result<(), Error> {
        let outputs = &mut self.outputs;
        self.pool
            .score_stream(source, |report, frame| outputs.deliver(report, frame))
    }

    /// Counts so far.
    pub fn summary(&self) -> &Summary {
        &self.outputs.summary
    }
}

impl FrameRules {
    /// The rules for frames scored by `gate` (its card's frozen check, if any), raising
    /// `alarm`.
    pub fn new(gate: &crate::gate::Gate, alarm: AlarmWindow) -> FrameRules {
        FrameRules {
            frozen: gate.frozen_at().map(|at| (FrozenCounter::new(), at)),
            tamper: None,
            alarm,
        }
    }

    /// Starts, continues or ends the tamper event with `report`'s verdict.
    fn track_tamper(&mut self, report: &mut Report) {
        let kind = match report.verdict.reason() {
            Some(RejectReason::Tamper { kind, .. }) => Some(*kind),
            _ => None,
        };
        match (self.tamper, kind) {
            (Some((now, frames)), Some(k)) if now == k => self.tamper = Some((now, frames + 1)),
            (before, now) => {
                if let Some((ended, frames)) = before {
                    log::warn!(
                        "tamper:{} over at frame {}, after {frames} frames",
                        ended.name(),
                        report.index
                    );
                }
                if let Some(k) = now {
                    log::warn!(
                        "TAMPER at frame {} ({}): {}",
                        report.index,
                        crate::text::printable(&report.source),
                        report
                            .verdict
                            .reason()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    );
                    report.tamper_event = Some(k);
                }
                self.tamper = now.map(|k| (k, 1));
            }
        }
    }

    /// Applies the rules to the next frame's report, in stream order: a frozen picture
    /// rejected, the tamper event marked, the alarm set. `frame` is `None` when the frame
    /// could not be read.
    pub fn apply(&mut self, report: &mut Report, frame: Option<&Frame>) {
        if let (None, Some(reason)) = (report.measures, report.verdict.reason()) {
            // A tamper reject was judged, not a fault: its line and its alarm say it.
            if !reason.is_tamper() {
                log::warn!(
                    "frame {} ({}) rejected unscored: {}",
                    report.index,
                    crate::text::printable(&report.source),
                    crate::text::printable(&reason.to_string())
                );
            }
        }
        if let (Some((counter, at)), Some(frame)) = (&mut self.frozen, frame) {
            let run = counter.push(&frame.image);
            // A frozen picture is rejected whatever the model made of it; a reject the raw
            // frame already explains (covered, …) keeps its reason.
            let tampered = report.verdict.reason().is_some_and(RejectReason::is_tamper);
            if run >= *at && !tampered {
                report.verdict = Verdict::Reject(RejectReason::Tamper {
                    kind: TamperKind::Frozen,
                    value: run as f64,
                    at: *at as f64,
                });
            }
        }
        self.track_tamper(report);
        report.alarm = self.alarm.push(report.verdict.decision());
        if report.alarm {
            log::warn!(
                "ALARM at frame {}: {} of the last {} frames rejected",
                report.index,
                self.alarm.rejected_in_window(),
                self.alarm.window()
            );
        }
    }
}

impl<W: Write> Outputs<W> {
    /// Applies the per-frame rules to one scored frame and writes its outputs. `frame` is
    /// `None` when the frame could not be read.
    fn deliver(&mut self, mut report: Report, frame: Option<&Frame>) -> Result<(), Error> {
        self.rules.apply(&mut report, frame);
        // An accepted frame is passed on before its verdict line: if it cannot be written
        // (full disk), its line says reject, and the session stops with that error.
        let mut passed_on = Ok(());
        if let (Some(frame), Decision::Accept) = (frame, report.verdict.decision()) {
            let scored = |size| match &self.frames.scored {
                Some(spec) => scored_pixels(&frame.image, spec, size, self.frames.passed)
                    .ok_or_else(|| OutputError {
                        what: "the frame's scored pixels".into(),
                        cause: "the resizer failed".into(),
                    }),
                None => Ok(Cow::Borrowed(&frame.image)),
            };
            if let Some(sink) = &self.frames.accepted {
                passed_on = scored(None).and_then(|p| sink.save(frame.index, &frame.source, &p));
            }
            if let (Ok(()), Some(stream)) = (&passed_on, &mut self.frames.pass_through) {
                passed_on = scored(Some(stream.size())).and_then(|p| stream.accept(&p));
                // Saved but not passed on: its line will say reject, so the saved copy goes
                // (was: left under its name beside a reject line; third outside probe).
                if let (Err(_), Some(sink)) = (&passed_on, &self.frames.accepted) {
                    if let Err(e) = sink.unsave(frame.index, &frame.source) {
                        log::warn!("{e}");
                    }
                }
            }
            if let Err(e) = &passed_on {
                report.verdict = Verdict::Reject(RejectReason::NotPassedOn(e.to_string()));
            }
        } else if let Some(stream) = &mut self.frames.pass_through {
            // A reject's place downstream: dropped, black, or the last accepted frame.
            passed_on = stream.reject();
        }
        // The line goes out even for a frame that could not be passed on; then the run stops.
        self.lines.observe(&report, frame)?;
        passed_on?;
        for sink in &mut self.sinks {
            sink.observe(&report, frame)?;
        }
        Ok(self.summary.observe(&report, frame)?)
    }
}

#[cfg(all(test, feature = "builtin-model"))]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::gate::Seeds;
    use crate::input::frame::{ReadError, Unreadable};
    use crate::model::Model;
    use crate::output::report::Format;

    /// Records what was written, or fails every write.
    #[derive(Clone, Default)]
    struct Recorder {
        saved: Rc<RefCell<Vec<u64>>>,
        fail: bool,
    }

    impl FrameSink for Recorder {
        fn save(&self, index: u64, _: &str, _: &image::DynamicImage) -> Result<(), OutputError> {
            if self.fail {
                return Err(OutputError {
                    what: "frame".into(),
                    cause: "disk full".into(),
                });
            }
            self.saved.borrow_mut().push(index);
            Ok(())
        }

        fn unsave(&self, index: u64, _: &str) -> Result<(), OutputError> {
            self.saved.borrow_mut().retain(|&i| i != index);
            Ok(())
        }
    }

    /// A consumer that has gone away.
    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A stream of `n` black 28×28 frames (MNIST-clean enough to be accepted at a generous
    /// threshold) with frame `unreadable` missing.
    fn frames(n: u64, unreadable: u64) -> Vec<frame::Item> {
        (0..n)
            .map(|index| {
                if index == unreadable {
                    return Err(Unreadable {
                        index,
                        source: "gone.png".into(),
                        reason: ReadError::Empty,
                    });
                }
                let mut pixels = vec![0u8; 28 * 28];
                // A vertical bar: read as a "1" with low MI.
                for row in 4..24 {
                    pixels[row * 28 + 14] = 255;
                    pixels[row * 28 + 13] = 255;
                }
                Ok(Frame::new(
                    index,
                    format!("f{index}.png"),
                    image::GrayImage::from_raw(28, 28, pixels).unwrap().into(),
                ))
            })
            .collect()
    }

    /// Just below ln 4, the most MI four samples can have: no frame of these tests reaches it.
    const ALMOST_LN_4: f64 = 1.38;

    fn session(
        threshold: f64,
        alarm: (usize, usize),
        frames: FrameOutputs,
        jobs: usize,
    ) -> Session<Vec<u8>> {
        let model = Model::load_from("builtin:mnist".as_ref()).unwrap();
        let pool = Pool::new(&model, 4, threshold, Seeds::PerFrame(3), jobs).unwrap();
        let lines = ReportWriter::new(Vec::new(), Format::Jsonl, false, &model.card, 4);
        Session::new(
            pool,
            AlarmWindow::new(alarm.0, alarm.1).unwrap(),
            lines,
            frames,
        )
    }

    fn lines(s: &Session<Vec<u8>>) -> Vec<serde_json::Value> {
        String::from_utf8(s.outputs.lines.get_ref().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn accepted_frames_are_passed_on_before_their_line_and_unread_ones_are_rejected() {
        let accepted = Recorder::default();
        let outputs = FrameOutputs {
            accepted: Some(Box::new(accepted.clone())),
            pass_through: None,
            ..Default::default()
        };
        // Threshold ln(10): every scored frame is accepted.
        let mut s = session(ALMOST_LN_4, (5, 20), outputs, 2);
        s.run(frames(5, 2).into_iter()).unwrap();
        let lines = lines(&s);
        let verdicts: Vec<&str> = lines
            .iter()
            .map(|l| l["verdict"].as_str().unwrap())
            .collect();
        assert_eq!(verdicts, ["accept", "accept", "reject", "accept", "accept"]);
        assert_eq!(lines[2]["reason"], "empty file");
        assert_eq!(*accepted.saved.borrow(), vec![0, 1, 3, 4]);
        let summary = s.summary();
        assert_eq!(
            (summary.frames, summary.accepted, summary.unscored),
            (5, 4, 1)
        );
    }

    /// Was (third outside probe): with `--accepted` and pass-through, a frame saved but then
    /// not passed on (the consumer gone) was reported as a reject while its saved copy stayed.
    #[test]
    fn a_frame_saved_but_not_passed_on_is_taken_back() {
        let accepted = Recorder::default();
        let outputs = FrameOutputs {
            accepted: Some(Box::new(accepted.clone())),
            pass_through: Some(PassThrough::new(
                Box::new(Gone),
                frame::PixelFormat::Gray,
                28,
                28,
                crate::output::passthrough::OnReject::Drop,
            )),
            ..Default::default()
        };
        let mut s = session(ALMOST_LN_4, (5, 20), outputs, 1);
        let err = s.run(frames(3, 99).into_iter()).unwrap_err();
        assert!(matches!(err, Error::Output { .. }), "{err}");
        assert_eq!(lines(&s)[0]["verdict"], "reject");
        assert!(
            accepted.saved.borrow().is_empty(),
            "a rejected frame stayed saved"
        );
    }

    #[test]
    fn a_frame_that_cannot_be_passed_on_is_rejected_and_stops_the_session() {
        let outputs = FrameOutputs {
            accepted: Some(Box::new(Recorder {
                fail: true,
                ..Default::default()
            })),
            pass_through: None,
            ..Default::default()
        };
        let mut s = session(ALMOST_LN_4, (5, 20), outputs, 1);
        let err = s.run(frames(3, 99).into_iter()).unwrap_err();
        assert!(matches!(err, Error::Output { .. }), "{err}");
        let lines = lines(&s);
        assert_eq!(lines.len(), 1, "the session went on after the failed write");
        assert_eq!(lines[0]["verdict"], "reject");
        assert_eq!(
            lines[0]["reason"],
            "accepted but not passed on: cannot write frame: disk full"
        );
        assert!(lines[0]["measures"]["mutual_information"].is_f64());
    }

    #[test]
    fn the_alarm_fires_once_on_the_kth_reject_in_the_window() {
        // Unreadable frames are rejects: 2 of 3 raises the alarm on the 2nd of them, and again
        // only after the state has cleared (never, here).
        let mut s = session(ALMOST_LN_4, (2, 3), FrameOutputs::default(), 1);
        let unreadable = (0..5).map(|index| {
            Err(Unreadable {
                index,
                source: "gone.png".into(),
                reason: ReadError::Empty,
            })
        });
        s.run(unreadable).unwrap();
        let alarms: Vec<bool> = lines(&s)
            .iter()
            .map(|l| l["alarm"].as_bool().unwrap())
            .collect();
        assert_eq!(alarms, [false, true, false, false, false]);
        assert_eq!(s.summary().alarms, 1);
    }

    /// What an observer was shown of one frame: its index, verdict and alarm.
    type Seen = (u64, &'static str, bool);

    /// Records every report it is shown.
    #[derive(Clone, Default)]
    struct Observer(Rc<RefCell<Vec<Seen>>>);

    impl Sink for Observer {
        fn observe(&mut self, report: &Report, _: Option<&Frame>) -> Result<(), OutputError> {
            let verdict = match report.verdict.decision() {
                Decision::Accept => "accept",
                Decision::Reject => "reject",
            };
            self.0
                .borrow_mut()
                .push((report.index, verdict, report.alarm));
            Ok(())
        }
    }

    #[test]
    fn a_sink_sees_each_final_report_in_order_after_its_line() {
        let observer = Observer::default();
        let mut s = session(ALMOST_LN_4, (1, 2), FrameOutputs::default(), 2)
            .with_sink(Box::new(observer.clone()));
        s.run(frames(4, 1).into_iter()).unwrap();
        // The alarm (1 reject of 2) is set by the session before the sinks see the report.
        assert_eq!(
            *observer.0.borrow(),
            [
                (0, "accept", false),
                (1, "reject", true),
                (2, "accept", false),
                (3, "accept", false)
            ]
        );
        assert_eq!(lines(&s).len(), 4);

        // A frame that cannot be passed on: its line says reject, no sink sees it, the run
        // stops.
        let observer = Observer::default();
        let outputs = FrameOutputs {
            accepted: Some(Box::new(Recorder {
                fail: true,
                ..Default::default()
            })),
            pass_through: None,
            ..Default::default()
        };
        let mut s = session(ALMOST_LN_4, (5, 20), outputs, 1).with_sink(Box::new(observer.clone()));
        assert!(s.run(frames(3, 99).into_iter()).is_err());
        assert_eq!(lines(&s).len(), 1);
        assert!(observer.0.borrow().is_empty());
    }
}
