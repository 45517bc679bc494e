//! The `mcgate` command: gate camera frames by MC-dropout mutual information. This file
//! parses the command line, hands each command to its module in `cli/`, and maps what
//! stopped it to an exit code.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::exit::{self, exit_code, message, AFTER_HELP};
use cli::Failure;

#[derive(Parser)]
#[command(
    name = "mcgate",
    version,
    about = "Adversarial-input gate for edge cameras",
    long_about = "Adversarial-input gate for edge cameras.\n\n\
        Runs an ONNX dropout model T times per frame with random dropout masks (Monte-Carlo \
        dropout), computes the mutual information (MI) between the prediction and the \
        weights, and rejects frames whose MI is above the model card's threshold: high MI \
        marks inputs the model has not seen the like of, such as adversarial examples.",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gate frames: one verdict line per frame on stdout, a summary on stderr.
    ///
    /// Example: mcgate gate models/mnist samples/mnist/
    ///          ffmpeg -i cam.mp4 -vf scale=28:28 -f rawvideo -pix_fmt gray - |
    ///            mcgate gate models/mnist - --width 28 --height 28
    #[command(after_help = AFTER_HELP)]
    // Boxed: the gate's flags outweigh every other command's.
    Gate(Box<cli::gate::GateArgs>),
    /// Check detection on this device against the workstation: gate an eval bundle and
    /// compare, per attack, the ROC AUC of mutual information with the bundle's.
    ///
    /// Example: mcgate validate models/mnist bundles/mnist
    #[command(after_help = AFTER_HELP)]
    Validate(cli::validate::ValidateArgs),
    /// Turn an ONNX classifier of your own into a gated MC-dropout model: every Dropout
    /// node, and every tensor named with --site, becomes a dropout site whose masks mcgate
    /// draws. Writes OUT.onnx and OUT.card.json (no threshold yet: run `calibrate` next).
    ///
    /// Example: mcgate convert resnet.onnx --list-sites
    ///          mcgate convert resnet.onnx models/resnet --site onnx::Gemm_191=0.2 \
    ///            --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \
    ///            --resize-shorter 256 --center-crop 224 --labels classes.txt
    #[command(after_help = AFTER_HELP)]
    Convert(cli::convert::ConvertArgs),
    /// Set a model's MI threshold on clean frames from the camera it will guard: the
    /// (1 − FPR) quantile of their mutual information. Rewrites the model's card.
    ///
    /// Example: mcgate calibrate models/mine clean-frames/ --fpr 0.05
    #[command(after_help = AFTER_HELP)]
    Calibrate(cli::calibrate::CalibrateArgs),
    /// Print a model's card and a summary of its graph, after checking them.
    #[command(after_help = AFTER_HELP)]
    Info(cli::info::InfoArgs),
}

fn main() -> ExitCode {
    // tract warns on every load of a model with an opset above those it is tested on (PyTorch
    // exports opset 20): convert loads a model several times and checks the result itself.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,tract_onnx::model=error"),
    )
    .init();
    mcgate::panic::install_hook(exit::INTERNAL.into());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version: clap prints them
        Err(e) => {
            eprintln!("error: {}", usage_error_line(&e));
            return ExitCode::from(exit::USAGE);
        }
    };
    if let Err(message) = end_cleanly_on_signals() {
        eprintln!("error: {message}");
        return ExitCode::from(exit::USAGE);
    }
    let result = match cli.command {
        Command::Gate(args) => cli::gate::run(*args),
        Command::Info(args) => cli::info::run(args),
        Command::Validate(args) => cli::validate::run(args),
        Command::Calibrate(args) => cli::calibrate::run(args),
        Command::Convert(args) => cli::convert::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(exit::USAGE)
        }
        Err(Failure::Library(e)) => {
            eprintln!("error: {}", message(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Clap's message for a bad command line on one line, as every other error (sixth outside
/// probe: an unknown flag printed 7 lines, a bad value 3 to 6): what is wrong and clap's tip,
/// without the usage block that `--help` gives.
fn usage_error_line(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // Was the program's description, printed as if it were the error.
        use clap::CommandFactory;
        let commands: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|n| n != "help")
            .collect();
        return format!("a command is needed: {} (see --help)", commands.join(", "));
    }
    let text = e.render().to_string();
    let body = text.split("\nUsage:").next().unwrap_or(&text);
    let body = body.split("For more information").next().unwrap_or(body);
    let words: Vec<&str> = body.split_whitespace().collect();
    let line = words.join(" ");
    let line = line
        .strip_prefix("error: ")
        .unwrap_or(&line)
        .replace(" tip: ", "; tip: ");
    format!("{line} (see --help)")
}

/// On SIGTERM or SIGINT: removes the temporary files being written (their clean-up on drop
/// would not run), then ends the process as the signal would have (killed by it).
fn end_cleanly_on_signals() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot handle SIGTERM and SIGINT: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _no_new_files = mcgate::output::frames::remove_partial_files();
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::exit(128 + signal);
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the signal thread ({e})"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
