//! `mcgate convert`: an ONNX classifier of your own into a gated model.

use std::path::PathBuf;

use clap::Args;

use mcgate::contract::card::{ChannelOrder, ModelPaths, Resize};
use mcgate::model::LoadError;
use mcgate::output::frames::will_be_same_file;
use mcgate::Error;

use super::exit;
use super::{print, Failure};

#[derive(Args)]
pub(crate) struct ConvertArgs {
    /// The ONNX classifier to convert.
    input: PathBuf,
    /// Output stem: writes OUT.onnx and OUT.card.json.
    #[arg(required_unless_present = "list_sites")]
    out: Option<PathBuf>,
    /// Print the tensors a dropout site can go on (the data inputs of the Gemm, MatMul and
    /// Conv layers, the last layers last) with their shapes at batch 1, and exit.
    #[arg(long)]
    list_sites: bool,
    /// Put a dropout site with drop probability P on tensor NAME (repeatable): for graphs
    /// whose export dropped Dropout (PyTorch's eval-mode export). See --list-sites.
    #[arg(long = "site", value_name = "NAME=P", value_parser = parse_site)]
    sites: Vec<(String, f32)>,
    /// The graph output to gate, when the graph has several.
    #[arg(long, value_name = "NAME")]
    output: Option<String>,
    /// Input normalisation: value = (pixel · SCALE − mean[c]) / std[c], pixels 0–255.
    #[arg(long, default_value_t = 1.0 / 255.0)]
    scale: f32,
    /// Per-channel mean, comma-separated (one value: every channel).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    mean: Vec<f32>,
    /// Per-channel standard deviation, comma-separated (one value: every channel).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    std: Vec<f32>,
    /// The model takes its colour planes in BGR order (OpenCV/Caffe-trained models).
    #[arg(long)]
    bgr: bool,
    /// Resize frames so that the shorter side is N pixels (keeping the aspect ratio), then
    /// cut the centre (--center-crop, the model's H = W) [default: stretch to H×W].
    #[arg(long, value_name = "N", requires = "center_crop")]
    resize_shorter: Option<u32>,
    /// The centre square cut after --resize-shorter; must be the model's H and W.
    #[arg(long, value_name = "M", requires = "resize_shorter")]
    center_crop: Option<u32>,
    /// Class labels, one per line, in output order [default: the class indices].
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Default Monte-Carlo samples T written into the card.
    #[arg(short = 'T', long, default_value_t = 20)]
    samples: usize,
}

/// `NAME=P` of `--site`.
fn parse_site(arg: &str) -> Result<(String, f32), String> {
    let (name, p) = arg
        .rsplit_once('=')
        .ok_or_else(|| format!("{arg:?} is not NAME=P"))?;
    let p: f32 = p
        .parse()
        .map_err(|_| format!("{p:?} in {arg:?} is not a probability"))?;
    if name.is_empty() {
        return Err(format!("{arg:?} names no tensor"));
    }
    Ok((name.to_string(), p))
}

pub(crate) fn run(args: ConvertArgs) -> Result<u8, Failure> {
    let onnx = mcgate::files::read_bounded(&args.input, mcgate::files::MAX_ONNX_BYTES)
        .map_err(|e| Error::from(LoadError::io("read model", &args.input, e)))?;
    if args.list_sites {
        let candidates =
            mcgate::model::rewrite::list_sites(&onnx).map_err(|problem| Error::Convert {
                path: args.input.clone(),
                problem,
            })?;
        let mut text = format!("{:<40} {:<20} feeds\n", "tensor", "shape at batch 1");
        for c in candidates {
            text += &format!(
                "{:<40} {:<20} {}\n",
                c.tensor,
                format!("{:?}", c.shape),
                c.feeds
            );
        }
        print(&text)?;
        return Ok(exit::OK);
    }
    let out = args
        .out
        .clone()
        .expect("clap requires OUT without --list-sites");
    let outputs = ModelPaths::resolve(&out);
    for written in [&outputs.onnx, &outputs.card] {
        if will_be_same_file(written, &args.input) {
            return Err(Failure::Usage(format!(
                "{} would overwrite the model being converted ({}): give another OUT stem",
                written.display(),
                args.input.display()
            )));
        }
    }
    let labels = match &args.labels {
        None => None,
        Some(path) => Some(
            // The labels go into the card, which is read at most MAX_CARD_BYTES.
            mcgate::files::read_bounded(path, mcgate::files::MAX_CARD_BYTES)
                .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
                .map_err(|e| {
                    Failure::Usage(format!("cannot read --labels {}: {e}", path.display()))
                })?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        ),
    };
    let card_options = mcgate::convert::CardOptions {
        labels,
        scale: args.scale,
        mean: args.mean.clone(),
        std: args.std.clone(),
        channel_order: if args.bgr {
            ChannelOrder::Bgr
        } else {
            ChannelOrder::Rgb
        },
        resize: match (args.resize_shorter, args.center_crop) {
            (Some(shorter_side), Some(crop)) => Resize::ShorterSideCrop { shorter_side, crop },
            _ => Resize::Stretch,
        },
        default_samples: args.samples,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let options = mcgate::model::rewrite::Options {
        sites: args.sites.clone(),
        output: args.output.clone(),
    };
    let checked = mcgate::convert::convert(&args.input, &onnx, &options, &card_options)?;
    let (onnx_path, card_path) = mcgate::convert::write(&out, &checked)?;
    let c = &checked.converted;
    let sites: Vec<String> = c
        .sites
        .iter()
        .map(|s| format!("{} p={} {:?}", s.input, s.p, s.shape))
        .collect();
    print(&format!(
        "converted {}: input {} {:?}, {} classes{}, {} dropout site(s): {}\n\
         check: with every mask 1 it matches the original within {:.1e} ({} random inputs, tract)\n\
         wrote {} and {}\n\
         next: mcgate calibrate {} CLEAN_FRAMES… (the card has no MI threshold yet)\n",
        args.input.display(),
        c.input.0,
        c.input.1,
        c.classes,
        if c.softmax_appended {
            " (softmax appended to the logits)"
        } else {
            ""
        },
        c.sites.len(),
        sites.join("; "),
        checked.max_difference,
        mcgate::convert::CHECK_INPUTS,
        onnx_path.display(),
        card_path.display(),
        out.display()
    ))?;
    Ok(exit::OK)
}
