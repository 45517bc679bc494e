//! `gate --mqtt mqtt[s]://HOST:PORT/PREFIX`: the gate's events on MQTT, shaped like Frigate's
//! `frigate/events` so that Home Assistant and Node-RED flows read them as they read
//! Frigate's.
//!
//! - `PREFIX/events`: `{"type": "new"|"update"|"end", "before": {…}, "after": {…}}` — `new`
//!   when a run of rejected frames starts, `update` while it lasts (a new reason, the alarm, a
//!   tamper event, or every [`UPDATE_EVERY`] frames), `end` on the first accepted frame after
//!   it; each state holds the camera, the event id, first and last frame, the reasons seen, the
//!   worst frame (highest MI, or the first unscorable one) and whether the alarm fired.
//! - `PREFIX/available`: `online` (retained) once connected; `offline` as the broker's last
//!   will when the gate goes away without a word, and on a clean stop.
//!
//! QoS 1. The gate never waits for the broker: messages go into a bounded queue
//! ([`QUEUE`]) that a background thread drains; when it is full (broker gone or slow) the
//! message is dropped, counted and logged — frames keep flowing. The background thread
//! reconnects with back-off (0.5 s doubling to 30 s); a broker that refuses the credentials
//! is an error in the log at every try, never a stopped gate.
//!
//! `mqtts://` is MQTT over TLS (rustls), the broker checked against `--mqtt-ca`'s PEM file or,
//! without it, the system's CA certificates. Credentials come from a file (`--mqtt-credentials`,
//! one line `USER:PASSWORD`), never from the command line, where `ps` would show them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    Client, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde::Serialize;

use super::{MqttSettings, OutputError, Sink};
use crate::input::frame::Frame;
use crate::score::report::Report;
use crate::score::verdict::Decision;

/// Messages waiting for the broker, at most; more are dropped and counted.
pub const QUEUE: usize = 64;
/// An event in progress is re-published after this many further rejected frames.
pub const UPDATE_EVERY: u64 = 25;
/// Longest topic prefix accepted (MQTT allows 65,535 bytes; brokers and dashboards do not).
const MAX_PREFIX: usize = 200;
/// Longest camera name (it goes into every event and the client id).
const MAX_CAMERA: usize = 64;
/// Largest credentials file read (one line).
const MAX_CREDENTIALS_BYTES: u64 = 4 << 10;
/// Largest CA file read (a bundle of a few hundred certificates is ~200 KiB).
const MAX_CA_BYTES: u64 = 4 << 20;

/// Where the events go: `mqtt://HOST:PORT/PREFIX` or, over TLS, `mqtts://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    /// Broker host.
    pub host: String,
    /// Broker port (1883, or 8883 for `mqtts://`, when the URL has none).
    pub port: u16,
    /// Topic prefix: events on `PREFIX/events`, availability on `PREFIX/available`.
    pub prefix: String,
    /// `mqtts://`: TLS to the broker.
    pub tls: bool,
}

impl MqttTarget {
    /// Parses `mqtt[s]://HOST[:PORT]/PREFIX`; a one-line reason when it is not one.
    pub fn parse(url: &str) -> Result<MqttTarget, String> {
        let (rest, tls) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(format!("{url:?} is not mqtt[s]://HOST:PORT/PREFIX")),
        };
        let (authority, prefix) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url:?} has no topic prefix (mqtt://HOST:PORT/PREFIX)"))?;
        if authority.contains('@') {
            return Err(
                "credentials do not go on the command line (they would show in ps): put \
                 USER:PASSWORD in a file readable by the gate alone and name it with \
                 --mqtt-credentials"
                    .into(),
            );
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{url:?}: port {p:?} is not a number 1-65535"))?,
            ),
            None => (authority, if tls { 8883 } else { 1883 }),
        };
        let prefix = prefix.trim_end_matches('/');
        if host.is_empty() || port == 0 {
            return Err(format!("{url:?} names no broker host and port"));
        }
        if prefix.is_empty() || prefix.len() > MAX_PREFIX || prefix.contains(['+', '#', '\0']) {
            return Err(format!(
                "{url:?}: the topic prefix must be 1-{MAX_PREFIX} bytes without + # or NUL"
            ));
        }
        Ok(MqttTarget {
            host: host.into(),
            port,
            prefix: prefix.into(),
            tls,
        })
    }

    /// Whether the broker is on this machine (credentials in clear stay on it).
    fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    fn topic(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.prefix)
    }
}

