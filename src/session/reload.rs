//! A new MI threshold from the model's card while the gate runs (`kill -HUP`): the frames
//! scored from then on take it, none is dropped, and a card the run cannot trust is refused
//! with one log line, the old threshold kept.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::contract::card::{ModelCard, ModelPaths};
use crate::gate::check_threshold;
use crate::model::BUILTIN;
use crate::score::verdict::SharedThreshold;
use crate::Error;

/// Re-reads a model's card on request and takes its threshold.
pub struct CardReload {
    card_path: PathBuf,
    /// The card the run started with: its ONNX digest, classes and output rows bound the new
    /// threshold.
    card: ModelCard,
    samples: usize,
    pinned: Option<String>,
    /// Why requests are ignored: the threshold is not the card's to change.
    ignored: Option<&'static str>,
    threshold: Arc<SharedThreshold>,
}

/// What one request did.
#[derive(Debug, Clone, PartialEq)]
pub enum Reloaded {
    /// Nothing: the threshold comes from the command line or the built-in model.
    Ignored(&'static str),
    /// The card was refused; the threshold stays `old`.
    Kept {
        /// The threshold in force.
        old: f64,
        /// Why the card was refused, naming it.
        why: String,
    },
    /// The threshold changed.
    Changed {
        /// Before.
        old: f64,
        /// After.
        new: f64,
        /// The card it came from.
        card: PathBuf,
    },
}

impl fmt::Display for Reloaded {
    /// The log line, as SIGHUP writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reloaded::Ignored(why) => write!(f, "SIGHUP ignored: {why}"),
            Reloaded::Kept { old, why } => {
                write!(f, "SIGHUP: {why}; keeping MI threshold {old}")
            }
            Reloaded::Changed { old, new, card } => write!(
                f,
                "SIGHUP: MI threshold {old} -> {new} from {}",
                card.display()
            ),
        }
    }
}

impl CardReload {
    /// Reloads of the card of the model named `model_arg`, which the run loaded as `card` and
    /// runs at `samples`, into `threshold`. With `threshold_given` (`--threshold`) or the
    /// built-in model there is no card to take a threshold from: requests are ignored.
    /// `pinned`: the card digest the run was pinned to (`--card-sha256`).
    pub fn new(
        model_arg: &Path,
        card: &ModelCard,
        samples: usize,
        threshold_given: bool,
        pinned: Option<String>,
        threshold: Arc<SharedThreshold>,
    ) -> CardReload {
        let builtin = model_arg.as_os_str() == BUILTIN;
        CardReload {
            card_path: ModelPaths::resolve(model_arg).card,
            card: card.clone(),
            samples,
            pinned,
            ignored: (threshold_given || builtin)
                .then_some("the threshold comes from --threshold or the built-in model"),
            threshold,
        }
    }

    /// Requests are ignored, for `why`: the threshold decides nothing in this run.
    pub fn ignoring(mut self, why: &'static str) -> CardReload {
        self.ignored = Some(why);
        self
    }

    /// Re-reads the card once and takes its threshold if the run can trust it: readable, with
    /// a threshold, the pinned digest (if pinned), the same ONNX, the same setup otherwise
    /// ([`changed_setup`]), and a threshold this run can reach.
    pub fn reload(&self) -> Reloaded {
        if let Some(why) = self.ignored {
            return Reloaded::Ignored(why);
        }
        let old = self.threshold.get();
        let path = self.card_path.display();
        let kept = |why: String| Reloaded::Kept { old, why };
        let new_card = match ModelCard::read_with_sha256(&self.card_path) {
            Err(e) => return kept(e.to_string()),
            Ok((_, digest)) if self.pinned.as_ref().is_some_and(|p| *p != digest) => {
                return kept(format!(
                    "{path} has SHA-256 {digest}, not the one pinned with --card-sha256"
                ))
            }
            Ok((card, _)) if card.onnx_sha256 != self.card.onnx_sha256 => {
                return kept(format!(
                    "{path} is for another model (ONNX {})",
                    card.onnx_sha256
                ))
            }
            Ok((card, _)) => card,
        };
        let changed = changed_setup(&self.card, &new_card, self.samples);
        if !changed.is_empty() {
            return kept(format!(
                "{path} changes {}, which only a restart takes (SIGHUP takes the threshold \
                 alone)",
                changed.join(", ")
            ));
        }
        let Some(new) = new_card.mi_threshold() else {
            return kept(format!("{path} has no threshold"));
        };
        if let Err(e) = check_threshold(&self.card, self.samples, new) {
            return kept(format!("{path}: {e}"));
        }
        self.threshold.set(new);
        Reloaded::Changed {
            old,
            new,
            card: self.card_path.clone(),
        }
    }

