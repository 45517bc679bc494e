//! Verdict lines: one JSON object or one line of text per frame.

use std::io::Write;

use serde::Serialize;

use super::OutputError;
use crate::contract::card::ModelCard;
use crate::score::fusion::FusedScore;
use crate::score::measures::Named;
use crate::score::report::Report;
use crate::score::verdict::Decision;
use crate::text::printable;

/// How report lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per frame, one per line.
    Jsonl,
    /// One human-readable line per frame.
    Text,
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
    measures: Option<Named<'a>>,
    threshold: f64,
    samples: usize,
    seed: Option<u64>,
    alarm: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    /// Only for a model with a density output: the frame's feature log density.
    #[serde(skip_serializing_if = "Option::is_none")]
    log_density: Option<f64>,
    /// Only on the first frame of a tamper event: its check.
    #[serde(skip_serializing_if = "Option::is_none")]
    tamper_event: Option<&'static str>,
    /// Only when fused signals decided: each signal's value and tail probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    signals: Option<Signals<'a>>,
    /// Only when fused signals decided: the combined statistic and its level.
    #[serde(skip_serializing_if = "Option::is_none")]
    fused: Option<FusedLine>,
}

/// `{"mi": {"value": …, "p": …}, …}`, in the card's order.
struct Signals<'a>(&'a FusedScore);

impl Serialize for Signals<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(Serialize)]
        struct One {
            value: f64,
            p: f64,
        }
        let mut map = s.serialize_map(Some(self.0.signals.len()))?;
        for one in &self.0.signals {
            map.serialize_entry(
                one.signal.name(),
                &One {
                    value: one.value,
                    p: one.p,
                },
            )?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct FusedLine {
    statistic: f64,
    level: f64,
}

/// A report file that never ends in half a line: when a line cannot be written whole (a full
/// disk), the file is cut back to the end of the last line that was.
pub struct ReportFile {
    file: std::fs::File,
    /// Bytes up to the end of the last flushed line.
    committed: u64,
    /// Bytes written since.
    pending: u64,
}

impl ReportFile {
    /// Creates (or truncates) the file at `path`; a symbolic link there is refused (ELOOP),
    /// not written through: whoever can write in the report's directory could point it at any
    /// file the gate may write. A named pipe is opened without waiting: with no reader yet it
    /// is an error now, not a gate stuck before its first frame; once open, writes wait for
    /// the reader as any report's do.
    pub fn create(path: &std::path::Path) -> std::io::Result<ReportFile> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut options,
            libc::O_NOFOLLOW | libc::O_NONBLOCK,
        );
        let file = options.open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                std::io::Error::other("a named pipe that no process is reading")
            } else {
                e
            }
        })?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let fd = file.as_raw_fd();
            // SAFETY: fcntl on a descriptor this function owns, flags read then written back.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(ReportFile {
            file,
            committed: 0,
            pending: 0,
        })
    }

    fn roll_back(&mut self) {
        use std::io::{Seek, SeekFrom};
        // Shrinking needs no space; if even this fails, the error already stops the gate.
        let _ = self.file.set_len(self.committed);
        let _ = self.file.seek(SeekFrom::Start(self.committed));
        self.pending = 0;
    }
}

impl Write for ReportFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.file.write(buf) {
            Ok(n) => {
                self.pending += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.roll_back();
                Err(e)
            }
        }
    }

    /// Called once per line by [`ReportWriter`]: the line is whole.
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.committed += self.pending;
        self.pending = 0;
        Ok(())
    }
}

/// Writes one report line to `out`.
pub struct ReportWriter<W: Write> {
    out: W,
    /// The line being written, reused: it goes out in one write.
    line: Vec<u8>,
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
            line: Vec::with_capacity(512),
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

    /// The stream written to, mutably (a caller that keeps one line at a time clears it).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Writes and flushes one frame's line.
    pub fn write(&mut self, r: &Report) -> Result<(), OutputError> {
        let class = r.measures.map(|m| m.predicted_class);
        let reason = r.verdict.reason().map(ToString::to_string);
        let label = class.and_then(|c| self.labels.get(c)).map(String::as_str);
        self.line.clear();
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
                    measures: r.measures.as_ref().map(Named),
                    threshold: r.threshold,
                    samples: self.samples,
                    seed: r.seed,
                    alarm: r.alarm,
                    latency_ms: self.with_latency.then_some(r.latency.as_secs_f64() * 1e3),
                    log_density: r.log_density,
                    tamper_event: r.tamper_event.map(|k| k.name()),
                    signals: r.fused.as_ref().map(Signals),
                    fused: r.fused.as_ref().map(|f| FusedLine {
                        statistic: f.statistic,
                        level: f.level,
                    }),
                };
                serde_json::to_writer(&mut self.line, &line)
                    .map_err(std::io::Error::from)
                    .map(|_| self.line.push(b'\n'))
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
                let fused = r
                    .fused
                    .as_ref()
                    .map(|f| format!(" fused {:.4} (level {:.4})", f.statistic, f.level))
                    .unwrap_or_default();
                let reason = reason
                    .map(|s| format!(": {}", printable(&s)))
                    .unwrap_or_default();
                let alarm = format!(
                    "{}{}",
                    if r.alarm { " [ALARM]" } else { "" },
                    r.tamper_event
                        .map(|k| format!(" [TAMPER {}]", k.name()))
                        .unwrap_or_default()
                );
                // The file name is the one field a frame's sender chooses: escaped, it cannot
                // forge a line (JSONL escapes it by itself).
                writeln!(
                    self.line,
                    "{:>6} {verdict}{scored}{fused} {}{reason}{alarm}",
                    r.index,
                    printable(&r.source)
                )
            }
        };
        // Flush each line: a downstream consumer acts per frame, and a blocked stdout
        // then back-pressures the gate instead of buffering without bound.
        result
            .and_then(|_| self.out.write_all(&self.line))
            .and_then(|_| self.out.flush())
            .map_err(|e| OutputError {
                what: self.name.clone(),
                cause: e.to_string(),
            })
    }
}

impl<W: Write> super::Sink for ReportWriter<W> {
    fn observe(
        &mut self,
        report: &Report,
        _: Option<&crate::input::frame::Frame>,
    ) -> Result<(), OutputError> {
        self.write(report)
    }
}
