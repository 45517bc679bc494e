//! The `mcgate` element in real pipelines (`videotestsrc` → element → `appsink`): one verdict
//! meta per buffer, each the library gate's verdict on the same frame with the same seed (what
//! `mcgate gate --seed` prints); the `on-reject` policies frame by frame; a padded stride; BGR
//! as RGB; a bad model path failing the state change with one clear error.
//!
//! Needs GStreamer 1.22 with the base plugins (`videotestsrc`, `appsink`) and models/mnist.

use std::path::PathBuf;

use gst::prelude::*;
use gst_video::prelude::*;
use mcgate::gate::{Gate, Seeds};
use mcgate::input::frame::Frame;
use mcgate::model::Model;
use mcgate::score::verdict::Decision;

fn model_stem() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/mnist")
        .display()
        .to_string()
}

fn init() {
    gst::init().unwrap();
    // Registering twice (one test after another in one process) is harmless.
    let _ = gstmcgate::plugin_register_static();
}

/// One output buffer: its frame without padding, and its verdict meta's structure.
struct Out {
    pixels: Vec<u8>,
    /// Bytes per row in the buffer (padding included).
    stride: usize,
    meta: gst::Structure,
}

/// The pipeline `description` describes.
fn launch(description: &str) -> Result<gst::Pipeline, String> {
    Ok(gst::parse::launch(description)
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .unwrap())
}

/// The pipeline's `appsink` named `sink`.
fn appsink(pipeline: &gst::Pipeline) -> gst_app::AppSink {
    pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
}