/// Reads `USER:PASSWORD` (one line; a final newline allowed) from `path`.
pub fn read_credentials(path: &Path) -> Result<(String, String), String> {
    let shown = path.display();
    let bytes = read_small(path, MAX_CREDENTIALS_BYTES, "(one line USER:PASSWORD)")?;
    warn_if_others_read(path);
    let text = String::from_utf8(bytes).map_err(|_| format!("{shown}: not UTF-8 text"))?;
    let line = text
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&text);
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() && !line.contains(['\n', '\r', '\0']) => {
            Ok((user.into(), password.into()))
        }
        _ => Err(format!(
            "{shown}: expected one line USER:PASSWORD (user not empty)"
        )),
    }
}

/// The file's bytes, when it is a regular file of at most `max` bytes.
fn read_small(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() || meta.len() > max {
        return Err(format!("{shown}: not a file of at most {max} bytes {what}"));
    }
    std::fs::read(path).map_err(|e| format!("{shown}: {e}"))
}

/// A secret (password, private key) others can read is said, not refused: a container's
/// secrets are often mounted 0644.
fn warn_if_others_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            log::warn!(
                "mqtt: {} can be read by other users (chmod 600 it)",
                path.display()
            );
        }
    }
}

/// The PEM certificates in `path`, at least one.
fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = read_small(path, MAX_CA_BYTES, "(PEM certificates)")?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    match certs.is_empty() {
        true => Err(format!("{shown}: no PEM certificate in it")),
        false => Ok(certs),
    }
}

/// The TLS client: the CAs in `ca` (PEM) or, without it, the system's; with `client`
/// (certificate chain and private key, PEM), the certificate it shows a broker that asks.
fn tls_config(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| {
                    format!("{}: a certificate rustls refuses: {e}", path.display())
                })?;
            }
        }
        None => {
            // Unreadable ones among the system's are skipped; none at all is an error below.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "mqtts:// without --mqtt-ca: this system has no CA certificates to check \
                     the broker with (Debian: ca-certificates); name the broker's CA with \
                     --mqtt-ca"
                        .into(),
                );
            }
        }
    }
    // ring, not rustls' default aws-lc: it cross-compiles for the boards with plain gcc.
    // rustls 0.23.48 deprecates it for lacking post-quantum key exchange (X25519 and the
    // NIST curves remain); a broker link of camera events is not where that is decided.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let pem = read_small(key, MAX_CREDENTIALS_BYTES * 4, "(a PEM private key)")?;
            warn_if_others_read(key);
            let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| format!("{}: {e}", key.display()))?
                .ok_or_else(|| format!("{}: no PEM private key in it", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))?
        }
    };
    Ok(Arc::new(config))
}

/// What the connection has done, for metrics: shared between the sink, its connection thread
/// and whoever reports on them.
#[derive(Debug, Default)]
pub struct MqttStats {
    dropped: AtomicU64,
    refused: AtomicU64,
    connected: AtomicBool,
    /// Set by the sink when it goes: the connection thread ends at its next turn, broker or
    /// not (else a sink dropped during an outage would leave a client retrying for ever).
    stopped: AtomicBool,
}

impl MqttStats {
    /// Counters as given (tests of what reads them).
    #[cfg(test)]
    pub(crate) fn set(&self, dropped: u64, refused: u64, connected: bool) {
        self.dropped.store(dropped, Ordering::Relaxed);
        self.refused.store(refused, Ordering::Relaxed);
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// Messages dropped so far (queue full: broker gone, slow or refusing).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Connections the broker refused (bad credentials, not authorised, …).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether the broker has accepted the connection and it has not failed since.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// One event's state, as published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventState {
    /// Unique per run: `<camera>-<first frame>`.
    pub id: String,
    /// The camera's name (`--camera`).
    pub camera: String,
    /// First rejected frame of the run.
    pub start_frame: u64,
    /// Last frame seen in it (the accepted one that ended it, for `end`).
    pub end_frame: u64,
    /// Rejected frames so far.
    pub rejected: u64,
    /// Reject reasons seen (metrics names: `mi`, `above_threshold`, `tamper_covered`, …).
    pub reasons: Vec<String>,
    /// The worst frame: the highest MI, or the first that could not be scored.
    pub worst_frame: u64,
    /// Its MI (null when it could not be scored).
    pub worst_mi: Option<f64>,
    /// Its signals' values (each null where not computed).
    pub worst_signals: SignalValues,
    /// Whether the alarm (K of the last N rejected) fired during the event.
    pub alarm: bool,
    /// Tamper events that started during it (`covered`, `frozen`, …).
    pub tamper: Vec<String>,
    /// `false` until the event ends.
    pub ended: bool,
}

/// A frame's signal values, as its report line has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SignalValues {
    /// Mutual information, nats.
    pub mi: Option<f64>,
    /// Predictive entropy, nats.
    pub entropy: Option<f64>,
    /// Feature log density (models with a density output).
    pub log_density: Option<f64>,
}

