//! Verdict lines: one JSON object or one line of text per frame.

use std::io::Write;

use serde::Serialize;

use crate::gate::Report;
use crate::model::card::ModelCard;
use crate::score::verdict::Decision;
use crate::Error;

/// How report lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per frame, one per line.
    Jsonl,
    /// One human-readable line per frame.
    Text,
}

#[derive(Serialize)]
struct MeasuresLine {
    predictive_entropy: f64,
    expected_entropy: f64,
    mutual_information: f64,
    softmax_variance: f64,
    variation_ratio: f64,
    max_probability: f64,
}

/// The JSON line schema (documented in the README).
#[derive(Serialize)]
struct Line<'a> {
    frame: u64,
    source: &'a str,
    verdict: Decision,
    reason: Option<&'a str>,
    class: Option<usize>,
    label: Option<&'a str>,
    confidence: Option<f64>,
    measures: Option<MeasuresLine>,
    threshold: f64,
    samples: usize,
    seed: Option<u64>,
    alarm: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
}

/// Writes one report line to `out`.
pub struct ReportWriter<W: Write> {
    out: W,
    format: Format,
    with_latency: bool,
    labels: Vec<String>,
    samples: usize,
    name: String,
}

impl<W: Write> ReportWriter<W> {
    /// Lines for `card`'s labels, with the run's T and each frame's threshold in each.
    pub fn new(
        out: W,
        format: Format,
        with_latency: bool,
        card: &ModelCard,
        samples: usize,
    ) -> Self {
        ReportWriter {
            out,
            format,
            with_latency,
            labels: card.classes.clone(),
            samples,
            name: "report to stdout".into(),
        }
    }

    /// Names the stream in errors (default "report to stdout").
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The stream written to.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Writes and flushes one frame's line.
    pub fn write(&mut self, r: &Report) -> Result<(), Error> {
        let class = r.measures.map(|m| m.predicted_class);
        let reason = r.verdict.reason().map(ToString::to_string);
        let label = class.and_then(|c| self.labels.get(c)).map(String::as_str);
        let result = match self.format {
            Format::Jsonl => {
                let line = Line {
                    frame: r.index,
                    source: &r.source,
                    verdict: r.verdict.decision(),
                    reason: reason.as_deref(),
                    class,
                    label,
                    confidence: r.measures.map(|m| m.max_probability),
                    measures: r.measures.map(|m| MeasuresLine {
                        predictive_entropy: m.predictive_entropy,
                        expected_entropy: m.expected_entropy,
                        mutual_information: m.mutual_information,
                        softmax_variance: m.softmax_variance,
                        variation_ratio: m.variation_ratio,
                        max_probability: m.max_probability,
                    }),
                    threshold: r.threshold,
                    samples: self.samples,
                    seed: r.seed,
                    alarm: r.alarm,
                    latency_ms: self.with_latency.then_some(r.latency.as_secs_f64() * 1e3),
                };
                serde_json::to_writer(&mut self.out, &line)
                    .map_err(std::io::Error::from)
                    .and_then(|_| self.out.write_all(b"\n"))
            }
            Format::Text => {
                let verdict = match r.verdict.decision() {
                    Decision::Accept => "ACCEPT",
                    Decision::Reject => "REJECT",
                };
                let scored = match (r.measures, label) {
                    (Some(m), Some(l)) => {
                        format!(
                            " class {l} ({:.3}) MI {:.4}",
                            m.max_probability, m.mutual_information
                        )
                    }
                    _ => String::new(),
                };
                let reason = reason.map(|s| format!(": {s}")).unwrap_or_default();
                let alarm = if r.alarm { " [ALARM]" } else { "" };
                writeln!(
                    self.out,
                    "{:>6} {verdict}{scored} {}{reason}{alarm}",
                    r.index, r.source
                )
            }
        };
        // Flush each line: a downstream consumer acts per frame, and a blocked stdout
        // then back-pressures the gate instead of buffering without bound.
        result
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::Output {
                what: self.name.clone(),
                cause: e.to_string(),
            })
    }
}
