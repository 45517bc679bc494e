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

/// The library's log lines (the MQTT client's refusals and drops, file-permission warnings)
/// into GStreamer's debug log, category `mcgate` (`GST_DEBUG=mcgate:4` shows info and above):
/// a plugin has no terminal of its own, and without this they would vanish.
struct GstLog;

static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "mcgate",
        gst::DebugColorFlags::empty(),
        Some("mcgate adversarial-input gate"),
    )
});

impl log::Log for GstLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let args = record.args();
        match record.level() {
            log::Level::Error => gst::error!(CAT, "{args}"),
            log::Level::Warn => gst::warning!(CAT, "{args}"),
            log::Level::Info => gst::info!(CAT, "{args}"),
            log::Level::Debug => gst::debug!(CAT, "{args}"),
            log::Level::Trace => gst::trace!(CAT, "{args}"),
        }
    }

    fn flush(&self) {}
}

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Once per process; an application that set its own logger keeps it.
    if log::set_logger(&GstLog).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
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
