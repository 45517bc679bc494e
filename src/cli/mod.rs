//! The command line: one module per command, each its flags (clap `Args`) and a `run` that
//! turns them into library calls; `exit` maps what stopped a command to its exit code.

pub mod calibrate;
pub mod convert;
pub mod engine;
pub mod exit;
pub mod frames;
pub mod gate;
pub mod info;
pub mod validate;

use std::io::Write;

use mcgate::{run::rng, Error};

/// Why a command stopped: the command line itself, or what the library reported.
pub(crate) enum Failure {
    Usage(String),
    Library(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Library(e)
    }
}

impl From<mcgate::model::LoadError> for Failure {
    fn from(e: mcgate::model::LoadError) -> Failure {
        Failure::Library(e.into())
    }
}

/// Writes a command's whole output to stdout.
pub(crate) fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::Output {
            what: "stdout".into(),
            cause: e.to_string(),
        })
}

/// The run seed given, or one from the OS: an attacker must not predict the masks.
pub(crate) fn run_seed(given: Option<u64>) -> Result<u64, Failure> {
    match given {
        Some(seed) => Ok(seed),
        None => rng::seed_from_os().map_err(|e| {
            Failure::Usage(format!(
                "no OS randomness for the mask seed ({e}); pass --seed"
            ))
        }),
    }
}

/// The signals named on the command line (`--signals mi,entropy,tamper`): model signals, and
/// whether `tamper` was named (refused where `tamper` is not a choice).
pub(crate) fn parse_signals(
    names: &[String],
    tamper_allowed: bool,
) -> Result<(Vec<mcgate::contract::card::Signal>, bool), Failure> {
    use mcgate::contract::card::Signal;
    let mut signals = vec![];
    let mut tamper = false;
    for name in names {
        let twice = || Failure::Usage(format!("--signals names {name} twice"));
        if name == "tamper" && tamper_allowed {
            if tamper {
                return Err(twice());
            }
            tamper = true;
        } else if let Some(signal) = Signal::from_name(name) {
            if signals.contains(&signal) {
                return Err(twice());
            }
            signals.push(signal);
        } else {
            let known = Signal::ALL.map(Signal::name).join(", ");
            let extra = if tamper_allowed { ", tamper" } else { "" };
            return Err(Failure::Usage(format!(
                "--signals: no signal {:?} (known: {known}{extra})",
                mcgate::text::printable(name)
            )));
        }
    }
    Ok((signals, tamper))
}
