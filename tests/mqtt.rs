//! `gate --mqtt` against a real mosquitto on loopback (installed by the test command from
//! Debian): a run of rejected frames is one event (`new`, an `update` when the alarm fires,
//! `end` when frames pass again); `available` goes `online`, and `offline` by the last will
//! when the gate is killed; a broker that is not there neither blocks nor fails the gate,
//! and the messages it could not send are counted; TLS with a CA file and credentials from
//! a file reach a broker that demands both, and bad ones are errors in the log, not a
//! stopped gate; a broker that stalls (SIGSTOP) does not hold the frames, and the messages
//! dropped show in the metrics.

mod common;

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    assert_one_line_error, command, free_port, mcgate, mcgate_stdin, root, spawn_mcgate, Broker,
    RAW_MNIST,
};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// Every message on `topics` (topic, payload), as they come.
fn subscribe(port: u16, topics: &str) -> mpsc::Receiver<(String, String)> {
    subscribe_as(port, topics, None)
}

fn subscribe_as(
    port: u16,
    topics: &str,
    credentials: Option<(&str, &str)>,
) -> mpsc::Receiver<(String, String)> {
    let mut options = MqttOptions::new(format!("test-{port}"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password);
    }
    let (client, mut connection) = Client::new(options, 64);
    client.subscribe(topics, QoS::AtLeastOnce).unwrap();
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _client = client;
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let payload = String::from_utf8_lossy(&p.payload).to_string();
                    if tx.send((p.topic.clone(), payload)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    rx
}

fn frame(name: &str) -> String {
    root()
        .join("samples/mnist")
        .join(name)
        .display()
        .to_string()
}

/// A sample digit's raw 28×28 bytes, for frames on stdin.
fn raw(name: &str) -> Vec<u8> {
    image::open(frame(name)).unwrap().to_luma8().into_raw()
}

#[test]
fn a_run_of_rejects_is_one_event_and_the_last_will_says_offline() {
    let port = free_port();
    let _broker = Broker::start(port);
    let messages = subscribe(port, "gatetest/#");
    // Accepted, five rejected (the alarm at the fifth: 5 of 20), accepted again.
    let mut args = vec![
        "gate".to_string(),
        "models/mnist".into(),
        frame("clean/digit_0_3.png"),
    ];
    for name in [
        "ood/checkerboard.png",
        "ood/inverted_digit.png",
        "ood/checkerboard.png",
        "ood/inverted_digit.png",
        "ood/checkerboard.png",
    ] {
        args.push(frame(name));
    }
    args.push(frame("clean/digit_7_0.png"));
    let url = format!("mqtt://127.0.0.1:{port}/gatetest");
    args.extend(["--seed", "1", "--mqtt", &url, "--camera", "door"].map(String::from));
    let out = command().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["verdict"].to_string())
        .collect();
    assert_eq!(verdicts.len(), 7);

    let mut events = vec![];
    let mut available = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.len() < 3 || available.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((topic, payload)) = messages.recv_timeout(left) else {
            break;
        };
        match topic.as_str() {
            "gatetest/events" => {
                events.push(serde_json::from_str::<serde_json::Value>(&payload).unwrap())
            }
            "gatetest/available" => available.push(payload),
            other => panic!("unexpected topic {other}"),
        }
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["new", "update", "end"], "{events:#?}");
    assert_eq!(events[0]["after"]["id"], "door-1");
    assert_eq!(events[0]["after"]["camera"], "door");
    assert_eq!(events[0]["after"]["start_frame"], 1);
    assert_eq!(events[1]["after"]["alarm"], true);
    assert_eq!(events[1]["before"]["alarm"], false);
    let end = &events[2]["after"];
    assert_eq!(
        (end["end_frame"].as_u64(), end["rejected"].as_u64()),
        (Some(6), Some(5))
    );
    assert_eq!(end["ended"], true);
    assert_eq!(end["reasons"], serde_json::json!(["above_threshold"]));
    // The worst frame's signals: its MI again, its entropy; no density in this model.
    assert_eq!(end["worst_signals"]["mi"], end["worst_mi"]);
    assert!(end["worst_signals"]["entropy"].as_f64().unwrap() > 0.0);
    assert!(end["worst_signals"]["log_density"].is_null());
    // Online while it ran, offline when it stopped.
    assert_eq!(available.first().map(String::as_str), Some("online"));
    assert_eq!(available.last().map(String::as_str), Some("offline"));

    // Killed without a word: the broker publishes the last will.
    let mut gate = spawn_mcgate(&[&RAW_MNIST[..], &["--mqtt", &url, "--camera", "door"]].concat());
    let online = messages.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(online, ("gatetest/available".into(), "online".into()));
    gate.kill().unwrap();
    gate.wait().unwrap();
    let will = messages.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(will, ("gatetest/available".into(), "offline".into()));
}