impl SignalValues {
    fn of(report: &Report) -> SignalValues {
        SignalValues {
            mi: report.measures.map(|m| m.mutual_information),
            entropy: report.measures.map(|m| m.predictive_entropy),
            log_density: report.log_density,
        }
    }
}

/// One message for `PREFIX/events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventMessage {
    /// `new`, `update` or `end`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The state before this message (the same as `after` for `new`).
    pub before: EventState,
    /// The state now.
    pub after: EventState,
}

/// Turns decided frames into events (no I/O: what the sink publishes, and what is tested).
#[derive(Debug, Default)]
pub struct Events {
    camera: String,
    current: Option<EventState>,
    /// The state last published, for `before`.
    published: Option<EventState>,
}

impl Events {
    /// Events for the camera `camera`.
    pub fn new(camera: &str) -> Events {
        Events {
            camera: camera.into(),
            ..Events::default()
        }
    }

    /// The message `report` calls for, if any.
    pub fn observe(&mut self, report: &Report) -> Option<EventMessage> {
        let rejected = report.verdict.decision() == Decision::Reject;
        match (&mut self.current, rejected) {
            (None, false) => None,
            (Some(_), false) => {
                let mut state = self.current.take()?;
                state.end_frame = report.index;
                state.ended = true;
                Some(self.message("end", state))
            }
            (None, true) => {
                let reason = report.verdict.reason().map(|r| r.kind().to_string());
                let state = EventState {
                    id: format!("{}-{}", self.camera, report.index),
                    camera: self.camera.clone(),
                    start_frame: report.index,
                    end_frame: report.index,
                    rejected: 1,
                    reasons: reason.into_iter().collect(),
                    worst_frame: report.index,
                    worst_mi: report.measures.map(|m| m.mutual_information),
                    worst_signals: SignalValues::of(report),
                    alarm: report.alarm,
                    tamper: report
                        .tamper_event
                        .map(|k| k.name().to_string())
                        .into_iter()
                        .collect(),
                    ended: false,
                };
                self.current = Some(state.clone());
                Some(self.message("new", state))
            }
            (Some(state), true) => {
                state.end_frame = report.index;
                state.rejected += 1;
                let mut changed = false;
                if let Some(reason) = report.verdict.reason().map(|r| r.kind()) {
                    if !state.reasons.iter().any(|r| r == reason) {
                        state.reasons.push(reason.into());
                        changed = true;
                    }
                }
                if let Some(kind) = report.tamper_event {
                    state.tamper.push(kind.name().into());
                    changed = true;
                }
                if report.alarm && !state.alarm {
                    state.alarm = true;
                    changed = true;
                }
                let mi = report.measures.map(|m| m.mutual_information);
                if let (Some(mi), Some(worst)) = (mi, state.worst_mi) {
                    if mi > worst {
                        state.worst_mi = Some(mi);
                        state.worst_frame = report.index;
                        state.worst_signals = SignalValues::of(report);
                    }
                }
                let due = state.rejected.is_multiple_of(UPDATE_EVERY);
                let state = state.clone();
                (changed || due).then(|| self.message("update", state))
            }
        }
    }

    fn message(&mut self, kind: &'static str, after: EventState) -> EventMessage {
        let before = match kind {
            "new" => after.clone(),
            _ => self.published.clone().unwrap_or_else(|| after.clone()),
        };
        self.published = (kind != "end").then(|| after.clone());
        EventMessage {
            kind,
            before,
            after,
        }
    }
}

/// The sink: events into the bounded queue, the connection on its own thread.
pub struct MqttSink {
    client: Client,
    target: MqttTarget,
    events: Events,
    stats: Arc<MqttStats>,
    /// Closed when the connection thread ends.
    finished: std::sync::mpsc::Receiver<()>,
}

/// How long a stopping gate waits for the queued messages to reach the broker.
const FLUSH: Duration = Duration::from_secs(2);