/// Runs `source ! mcgate PROPS ! appsink` to the end; the buffers that came out and the
/// element messages posted.
fn run(source: &str, props: &str) -> Result<(Vec<Out>, Vec<gst::Structure>), String> {
    init();
    let description = format!("{source} ! mcgate {props} ! appsink name=sink sync=false");
    let pipeline = launch(&description)?;
    let sink = appsink(&pipeline);
    let bus = pipeline.bus().unwrap();
    let started = pipeline.set_state(gst::State::Playing);
    let mut outs = vec![];
    let mut messages = vec![];
    let mut error = None;
    if started.is_ok() {
        while let Ok(sample) = sink.pull_sample() {
            let caps = sample.caps().unwrap();
            let info = gst_video::VideoInfo::from_caps(caps).unwrap();
            let buffer = sample.buffer().unwrap();
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).unwrap();
            let row = info.width() as usize * info.format_info().pixel_stride()[0] as usize;
            let stride = frame.plane_stride()[0] as usize;
            let data = frame.plane_data(0).unwrap();
            let pixels = (0..info.height() as usize)
                .flat_map(|y| data[y * stride..y * stride + row].to_vec())
                .collect();
            let meta = buffer
                .meta::<gst_video::VideoRegionOfInterestMeta>()
                .expect("a verdict meta on every buffer");
            assert_eq!(meta.roi_type(), gstmcgate::META_STRUCTURE);
            assert_eq!(meta.rect(), (0, 0, info.width(), info.height()));
            let params: Vec<_> = meta.params().collect();
            assert_eq!(params.len(), 1, "one verdict per buffer");
            outs.push(Out {
                pixels,
                stride,
                meta: params[0].to_owned(),
            });
        }
    }
    for message in bus.iter_timed(gst::ClockTime::ZERO) {
        match message.view() {
            gst::MessageView::Element(e) => messages.extend(e.structure().map(|s| s.to_owned())),
            gst::MessageView::Error(e) => {
                error = Some(format!("{} {}", e.error(), e.debug().unwrap_or_default()))
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    match error {
        Some(e) => Err(e),
        None if started.is_err() => Err("the pipeline did not start".into()),
        None => Ok((outs, messages)),
    }
}

fn mi(s: &gst::StructureRef) -> f64 {
    s.get::<f64>("mi").unwrap()
}

fn verdict(s: &gst::StructureRef) -> String {
    s.get::<String>("verdict").unwrap()
}

/// The library's gate on models/mnist at its card's settings, masks from run seed `seed`:
/// what `mcgate gate models/mnist --seed SEED` runs.
fn library_gate(seed: u64) -> Gate {
    let model = Model::load_from(model_stem().as_ref()).unwrap();
    let threshold = model.card.mi_threshold().unwrap();
    Gate::new(
        &model,
        model.card.default_samples,
        threshold,
        Seeds::PerFrame(seed),
    )
    .unwrap()
}

const BALL: &str =
    "videotestsrc num-buffers=24 pattern=ball ! video/x-raw,format=GRAY8,width=28,height=28";

/// Every buffer's meta is the library gate's report on that frame with the same run seed.
#[test]
fn each_buffer_carries_the_library_gates_verdict() {
    let (outs, messages) = run(
        BALL,
        &format!("model={} seed=1 on-reject=mark-only", model_stem()),
    )
    .unwrap();
    assert_eq!(outs.len(), 24);
    let mut gate = library_gate(1);
    let mut rejected = 0;
    for (i, out) in outs.iter().enumerate() {
        let image = image::GrayImage::from_raw(28, 28, out.pixels.clone()).unwrap();
        let report = gate.score(&Frame::new(
            i as u64,
            "gst",
            image::DynamicImage::ImageLuma8(image),
        ));
        let m = report.measures.unwrap();
        assert_eq!(mi(&out.meta), m.mutual_information, "frame {i}");
        assert_eq!(
            out.meta.get::<i32>("class").unwrap(),
            m.predicted_class as i32
        );
        assert_eq!(
            out.meta.get::<String>("label").unwrap(),
            m.predicted_class.to_string(),
            "MNIST's labels are its digits"
        );
        assert_eq!(
            out.meta.get::<String>("seed").unwrap(),
            report.seed.unwrap().to_string()
        );
        let decision = match report.verdict.decision() {
            Decision::Accept => "accept",
            Decision::Reject => "reject",
        };
        assert_eq!(verdict(&out.meta), decision, "frame {i}");
        rejected += (decision == "reject") as usize;
        let line: serde_json::Value =
            serde_json::from_str(&out.meta.get::<String>("report").unwrap()).unwrap();
        assert_eq!(line["frame"], i as u64);
        assert_eq!(line["verdict"], decision);
    }
    let rejects = messages
        .iter()
        .filter(|s| s.name() == gstmcgate::REJECT_MESSAGE)
        .count();
    assert_eq!(rejects, rejected);
}

/// The ball frames under mark-only, and their median MI: a threshold that rejects about half.
fn median_threshold() -> (Vec<Out>, f64) {
    let (marked, _) = run(
        BALL,
        &format!("model={} seed=1 on-reject=mark-only", model_stem()),
    )
    .unwrap();
    let mut mis: Vec<f64> = marked.iter().map(|o| mi(&o.meta)).collect();
    mis.sort_by(f64::total_cmp);
    let threshold = mis[mis.len() / 2];
    (marked, threshold)
}

/// `on-reject` frame by frame, at a threshold that rejects some of the frames.
#[test]
fn on_reject_drops_blacks_out_or_repeats() {
    let (marked, threshold) = median_threshold();
    let props = |policy: &str| {
        format!(
            "model={} seed=1 threshold={threshold} on-reject={policy}",
            model_stem()
        )
    };
    let (all, messages) = run(BALL, &props("mark-only")).unwrap();
    let rejected: Vec<bool> = all.iter().map(|o| verdict(&o.meta) == "reject").collect();
    let count = rejected.iter().filter(|&&r| r).count();
    assert!(count > 0 && count < all.len(), "{count} of {}", all.len());
    if count >= 5 {
        // 5 of the last 20 frames rejected: the alarm, once the fifth comes.
        assert!(messages
            .iter()
            .any(|s| s.name() == gstmcgate::ALARM_MESSAGE));
    }
    // Unchanged frames under mark-only: the input itself.
    for (a, b) in all.iter().zip(&marked) {
        assert_eq!(a.pixels, b.pixels);
    }

    let (dropped, _) = run(BALL, &props("drop")).unwrap();
    assert_eq!(dropped.len(), all.len() - count);
    assert!(dropped.iter().all(|o| verdict(&o.meta) == "accept"));

    let (black, _) = run(BALL, &props("black")).unwrap();
    let (repeat, _) = run(BALL, &props("repeat")).unwrap();
    let mut last_accepted: Option<&Vec<u8>> = None;
    for (i, &r) in rejected.iter().enumerate() {
        assert_eq!(verdict(&black[i].meta) == "reject", r, "frame {i}");
        if r {
            assert!(black[i].pixels.iter().all(|&p| p == 0), "frame {i}");
            match last_accepted {
                Some(last) => assert_eq!(&repeat[i].pixels, last, "frame {i}"),
                None => assert!(repeat[i].pixels.iter().all(|&p| p == 0)),
            }
        } else {
            assert_eq!(black[i].pixels, all[i].pixels, "frame {i}");
            assert_eq!(repeat[i].pixels, all[i].pixels, "frame {i}");
            last_accepted = Some(&all[i].pixels);
        }
    }
}

/// `jobs` pipelines the frames over threads: the same buffers, in the same order, with the
/// same verdicts and bytes under every policy, and every frame out by the end of the stream.
#[test]
fn several_jobs_give_the_same_frames_in_order() {
    let (_, threshold) = median_threshold();
    for policy in ["mark-only", "drop", "repeat"] {
        let props = |jobs: u32| {
            format!(
                "model={} seed=1 threshold={threshold} on-reject={policy} jobs={jobs}",
                model_stem()
            )
        };
        let (one, one_messages) = run(BALL, &props(1)).unwrap();
        for jobs in [2, 3] {
            let (many, many_messages) = run(BALL, &props(jobs)).unwrap();
            assert_eq!(many.len(), one.len(), "{policy}, jobs={jobs}");
            for (i, (a, b)) in one.iter().zip(&many).enumerate() {
                assert_eq!(a.pixels, b.pixels, "{policy}, jobs={jobs}, buffer {i}");
                assert_eq!(
                    mi(&a.meta),
                    mi(&b.meta),
                    "{policy}, jobs={jobs}, buffer {i}"
                );
                assert_eq!(verdict(&a.meta), verdict(&b.meta));
                let frame = |o: &Out| {
                    serde_json::from_str::<serde_json::Value>(
                        &o.meta.get::<String>("report").unwrap(),
                    )
                    .unwrap()["frame"]
                        .clone()
                };
                assert_eq!(frame(a), frame(b), "{policy}, jobs={jobs}, buffer {i}");
            }
            let names = |m: &[gst::Structure]| -> Vec<String> {
                m.iter().map(|s| s.name().to_string()).collect()
            };
            assert_eq!(names(&one_messages), names(&many_messages));
        }
    }
}

/// A width whose rows GStreamer pads (30 → stride 32) and BGR frames give the verdicts of
/// the same frames unpadded and in RGB.
#[test]
fn padded_strides_and_bgr_are_read_as_the_frame() {
    let source = |format: &str, width: u32| {
        format!("videotestsrc num-buffers=6 pattern=smpte ! video/x-raw,format={format},width={width},height=28")
    };
    let props = format!("model={} seed=3 on-reject=mark-only", model_stem());
    let (gray, _) = run(&source("GRAY8", 30), &props).unwrap();
    let mut gate = library_gate(3);
    for (i, out) in gray.iter().enumerate() {
        assert_eq!(
            (out.pixels.len(), out.stride),
            (30 * 28, 32),
            "rows padded to 32"
        );
        let image = image::GrayImage::from_raw(30, 28, out.pixels.clone()).unwrap();
        let report = gate.score(&Frame::new(
            i as u64,
            "gst",
            image::DynamicImage::ImageLuma8(image),
        ));
        assert_eq!(mi(&out.meta), report.measures.unwrap().mutual_information);
    }
    let (rgb, _) = run(&source("RGB", 30), &props).unwrap();
    let (bgr, _) = run(&source("BGR", 30), &props).unwrap();
    assert_eq!(rgb.len(), 6);
    for (a, b) in rgb.iter().zip(&bgr) {
        assert_eq!(mi(&a.meta), mi(&b.meta));
        assert_eq!(verdict(&a.meta), verdict(&b.meta));
    }
}

/// A copy of models/mnist with tamper checks set on the 50 clean digits of bundles/mnist (as
/// `mcgate calibrate --tamper` sets them): its frozen check rejects the 30th identical frame.
fn tamper_copy(dir: &std::path::Path) -> String {
    use mcgate::calibrate;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for ext in ["onnx", "card.json"] {
        std::fs::copy(
            root.join(format!("models/mnist.{ext}")),
            dir.join(format!("m.{ext}")),
        )
        .unwrap();
    }
    let stem = dir.join("m");
    let model = Model::load_from(&stem).unwrap();
    let opts = calibrate::Options {
        fpr: 0.1,
        samples: model.card.default_samples,
        seed: 3,
        jobs: 1,
        tamper: true,
        signals: vec![],
        rule: mcgate::contract::card::Fusion::Bonferroni,
        holdout: 0.0,
    };
    let frames = mcgate::input::frame::Files::new(&[root.join("bundles/mnist/clean")]);
    let calibrated = calibrate::calibrate(&model, frames, &opts).unwrap();
    let card = calibrate::calibrated_card(&model.card, &calibrated, &opts, "2026-12-06".into());
    calibrate::write_card(&stem, &card).unwrap();
    stem.display().to_string()
}

/// The stream's rules are the library's, as `mcgate gate` applies them: a frozen camera (a
/// still pattern the MI threshold accepts) is rejected from its 30th identical frame on, with
/// the tamper event and the alarm the session would raise.
#[test]
fn a_frozen_camera_is_rejected_as_the_gate_rejects_it() {
    let dir = tempfile::tempdir().unwrap();
    let stem = tamper_copy(dir.path());
    let (outs, messages) = run(
        "videotestsrc num-buffers=35 pattern=pinwheel ! video/x-raw,format=GRAY8,width=28,height=28",
        &format!("model={stem} seed=1 threshold=2.2 on-reject=mark-only"),
    )
    .unwrap();
    assert_eq!(outs.len(), 35);
    for (i, out) in outs.iter().enumerate() {
        let (verdict, reason) = (
            verdict(&out.meta),
            out.meta.get::<String>("reason").unwrap(),
        );
        match i {
            0..=28 => assert_eq!(
                (verdict.as_str(), reason.as_str()),
                ("accept", ""),
                "frame {i}"
            ),
            _ => assert_eq!(
                (verdict.as_str(), reason.as_str()),
                ("reject", "tamper_frozen"),
                "frame {i}"
            ),
        }
    }
    let line: serde_json::Value =
        serde_json::from_str(&outs[29].meta.get::<String>("report").unwrap()).unwrap();
    assert_eq!(line["tamper_event"], "frozen");
    assert_eq!(
        messages
            .iter()
            .filter(|s| s.name() == gstmcgate::REJECT_MESSAGE)
            .count(),
        6
    );
}

/// A model that cannot be loaded stops the pipeline at its start with one error naming it.
#[test]
fn a_bad_model_path_fails_the_state_change() {
    let err = run(BALL, "model=/no/such/model").err().unwrap();
    assert!(err.contains("/no/such/model.card.json"), "{err}");
    let err = run(BALL, "").err().unwrap();
    assert!(err.contains("no model set"), "{err}");
}

/// The `mqtt` property publishes the events `gate --mqtt` does (here: a run of rejects
/// starting at the first frame, and `available` online then offline), on a real mosquitto.
#[test]
fn the_mqtt_property_publishes_the_gates_events() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    use std::time::{Duration, Instant};
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let program = match std::path::Path::new("/usr/sbin/mosquitto").exists() {
        true => "/usr/sbin/mosquitto",
        false => "mosquitto",
    };
    let mut broker = std::process::Command::new(program)
        .args(["-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto (the test command installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (client, mut connection) =
        Client::new(MqttOptions::new("element-test", "127.0.0.1", port), 64);
    client.subscribe("gsttest/#", QoS::AtLeastOnce).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _client = client;
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send(None);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let payload = String::from_utf8_lossy(&p.payload).to_string();
                    if tx.send(Some((p.topic.clone(), payload))).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), None);
    let (outs, _) = run(
        BALL,
        &format!(
            "model={} seed=1 threshold=0.000001 on-reject=mark-only mqtt=mqtt://127.0.0.1:{port}/gsttest camera=porch",
            model_stem()
        ),
    )
    .unwrap();
    assert!(outs.iter().all(|o| verdict(&o.meta) == "reject"));
    let mut seen = vec![];
    while let Ok(Some((topic, payload))) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push((topic, payload));
        if seen.last().map(|(_, p)| p.as_str()) == Some("offline") {
            break;
        }
    }
    broker.kill().unwrap();
    broker.wait().unwrap();
    let events: Vec<serde_json::Value> = seen
        .iter()
        .filter(|(t, _)| t == "gsttest/events")
        .map(|(_, p)| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "new", "{seen:?}");
    assert_eq!(events[0]["after"]["camera"], "porch");
    assert_eq!(events[0]["after"]["start_frame"], 0);
    // 24 rejects: the alarm at the fifth is an update.
    assert!(events
        .iter()
        .any(|e| e["type"] == "update" && e["after"]["alarm"] == true));
    let available: Vec<&str> = seen
        .iter()
        .filter(|(t, _)| t == "gsttest/available")
        .map(|(_, p)| p.as_str())
        .collect();
    assert_eq!(available, ["online", "offline"], "{seen:?}");
}