#[test]
fn no_broker_neither_blocks_nor_fails_the_gate_and_drops_are_counted() {
    // Nobody listens on this port: every message waits in the queue, then is dropped.
    let port = free_port();
    let (clean, odd) = (raw("clean/digit_0_3.png"), raw("ood/checkerboard.png"));
    // 100 accepted-rejected pairs: 200 event messages, more than the queue holds.
    let mut stream = vec![];
    for _ in 0..100 {
        stream.extend_from_slice(&clean);
        stream.extend_from_slice(&odd);
    }
    let started = Instant::now();
    let url = format!("mqtt://127.0.0.1:{port}/gone");
    let out = mcgate_stdin(&[&RAW_MNIST[..], &["--mqtt", &url]].concat(), &stream);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 200);
    // The frames did not wait for the broker (a blocked queue would hold them for good).
    assert!(started.elapsed() < Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mqtt: queue full"), "{stderr}");
    assert!(stderr.contains("messages dropped in this run"), "{stderr}");
}

#[test]
fn a_bad_mqtt_url_is_a_one_line_setting_error() {
    let digit = frame("clean/digit_0_3.png");
    for (extra, why) in [
        (
            &["--mqtt", "mqtt://user:secret@127.0.0.1:1883/x"][..],
            "credentials do not go on the command line",
        ),
        (
            &["--mqtt", "mqtt://127.0.0.1:1883/a/#"],
            "without + # or NUL",
        ),
        (
            &[
                "--mqtt",
                "mqtt://127.0.0.1:1883/x",
                "--camera",
                "front/door",
            ],
            "without / + # or NUL",
        ),
    ] {
        let out = mcgate(&[&["gate", "models/mnist", &digit][..], extra].concat());
        assert_one_line_error(&out, 2, why);
    }
}

/// `args` run to completion in `dir`; panics with its stderr when it fails.
fn run_in(dir: &std::path::Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} (the test command installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}.pem`, `{name}.key`) made with openssl in `dir`.
fn make_ca(dir: &std::path::Path, name: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let subject = format!("/CN=mcgate test {name}");
    run_in(
        dir,
        "openssl",
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
            "-keyout", &key, "-out", &pem,
        ],
    );
}

/// A mosquitto that demands TLS (signed by `ca.pem` in `dir`) and a password on `tls`, and
/// the password alone on `plain` (for the test's subscriber); user `gate`, password `s3cret`.
/// `{name}.pem` and `{name}.key` in `dir`, for `subject`, signed by `ca.pem` (for the
/// broker: its address as the subject's alternative name).
fn signed_by_ca(dir: &std::path::Path, name: &str, subject: &str) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    run_in(
        dir,
        "openssl",
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out", &csr,
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run_in(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            &pem,
        ],
    );
}

/// `client_cert`: the TLS listener also demands a client certificate signed by the CA.
fn secure_broker(dir: &std::path::Path, client_cert: bool) -> (Broker, u16, u16) {
    make_ca(dir, "ca");
    signed_by_ca(dir, "server", "/CN=127.0.0.1");
    let passwd = if std::path::Path::new("/usr/bin/mosquitto_passwd").exists() {
        "/usr/bin/mosquitto_passwd"
    } else {
        "mosquitto_passwd"
    };
    run_in(dir, passwd, &["-b", "-c", "passwd", "gate", "s3cret"]);
    let (tls, plain) = (free_port(), free_port());
    let d = dir.display();
    // `user root`: as root, mosquitto would drop to user `mosquitto`, who cannot read the
    // test's private directory (as anyone else the line does nothing).
    let config = format!(
        "user root\nper_listener_settings false\nallow_anonymous false\n\
         password_file {d}/passwd\n\
         listener {tls} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
         require_certificate {client_cert}\n\
         listener {plain} 127.0.0.1\n"
    );
    std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
    (
        Broker::with_config(&dir.join("mosquitto.conf"), plain),
        tls,
        plain,
    )
}

fn secret_file(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

/// A rejected frame then an accepted one through `gate … --mqtt url extra`: exit 0, two lines;
/// its stderr.
fn gate_two_frames(url: &str, extra: &[&str]) -> String {
    let frames = [frame("ood/checkerboard.png"), frame("clean/digit_0_3.png")];
    let mut args = vec![
        "gate",
        "models/mnist",
        &frames[0],
        &frames[1],
        "--mqtt",
        url,
    ];
    args.extend_from_slice(extra);
    let out = mcgate(&args);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    common::stderr(&out)
}

/// What one run delivered on `secure/#`: `available` payloads and event types, in order (at
/// most four, within 10 s).
fn delivered(messages: &mpsc::Receiver<(String, String)>) -> Vec<String> {
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((topic, payload)) = messages.recv_timeout(left) else {
            break;
        };
        seen.push(match topic.as_str() {
            "secure/events" => serde_json::from_str::<serde_json::Value>(&payload).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string(),
            _ => payload,
        });
    }
    seen
}