impl MqttSink {
    /// Checks the settings and reads their files (a one-line reason when they are wrong: a
    /// setting, exit 2), then starts the connection thread. Nothing waits for the broker: an
    /// absent or refusing one is retried in the background, its messages dropped and counted.
    pub fn open(settings: &MqttSettings) -> Result<MqttSink, String> {
        let target = MqttTarget::parse(&settings.url)?;
        let camera = &settings.camera;
        if camera.is_empty() || camera.len() > MAX_CAMERA || camera.contains(['/', '+', '#', '\0'])
        {
            return Err(format!(
                "camera {camera:?}: a name of 1-{MAX_CAMERA} bytes without / + # or NUL"
            ));
        }
        // Unique per sink, not only per process: an element stopped and started again must not
        // share its id with the client before it (the broker would throw one off for the other).
        static SINKS: AtomicU64 = AtomicU64::new(0);
        let mut options = MqttOptions::new(
            format!(
                "mcgate-{camera}-{}-{}",
                std::process::id(),
                SINKS.fetch_add(1, Ordering::Relaxed)
            ),
            target.host.clone(),
            target.port,
        );
        let client = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => {
                return Err("a client certificate needs its key, and a key its certificate".into())
            }
        };
        let tls_files = settings.ca.is_some() || client.is_some();
        match target.tls {
            false if tls_files => {
                return Err(
                    "CA and client certificate files are for mqtts:// (TLS); this URL is mqtt://"
                        .into(),
                )
            }
            true => {
                options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                    tls_config(settings.ca.as_deref(), client)?,
                )));
            }
            false => {}
        }
        if let Some(path) = &settings.credentials {
            let (user, password) = read_credentials(path)?;
            if !target.tls && !target.is_loopback() {
                log::warn!(
                    "mqtt: the password crosses the network to {} in clear (use mqtts://)",
                    target.host
                );
            }
            options.set_credentials(user, password);
        }
        Ok(Self::start(target, options, camera))
    }

    fn start(target: MqttTarget, mut options: MqttOptions, camera: &str) -> MqttSink {
        options.set_keep_alive(Duration::from_secs(10));
        options.set_last_will(LastWill::new(
            target.topic("available"),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut connection) = Client::new(options, QUEUE);
        let online = client.clone();
        let available = target.topic("available");
        // First in the queue, so that it goes before any event however fast the frames come
        // (published at the first ConnAck it would queue behind a stopping gate's `offline`).
        let _ = client.try_publish(&available, QoS::AtLeastOnce, true, "online");
        let stats = Arc::new(MqttStats::default());
        let seen = stats.clone();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                let _done = done;
                let mut backoff = Duration::from_millis(500);
                let mut reconnect = false;
                let mut stopping = false;
                for event in connection.iter() {
                    if seen.stopped.load(Ordering::Relaxed) {
                        break; // the sink is gone and gave up waiting for the broker
                    }
                    match event {
                        // Everything queued before it has been written. Read on until the
                        // broker closes: a socket closed with the broker's acks unread is
                        // reset, and a reset loses what the broker had not read yet (the
                        // last events and `offline`, over TLS every other run).
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => stopping = true,
                        Err(_) if stopping => break,
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            backoff = Duration::from_millis(500);
                            seen.connected.store(true, Ordering::Relaxed);
                            log::info!("mqtt: connected");
                            // Again after a reconnect: the broker may have published the
                            // last will, or lost the retained message.
                            if reconnect {
                                let _ = online.try_publish(
                                    &available,
                                    QoS::AtLeastOnce,
                                    true,
                                    "online",
                                );
                            }
                            reconnect = true;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            seen.connected.store(false, Ordering::Relaxed);
                            let wait = backoff.as_secs_f64();
                            match &e {
                                // The operator's to fix: an error, at every try.
                                ConnectionError::ConnectionRefused(code) => {
                                    seen.refused.fetch_add(1, Ordering::Relaxed);
                                    log::error!(
                                        "mqtt: the broker refused the connection: {}; retrying in {wait:.1} s",
                                        refusal(*code)
                                    );
                                }
                                ConnectionError::Tls(e) => {
                                    log::error!("mqtt: TLS: {e}; retrying in {wait:.1} s")
                                }
                                // TLS 1.3 finishes the handshake before the broker checks the
                                // client's certificate: its refusal comes back as an alert on
                                // the first read, which rumqttc reports as an I/O error.
                                e if e.to_string().contains("received fatal alert") => {
                                    log::error!("mqtt: TLS: {e}; retrying in {wait:.1} s")
                                }
                                e => log::warn!("mqtt: {e}; retrying in {wait:.1} s"),
                            }
                            // In slices: a sink that goes while the broker is away ends the
                            // thread within 0.1 s.
                            let until = std::time::Instant::now() + backoff;
                            while std::time::Instant::now() < until
                                && !seen.stopped.load(Ordering::Relaxed)
                            {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            })
            .expect("a thread for the MQTT connection");
        MqttSink {
            client,
            target,
            events: Events::new(camera),
            stats,
            finished,
        }
    }

    /// Messages dropped so far (queue full: broker gone or slow).
    pub fn dropped(&self) -> u64 {
        self.stats.dropped()
    }

    /// The connection's counters, shared (for metrics).
    pub fn stats(&self) -> Arc<MqttStats> {
        self.stats.clone()
    }

    fn publish(&self, leaf: &str, payload: Vec<u8>, retain: bool) {
        let topic = self.target.topic(leaf);
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .is_err()
        {
            let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // The first, then every hundredth: a gone broker must not flood the log.
            if n == 1 || n.is_multiple_of(100) {
                log::warn!("mqtt: queue full, {n} messages dropped so far (broker gone or slow)");
            }
        }
    }
}

/// Why a broker refused, in words an operator acts on.
fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::BadUserNamePassword => "bad user name or password (--mqtt-credentials)",
        ConnectReturnCode::NotAuthorized => "not authorised (--mqtt-credentials, the broker's ACL)",
        ConnectReturnCode::BadClientId => "client id refused",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::RefusedProtocolVersion => "MQTT 3.1.1 not supported by the broker",
        ConnectReturnCode::Success => "no reason given",
    }
}

