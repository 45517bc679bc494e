//! A dropout ensemble, the paper's proposed fix for the holes one dropout model leaves far
//! from the data (Smith & Gal 2018, §4.2, Fig. 6): M trained networks of one architecture,
//! run side by side on the same image, each with its own masks. T samples per member give
//! `[M·T, N, C]` probabilities, so the measures (MI above all) run over the pooled samples.
//!
//! Its ONNX graph is the members' graphs side by side — names prefixed `m<k>.`, masks
//! renumbered so member k's sites follow member k−1's — and one Concat of their outputs:
//! the runtime runs all members in one call and learns M from the card's `ensemble`.

use anyhow::{ensure, Result};
use mcgate::contract::card::InputSpec;
use mcgate::contract::onnx::{int, value_info, Dim, Graph};
use tch::{Kind, Tensor};

use super::{mask_input, DropoutNet, Site, OUTPUT};

/// The prefix of member k's names: its ONNX nodes and constants, its variables.
pub fn member_prefix(k: usize) -> String {
    format!("m{k}")
}

/// M networks of one architecture whose MC samples are pooled.
#[derive(Debug)]
pub struct Ensemble<N> {
    members: Vec<N>,
}

impl<N: DropoutNet> Ensemble<N> {
    /// The ensemble of `members`, in output order. They must take the same input and give
    /// the same classes (and, for [`DropoutNet::trunk`], trunk features of one shape).
    pub fn new(members: Vec<N>) -> Result<Ensemble<N>> {
        ensure!(
            members.len() >= 2,
            "an ensemble needs at least 2 members, got {}",
            members.len()
        );
        let (input, classes) = (members[0].input_spec(), members[0].classes());
        for (k, m) in members.iter().enumerate().skip(1) {
            ensure!(
                m.input_spec() == input && m.classes() == classes,
                "member {k} takes another input or gives other classes than member 0"
            );
        }
        Ok(Ensemble { members })
    }

    /// The members, in output order.
    pub fn members(&self) -> &[N] {
        &self.members
    }

    /// Each member with its own run of `masks` (the ensemble's masks, in site order).
    fn with_masks<'a>(
        &'a self,
        masks: &'a [Tensor],
    ) -> impl Iterator<Item = (&'a N, &'a [Tensor])> {
        let mut offset = 0;
        self.members.iter().map(move |m| {
            let sites = m.sites().len();
            let own = &masks[offset..offset + sites];
            offset += sites;
            (m, own)
        })
    }
}

impl<N: DropoutNet> DropoutNet for Ensemble<N> {
    fn description(&self) -> String {
        format!(
            "ensemble of {} × {}, samples pooled",
            self.members.len(),
            self.members[0].description()
        )
    }

    fn input_spec(&self) -> InputSpec {
        self.members[0].input_spec()
    }

    /// Member 0's sites, then member 1's, …
    fn sites(&self) -> Vec<Site> {
        self.members.iter().flat_map(|m| m.sites()).collect()
    }

    fn classes(&self) -> usize {
        self.members[0].classes()
    }

    fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The members' trunk features stacked on axis 1: `[N, M, ..]`.
    fn trunk(&self, x: &Tensor) -> Tensor {
        let parts: Vec<Tensor> = self.members.iter().map(|m| m.trunk(x)).collect();
        Tensor::stack(&parts, 1)
    }

    /// `features` `[N, M, ..]` (the ensemble's trunk); member k's T samples come from its
    /// features and its masks, and are rows k·T..(k+1)·T of the `[M·T, N, C]` logits.
    fn head(&self, features: &Tensor, masks: &[Tensor]) -> Tensor {
        let parts: Vec<Tensor> = self
            .with_masks(masks)
            .enumerate()
            .map(|(k, (m, own))| m.head(&features.select(1, k as i64), own))
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// Log of the mean of the members' softmaxes (computed as a log-sum-exp, stable where a
    /// probability underflows): its softmax is the ensemble's prediction, its cross-entropy
    /// the loss an attack on the ensemble raises.
    fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        let log_probs: Vec<Tensor> = self
            .members
            .iter()
            .map(|m| m.logits(x, train).log_softmax(-1, Kind::Float))
            .collect();
        Tensor::stack(&log_probs, 0).logsumexp([0], false) - (self.members.len() as f64).ln()
    }

    fn onnx_graph(&self, doc: &str) -> Result<Graph> {
        let input = self.input_spec();
        let mut g = Graph::contract(
            "mcgate_dropout_ensemble",
            &input,
            &self.dropout_sites(),
            OUTPUT,
            self.classes(),
        );
        g.doc = doc.into();
        g.outputs = vec![value_info(
            OUTPUT,
            &[
                Dim::Pooled(self.members.len() as i64),
                Dim::Fixed(self.classes() as i64),
            ],
        )];
        let mut outputs = vec![];
        let mut offset = 0;
        for (k, m) in self.members.iter().enumerate() {
            let sites = m.sites().len();
            let rename = |name: &str| -> String {
                if name.is_empty() || name == input.name {
                    return name.to_string(); // an omitted optional input; the shared image
                }
                match (0..sites).find(|&i| name == mask_input(i)) {
                    Some(i) => mask_input(offset + i),
                    None => format!("{}.{name}", member_prefix(k)),
                }
            };
            let member = m.onnx_graph("")?;
            for mut node in member.nodes {
                node.name = rename(&node.name);
                node.input = node.input.iter().map(|n| rename(n)).collect();
                node.output = node.output.iter().map(|n| rename(n)).collect();
                g.nodes.push(node);
            }
            for mut constant in member.initializers {
                constant.name = rename(&constant.name);
                g.initializers.push(constant);
            }
            outputs.push(rename(OUTPUT));
            offset += sites;
        }
        let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        g.node("Concat", &outputs, OUTPUT, vec![int("axis", 0)]);
        Ok(g)
    }
}
