//! Image decoding (PNG, JPEG, PNM, with the size limits) and preprocessing into the shipped
//! model's input on arbitrary file bytes: never panics; what comes out is the model's input
//! size and finite.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcgate::input::frame::decode_bytes;
use mcgate::input::preprocess::Preprocessor;
use mcgate::model::card::ModelCard;

fn card() -> &'static ModelCard {
    static CARD: OnceLock<ModelCard> = OnceLock::new();
    CARD.get_or_init(|| {
        ModelCard::from_json(include_bytes!("../../models/mnist.card.json")).expect("shipped card")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(image) = decode_bytes(data) else {
        return;
    };
    let spec = &card().input;
    let mut pre = Preprocessor::new(spec);
    if let Ok(input) = pre.run(&image) {
        assert_eq!(input.len(), spec.len());
        assert!(input.iter().all(|v| v.is_finite()));
    }
});