/// The `metrics` property serves `gate --metrics`' metrics while the pipeline runs, and lets
/// the address go when it stops: the element started again listens there anew.
#[test]
fn the_metrics_property_serves_the_frames_and_frees_the_address_at_stop() {
    use std::io::{Read, Write};
    init();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let scrape = || -> Option<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    };
    for round in 0..2 {
        let description = format!(
            "{BALL} ! mcgate model={} seed=1 on-reject=mark-only metrics=127.0.0.1:{port} \
             ! appsink name=sink sync=false",
            model_stem()
        );
        let pipeline = launch(&description).unwrap();
        let sink = appsink(&pipeline);
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut buffers = 0;
        while sink.pull_sample().is_ok() {
            buffers += 1;
        }
        assert_eq!(buffers, 24);
        // At end of stream, still playing: every frame counted, by verdict.
        let text = scrape().expect("metrics served while the pipeline runs");
        let count = |verdict: &str| -> u64 {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("mcgate_frames_total{{verdict=\"{verdict}\"}} "))
                })
                .map_or(0, |v| v.parse().unwrap())
        };
        assert_eq!(
            count("accept") + count("reject"),
            24,
            "round {round}: {text}"
        );
        pipeline.set_state(gst::State::Null).unwrap();
        // Stopped: nothing listens (and the next round binds the same address at once).
        assert!(scrape().is_none(), "still served after stop");
    }
    // An address it cannot listen on fails the state change, as a bad model does.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let err = run(
        BALL,
        &format!("model={} metrics=127.0.0.1:{port}", model_stem()),
    )
    .err()
    .expect("refused");
    assert!(err.contains("--metrics 127.0.0.1"), "{err}");
}

