//! Process exit codes (documented in the README and in `AFTER_HELP`) and the one-line
//! messages errors are printed with.

use mcgate::model::rewrite::ConvertError;
use mcgate::Error;

/// Every frame was read and scored (rejected frames are a normal outcome).
pub const OK: u8 = 0;
/// Unexpected internal failure (a bug: please report it).
pub const INTERNAL: u8 = 1;
/// Bad command-line usage (clap's own code).
pub const USAGE: u8 = 2;
/// The model or its card is missing, corrupt, or they do not match.
pub const MODEL: u8 = 3;
/// At least one input frame could not be read or scored (each was rejected).
pub const INPUT: u8 = 4;
/// An output (stdout, `--accepted`, `--annotate`) could not be written.
pub const OUTPUT: u8 = 5;
/// `validate`: the device's detection differs from the workstation's beyond the tolerance.
pub const VALIDATION: u8 = 6;

pub const AFTER_HELP: &str = "\
Exit codes:
  0  every frame was read and scored (rejecting frames is a normal outcome)
  1  internal error (a bug)
  2  bad command line
  3  model or card missing, corrupt, or not matching each other
  4  at least one frame could not be read or scored (each such frame was rejected)
  5  an output (stdout, --accepted, --annotate) could not be written
  6  validate: detection on this device differs from the workstation beyond --tolerance
SIGTERM or SIGINT ends mcgate as killed by that signal, after removing the temporary file
of any output being written (outputs appear whole under their name or not at all).

Logs go to stderr; set RUST_LOG=info (or debug) for more.";

/// The exit code for an error that stopped a command.
pub(crate) fn exit_code(e: &Error) -> u8 {
    match e {
        // convert's card options (--labels, --mean, --std) are the command line's.
        Error::Convert {
            problem: ConvertError::Card(_),
            ..
        } => USAGE,
        // The converter's own check of its result failed: a bug in convert.
        Error::Convert {
            problem: ConvertError::Verify(_),
            ..
        } => INTERNAL,
        Error::Load(_) | Error::Convert { .. } | Error::Uncalibrated { .. } => MODEL,
        Error::Bundle { .. } | Error::Calibration(_) => INPUT,
        Error::OutOfRange { .. } | Error::Setting(_) | Error::RawFrameSize(_) | Error::Alarm(_) => {
            USAGE
        }
        Error::Output { .. } => OUTPUT,
        Error::Inference(_) => INTERNAL,
    }
}

/// The one-line message, naming the flag where the library names a setting.
pub(crate) fn message(e: &Error) -> String {
    match e {
        Error::OutOfRange {
            what: "jobs",
            expected,
            got,
        } => format!("--jobs must be {expected}, got {got}"),
        Error::OutOfRange {
            what: "fpr",
            expected,
            got,
        } => format!("--fpr must be {expected}, got {got}"),
        _ => e.to_string(),
    }
}
