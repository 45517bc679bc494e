//! The model-card parser on arbitrary bytes: never panics; a card it accepts is valid,
//! survives a round trip through its own serialisation, and can still reject a frame — each
//! bound of docs/model-format.md rechecked here on its own terms (T, p, the drops per sample,
//! the threshold against ln(classes), a normalisation that tells the 256 pixel levels apart,
//! the sizes, no control characters in its texts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcgate::contract::card::ModelCard;

fuzz_target!(|data: &[u8]| {
    if let Ok(card) = ModelCard::from_json(data) {
        card.validate()
            .expect("from_json returned a card that does not validate");
        let json = card.to_json();
        let again = ModelCard::from_json(json.as_bytes()).expect("a card's own JSON parses");
        assert_eq!(again.to_json(), json, "round trip changed the card");
        can_still_reject(&card);
    }
});

/// What an accepted card must keep possible: samples that disagree, and an MI above the
/// threshold.
fn can_still_reject(card: &ModelCard) {
    assert!(card.default_samples >= 4, "T = {}", card.default_samples);
    let sites = &card.dropout_sites;
    assert!(sites.iter().any(|s| s.p > 0.0), "no site drops");
    for s in sites {
        assert!(s.p == 0.0 || (0.01..=0.99).contains(&s.p), "p = {}", s.p);
    }
    let drops: f64 = sites
        .iter()
        .map(|s| s.shape.iter().map(|&d| d as f64).product::<f64>() * s.p as f64)
        .sum();
    assert!(drops >= 1.0, "{drops} units dropped per sample");
    if let Some(t) = card.mi_threshold() {
        assert!(
            t >= 0.0 && t < (card.classes.len() as f64).ln(),
            "threshold {t}"
        );
    }
    let input = &card.input;
    let values: f64 = input.shape.iter().map(|&d| d as f64).product();
    assert!(values <= (1u64 << 24) as f64, "{values} input values");
    for c in 0..input.channels() {
        let level = |p: u8| (p as f32 * input.scale - input.mean[c]) / input.std[c];
        let mut levels: Vec<u32> = (0..=255u8).map(|p| level(p).to_bits()).collect();
        assert!(
            (0..=255u8).all(|p| level(p).is_finite()),
            "channel {c} overflows"
        );
        levels.sort_unstable();
        levels.dedup();
        assert_eq!(levels.len(), 256, "channel {c}: pixel levels merge");
        let span = (level(255) - level(0)).abs();
        assert!((0.1..=1e6).contains(&span), "channel {c} spans {span}");
    }
    let texts = std::iter::once(&card.name).chain(&card.classes);
    for text in texts {
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
}