/// With jobs, the latency query counts the frames held back (jobs − 1 intervals, at least
/// one); with one job it adds nothing. MQTT files without `mqtt` are refused, not ignored.
#[test]
fn jobs_report_their_latency_and_stray_mqtt_files_are_refused() {
    init();
    let latency = |jobs: u32| {
        let description = format!(
            "videotestsrc pattern=ball ! video/x-raw,format=GRAY8,width=28,height=28,framerate=10/1 \
             ! mcgate name=gate model={} seed=1 jobs={jobs} ! fakesink",
            model_stem()
        );
        let pipeline = launch(&description).unwrap();
        pipeline.set_state(gst::State::Paused).unwrap();
        let _ = pipeline.state(gst::ClockTime::from_seconds(10));
        let gate = pipeline.by_name("gate").unwrap();
        let mut q = gst::query::Latency::new();
        assert!(gate.static_pad("src").unwrap().query(&mut q));
        pipeline.set_state(gst::State::Null).unwrap();
        q.result().1
    };
    // videotestsrc itself reports one frame (100 ms at 10/1); the element adds to it.
    let source = latency(1);
    assert_eq!(latency(2) - source, gst::ClockTime::from_mseconds(100));
    assert_eq!(latency(4) - source, gst::ClockTime::from_mseconds(300));

    let err = run(
        BALL,
        &format!("model={} mqtt-credentials=/etc/passwd", model_stem()),
    )
    .err()
    .expect("refused");
    assert!(err.contains("for the mqtt property"), "{err}");
}
