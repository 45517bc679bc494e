//! Prometheus metrics for a fleet's monitoring (`gate --metrics ADDR`, cargo feature
//! `metrics`): frames by verdict, rejects by reason, alarms, tamper events by check, MI and
//! latency histograms, the
//! threshold in force, and the model's name and ONNX hash. Served over HTTP at `/metrics` in
//! Prometheus's text format.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter,
    IntCounterVec, Opts, Registry, TextEncoder,
};

use super::OutputError;
use crate::contract::card::ModelCard;
use crate::score::report::Report;

/// The gate's metrics, updated per frame by the session and read by the HTTP server.
pub struct Metrics {
    registry: Registry,
    frames: IntCounterVec,
    rejects: IntCounterVec,
    alarms: IntCounter,
    tamper_events: IntCounterVec,
    mutual_information: Histogram,
    latency: Histogram,
    threshold: Gauge,
    /// The MQTT sink's counters, once one publishes beside the metrics.
    #[cfg(feature = "mqtt")]
    mqtt: std::sync::OnceLock<MqttMetrics>,
}

/// `mcgate_mqtt_*`: read from the sink's shared counters when scraped.
#[cfg(feature = "mqtt")]
struct MqttMetrics {
    stats: Arc<crate::output::mqtt::MqttStats>,
    dropped: IntCounter,
    refused: IntCounter,
    connected: prometheus::IntGauge,
    sync: std::sync::Mutex<()>,
}

impl Metrics {
    /// Metrics for a run of `card`'s model.
    pub fn new(card: &ModelCard) -> Metrics {
        Self::build(card).expect("the metric definitions are valid")
    }