impl Sink for MqttSink {
    fn observe(&mut self, report: &Report, _frame: Option<&Frame>) -> Result<(), OutputError> {
        if let Some(message) = self.events.observe(report) {
            match serde_json::to_vec(&message) {
                Ok(payload) => self.publish("events", payload, false),
                Err(e) => log::warn!("mqtt: event not serialised: {e}"),
            }
        }
        Ok(())
    }
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        // A clean stop says so itself; the last will covers the rest.
        self.publish("available", b"offline".to_vec(), true);
        // `try_`: a full queue (broker gone) must not hold the gate at exit; the queued
        // events (the last `end` among them) get FLUSH to reach a broker that is there.
        let _ = self.client.try_disconnect();
        let _ = self.finished.recv_timeout(FLUSH);
        // Not flushed in time (broker gone or stalled): the thread stops at its next turn.
        self.stats.stopped.store(true, Ordering::Relaxed);
        if self.dropped() > 0 {
            log::warn!("mqtt: {} messages dropped in this run", self.dropped());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::measures::Measures;
    use crate::score::verdict::{RejectReason, Verdict};

    fn report(index: u64, mi: f64, reject: bool, alarm: bool) -> Report {
        Report {
            index,
            source: "t".into(),
            verdict: match reject {
                true => Verdict::Reject(RejectReason::AboveThreshold {
                    mutual_information: mi,
                    threshold: 0.1,
                }),
                false => Verdict::Accept,
            },
            measures: Some(Measures {
                predictive_entropy: mi,
                expected_entropy: 0.0,
                mutual_information: mi,
                softmax_variance: 0.0,
                variation_ratio: 0.0,
                max_probability: 0.9,
                predicted_class: 0,
            }),
            log_density: None,
            seed: Some(1),
            latency: Duration::ZERO,
            alarm,
            tamper_event: None,
            threshold: 0.1,
            fused: None,
        }
    }

    #[test]
    fn a_run_of_rejects_is_one_event_new_update_end() {
        let mut e = Events::new("cam");
        assert_eq!(e.observe(&report(0, 0.01, false, false)), None);
        let new = e.observe(&report(1, 0.2, true, false)).unwrap();
        assert_eq!(
            (new.kind, new.after.start_frame, new.after.rejected),
            ("new", 1, 1)
        );
        assert_eq!(new.after.id, "cam-1");
        // Nothing new to say: no message.
        assert_eq!(e.observe(&report(2, 0.5, true, false)), None);
        // The alarm: an update, its `before` the state last published.
        let update = e.observe(&report(3, 0.3, true, true)).unwrap();
        assert_eq!(update.kind, "update");
        assert!(update.after.alarm && !update.before.alarm);
        assert_eq!(
            (update.after.worst_frame, update.after.worst_mi),
            (2, Some(0.5))
        );
        assert_eq!(update.after.worst_signals.mi, Some(0.5));
        assert_eq!(update.after.worst_signals.entropy, Some(0.5));
        let end = e.observe(&report(4, 0.01, false, false)).unwrap();
        assert_eq!(end.kind, "end");
        assert!(end.after.ended && end.after.end_frame == 4 && end.after.rejected == 3);
        // The next run is a new event.
        assert_eq!(e.observe(&report(5, 0.01, false, false)), None);
        assert_eq!(
            e.observe(&report(6, 0.2, true, false)).unwrap().after.id,
            "cam-6"
        );
        // A long run re-publishes every UPDATE_EVERY rejects.
        let updates = (7..7 + 2 * UPDATE_EVERY)
            .filter_map(|i| e.observe(&report(i, 0.2, true, false)))
            .count();
        assert_eq!(updates, 2);
    }

    #[test]
    fn targets_parse_or_say_why_not() {
        assert_eq!(
            MqttTarget::parse("mqtt://127.0.0.1:1884/home/gate").unwrap(),
            MqttTarget {
                host: "127.0.0.1".into(),
                port: 1884,
                prefix: "home/gate".into(),
                tls: false,
            }
        );
        assert_eq!(MqttTarget::parse("mqtt://broker/cams").unwrap().port, 1883);
        let tls = MqttTarget::parse("mqtts://broker/cams").unwrap();
        assert_eq!((tls.port, tls.tls), (8883, true));
        for (bad, why) in [
            ("http://x/y", "not mqtt[s]://"),
            ("mqtt://x:1883", "no topic prefix"),
            ("mqtt://x:99999/p", "port"),
            ("mqtt://user:pw@x/p", "credentials"),
            ("mqtt://x/a/#", "without + #"),
        ] {
            let err = MqttTarget::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = format!("mqtt://x/{}", "t".repeat(MAX_PREFIX + 1));
        assert!(MqttTarget::parse(&long)
            .unwrap_err()
            .contains("1-200 bytes"));
    }

    #[test]
    fn credentials_are_one_line_user_colon_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = |text: &str| {
            let path = dir.path().join(format!("c{}", text.len()));
            std::fs::write(&path, text).unwrap();
            path
        };
        assert_eq!(
            read_credentials(&file("gate:s3:cret\n")).unwrap(),
            ("gate".into(), "s3:cret".into())
        );
        assert_eq!(
            read_credentials(&file("gate:pw\r\n")).unwrap(),
            ("gate".into(), "pw".into())
        );
        for bad in [":nouser", "no colon", "a:b\nc:d\n", ""] {
            let err = read_credentials(&file(bad)).unwrap_err();
            assert!(err.contains("USER:PASSWORD"), "{bad:?}: {err}");
        }
        let big = file(&"x".repeat(5000));
        assert!(read_credentials(&big).unwrap_err().contains("at most"));
        assert!(read_credentials(&file("gate:\u{0}\u{0}\u{ff}")).is_err());
        assert!(read_credentials(&dir.path().join("absent")).is_err());
    }

    /// A sink dropped while its broker is away ends its connection thread (was: it retried for
    /// ever, and an element restarted during an outage left one client per restart behind).
    #[test]
    fn a_sink_dropped_during_an_outage_ends_its_thread() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = MqttSink::open(&MqttSettings {
            url: format!("mqtt://127.0.0.1:{port}/gone"),
            camera: "c".into(),
            ..MqttSettings::default()
        })
        .unwrap();
        let stats = sink.stats();
        drop(sink);
        // The thread holds the other reference until it ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&stats) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread still runs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn settings_are_checked_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let settings = |url: &str, camera: &str, ca: Option<&std::path::Path>| MqttSettings {
            url: url.into(),
            camera: camera.into(),
            ca: ca.map(Into::into),
            ..MqttSettings::default()
        };
        for (s, why) in [
            (settings("mqtt://h/p", "a/b", None), "without / + # or NUL"),
            (settings("mqtt://h/p", &"c".repeat(65), None), "1-64 bytes"),
            (
                settings("mqtt://h/p", "c", Some(&not_pem)),
                "are for mqtts://",
            ),
            (
                settings("mqtts://h/p", "c", Some(&not_pem)),
                "no PEM certificate",
            ),
            (
                MqttSettings {
                    client_cert: Some(not_pem.clone()),
                    ..settings("mqtts://h/p", "c", None)
                },
                "needs its key",
            ),
        ] {
            let err = MqttSink::open(&s).err().expect("refused");
            assert!(err.contains(why), "{s:?}: {err}");
        }
    }
}