    /// Reloads on every SIGHUP `signals` receives, on a thread of its own, logging one line
    /// each. Register the signals first thing: until then a SIGHUP ends the process. A thread
    /// the system will not start is an error, not a panic.
    pub fn listen(self, mut signals: signal_hook::iterator::Signals) -> Result<(), Error> {
        std::thread::Builder::new()
            .spawn(move || {
                for _ in signals.forever() {
                    log::warn!("{}", self.reload());
                }
            })
            .map(drop)
            .map_err(|e| Error::Setting(format!("cannot start the SIGHUP thread ({e})")))
    }
}

/// The card fields `new` changes from the running card `old`, other than those a reload may
/// change: the threshold (with its calibration), what is only reported (`security`,
/// `metrics`, the schema version), and `default_samples` when it becomes the T the run uses
/// (`samples`). Every other field was checked against the graph at start, or sets how frames
/// are fed and scored, which the running plans cannot change (fifth outside probe: cards
/// with another input shape, class count, site name, input name or permuted labels were
/// taken and their threshold applied; a new `p` or `scale` was silently not).
pub fn changed_setup(old: &ModelCard, new: &ModelCard, samples: usize) -> Vec<String> {
    let setup = |card: &ModelCard| {
        let mut card = card.clone();
        card.threshold = None;
        card.security = None;
        card.metrics = None;
        card.schema = String::new();
        if card.default_samples == samples {
            card.default_samples = old.default_samples;
        }
        serde_json::to_value(card).unwrap_or_default()
    };
    let (a, b) = (setup(old), setup(new));
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["the card".into()];
    };
    a.keys()
        .chain(b.keys().filter(|k| !a.contains_key(*k)))
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("`{k}`"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> serde_json::Value {
        serde_json::from_slice(include_bytes!("../../models/mnist.card.json")).unwrap()
    }

    /// A run whose fused signals decide takes nothing from a reload: the threshold it would
    /// change decides no frame.
    #[test]
    fn a_reload_the_run_ignores_says_why() {
        let card: ModelCard = serde_json::from_value(shipped()).unwrap();
        let threshold = Arc::new(SharedThreshold::new(0.1));
        let reload = CardReload::new(
            Path::new("models/mnist"),
            &card,
            20,
            false,
            None,
            threshold.clone(),
        )
        .ignoring("the fused signals decide");
        assert_eq!(
            reload.reload(),
            Reloaded::Ignored("the fused signals decide")
        );
        assert_eq!(threshold.get(), 0.1);
    }

    #[test]
    fn a_reload_takes_a_trusted_card_and_keeps_the_threshold_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.card.json");
        let mut json = shipped();
        let write = |json: &serde_json::Value| std::fs::write(&path, json.to_string()).unwrap();
        write(&json);
        let card = ModelCard::read(&path).unwrap();
        let start = card.mi_threshold().unwrap();
        let threshold = Arc::new(SharedThreshold::new(start));
        let stem = dir.path().join("m");
        let reload = CardReload::new(&stem, &card, 20, false, None, threshold.clone());

        json["threshold"]["mutual_information"] = 0.2.into();
        write(&json);
        assert_eq!(
            reload.reload(),
            Reloaded::Changed {
                old: start,
                new: 0.2,
                card: path.clone()
            }
        );
        assert_eq!(threshold.get(), 0.2);

        let kept = |reload: &CardReload, needle: &str| {
            let r = reload.reload();
            assert!(
                matches!(&r, Reloaded::Kept { old, why } if *old == 0.2 && why.contains(needle)),
                "{r:?}"
            );
            assert!(r.to_string().ends_with("; keeping MI threshold 0.2"), "{r}");
        };
        json["threshold"]["mutual_information"] = 0.3.into();
        json["onnx_sha256"] = "f".repeat(64).into();
        write(&json);
        kept(&reload, "is for another model");
        json["onnx_sha256"] = card.onnx_sha256.clone().into();
        // Over what 10 classes allow (the card's bound), over what 4 samples allow (the run's).
        json["threshold"]["mutual_information"] = 2.5.into();
        write(&json);
        kept(&reload, "is not below ln(10)");
        json["threshold"]["mutual_information"] = 2.0.into();
        write(&json);
        let at_t4 = CardReload::new(&stem, &card, 4, false, None, threshold.clone());
        kept(&at_t4, "below 1.3863 = ln(min(10 classes, 4 samples))");
        // Anything but the threshold and what is only reported: a restart's (fifth outside
        // probe: these were taken, their threshold applied, or ignored without a word).
        json["threshold"]["mutual_information"] = 0.3.into();
        for (field, value, named) in [
            ("/input/shape", serde_json::json!([1, 1, 14, 14]), "`input`"),
            ("/input/scale", serde_json::json!(0.0004), "`input`"),
            ("/input/name", serde_json::json!("y"), "`input`"),
            (
                "/dropout_sites/0/p",
                serde_json::json!(0.01),
                "`dropout_sites`",
            ),
            (
                "/dropout_sites/0/input",
                serde_json::json!("mask_9"),
                "`dropout_sites`",
            ),
            ("/classes/0", serde_json::json!("nine"), "`classes`"),
            (
                "/default_samples",
                serde_json::json!(8),
                "`default_samples`",
            ),
        ] {
            let mut other = json.clone();
            *other.pointer_mut(field).unwrap() = value;
            write(&other);
            kept(
                &reload,
                &format!("changes {named}, which only a restart takes"),
            );
        }
        // Recalibrated at the T a `-T 8` run uses, schema 2 without metrics: taken by that run.
        let mut other = json.clone();
        other["default_samples"] = 8.into();
        other["metrics"] = serde_json::Value::Null;
        other["schema"] = "mcgate.card/2".into();
        write(&other);
        let at_t8 = CardReload::new(&stem, &card, 8, false, None, threshold.clone());
        let r = at_t8.reload();
        assert!(matches!(r, Reloaded::Changed { new: 0.3, .. }), "{r}");
        json["threshold"]["mutual_information"] = 0.2.into();
        write(&json);
        assert!(matches!(
            reload.reload(),
            Reloaded::Changed { new: 0.2, .. }
        ));
        std::fs::write(&path, "{").unwrap();
        kept(&reload, "not valid JSON");
        assert_eq!(threshold.get(), 0.2);

        // Pinned: only the card with that digest is taken.
        json["threshold"]["mutual_information"] = 0.25.into();
        write(&json);
        let digest = crate::contract::card::sha256_hex(&std::fs::read(&path).unwrap());
        let pinned = |pin: &str| {
            CardReload::new(&stem, &card, 20, false, Some(pin.into()), threshold.clone())
        };
        kept(
            &pinned(&"0".repeat(64)),
            "not the one pinned with --card-sha256",
        );
        assert!(matches!(
            pinned(&digest).reload(),
            Reloaded::Changed { new: 0.25, .. }
        ));

        let given = CardReload::new(&stem, &card, 20, true, None, threshold.clone());
        assert!(matches!(given.reload(), Reloaded::Ignored(_)));
        let builtin = CardReload::new(Path::new(BUILTIN), &card, 20, false, None, threshold);
        assert!(matches!(builtin.reload(), Reloaded::Ignored(_)));
    }
}
