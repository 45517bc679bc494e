//! `gate --mqtt` against a real mosquitto on loopback (installed by the test command from
//! Debian): a run of rejected frames is one event (`new`, an `update` when the alarm fires,
//! `end` when frames pass again); `available` goes `online`, and `offline` by the last will
//! when the gate is killed; a broker that is not there neither blocks nor fails the gate,
//! and the messages it could not send are counted.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    assert_one_line_error, command, free_port, mcgate, mcgate_stdin, root, spawn_mcgate, RAW_MNIST,
};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// A mosquitto on `127.0.0.1:port`, stopped when dropped.
struct Broker(Child);

impl Broker {
    fn start(port: u16) -> Broker {
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let program = match std::path::Path::new("/usr/sbin/mosquitto").exists() {
            true => "/usr/sbin/mosquitto",
            false => "mosquitto",
        };
        let child = Command::new(program)
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian: mosquitto; the test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker(child)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every message on `topics` (topic, payload), as they come.
fn subscribe(port: u16, topics: &str) -> mpsc::Receiver<(String, String)> {
    let mut options = MqttOptions::new(format!("test-{port}"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
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
    let clean = image::open(frame("clean/digit_0_3.png"))
        .unwrap()
        .to_luma8()
        .into_raw();
    let odd = image::open(frame("ood/checkerboard.png"))
        .unwrap()
        .to_luma8()
        .into_raw();
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
            "a name without / + or #",
        ),
    ] {
        let out = mcgate(&[&["gate", "models/mnist", &digit][..], extra].concat());
        assert_one_line_error(&out, 2, why);
    }
}
