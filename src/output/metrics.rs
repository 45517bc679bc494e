//! Prometheus metrics for a fleet's monitoring (`gate --metrics ADDR`, cargo feature
//! `metrics`): frames by verdict, rejects by reason, alarms, MI and latency histograms, the
//! threshold in force, and the model's name and ONNX hash. Served over HTTP at `/metrics` in
//! Prometheus's text format.

use std::sync::Arc;

use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter,
    IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::gate::Report;
use crate::model::card::ModelCard;
use crate::Error;

/// The gate's metrics, updated per frame by the session and read by the HTTP server.
pub struct Metrics {
    registry: Registry,
    frames: IntCounterVec,
    rejects: IntCounterVec,
    alarms: IntCounter,
    mutual_information: Histogram,
    latency: Histogram,
    threshold: Gauge,
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
        registry.register(Box::new(mutual_information.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(threshold.clone()))?;
        registry.register(Box::new(model))?;
        Ok(Metrics {
            registry,
            frames,
            rejects,
            alarms,
            mutual_information,
            latency,
            threshold,
        })
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
        if let Some(m) = r.measures {
            self.mutual_information.observe(m.mutual_information);
            self.latency.observe(r.latency.as_secs_f64());
        }
        self.threshold.set(r.threshold);
    }

    /// The metrics in Prometheus's text format.
    pub fn text(&self) -> String {
        let mut text = vec![];
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("writing to memory cannot fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }

    /// Serves `/metrics` on `addr` from a thread; fails at once if it cannot listen.
    pub fn serve(self: &Arc<Self>, addr: &str) -> Result<(), Error> {
        let server = tiny_http::Server::http(addr).map_err(|e| Error::Output {
            what: format!("--metrics {addr}"),
            cause: e.to_string(),
        })?;
        let metrics = self.clone();
        std::thread::spawn(move || {
            let content_type =
                tiny_http::Header::from_bytes("Content-Type", TextEncoder::new().format_type())
                    .expect("a valid header");
            for request in server.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    tiny_http::Response::from_string(metrics.text())
                        .with_header(content_type.clone())
                } else {
                    tiny_http::Response::from_string("mcgate serves /metrics\n")
                        .with_status_code(404)
                };
                // A scraper that hung up is its own problem, not the gate's.
                let _ = request.respond(response);
            }
        });
        Ok(())
    }
}
