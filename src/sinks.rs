//! Where reports go: JSON lines or text on stdout, accepted frames to a directory, and
//! the end-of-run summary on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::card::ModelCard;
use crate::frame::Frame;
use crate::gate::Report;
use crate::verdict::Decision;
use crate::Error;

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
    threshold: f64,
    samples: usize,
}

impl<W: Write> ReportWriter<W> {
    pub fn new(
        out: W,
        format: Format,
        with_latency: bool,
        card: &ModelCard,
        threshold: f64,
        samples: usize,
    ) -> Self {
        ReportWriter {
            out,
            format,
            with_latency,
            labels: card.classes.clone(),
            threshold,
            samples,
        }
    }

    pub fn write(&mut self, r: &Report) -> Result<(), Error> {
        let class = r.measures.map(|m| m.predicted_class);
        let label = class.and_then(|c| self.labels.get(c)).map(String::as_str);
        let result = match self.format {
            Format::Jsonl => {
                let line = Line {
                    frame: r.index,
                    source: &r.source,
                    verdict: r.verdict.decision,
                    reason: r.verdict.reason.as_deref(),
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
                    threshold: self.threshold,
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
                let verdict = match r.verdict.decision {
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
                let reason = r
                    .verdict
                    .reason
                    .as_deref()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
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
                what: "report to stdout".into(),
                reason: e.to_string(),
            })
    }
}

/// A directory that frames are written into as PNG files.
pub struct FrameDir {
    dir: PathBuf,
}

impl FrameDir {
    /// Creates the directory if needed and checks that it is writable now, so a bad path
    /// fails at start-up rather than on the first frame.
    pub fn open(dir: &Path, what: &str) -> Result<FrameDir, Error> {
        let fail = |e: std::io::Error| Error::Output {
            what: format!("{what} {}", dir.display()),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        let probe = dir.join(".mcgate-write-probe");
        std::fs::write(&probe, b"").map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)?;
        Ok(FrameDir {
            dir: dir.to_owned(),
        })
    }

    /// `<dir>/<index:06>_<source stem>.png`.
    pub fn path_for(&self, index: u64, source: &str) -> PathBuf {
        let stem = Path::new(source)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let stem: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{index:06}_{stem}.png"))
    }

    /// Writes the PNG under a temporary name, then renames it: a reader of the directory
    /// never sees a partial frame, and a failed write (full disk) leaves nothing behind.
    pub fn save(&self, index: u64, source: &str, image: &image::DynamicImage) -> Result<(), Error> {
        let path = self.path_for(index, source);
        let fail = |e: &dyn std::fmt::Display| Error::Output {
            what: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut png = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| fail(&e))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let partial = self.dir.join(format!(".{name}.partial"));
        let written =
            std::fs::write(&partial, png.get_ref()).and_then(|()| std::fs::rename(&partial, &path));
        written.map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            fail(&e)
        })
    }

    pub fn save_frame(&self, frame: &Frame) -> Result<(), Error> {
        self.save(frame.index, &frame.source, &frame.image)
    }
}

/// Latency percentiles from a fixed log-spaced histogram: constant memory on runs of any
/// length, each bucket 1/40 of a decade wide (about 6 % resolution), from 1 µs to 100 s.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: [u64; Self::BUCKETS],
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; Self::BUCKETS],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    const PER_DECADE: f64 = 40.0;
    const BUCKETS: usize = 8 * 40;

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_secs_f64() * 1e6).max(1.0);
        let b = ((us.log10() * Self::PER_DECADE) as usize).min(Self::BUCKETS - 1);
        self.counts[b] += 1;
        self.total += 1;
    }

    /// The q-quantile (0..=1) in milliseconds, as the geometric middle of its bucket.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let us = 10f64.powf((b as f64 + 0.5) / Self::PER_DECADE);
                return Some(us / 1e3);
            }
        }
        None
    }
}

/// Counts for the end-of-run summary.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub frames: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Rejected because they could not be read or scored.
    pub unscored: u64,
    pub alarms: u64,
    pub latency: LatencyHistogram,
}

impl Summary {
    pub fn record(&mut self, r: &Report) {
        self.frames += 1;
        match r.verdict.decision {
            Decision::Accept => self.accepted += 1,
            Decision::Reject => self.rejected += 1,
        }
        if r.measures.is_none() {
            self.unscored += 1;
        } else {
            self.latency.record(r.latency);
        }
        self.alarms += r.alarm as u64;
    }

    pub fn to_text(&self) -> String {
        let ms = |q| {
            self.latency
                .quantile_ms(q)
                .map_or("-".to_string(), |v| format!("{v:.2} ms"))
        };
        format!(
            "mcgate: {} frames, {} accepted, {} rejected ({} could not be scored), {} alarms; latency p50 {} p99 {}",
            self.frames,
            self.accepted,
            self.rejected,
            self.unscored,
            self.alarms,
            ms(0.5),
            ms(0.99)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 / 50.0 - 1.0).abs() < 0.06, "p50 {p50}");
        assert!((p99 / 99.0 - 1.0).abs() < 0.06, "p99 {p99}");
        assert_eq!(LatencyHistogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn frame_names_are_sanitised() {
        let d = FrameDir { dir: "out".into() };
        assert_eq!(
            d.path_for(3, "a/b/c d.png"),
            PathBuf::from("out/000003_c_d.png")
        );
        assert_eq!(
            d.path_for(12, "stdin#12"),
            PathBuf::from("out/000012_stdin_12.png")
        );
    }
}
