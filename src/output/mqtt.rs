//! `gate --mqtt mqtt://HOST:PORT/PREFIX`: the gate's events on MQTT, shaped like Frigate's
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
//! reconnects with back-off (0.5 s doubling to 30 s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{Client, Event, LastWill, MqttOptions, Packet, QoS};
use serde::Serialize;

use super::{OutputError, Sink};
use crate::input::frame::Frame;
use crate::score::report::Report;
use crate::score::verdict::Decision;

/// Messages waiting for the broker, at most; more are dropped and counted.
pub const QUEUE: usize = 64;
/// An event in progress is re-published after this many further rejected frames.
pub const UPDATE_EVERY: u64 = 25;
/// Longest topic prefix accepted (MQTT allows 65,535 bytes; brokers and dashboards do not).
const MAX_PREFIX: usize = 200;

/// Where the events go: `mqtt://HOST:PORT/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    /// Broker host.
    pub host: String,
    /// Broker port (1883 when the URL has none).
    pub port: u16,
    /// Topic prefix: events on `PREFIX/events`, availability on `PREFIX/available`.
    pub prefix: String,
}

impl MqttTarget {
    /// Parses `mqtt://HOST[:PORT]/PREFIX`; a one-line reason when it is not one.
    pub fn parse(url: &str) -> Result<MqttTarget, String> {
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| format!("{url:?} is not mqtt://HOST:PORT/PREFIX"))?;
        let (authority, prefix) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url:?} has no topic prefix (mqtt://HOST:PORT/PREFIX)"))?;
        if authority.contains('@') {
            return Err(
                "credentials do not go on the command line (they would show in ps): not supported yet"
                    .into(),
            );
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{url:?}: port {p:?} is not a number 1-65535"))?,
            ),
            None => (authority, 1883),
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
        })
    }

    fn topic(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.prefix)
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
    /// Whether the alarm (K of the last N rejected) fired during the event.
    pub alarm: bool,
    /// Tamper events that started during it (`covered`, `frozen`, …).
    pub tamper: Vec<String>,
    /// `false` until the event ends.
    pub ended: bool,
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
    dropped: Arc<AtomicU64>,
    /// Closed when the connection thread ends.
    finished: std::sync::mpsc::Receiver<()>,
}

/// How long a stopping gate waits for the queued messages to reach the broker.
const FLUSH: Duration = Duration::from_secs(2);

impl MqttSink {
    /// Starts the connection thread; nothing waits for the broker (an absent one is retried
    /// in the background and counted as dropped messages, never an error here).
    pub fn start(target: MqttTarget, camera: &str) -> MqttSink {
        let mut options = MqttOptions::new(
            format!("mcgate-{camera}-{}", std::process::id()),
            target.host.clone(),
            target.port,
        );
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
        let dropped = Arc::new(AtomicU64::new(0));
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                let _done = done;
                let mut backoff = Duration::from_millis(500);
                for event in connection.iter() {
                    match event {
                        // Everything queued before it has been written: the clean stop.
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            backoff = Duration::from_millis(500);
                            log::info!("mqtt: connected");
                            let _ =
                                online.try_publish(&available, QoS::AtLeastOnce, true, "online");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            log::warn!("mqtt: {e}; retrying in {:.1} s", backoff.as_secs_f64());
                            std::thread::sleep(backoff);
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
            dropped,
            finished,
        }
    }

    /// Messages dropped so far (queue full: broker gone or slow).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn publish(&self, leaf: &str, payload: Vec<u8>, retain: bool) {
        let topic = self.target.topic(leaf);
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .is_err()
        {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // The first, then every hundredth: a gone broker must not flood the log.
            if n == 1 || n.is_multiple_of(100) {
                log::warn!("mqtt: queue full, {n} messages dropped so far (broker gone or slow)");
            }
        }
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
                prefix: "home/gate".into()
            }
        );
        assert_eq!(MqttTarget::parse("mqtt://broker/cams").unwrap().port, 1883);
        for (bad, why) in [
            ("http://x/y", "not mqtt://"),
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
}
