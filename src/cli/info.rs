//! `mcgate info`: a model's card and graph, after checking them.

use std::path::PathBuf;

use clap::Args;

use mcgate::model::Model;

use super::engine::EngineArgs;
use super::exit;
use super::{print, Failure};

#[derive(Args)]
pub(crate) struct InfoArgs {
    /// Model: `models/mnist`, its `.onnx` or `.card.json` path, or `builtin:mnist`.
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

pub(crate) fn run(
    InfoArgs {
        model,
        json,
        engine,
    }: InfoArgs,
) -> Result<u8, Failure> {
    let model = Model::load_from_with(&model, &engine.engine()?)?;
    let text = if json {
        serde_json::json!({
            "card": model.card,
            "card_sha256": model.card_sha256,
            "graph": model.summary,
            "site_paths": model.site_paths(),
        })
        .to_string()
            + "\n"
    } else {
        model.describe()
    };
    print(&text)?;
    Ok(exit::OK)
}
