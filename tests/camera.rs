//! The README's camera recipes and the systemd unit, run as written but for the camera: a
//! V4L2 device cannot exist here, so each test swaps the recipe's source for a synthetic one
//! (ffmpeg `lavfi testsrc`, GStreamer `videotestsrc`, an RTSP server on loopback) and checks
//! that the pipeline exits 0, writes one verdict per frame and that the consumer gets one frame
//! per camera frame (`--on-reject black` by default). The GStreamer element's recipes run with
//! the plugin this build made. Needs ffmpeg, GStreamer, mosquitto and the RTSP server's Debian
//! packages, which the README's test command installs.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{free_port, root, Broker};

/// The `sh` block after `<!-- recipe: NAME -->` in the README, continuation lines joined.
fn recipe(name: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let marker = format!("<!-- recipe: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README has no {marker}"))
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("no sh block after {marker}"))
        .0;
    block.replace("\\\n", " ")
}

/// `text` with `from` replaced by `to`; `from` must be there, so the README cannot drift away
/// from what the test runs.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in {text:?}");
    text.replace(from, to)
}

/// A temporary working directory with `models/` linked in (recipes name `models/mnist`) and
/// the built `mcgate` first on `PATH`.
struct Workdir {
    dir: tempfile::TempDir,
    path_var: String,
}

impl Workdir {
    fn new() -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(root().join("models"), dir.path().join("models")).unwrap();
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_mcgate")).parent().unwrap();
        let path_var = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Workdir { dir, path_var }
    }

    /// A work directory whose `models/mnist` is the shipped model with its card's MI
    /// threshold at 0.4 nats, about the median MI of the loopback camera's ball frames (0.37–0.39
    /// over three mask seeds; the shipped 0.1134 accepts 3–8 of 120). The masks are secret per
    /// run, so at the shipped threshold one run in about twenty rejected all 20 frames and the
    /// "both verdicts" check failed by chance; at the median both verdicts come every run.
    fn for_the_ball() -> Workdir {
        Workdir::with_threshold(0.4)
    }

    /// A work directory whose `models/mnist` has its card's MI threshold at `threshold`.
    fn with_threshold(threshold: f64) -> Workdir {
        let work = Workdir::new();
        let models = work.file("models");
        std::fs::remove_file(&models).unwrap();
        std::fs::create_dir(&models).unwrap();
        std::os::unix::fs::symlink(root().join("models/mnist.onnx"), models.join("mnist.onnx"))
            .unwrap();
        let mut card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root().join("models/mnist.card.json")).unwrap())
                .unwrap();
        card["threshold"]["mutual_information"] = threshold.into();
        std::fs::write(
            models.join("mnist.card.json"),
            serde_json::to_string_pretty(&card).unwrap(),
        )
        .unwrap();
        work
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `script` with bash's pipefail (a failing stage fails the test), panicking with
    /// its stderr unless it exits 0; returns its stderr.
    fn run(&self, script: &str, env: &[(&str, String)]) -> String {
        let out = Command::new("bash")
            .args(["-o", "pipefail", "-c", script])
            .current_dir(self.dir.path())
            .env("PATH", &self.path_var)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("runs bash");
        assert!(
            out.status.success(),
            "{script}\nexit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Verdicts (true: accept) of the report lines in `name`.
    fn verdicts(&self, name: &str) -> Vec<bool> {
        std::fs::read_to_string(self.file(name))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["verdict"] == "accept"
            })
            .collect()
    }

    /// Frames in a video file, decoded and counted by ffprobe.
    fn frames_in(&self, name: &str) -> usize {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=nb_read_frames",
                "-of",
                "csv=p=0",
            ])
            .arg(self.file(name))
            .output()
            .expect("ffprobe is installed with ffmpeg");
        // MPEG-TS lists the stream once more under its program: the first line is the count.
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .next()
            .unwrap_or_default()
            .parse()
            .unwrap_or_else(|_| panic!("ffprobe {name}: {text:?}"))
    }
}

/// The stand-in IP camera: `scripts/rtsp_test_server.py` serving `frames` frames; killed on
/// drop.
struct RtspCamera {
    child: Child,
    url: String,
}