    fn build(card: &ModelCard) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let frames = IntCounterVec::new(
            Opts::new("mcgate_frames_total", "Frames gated, by verdict"),
            &["verdict"],
        )?;
        let rejects = IntCounterVec::new(
            Opts::new("mcgate_rejects_total", "Rejected frames, by reason"),
            &["reason"],
        )?;
        let alarms = IntCounter::new(
            "mcgate_alarms_total",
            "Alarms raised (K of the last N frames rejected)",
        )?;
        let tamper_events = IntCounterVec::new(
            Opts::new(
                "mcgate_tamper_events_total",
                "Tamper events (runs of frames failing one tamper check), by check",
            ),
            &["check"],
        )?;
        // 0.001 to ~4 nats: ln(10) = 2.3 is the most MI 10 classes can have.
        let mutual_information = Histogram::with_opts(
            HistogramOpts::new(
                "mcgate_mutual_information",
                "Mutual information of the scored frames, nats",
            )
            .buckets(exponential_buckets(0.001, 2.0, 13)?),
        )?;
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "mcgate_latency_seconds",
                "Preprocess, inference and measures per scored frame",
            )
            .buckets(exponential_buckets(0.0001, 2.0, 16)?),
        )?;
        let threshold = Gauge::new("mcgate_threshold", "The MI threshold in force, nats")?;
        let model = GaugeVec::new(
            Opts::new("mcgate_model_info", "The model gated with (always 1)"),
            &["name", "onnx_sha256"],
        )?;
        model
            .with_label_values(&[card.name.as_str(), card.onnx_sha256.as_str()])
            .set(1.0);
        registry.register(Box::new(frames.clone()))?;
        registry.register(Box::new(rejects.clone()))?;
        registry.register(Box::new(alarms.clone()))?;
        registry.register(Box::new(tamper_events.clone()))?;
        registry.register(Box::new(mutual_information.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(threshold.clone()))?;
        registry.register(Box::new(model))?;
        Ok(Metrics {
            registry,
            frames,
            rejects,
            alarms,
            tamper_events,
            mutual_information,
            latency,
            threshold,
            #[cfg(feature = "mqtt")]
            mqtt: std::sync::OnceLock::new(),
        })
    }

    /// Adds the MQTT sink's counters: messages dropped, connections refused, connected now.
    #[cfg(feature = "mqtt")]
    pub fn watch_mqtt(&self, stats: Arc<crate::output::mqtt::MqttStats>) {
        let make = || -> prometheus::Result<MqttMetrics> {
            let m = MqttMetrics {
                stats,
                dropped: IntCounter::new(
                    "mcgate_mqtt_dropped_total",
                    "MQTT messages dropped: the queue was full (broker gone, slow or refusing)",
                )?,
                refused: IntCounter::new(
                    "mcgate_mqtt_refused_total",
                    "MQTT connections the broker refused (credentials, authorisation)",
                )?,
                connected: prometheus::IntGauge::new(
                    "mcgate_mqtt_connected",
                    "1 while the MQTT broker holds the connection",
                )?,
                sync: std::sync::Mutex::new(()),
            };
            self.registry.register(Box::new(m.dropped.clone()))?;
            self.registry.register(Box::new(m.refused.clone()))?;
            self.registry.register(Box::new(m.connected.clone()))?;
            Ok(m)
        };
        if self.mqtt.get().is_none() {
            let _ = self
                .mqtt
                .set(make().expect("the metric definitions are valid"));
        }
    }

    /// Counts one frame's report.
    pub fn record(&self, r: &Report) {
        let verdict = match r.verdict.reason() {
            None => "accept",
            Some(reason) => {
                self.rejects.with_label_values(&[reason.kind()]).inc();
                "reject"
            }
        };
        self.frames.with_label_values(&[verdict]).inc();
        if r.alarm {
            self.alarms.inc();
        }
        if let Some(kind) = r.tamper_event {
            self.tamper_events.with_label_values(&[kind.name()]).inc();
        }
        if let Some(m) = r.measures {
            self.mutual_information.observe(m.mutual_information);
            self.latency.observe(r.latency.as_secs_f64());
        }
        self.threshold.set(r.threshold);
    }

    /// The metrics in Prometheus's text format.
    pub fn text(&self) -> String {
        #[cfg(feature = "mqtt")]
        if let Some(m) = self.mqtt.get() {
            // One scrape at a time here: two reading the same difference would both add it.
            let _one = m.sync.lock().unwrap_or_else(|p| p.into_inner());
            // Counters only go up: add what the sink counted since the last scrape.
            m.dropped
                .inc_by(m.stats.dropped().saturating_sub(m.dropped.get()));
            m.refused
                .inc_by(m.stats.refused().saturating_sub(m.refused.get()));
            m.connected.set(m.stats.connected() as i64);
        }
        let mut text = vec![];
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("writing to memory cannot fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }

    /// Serves `/metrics` on `addr` from a thread until the returned [`Served`] is dropped;
    /// fails at once if it cannot listen. Each
    /// client gets its own thread (at most [`MAX_CLIENTS`] at once; more are closed unanswered),
    /// one answer, and [`CLIENT_DEADLINE`] in all: a request head over [`MAX_REQUEST_BYTES`],
    /// a client that sends slowly or never reads, cannot hold the server or grow the gate.
    pub fn serve(self: &Arc<Self>, addr: &str) -> Result<Served, OutputError> {
        let listener = TcpListener::bind(addr).map_err(|e| OutputError {
            what: format!("--metrics {addr}"),
            cause: e.to_string(),
        })?;
        let local = listener.local_addr().map_err(|e| OutputError {
            what: format!("--metrics {addr}"),
            cause: e.to_string(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let metrics = self.clone();
        let clients = Arc::new(AtomicUsize::new(0));
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break; // the listener closes with the thread
                }
                let Ok(stream) = stream else {
                    // Out of descriptors, say: wait instead of spinning on the error.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::SeqCst);
                    continue; // dropped: closed
                }
                let (metrics, clients) = (metrics.clone(), clients.clone());
                std::thread::spawn(move || {
                    // A scraper that hung up or stalled is its own problem, not the gate's.
                    let _ = metrics.answer(stream);
                    clients.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(Served {
            metrics: self.clone(),
            local,
            stop,
            accept: Some(accept),
        })
    }

    /// Reads one request head and answers it: `GET /metrics` (or `HEAD`), 404 elsewhere, 405
    /// for other methods, 431 for a head too large; then closes.
    fn answer(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let deadline = Instant::now() + CLIENT_DEADLINE;
        let left = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(std::io::ErrorKind::TimedOut)
        };
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        let head_end = loop {
            if let Some(end) = find(&head, b"\r\n\r\n").or_else(|| find(&head, b"\n\n")) {
                break end;
            }
            if head.len() > MAX_REQUEST_BYTES {
                return respond(
                    &mut stream,
                    "431 Request Header Fields Too Large",
                    "",
                    true,
                    left()?,
                );
            }
            stream.set_read_timeout(Some(left()?))?;
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        };
        let line = head[..head_end]
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        let mut words = line.split(|&b| b == b' ');
        let (method, target) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        // The query (Prometheus sends a job's `params` as one) does not change the answer.
        let path = target.split(|&b| b == b'?').next().unwrap_or_default();
        let (status, body) = match (method, path) {
            (b"GET" | b"HEAD", b"/metrics") => ("200 OK", self.text()),
            (b"GET" | b"HEAD", _) => ("404 Not Found", "mcgate serves /metrics\n".to_string()),
            _ => (
                "405 Method Not Allowed",
                "mcgate serves GET /metrics\n".to_string(),
            ),
        };
        // HEAD: the head GET would get, Content-Length included, and no body (RFC 9110 §9.3.2;
        // was `Content-Length: 0`, third outside probe).
        respond(&mut stream, status, &body, method != b"HEAD", left()?)
    }
}

/// Most bytes of a request head (request line and headers); Prometheus sends ~300.
pub const MAX_REQUEST_BYTES: usize = 8 << 10;
/// Time a client has to send its request and read the answer.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// Clients served at once.
pub const MAX_CLIENTS: usize = 16;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    send_body: bool,
    left: Duration,
) -> std::io::Result<()> {
    stream.set_write_timeout(Some(left))?;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        TextEncoder::new().format_type(),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if send_body {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// Metrics being served: the sink that counts each frame. Dropping it closes the listener
/// (an element stopped and started again listens anew on the same address).
pub struct Served {
    metrics: Arc<Metrics>,
    local: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// The metrics served.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag, and wait until it has closed the
        // listener: whoever binds the address next finds it free.
        if TcpStream::connect_timeout(&self.local, Duration::from_secs(1)).is_ok() {
            if let Some(accept) = self.accept.take() {
                let _ = accept.join();
            }
        }
    }
}

impl super::Sink for Served {
    fn observe(
        &mut self,
        report: &Report,
        _: Option<&crate::input::frame::Frame>,
    ) -> Result<(), OutputError> {
        self.metrics.record(report);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::card::TamperKind;
    use crate::score::verdict::{RejectReason, Verdict};

    /// The MQTT sink's counters, read at each scrape; counters only go up.
    #[cfg(feature = "mqtt")]
    #[test]
    fn the_mqtt_counters_show_at_each_scrape() {
        let card: ModelCard =
            serde_json::from_slice(include_bytes!("../../models/mnist.card.json")).unwrap();
        let metrics = Metrics::new(&card);
        let stats = Arc::new(crate::output::mqtt::MqttStats::default());
        metrics.watch_mqtt(stats.clone());
        stats.set(3, 2, false);
        let text = metrics.text();
        for line in [
            "mcgate_mqtt_dropped_total 3",
            "mcgate_mqtt_refused_total 2",
            "mcgate_mqtt_connected 0",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        stats.set(10, 2, true);
        let text = metrics.text();
        assert!(text.contains("mcgate_mqtt_dropped_total 10"), "{text}");
        assert!(text.contains("mcgate_mqtt_connected 1"), "{text}");
    }

    /// A camera covered for three frames is one tamper event and three rejects.
    #[test]
    fn a_tamper_event_is_counted_once_by_its_check() {
        let card: ModelCard =
            serde_json::from_slice(include_bytes!("../../models/mnist.card.json")).unwrap();
        let metrics = Metrics::new(&card);
        for index in 0..3 {
            metrics.record(&Report {
                index,
                source: "cam".into(),
                verdict: Verdict::Reject(RejectReason::Tamper {
                    kind: TamperKind::Covered,
                    value: 0.0,
                    at: 9.0,
                }),
                measures: None,
                seed: None,
                latency: Duration::ZERO,
                alarm: false,
                tamper_event: (index == 0).then_some(TamperKind::Covered),
                log_density: None,
                threshold: 0.1,
                fused: None,
            });
        }
        let text = metrics.text();
        assert!(
            text.contains("mcgate_tamper_events_total{check=\"covered\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcgate_rejects_total{reason=\"tamper_covered\"} 3"),
            "{text}"
        );
    }
}
