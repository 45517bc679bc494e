//! Where tract spends a frame: every node of the plan the gate runs timed over many runs,
//! summed by operator and listed for the costliest nodes (what `tract --profile` reports,
//! through the library the gate uses).
//!
//! `cargo run --release --example profile_nodes -- models/lite0-imagenet [RUNS] [T]`
//!
//! The image is zeros and every mask one: convolution and product times do not depend on
//! the values. Timings include each node's own overhead, so their sum slightly exceeds a
//! plain run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mcgate::model::Model;
use tract_onnx::prelude::*;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let model_arg = PathBuf::from(
        args.next()
            .context("usage: profile_nodes MODEL [RUNS] [T]")?,
    );
    let runs: usize = args.next().map_or(Ok(50), |s| s.parse())?;
    let samples: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let model = Model::load_from(&model_arg)?;
    let plan = mcgate::engine::tract::plan::optimised(
        mcgate::engine::tract::TractGraph::of(model.graph())
            .expect("tract read the model")
            .typed(),
    )?;
    let optimised = plan.model();
    let inputs: TVec<TValue> = optimised
        .input_outlets()?
        .iter()
        .map(|outlet| {
            let name = &optimised.node(outlet.node).name;
            let shape: Vec<usize> = match model.card.dropout_sites.iter().find(|s| &s.input == name)
            {
                Some(site) => [vec![samples], site.shape.clone()].concat(),
                None => model.card.input.shape.to_vec(),
            };
            let value = if name == &model.card.input.name {
                0.0
            } else {
                1.0
            };
            Ok(tract_ndarray::ArrayD::<f32>::from_elem(shape, value).into_tvalue())
        })
        .collect::<Result<_>>()?;

    let mut state = TypedSimpleState::new(&plan)?;
    // Warm-up, then the timed runs.
    state.run(inputs.clone())?;
    let mut per_node: HashMap<usize, Duration> = HashMap::new();
    let start = Instant::now();
    for _ in 0..runs {
        state.run_plan_with_eval(inputs.clone(), |ctx, op_state, node, input| {
            let t = Instant::now();
            let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, input);
            *per_node.entry(node.id).or_default() += t.elapsed();
            out
        })?;
    }
    let wall = start.elapsed().as_secs_f64() * 1e3 / runs as f64;
    let total: f64 = per_node.values().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / runs as f64;
    println!(
        "{}: T={samples}, {runs} runs: {wall:.3} ms per run, {total:.3} ms in nodes, {} nodes",
        model_arg.display(),
        optimised.nodes().len()
    );

    let mut by_op: HashMap<String, (f64, usize)> = HashMap::new();
    for (&id, d) in &per_node {
        let e = by_op.entry(op_kind(optimised.node(id))).or_default();
        e.0 += d.as_secs_f64() * 1e3 / runs as f64;
        e.1 += 1;
    }
    let mut by_op: Vec<_> = by_op.into_iter().collect();
    by_op.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!("\n| operator | nodes | ms per run | share |\n|---|---|---|---|");
    for (op, (ms, n)) in &by_op {
        println!("| {op} | {n} | {ms:.3} | {:.1} % |", 100.0 * ms / total);
    }

    let mut nodes: Vec<_> = per_node.iter().collect();
    nodes.sort_by(|a, b| b.1.cmp(a.1));
    println!("\n| node | operator | ms per run |\n|---|---|---|");
    for (&id, d) in nodes.iter().take(15) {
        let node = optimised.node(id);
        println!(
            "| {} | {} | {:.3} |",
            node.name,
            op_kind(node),
            d.as_secs_f64() * 1e3 / runs as f64
        );
    }
    Ok(())
}

/// The operator's name, with the depthwise/matrix-product distinction tract makes visible
/// in its name.
fn op_kind(node: &TypedNode) -> String {
    node.op().name().to_string()
}
