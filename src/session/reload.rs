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

    /// Re-reads the card once and takes its threshold if the run can trust it: readable, with
    /// a threshold, the pinned digest (if pinned), the same ONNX, and a threshold this run
    /// can reach.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> serde_json::Value {
        serde_json::from_slice(include_bytes!("../../models/mnist.card.json")).unwrap()
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
