//! Annotated copies of frames: the verdict, the predicted class and an MI bar drawn with
//! embedded-graphics onto the frame buffer (the same code draws on a board's display).

use embedded_graphics::mono_font::{ascii::FONT_6X10, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::Text;
use image::{imageops::FilterType, DynamicImage, RgbImage};

use super::frames::FrameSink;
use super::OutputError;
use super::Sink;
use crate::input::frame::Frame;
use crate::score::report::Report;
use crate::score::verdict::{Decision, RejectReason};

/// An `RgbImage` as an embedded-graphics draw target; pixels outside it are clipped.
pub struct Canvas<'a>(pub &'a mut RgbImage);

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        let (w, h) = (self.0.width() as i32, self.0.height() as i32);
        for Pixel(p, c) in pixels {
            if (0..w).contains(&p.x) && (0..h).contains(&p.y) {
                self.0
                    .put_pixel(p.x as u32, p.y as u32, image::Rgb([c.r(), c.g(), c.b()]));
            }
        }
        Ok(())
    }
}

/// `--annotate`: every frame that could be read, annotated with its verdict, into a folder.
pub struct Annotator {
    frames: Box<dyn FrameSink>,
    labels: Vec<String>,
}

impl Annotator {
    /// Annotated frames of a model with these class `labels`, written to `frames`.
    pub fn new(frames: Box<dyn FrameSink>, labels: Vec<String>) -> Annotator {
        Annotator { frames, labels }
    }
}

impl Sink for Annotator {
    fn observe(&mut self, report: &Report, frame: Option<&Frame>) -> Result<(), OutputError> {
        let Some(frame) = frame else {
            return Ok(());
        };
        let label = report
            .measures
            .and_then(|m| self.labels.get(m.predicted_class))
            .map(String::as_str);
        let max_mi = (self.labels.len() as f64).ln();
        let image = annotate(&frame.image, report, label, report.threshold, max_mi);
        self.frames.save(frame.index, &frame.source, &image.into())
    }
}

/// Width small frames are scaled up to (nearest neighbour) so the text fits.
const MIN_WIDTH: u32 = 168;
/// The tallest a frame is scaled up to.
const MAX_SCALED_SIDE: u32 = 2048;
const BAND: u32 = 40;

/// The frame, scaled up if small, with a coloured border and a band below it holding the
/// verdict, class, and an MI bar with the threshold marked. `max_mi` is ln(classes).
pub fn annotate(
    frame: &DynamicImage,
    report: &Report,
    label: Option<&str>,
    threshold: f64,
    max_mi: f64,
) -> RgbImage {
    // A large frame is shrunk first (integer box sampling), so that the annotation costs
    // little beside the frame: an 11000² frame took 860 MB with its full-size RGB copies.
    let rgb = if frame.width().max(frame.height()) > MAX_SCALED_SIDE {
        frame.thumbnail(MAX_SCALED_SIDE, MAX_SCALED_SIDE).to_rgb8()
    } else {
        frame.to_rgb8()
    };
    // Small frames are scaled up to be readable, but never past MAX_SCALED_SIDE: a 1-pixel-wide
    // frame must not become a gigapixel image.
    let factor = MIN_WIDTH
        .div_ceil(rgb.width().max(1))
        .min(MAX_SCALED_SIDE / rgb.height().max(1))
        .max(1);
    let scaled = if factor > 1 {
        image::imageops::resize(
            &rgb,
            rgb.width() * factor,
            rgb.height() * factor,
            FilterType::Nearest,
        )
    } else {
        rgb
    };
    let (w, h) = (scaled.width(), scaled.height());
    let mut out = RgbImage::new(w, h + BAND);
    image::imageops::replace(&mut out, &scaled, 0, 0);
    let mut canvas = Canvas(&mut out);

    let color = match report.verdict.decision() {
        Decision::Accept => Rgb888::new(0, 200, 0),
        Decision::Reject => Rgb888::new(230, 0, 0),
    };
    let _ = Rectangle::new(Point::zero(), Size::new(w, h))
        .into_styled(PrimitiveStyle::with_stroke(color, 3))
        .draw(&mut canvas);
    let text_style = MonoTextStyle::new(&FONT_6X10, Rgb888::WHITE);
    let reason = report.verdict.reason();
    let headline = match (report.verdict.decision(), report.measures, label, reason) {
        (Decision::Accept, Some(m), Some(l), _) => {
            format!("ACCEPT {l} p={:.2}", m.max_probability)
        }
        (Decision::Reject, Some(m), Some(l), _) => {
            format!("REJECT {l} p={:.2}", m.max_probability)
        }
        (_, None, _, Some(RejectReason::Tamper { kind, .. })) => {
            format!("REJECT tamper:{}", kind.name())
        }
        _ => "REJECT unscored".to_string(),
    };
    let _ = Text::new(&headline, Point::new(3, h as i32 + 10), text_style).draw(&mut canvas);

    let bar_top = h as i32 + 16;
    let bar_width = w.saturating_sub(6).max(1);
    let _ = Rectangle::new(Point::new(3, bar_top), Size::new(bar_width, 8))
        .into_styled(PrimitiveStyle::with_stroke(Rgb888::new(128, 128, 128), 1))
        .draw(&mut canvas);
    if let Some(m) = report.measures {
        let frac = (m.mutual_information / max_mi).clamp(0.0, 1.0);
        let filled = ((bar_width as f64) * frac).round() as u32;
        if filled > 0 {
            let _ = Rectangle::new(Point::new(3, bar_top), Size::new(filled, 8))
                .into_styled(PrimitiveStyle::with_fill(color))
                .draw(&mut canvas);
        }
        let _ = Text::new(
            &format!("MI {:.3}", m.mutual_information),
            Point::new(3, bar_top + 18),
            text_style,
        )
        .draw(&mut canvas);
    }
    let tick = 3 + ((bar_width as f64) * (threshold / max_mi).clamp(0.0, 1.0)).round() as i32;
    let _ = Line::new(Point::new(tick, bar_top - 2), Point::new(tick, bar_top + 9))
        .into_styled(PrimitiveStyle::with_stroke(Rgb888::new(255, 255, 0), 1))
        .draw(&mut canvas);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_frame_is_shrunk_before_it_is_annotated() {
        let report = Report {
            index: 0,
            source: "big.png".into(),
            verdict: crate::score::verdict::Verdict::Accept,
            measures: None,
            seed: None,
            latency: std::time::Duration::ZERO,
            alarm: false,
            tamper_event: None,
            log_density: None,
            threshold: 0.1,
            fused: None,
        };
        let big = DynamicImage::ImageLuma8(image::GrayImage::new(3000, 30));
        let out = annotate(&big, &report, None, 0.1, 2.3);
        assert_eq!((out.width(), out.height()), (MAX_SCALED_SIDE, 20 + BAND));
    }
}
