//! The graph against its card: the inputs, their types and shapes, and the one output must
//! be the ones the card describes (docs/model-format.md).

use tract_onnx::prelude::*;

use super::dims_to_string;
use crate::contract::card::ModelCard;
use crate::contract::card::SAMPLE_DIM;
use crate::engine::MismatchError;
use crate::text::one_line;

fn is_sample_dim(d: &TDim) -> bool {
    matches!(d, TDim::Sym(s) if s.to_string() == SAMPLE_DIM)
}

/// Checks inputs and output against the card.
pub(crate) fn against_card(model: &TypedModel, card: &ModelCard) -> Result<(), MismatchError> {
    let tract = |e: anyhow::Error| MismatchError::Graph(one_line(&e));
    let mut graph_inputs = vec![];
    for (ix, outlet) in model.input_outlets().map_err(tract)?.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(tract)?;
        graph_inputs.push((model.node(outlet.node).name.clone(), fact.clone()));
    }
    let mut wanted: Vec<&str> = vec![card.input.name.as_str()];
    wanted.extend(card.dropout_sites.iter().map(|s| s.input.as_str()));
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !graph_inputs.iter().any(|(n, _)| n == *w))
        .map(|w| w.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(MismatchError::MissingInputs(missing));
    }
    let extra: Vec<String> = graph_inputs
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !wanted.contains(&n.as_str()))
        .cloned()
        .collect();
    if !extra.is_empty() {
        return Err(MismatchError::ExtraInputs(extra));
    }
    for (name, fact) in &graph_inputs {
        if fact.datum_type != f32::datum_type() {
            return Err(MismatchError::InputType {
                name: name.clone(),
                got: format!("{:?}", fact.datum_type),
            });
        }
        let dims = fact.shape.to_tvec();
        if *name == card.input.name {
            let want: Vec<TDim> = card
                .input
                .shape
                .iter()
                .map(|&d| (d as i64).into())
                .collect();
            if dims[..] != want[..] {
                return Err(MismatchError::ImageShape {
                    name: name.clone(),
                    graph: dims_to_string(&dims),
                    card: format!("{:?}", card.input.shape),
                });
            }
        } else {
            let site = card
                .dropout_sites
                .iter()
                .find(|s| &s.input == name)
                .expect("every graph input is in the card (checked above)");
            let want: Vec<TDim> = site.shape.iter().map(|&d| (d as i64).into()).collect();
            if dims.is_empty() || !is_sample_dim(&dims[0]) || dims[1..] != want[..] {
                return Err(MismatchError::MaskShape {
                    name: name.clone(),
                    graph: dims_to_string(&dims),
                    site: site
                        .shape
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    let outputs = model.output_outlets().map_err(tract)?;
    let expected = 1 + card.output.log_density.is_some() as usize;
    if outputs.len() != expected {
        return Err(MismatchError::OutputCount {
            got: outputs.len(),
            expected,
        });
    }
    if let Some(density) = &card.output.log_density {
        let label = model.outlet_label(outputs[1]).unwrap_or("");
        let fact = model.output_fact(1).map_err(tract)?;
        let dims = fact.shape.to_tvec();
        let one: TDim = 1.into();
        if label != density
            || fact.datum_type != f32::datum_type()
            || dims[..] != [one.clone(), one]
        {
            return Err(MismatchError::DensityOutput {
                name: label.to_string(),
                graph: format!("{:?} {}", fact.datum_type, dims_to_string(&dims)),
                card: density.clone(),
            });
        }
    }
    let label = model.outlet_label(outputs[0]).unwrap_or("");
    if label != card.output.name {
        return Err(MismatchError::OutputName {
            graph: label.to_string(),
            card: card.output.name.clone(),
        });
    }
    let fact = model.output_fact(0).map_err(tract)?;
    let dims = fact.shape.to_tvec();
    let classes: TDim = (card.classes.len() as i64).into();
    let members = card.members() as i64;
    let rows_ok = |d: &TDim| match members {
        1 => is_sample_dim(d),
        m => matches!(d, TDim::MulInt(k, t) if *k == m && is_sample_dim(t)),
    };
    if fact.datum_type != f32::datum_type()
        || dims.len() != 2
        || !rows_ok(&dims[0])
        || dims[1] != classes
    {
        return Err(MismatchError::OutputShape {
            name: label.to_string(),
            graph: format!("{:?} {}", fact.datum_type, dims_to_string(&dims)),
            rows: match members {
                1 => SAMPLE_DIM.to_string(),
                m => format!("{m}*{SAMPLE_DIM}"),
            },
            classes: card.classes.len(),
        });
    }
    Ok(())
}
