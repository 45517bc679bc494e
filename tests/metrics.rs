//! `gate --metrics`: scraped by a real Prometheus server (Debian's `prometheus`, which the
//! README's test command installs) started here on loopback, and linted by `promtool check
//! metrics`; a port already in use is a one-line error at start.
#![cfg(feature = "metrics")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The body of `GET path` on `127.0.0.1:port`, or `None` if nothing answers yet.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Polls `f` every 200 ms for up to a minute (the servers start and scrape on their own time).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_real_prometheus_scrapes_the_gate() {
    let (gate_port, prom_port) = (free_port(), free_port());
    let metrics_addr = format!("127.0.0.1:{gate_port}");
    let mut args = RAW_MNIST.to_vec();
    args.extend(["--metrics", &metrics_addr]);
    let mut gate = spawn_mcgate(&args);
    // 6 blank frames (accepted) and 6 of noise (rejected above the threshold); stdin stays
    // open, as a camera's would.
    let mut frames = vec![0u8; 6 * 784];
    frames.extend((0..6 * 784).map(|i| (i * 7919 % 251) as u8));
    let mut stdin = gate.stdin.take().unwrap();
    stdin.write_all(&frames).unwrap();
    stdin.flush().unwrap();
    let mut lines = BufReader::new(gate.stdout.take().unwrap()).lines();
    let verdicts: Vec<serde_json::Value> = (0..12)
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    let rejected = verdicts.iter().filter(|v| v["verdict"] == "reject").count();

    let text = eventually("the gate's /metrics", || get(gate_port, "/metrics"));
    assert!(
        text.contains("mcgate_frames_total{verdict=\"accept\"}"),
        "{text}"
    );
    assert!(text.contains("mcgate_model_info{name=\"mnist\""), "{text}");
    // A query (a Prometheus job's `params`) is the same page (third outside probe: was 404).
    let queried = get(gate_port, "/metrics?x=1").expect("/metrics?x=1 answers 200");
    assert!(queried.contains("mcgate_model_info"), "{queried}");
    // HEAD: GET's head, its Content-Length included, and no body (was: Content-Length 0).
    let mut stream = TcpStream::connect(("127.0.0.1", gate_port)).unwrap();
    write!(stream, "HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut head = String::new();
    stream.read_to_string(&mut head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    assert!(
        head.ends_with("\r\n\r\n"),
        "a body came with HEAD: {head:?}"
    );
    // The page grows only if frames arrive between the two requests, and none do.
    assert_eq!(length, get(gate_port, "/metrics").unwrap().len());
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (the README's test command installs prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let lint = promtool.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mcgate\n    \
             static_configs:\n      - targets: ['127.0.0.1:{gate_port}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (the README's test command installs it)");
    // What Prometheus stored from its scrapes, through its HTTP API.
    let query = |q: &str| -> Option<f64> {
        let body = get(prom_port, &format!("/api/v1/query?query={q}"))?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let total = eventually("Prometheus to scrape 12 frames", || {
        query("sum(mcgate_frames_total)").filter(|&v| v == 12.0)
    });
    let rejects = eventually("the rejects by reason", || {
        query("sum(mcgate_rejects_total)")
    });
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    drop(stdin);
    assert_eq!(gate.wait().unwrap().code(), Some(0));
    assert_eq!(total, 12.0);
    assert_eq!(rejects, rejected as f64);
    assert!(rejected > 0, "the noise frames should be rejected");
}

#[test]
fn a_metrics_port_in_use_is_a_one_line_error_at_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = mcgate(&["gate", "models/mnist", "samples/mnist/", "--metrics", &addr]);
    assert_one_line_error(&out, 5, &format!("cannot write --metrics {addr}"));
    assert!(
        out.stdout.is_empty(),
        "frames were gated without the metrics"
    );
}

/// The gate's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// docs/RELIABILITY.md row 62: a request line without an end (was buffered without limit: a
/// 200 MB line took the gate from 37 to 247 MB) and a client that pipelines requests and never
/// reads (held every other scrape) neither grow the gate nor keep others from their answer.
#[test]
fn hostile_metrics_clients_cannot_grow_the_gate_or_hold_the_server() {
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut args = RAW_MNIST.to_vec();
    args.extend(["--metrics", &metrics_addr]);
    let mut gate = spawn_mcgate(&args);
    let stdin = gate.stdin.take().unwrap();
    eventually("the metrics server", || get(port, "/metrics"));
    let before = rss_kib(gate.id());

    // 64 MB of request line, no CRLF: answered 431 after 8 KiB and closed.
    let mut endless = TcpStream::connect(("127.0.0.1", port)).unwrap();
    endless
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let chunk = vec![b'A'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..64 {
        match endless.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break, // the server closed: it read no further
        }
    }
    let mut answer = String::new();
    endless
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = endless.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 431") || sent < 64 << 20,
        "sent {sent} bytes, answer {answer:?}"
    );

    // Thousands of pipelined requests, never read: another scraper still gets its answer.
    let mut greedy = TcpStream::connect(("127.0.0.1", port)).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5000);
    let _ = greedy.write_all(requests.as_bytes());
    let start = Instant::now();
    let mut other = TcpStream::connect(("127.0.0.1", port)).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    write!(other, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    other
        .read_to_string(&mut body)
        .expect("a second client is answered within 3 s");
    assert!(body.contains("mcgate_frames_total") || body.contains("mcgate_threshold"));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    let after = rss_kib(gate.id());
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    drop((endless, greedy, stdin));
    assert_eq!(gate.wait().unwrap().code(), Some(4), "no frames: exit 4");
}