impl RtspCamera {
    fn start(frames: usize) -> RtspCamera {
        let port = free_port();
        // Debian's python3: PyGObject and the GStreamer bindings are Debian packages.
        let mut child = Command::new("/usr/bin/python3")
            .arg(root().join("scripts/rtsp_test_server.py"))
            .args([port.to_string(), frames.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("runs the RTSP test server");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert_eq!(first.trim(), "ready", "RTSP test server did not start");
        RtspCamera {
            child,
            url: format!("rtsp://127.0.0.1:{port}/camera"),
        }
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Frames of the loopback camera's moving ball.
const BALL_FRAMES: usize = 20;

/// One verdict per camera frame, some of each (so accepted frames were really passed on), and
/// the consumer got every frame's place.
fn assert_gated(work: &Workdir, report: &str, video: &str, frames: usize, want_both: bool) {
    let verdicts = work.verdicts(report);
    assert_eq!(verdicts.len(), frames, "one verdict line per frame");
    let accepted = verdicts.iter().filter(|&&a| a).count();
    if want_both {
        assert!(
            accepted > 0 && accepted < frames,
            "want both verdicts: {verdicts:?}"
        );
    }
    assert_eq!(
        work.frames_in(video),
        frames,
        "frames reaching the consumer"
    );
}

#[test]
fn v4l2_recipe_runs_with_a_test_source() {
    let work = Workdir::new();
    let script = swap(
        &recipe("v4l2"),
        "-f v4l2 -video_size 640x480 -framerate 10 -i /dev/video0",
        "-f lavfi -i testsrc=size=640x480:rate=10:duration=1.2",
    );
    work.run(&script, &[]);
    // testsrc's colour bars and counter look nothing like a digit: every frame is rejected,
    // and each rejected frame's place still reaches the encoder (black).
    assert_gated(&work, "verdicts.jsonl", "gated.mp4", 12, false);
    assert!(work.verdicts("verdicts.jsonl").iter().all(|&a| !a));
}

#[test]
fn rtsp_recipe_runs_against_a_loopback_rtsp_server() {
    let camera = RtspCamera::start(BALL_FRAMES);
    let work = Workdir::for_the_ball();
    let script = swap(
        &recipe("rtsp"),
        "rtsp://camera.local:554/stream",
        &camera.url,
    );
    work.run(&script, &[]);
    assert_gated(&work, "verdicts.jsonl", "gated.ts", BALL_FRAMES, true);
}

#[test]
fn gstreamer_recipe_runs_with_videotestsrc() {
    let work = Workdir::new();
    // The shipped samples as the camera (the model's 28×28, which the recipe scales to).
    let n = sample_frames(&work);
    let script = swap(
        &recipe("gstreamer"),
        "v4l2src device=/dev/video0",
        &format!(
            "multifilesrc location=frame%02d.png index=0 stop-index={} \
             caps=image/png,framerate=10/1 ! pngdec",
            n - 1
        ),
    );
    work.run(&script, &[]);
    assert_gated(&work, "verdicts.jsonl", "gated.avi", n, true);
}

/// The element's plugin as this build made it, alone in a folder for `GST_PLUGIN_PATH` (the
/// build's own folders hold other shared objects GStreamer would try to load), and a registry
/// of the test's own.
fn plugin_env(work: &Workdir) -> (String, Vec<(&'static str, String)>) {
    let release = Path::new(env!("CARGO_BIN_EXE_mcgate")).parent().unwrap();
    // `cargo test` leaves the cdylib in deps/, `cargo build` in the folder itself: the newer.
    let built = [
        release.join("deps/libgstmcgate.so"),
        release.join("libgstmcgate.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max()
    .map(|(_, p)| p)
    .expect("the element's plugin: cargo build --release -p gst-mcgate");
    let dir = work.file("plugin");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(built, dir.join("libgstmcgate.so")).unwrap();
    let registry = work.file("registry.bin").display().to_string();
    (dir.display().to_string(), vec![("GST_REGISTRY", registry)])
}

/// Decoded frames of `video` that are black (every pixel at most 20: `videoconvert` puts
/// black at 16 of the limited range before `jpegenc`), and all.
fn black_frames(work: &Workdir, video: &str) -> (usize, usize) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(work.file(video))
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-s", "28x28", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success());
    let frames: Vec<&[u8]> = out.stdout.chunks(28 * 28).collect();
    let black = frames.iter().filter(|f| f.iter().all(|&p| p <= 20)).count();
    (black, frames.len())
}

/// The shipped clean and adversarial samples as `frame%02d.png` in `work`: at 28×28 a test
/// pattern is all rejected or all accepted, and the tests want both verdicts. Their count.
fn sample_frames(work: &Workdir) -> usize {
    let mut n = 0;
    for group in ["clean", "adversarial"] {
        let mut files: Vec<_> = std::fs::read_dir(root().join("samples/mnist").join(group))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            std::fs::copy(f, work.file(&format!("frame{n:02}.png"))).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn element_v4l2_recipe_runs_on_the_sample_digits() {
    let work = Workdir::new();
    let n = sample_frames(&work);
    run_element_recipe(
        &work,
        "element-v4l2",
        &[(
            "v4l2src device=/dev/video0",
            format!(
                "multifilesrc location=frame%02d.png index=0 stop-index={} \
                 caps=image/png,framerate=10/1 ! pngdec",
                n - 1
            ),
        )],
        n,
    );
}

#[test]
fn element_rtsp_recipe_runs_against_a_loopback_rtsp_server() {
    let camera = RtspCamera::start(BALL_FRAMES);
    // GStreamer's scaler gives the ball frames other pixels than ffmpeg's: their median MI is
    // about 0.21 here (0.20–0.23 over three mask seeds, against 0.37–0.39 through ffmpeg); at
    // 0.4 a run now and then rejected none of the 20 (once in CI).
    let work = Workdir::with_threshold(0.21);
    let port = free_port();
    let _broker = Broker::start(port);
    run_element_recipe(
        &work,
        "element-rtsp",
        &[
            ("rtsp://camera.local:554/stream", camera.url.clone()),
            (
                "mqtt://127.0.0.1:1883/mcgate",
                format!("mqtt://127.0.0.1:{port}/mcgate"),
            ),
        ],
        BALL_FRAMES,
    );
}

/// Runs the README's element recipe `name` with `swaps` made and the plugin this build made:
/// all `frames` camera frames reach gated.avi, some blacked out and some not.
fn run_element_recipe(work: &Workdir, name: &str, swaps: &[(&str, String)], frames: usize) {
    let (plugin, env) = plugin_env(work);
    let mut script = swap(
        &recipe(name),
        "GST_PLUGIN_PATH=target/release",
        &format!("GST_PLUGIN_PATH={plugin}"),
    );
    for (from, to) in swaps {
        script = swap(&script, from, to);
    }
    work.run(&script, &env);
    let (black, decoded) = black_frames(work, "gated.avi");
    assert_eq!(decoded, frames, "every camera frame reaches the file");
    assert!(
        black > 0 && black < frames,
        "{black} of {frames} blacked out"
    );
}

/// `packaging/mcgate-camera.service` passes `systemd-analyze verify`, and its `ExecStart`
/// command line, with the example environment file's values but for the camera URL, output
/// and metrics port, gates the loopback RTSP camera.
#[test]
fn systemd_unit_verifies_and_its_command_gates_a_stream() {
    let unit = root().join("packaging/mcgate-camera.service");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed (Debian's systemd)");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let text = std::fs::read_to_string(&unit).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/bin/bash -o pipefail -c '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("ExecStart runs one bash -o pipefail -c '…' pipeline");
    // systemd substitutes ${VAR} from the environment file before bash runs; for values
    // without spaces bash's own expansion of the same environment gives the same words.
    let env_text = std::fs::read_to_string(root().join("packaging/mcgate-camera.env")).unwrap();
    let mut env: Vec<(&str, String)> = env_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k, v.to_string())
        })
        .collect();
    for key in [
        "CAMERA_URL",
        "WIDTH",
        "HEIGHT",
        "FPS",
        "MCGATE_MODEL",
        "OUTPUT",
        "METRICS",
    ] {
        assert!(
            exec.contains(&format!("${{{key}}}")),
            "ExecStart does not use {key}"
        );
        assert!(
            env.iter().any(|(k, _)| *k == key),
            "env file does not set {key}"
        );
    }
    let camera = RtspCamera::start(BALL_FRAMES);
    let work = Workdir::for_the_ball();
    let overrides = [
        ("CAMERA_URL", camera.url.clone()),
        (
            "MCGATE_MODEL",
            work.file("models/mnist").display().to_string(),
        ),
        ("OUTPUT", work.file("gated.ts").display().to_string()),
        ("METRICS", format!("127.0.0.1:{}", free_port())),
    ];
    for (key, value) in overrides {
        env.iter_mut().find(|(k, _)| *k == key).unwrap().1 = value;
    }
    // Without --report the verdict lines go to stderr: the journal, under systemd.
    let journal = work.run(exec, &env);
    let lines: Vec<&str> = journal.lines().filter(|l| l.starts_with('{')).collect();
    std::fs::write(work.file("verdicts.jsonl"), lines.join("\n")).unwrap();
    assert_gated(&work, "verdicts.jsonl", "gated.ts", BALL_FRAMES, true);
}
