//! ROC and precision–recall figures of an evaluation, as PNG and SVG (plotters).
//!
//! One figure per attacked model family (deterministic, MC, adaptive) and curve kind: a grid
//! with one panel per attack (rows: method, and λ for the adaptive attack; columns: ε), each
//! panel holding one curve per uncertainty measure, on all adversarial images.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{AttackedModel, EvalReport, Row};
use crate::measures::Measure;
use crate::plot::{register_font, write_png, FONT};

/// Curve colour and legend name of each measure, MI first and strongest.
const STYLE: [(Measure, &str, RGBColor); 6] = [
    (Measure::MutualInformation, "MI", RGBColor(214, 39, 40)),
    (Measure::PredictiveEntropy, "H (MC)", RGBColor(31, 119, 180)),
    (Measure::DetEntropy, "H (det)", RGBColor(127, 127, 127)),
    (Measure::ExpectedEntropy, "E[H]", RGBColor(44, 160, 44)),
    (
        Measure::SoftmaxVariance,
        "softmax var",
        RGBColor(255, 127, 14),
    ),
    (
        Measure::VariationRatio,
        "var ratio",
        RGBColor(148, 103, 189),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    Roc,
    Pr,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::Roc => "roc",
            Curve::Pr => "pr",
        }
    }
    fn axes(self) -> (&'static str, &'static str) {
        match self {
            Curve::Roc => ("false-positive rate", "true-positive rate"),
            Curve::Pr => ("recall", "precision"),
        }
    }
    fn points(self, row: &Row, measure: Measure) -> Option<&[(f64, f64)]> {
        let curves = row.curves.get(&measure)?;
        Some(match self {
            Curve::Roc => &curves.roc,
            Curve::Pr => &curves.pr,
        })
    }
}

/// Writes `<stem>-<roc|pr>-<family>.{png,svg}` for every family present; returns the paths.
pub fn write_all(report: &EvalReport, stem: &Path, title: &str) -> Result<Vec<PathBuf>> {
    register_font()?;
    let mut written = vec![];
    for fam in ["deterministic", "mc", "adaptive"] {
        let rows: Vec<&Row> = report
            .rows
            .iter()
            .filter(|r| r.target.family() == fam)
            .collect();
        if rows.is_empty() {
            continue;
        }
        for curve in [Curve::Roc, Curve::Pr] {
            let base = format!(
                "{}-{}-{fam}",
                stem.file_name()
                    .and_then(|n| n.to_str())
                    .context("plot stem has no file name")?,
                curve.name()
            );
            let target = match fam {
                "deterministic" => "the deterministic model",
                "mc" => "the MC model (loss of the MC mean)",
                _ => "the MC model, adaptive (CE − λ·MI)",
            };
            let heading = [
                format!("{title}: {} curves", curve.name().to_uppercase()),
                format!("attacks on {target}; all adversarials vs clean + noise"),
            ];
            let grid = Grid::of(&rows);
            let (w, h) = grid.size();
            let png = stem.with_file_name(format!("{base}.png"));
            let svg = stem.with_file_name(format!("{base}.svg"));
            write_png(&png, (w, h), |area| draw(area, &grid, curve, &heading))
                .with_context(|| format!("drawing {}", png.display()))?;
            draw(
                SVGBackend::new(&svg, (w, h)).into_drawing_area(),
                &grid,
                curve,
                &heading,
            )
            .with_context(|| format!("drawing {}", svg.display()))?;
            written.extend([png, svg]);
        }
    }
    Ok(written)
}

/// Panels laid out with one row per (method, target) and one column per ε.
struct Grid<'a> {
    row_labels: Vec<(String, AttackedModel)>,
    eps: Vec<f64>,
    rows: Vec<&'a Row>,
}

const PANEL: (u32, u32) = (330, 300);
const HEADER: u32 = 48;

impl<'a> Grid<'a> {
    fn of(rows: &[&'a Row]) -> Self {
        let mut row_labels = vec![];
        let mut eps = vec![];
        for r in rows {
            let key = (r.method.clone(), r.target);
            if !row_labels.contains(&key) {
                row_labels.push(key);
            }
            if !eps.contains(&r.eps_255) {
                eps.push(r.eps_255);
            }
        }
        eps.sort_by(f64::total_cmp);
        Grid {
            row_labels,
            eps,
            rows: rows.to_vec(),
        }
    }

    fn size(&self) -> (u32, u32) {
        (
            PANEL.0 * self.eps.len() as u32,
            HEADER + PANEL.1 * self.row_labels.len() as u32,
        )
    }

    fn at(&self, i: usize, j: usize) -> Option<&'a Row> {
        let (method, target) = &self.row_labels[i];
        self.rows
            .iter()
            .find(|r| &r.method == method && &r.target == target && r.eps_255 == self.eps[j])
            .copied()
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    grid: &Grid,
    curve: Curve,
    heading: &[String; 2],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let (top, body) = root.split_vertically(HEADER);
    top.draw_text(&heading[0], &(FONT, 17).into_font().color(&BLACK), (10, 6))
        .map_err(err)?;
    top.draw_text(&heading[1], &(FONT, 13).into_font().color(&BLACK), (10, 27))
        .map_err(err)?;
    let panels = body.split_evenly((grid.row_labels.len(), grid.eps.len()));
    let (x_desc, y_desc) = curve.axes();
    for (k, area) in panels.iter().enumerate() {
        let (i, j) = (k / grid.eps.len(), k % grid.eps.len());
        let Some(row) = grid.at(i, j) else { continue };
        let lambda = match row.target {
            AttackedModel::Adaptive { lambda } => format!(" λ={lambda}"),
            _ => String::new(),
        };
        let caption = format!(
            "{} ε={}{lambda}: {:.0} % succeed",
            row.method,
            row.eps_255,
            100.0 * row.success_rate
        );
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FONT, 15))
            .margin(6)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..1f64, 0f64..1.01f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_labels(6)
            .y_labels(6)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style((FONT, 11))
            .axis_desc_style((FONT, 12))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(err)?;
        if curve == Curve::Roc {
            let chance = RGBColor(190, 190, 190);
            chart
                .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], chance))
                .map_err(err)?;
        }
        for (measure, name, colour) in STYLE.iter().rev() {
            let Some(points) = curve.points(row, *measure) else {
                continue;
            };
            let auc = match curve {
                Curve::Roc => row.all.get(measure).map(|d| d.auc),
                Curve::Pr => row.all.get(measure).map(|d| d.ap),
            };
            let width = if *measure == Measure::MutualInformation {
                2
            } else {
                1
            };
            let label = format!("{name} {:.2}", auc.unwrap_or(f64::NAN));
            let colour = *colour;
            chart
                .draw_series(LineSeries::new(thin(points), colour.stroke_width(width)))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(width))
                });
        }
        chart
            .configure_series_labels()
            .position(match curve {
                Curve::Roc => SeriesLabelPosition::LowerRight,
                Curve::Pr => SeriesLabelPosition::UpperRight,
            })
            .label_font((FONT, 10))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Drops points closer than 1/250 of the axes (about a pixel of a panel) to the last kept
