//! The model card of an exported network.

use mcgate::contract::card::{
    sha256_hex, Metrics, ModelCard, OutputSpec, Provenance, Threshold, SCHEMA,
};

use crate::nets::{DropoutNet, OUTPUT};

/// The card for `onnx`, an export of `net`: the input, the dropout sites and the output come
/// from the network and the export contract; the measured parts (none yet, for a pretrained
/// export before calibration) from the caller; an ensemble's caller adds its `ensemble`.
///
/// Panics if `classes` does not name each of the network's classes.
#[allow(clippy::too_many_arguments)]
pub fn card_for(
    net: &dyn DropoutNet,
    name: &str,
    classes: Vec<String>,
    onnx: &[u8],
    default_samples: usize,
    threshold: Option<Threshold>,
    metrics: Option<Metrics>,
    provenance: Provenance,
) -> ModelCard {
    assert_eq!(
        classes.len(),
        net.classes(),
        "one label per output class of the network"
    );
    ModelCard {
        schema: SCHEMA.into(),
        name: name.into(),
        classes,
        input: net.input_spec(),
        dropout_sites: net.dropout_sites(),
        output: OutputSpec {
            name: OUTPUT.into(),
            log_density: None,
        },
        default_samples,
        threshold,
        metrics,
        onnx_sha256: sha256_hex(onnx),
        provenance,
        ensemble: None,
        security: None,
        tamper: None,
        fusion: None,
    }
}
