//! GStreamer plugin `mcgate`: the gate as an element in the camera's pipeline (issue 29).
//!
//! `… ! video/x-raw,format=GRAY8|RGB|BGR ! mcgate model=models/mnist ! …` scores every buffer
//! with the runtime library's gate (preprocessing, masks, measures, fused signals, tamper
//! checks: the library's, not a copy), attaches the verdict to the buffer and, by
//! `on-reject`, drops a rejected frame, blacks it out, repeats the last accepted one or only
//! marks it. Build with `cargo build --release -p gst-mcgate`; then
//! `GST_PLUGIN_PATH=target/release gst-inspect-1.0 mcgate`.
#![deny(missing_docs)]

use gst::glib;

mod element;

pub use element::{McGate, OnReject, ALARM_MESSAGE, META_STRUCTURE, REJECT_MESSAGE};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "mcgate",
        gst::Rank::NONE,
        McGate::static_type(),
    )
}

// The macro's own items (the plugin descriptor, `plugin_register_static`) carry no docs.
#[allow(missing_docs)]
mod plugin {
    use super::plugin_init;
    gst::plugin_define!(
        mcgate,
        env!("CARGO_PKG_DESCRIPTION"),
        plugin_init,
        env!("CARGO_PKG_VERSION"),
        "MIT/X11",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_NAME"),
        "https://github.com/mcgate/mcgate"
    );
}

use gst::prelude::StaticType;
pub use plugin::plugin_register_static;