#[test]
fn tls_and_credentials_from_files_reach_the_broker_and_bad_ones_are_errors_not_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, tls, plain) = secure_broker(dir.path(), false);
    let messages = subscribe_as(plain, "secure/#", Some(("gate", "s3cret")));
    let good = secret_file(dir.path(), "good", "gate:s3cret\n", 0o600);
    let ca = dir.path().join("ca.pem").display().to_string();
    let url = format!("mqtts://127.0.0.1:{tls}/secure");
    let gate = |extra: &[&str]| gate_two_frames(&url, extra);
    let delivered = || delivered(&messages);

    // The right CA and credentials: online, the event, offline.
    gate(&["--mqtt-ca", &ca, "--mqtt-credentials", &good]);
    assert_eq!(delivered(), ["online", "new", "end", "offline"]);

    // A wrong password: every frame gated, exit 0, the refusal an error in the log.
    let bad = secret_file(dir.path(), "bad", "gate:wrong\n", 0o600);
    let log = gate(&["--mqtt-ca", &ca, "--mqtt-credentials", &bad]);
    assert!(log.contains("the broker refused the connection"), "{log}");
    // A broker certificate that the CA given did not sign: refused by the gate.
    make_ca(dir.path(), "other");
    let other = dir.path().join("other.pem").display().to_string();
    let log = gate(&["--mqtt-ca", &other, "--mqtt-credentials", &good]);
    assert!(log.contains("invalid peer certificate"), "{log}");
    // No credentials: the broker refuses (it allows no anonymous clients).
    let log = gate(&["--mqtt-ca", &ca]);
    assert!(log.contains("the broker refused the connection"), "{log}");
    // Nothing from the refused runs reached the subscriber (each waited 2 s at its stop).
    let leaked: Vec<_> = messages.try_iter().collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    // Credentials others can read: said, not refused.
    let loose = secret_file(dir.path(), "loose", "gate:s3cret\n", 0o644);
    let log = gate(&["--mqtt-ca", &ca, "--mqtt-credentials", &loose]);
    assert!(log.contains("can be read by other users"), "{log}");
    assert_eq!(delivered(), ["online", "new", "end", "offline"]);
}

/// A broker that demands a client certificate: refused without one (a TLS error in the log,
/// the frames gated), reached with `--mqtt-cert` and `--mqtt-key`.
#[test]
fn a_broker_that_asks_for_a_client_certificate_gets_the_one_in_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, tls, plain) = secure_broker(dir.path(), true);
    signed_by_ca(dir.path(), "client", "/CN=gate");
    let messages = subscribe_as(plain, "secure/#", Some(("gate", "s3cret")));
    let good = secret_file(dir.path(), "good", "gate:s3cret\n", 0o600);
    let path = |name: &str| dir.path().join(name).display().to_string();
    let url = format!("mqtts://127.0.0.1:{tls}/secure");
    let with = ["--mqtt-ca", &path("ca.pem"), "--mqtt-credentials", &good];
    let log = gate_two_frames(&url, &with);
    assert!(log.contains("mqtt: TLS"), "{log}");
    assert!(messages.try_iter().next().is_none());
    let (cert, key) = (path("client.pem"), path("client.key"));
    let log = gate_two_frames(
        &url,
        &[&with[..], &["--mqtt-cert", &cert, "--mqtt-key", &key]].concat(),
    );
    assert!(!log.contains("mqtt: TLS"), "{log}");
    assert_eq!(delivered(&messages), ["online", "new", "end", "offline"]);
}