/// one, always keeping the ends; the JSON keeps the exact AUCs.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = Vec::with_capacity(points.len().min(1000));
    for (k, &p) in points.iter().enumerate() {
        let far = kept
            .last()
            .is_none_or(|q| (p.0 - q.0).abs() > 4e-3 || (p.1 - q.1).abs() > 4e-3);
        if far || k + 1 == points.len() {
            kept.push(p);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_ends_and_the_shape() {
        let points: Vec<(f64, f64)> = (0..=10_000)
            .map(|i| (i as f64 / 10_000.0, (i as f64 / 10_000.0).sqrt()))
            .collect();
        let kept = thin(&points);
        assert_eq!(kept.first(), points.first());
        assert_eq!(kept.last(), points.last());
        assert!(kept.len() < 1_000, "{} points kept", kept.len());
        // No gap larger than the tolerance plus one step of the input.
        assert!(kept
            .windows(2)
            .all(|w| (w[1].0 - w[0].0) < 5e-3 && (w[1].1 - w[0].1) < 0.02));
    }

    fn row(target: AttackedModel, method: &str, eps: f64, shift: f64) -> Row {
        use crate::eval::report::{Curves, Detection};
        // Negatives uniform on [0, 1), positives shifted up: a visible, known ROC.
        let neg: Vec<f64> = (0..200).map(|i| i as f64 / 200.0).collect();
        let pos: Vec<f64> = neg.iter().map(|v| v + shift).collect();
        let mut all = std::collections::BTreeMap::new();
        let mut curves = std::collections::BTreeMap::new();
        for (m, _, _) in STYLE {
            all.insert(m, Detection::of(&neg, &pos));
            curves.insert(
                m,
                Curves {
                    roc: mcgate::score::roc::roc_curve(&neg, &pos).unwrap(),
                    pr: mcgate::score::roc::pr_curve(&neg, &pos).unwrap(),
                },
            );
        }
        Row {
            target,
            method: method.into(),
            eps_255: eps,
            images: 200,
            success_rate: 0.5,
            successful: all.clone(),
            clean_only: all.clone(),
            all,
            mi_minus: Default::default(),
            mi_minus_successful: Default::default(),
            tpr_at_threshold: 0.0,
            tpr_at_threshold_successful: 0.0,
            noise_fpr_at_threshold: 0.0,
            curves,
            exported: Default::default(),
        }
    }

    #[test]
    fn writes_a_png_and_an_svg_per_family_and_curve() {
        let report = EvalReport {
            images: 200,
            samples: 20,
            members: 1,
            seed: 1,
            labels: String::new(),
            mc_loss: String::new(),
            clean_accuracy_deterministic: 1.0,
            clean_accuracy_mc: 1.0,
            attacked: String::new(),
            crafted_on: String::new(),
            clean_negatives: 200,
            threshold: 0.1,
            clean_fpr_at_threshold: 0.05,
            exported: vec![],
            rows: vec![
                row(AttackedModel::Mc, "FGM", 10.0, 0.2),
                row(AttackedModel::Mc, "BIM", 10.0, 0.5),
                row(AttackedModel::Mc, "FGM", 25.5, 0.8),
                row(AttackedModel::Adaptive { lambda: 1.0 }, "BIM", 10.0, 0.1),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(&report, &dir.path().join("toy"), "toy").unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "toy-roc-mc.png",
                "toy-roc-mc.svg",
                "toy-pr-mc.png",
                "toy-pr-mc.svg",
                "toy-roc-adaptive.png",
                "toy-roc-adaptive.svg",
                "toy-pr-adaptive.png",
                "toy-pr-adaptive.svg"
            ]
        );
        // The MC grid: 2 methods × 2 budgets; the PNG decodes at that size and is not blank.
        let png = image::open(dir.path().join("toy-roc-mc.png"))
            .unwrap()
            .to_rgb8();
        assert_eq!(png.dimensions(), (2 * PANEL.0, HEADER + 2 * PANEL.1));
        let red = png.pixels().filter(|p| p.0 == [214, 39, 40]).count();
        assert!(red > 500, "the MI curve is drawn ({red} red pixels)");
        let svg = std::fs::read_to_string(dir.path().join("toy-roc-mc.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("MI 0.") && svg.contains("ε=25.5"));
    }
}
