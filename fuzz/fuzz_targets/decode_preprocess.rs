//! Image decoding (PNG, JPEG, PNM, with the size limits) and preprocessing into the shipped
//! model's input on arbitrary file bytes: never panics; what comes out is the model's input
//! size and finite; a JPEG is accepted only with its end-of-image marker, and so is every
//! prefix of it that is (a JPEG cut short is rejected, not filled grey); what an accepted
//! frame would pass on comes out at the size asked, either way (`--pass-unscored-detail`).
//!
//! The decoder's allocation bound is 1 MiB here instead of the gate's 512 MiB: the same
//! checks, but a 4 KiB input declaring a 100-megapixel image costs a refusal instead of
//! seconds of inflating and resizing, which held the target at ~400 runs/s.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcgate::input::frame::{decode_bytes_within, DecodeLimits};
use mcgate::input::preprocess::{scored_pixels, PassedPixels, Preprocessor};
use mcgate::contract::card::ModelCard;

const LIMITS: DecodeLimits = DecodeLimits {
    max_alloc: 1 << 20,
    ..DecodeLimits::FRAMES
};

fn card() -> &'static ModelCard {
    static CARD: OnceLock<ModelCard> = OnceLock::new();
    CARD.get_or_init(|| {
        ModelCard::from_json(include_bytes!("../../models/mnist.card.json")).expect("shipped card")
    })
}

/// An accepted JPEG holds an end-of-image marker (0xFF 0xD9).
fn assert_ends_if_jpeg(bytes: &[u8]) {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        assert!(
            bytes.windows(2).any(|w| w == [0xFF, 0xD9]),
            "a JPEG without an end-of-image marker was decoded"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(image) = decode_bytes_within(data, LIMITS) else {
        return;
    };
    assert_ends_if_jpeg(data);
    if data.starts_with(&[0xFF, 0xD8]) && data.len() > 4 {
        // A prefix cut where the input's middle byte says: decoded only if it is whole.
        let cut = 2 + data[data.len() / 2] as usize * (data.len() - 2) / 256;
        if decode_bytes_within(&data[..cut], LIMITS).is_ok() {
            assert_ends_if_jpeg(&data[..cut]);
        }
    }
    let spec = &card().input;
    let mut pre = Preprocessor::new(spec);
    if let Ok(input) = pre.run(&image) {
        assert_eq!(input.len(), spec.len());
        assert!(input.iter().all(|v| v.is_finite()));
        // A pass-through stream size from the input's last bytes: 1..=64 each way.
        let side = |b: Option<&u8>| 1 + b.copied().unwrap_or(27) as u32 % 64;
        let size = (side(data.last()), side(data.iter().rev().nth(1)));
        for passed in [PassedPixels::ModelInput, PassedPixels::ScoredPart] {
            let out = scored_pixels(&image, spec, Some(size), passed).expect("resized");
            assert_eq!((out.width(), out.height()), size);
            scored_pixels(&image, spec, None, passed).expect("resized");
        }
    }
});
