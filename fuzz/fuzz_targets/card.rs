//! The model-card parser on arbitrary bytes: never panics; a card it accepts is valid and
//! survives a round trip through its own serialisation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcgate::model::card::ModelCard;

fuzz_target!(|data: &[u8]| {
    if let Ok(card) = ModelCard::from_json(data) {
        card.validate()
            .expect("from_json returned a card that does not validate");
        let json = card.to_json();
        let again = ModelCard::from_json(json.as_bytes()).expect("a card's own JSON parses");
        assert_eq!(again.to_json(), json, "round trip changed the card");
    }
});