#[test]
fn a_bad_credentials_or_ca_file_is_a_one_line_setting_error() {
    let dir = tempfile::tempdir().unwrap();
    let digit = frame("clean/digit_0_3.png");
    let no_colon = secret_file(dir.path(), "c", "just-a-password\n", 0o600);
    let not_pem = secret_file(dir.path(), "ca", "not a certificate\n", 0o600);
    for (extra, why) in [
        (
            &[
                "--mqtt",
                "mqtt://127.0.0.1:1883/x",
                "--mqtt-credentials",
                &no_colon,
            ][..],
            "expected one line USER:PASSWORD",
        ),
        (
            &[
                "--mqtt",
                "mqtt://127.0.0.1:1883/x",
                "--mqtt-credentials",
                "/nonexistent",
            ],
            "/nonexistent",
        ),
        (
            &["--mqtt", "mqtts://127.0.0.1:8883/x", "--mqtt-ca", &not_pem],
            "no PEM certificate",
        ),
        (
            &["--mqtt", "mqtt://127.0.0.1:1883/x", "--mqtt-ca", &not_pem],
            "are for mqtts://",
        ),
    ] {
        let out = mcgate(&[&["gate", "models/mnist", &digit][..], extra].concat());
        assert_one_line_error(&out, 2, why);
    }
}

/// A broker that stops reading (SIGSTOP: connected, silent) fills the client's in-flight window
/// and then the queue; the frames go on at their pace, and `/metrics` counts the drops.
#[test]
fn a_stalled_broker_does_not_hold_the_frames_and_drops_show_in_metrics() {
    // 600 messages, 100 in flight and 64 queued: 436 dropped while the connection holds; a
    // keep-alive failure on a slow run empties the queue once more (about 64 fewer).
    broker_trouble(
        |broker| {
            broker.signal(libc::SIGSTOP);
            Some(broker)
        },
        300.0,
    );
}

/// A broker that goes away once the gate is connected (killed): the client retries in the
/// background, the frames go on, the queue fills and `/metrics` counts the drops.
#[test]
fn a_broker_that_goes_away_does_not_hold_the_frames_and_drops_show_in_metrics() {
    // 600 messages; what was in flight is lost at the failed reconnect, the queue's 64 wait.
    broker_trouble(
        |broker| {
            drop(broker);
            None
        },
        600.0 - 100.0 - 64.0 - 64.0,
    );
}

/// A gate with `--mqtt` and `--metrics` connects; `trouble` happens to its broker; 600 frames
/// (300 accepted-rejected pairs: 600 event messages) are all gated within a minute, at least
/// `min_dropped` messages are counted dropped in `/metrics`, and the gate exits 0.
fn broker_trouble(trouble: impl FnOnce(Broker) -> Option<Broker>, min_dropped: f64) {
    use std::io::{BufRead, Read, Write};
    let port = free_port();
    let broker = Broker::start(port);
    let metrics = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let url = format!("mqtt://127.0.0.1:{port}/stall");
    let mut gate = spawn_mcgate(
        &[
            &RAW_MNIST[..],
            &["--mqtt", &url, "--metrics", &metrics_addr],
        ]
        .concat(),
    );
    let scrape = || -> Option<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", metrics)).ok()?;
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let value = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let eventually = |name: &str, test: &dyn Fn(f64) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = scrape().and_then(|t| value(&t, name)) {
                if test(v) {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "{name} never as expected");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    eventually("mcgate_mqtt_connected", &|v| v == 1.0);

    // Kept (stopped) to the end, or gone.
    let _broker = trouble(broker);
    let (clean, odd) = (raw("clean/digit_0_3.png"), raw("ood/checkerboard.png"));
    let mut stdin = gate.stdin.take().unwrap();
    let stdout = gate.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    for _ in 0..300 {
        stdin.write_all(&clean).unwrap();
        stdin.write_all(&odd).unwrap();
    }
    stdin.flush().unwrap();
    for n in 0..600 {
        lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the gate stopped after {n} frames"));
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let dropped = eventually("mcgate_mqtt_dropped_total", &|v| v >= min_dropped);
    assert!(dropped <= 600.0, "{dropped}");
    drop(stdin);
    let mut stderr = String::new();
    gate.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = gate.wait().unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("messages dropped in this run"), "{stderr}");
}
