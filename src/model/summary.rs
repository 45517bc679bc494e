//! What a graph declares (inputs, outputs, operator counts), for `mcgate info`.

use super::Model;
use crate::contract::card::{Budget, ChannelOrder, Provenance, Resize};

impl Model {
    /// What `mcgate info` prints: the card in words, then the graph's interface and ops.
    pub fn describe(&self) -> String {
        let card = &self.card;
        // A thousand ImageNet labels would bury the rest; `--json` has them all.
        const LISTED: usize = 12;
        let classes = if card.classes.len() <= LISTED {
            card.classes.join(", ")
        } else {
            format!("{}, …", card.classes[..LISTED].join(", "))
        };
        let mut s = format!(
            "{} ({}): {} classes [{classes}]\n",
            card.name,
            card.schema,
            card.classes.len(),
        );
        s += &format!(
            "input {} {:?} {}, value = (pixel * {} - mean {:?}) / std {:?}\n",
            card.input.name,
            card.input.shape,
            card.input.layout,
            card.input.scale,
            card.input.mean,
            card.input.std
        );
        for (site, path) in card.dropout_sites.iter().zip(self.site_paths()) {
            let dims: Vec<String> = site.shape.iter().map(|d| d.to_string()).collect();
            s += &format!(
                "dropout site {}: p = {}, shape [T, {}]; runs as {path}\n",
                site.input,
                site.p,
                dims.join(", ")
            );
        }
        if !matches!(card.input.resize, Resize::Stretch)
            || card.input.channel_order != ChannelOrder::Rgb
        {
            s += &format!(
                "frames: {}; channels in {} order\n",
                card.input.resize, card.input.channel_order
            );
        }
        s += &match &card.threshold {
            Some(t) => {
                let mut line = format!(
                    "threshold MI > {:.5} nats rejects{} ({})\n",
                    t.mutual_information,
                    if t.provisional { " [provisional]" } else { "" },
                    t.method
                );
                if let Some([rate, lo, hi]) = t.calibration.as_ref().and_then(|c| c.clean_fpr) {
                    line += &format!(
                        "calibration frames above it: {:.1} % (95 % interval {:.1}–{:.1} %, frames taken as independent)\n",
                        100.0 * rate,
                        100.0 * lo,
                        100.0 * hi
                    );
                }
                line
            }
            None => {
                "threshold: none yet (run `mcgate calibrate` on clean frames from the camera)\n"
                    .to_string()
            }
        };
        s += &match &card.metrics {
            Some(m) => format!(
                "default T = {}; test accuracy {:.2}% deterministic, {:.2}% MC (T={}, {} images)\n",
                card.default_samples,
                100.0 * m.test_accuracy_deterministic,
                100.0 * m.test_accuracy_mc,
                m.mc_samples,
                m.test_images
            ),
            None => format!("default T = {}; no test metrics\n", card.default_samples),
        };
        s += &match &card.provenance {
            Provenance::Trained(p) => {
                format!(
                "trained on {} ({} images, {} epochs, batch {}, {}, seed {}, {}, {:.0} s) at {}\n",
                p.dataset,
                p.train_images,
                p.epochs,
                p.batch_size,
                p.optimizer,
                p.seed,
                p.device,
                p.train_seconds,
                p.source_commit
            ) + &match &p.adversarial {
                    Some(a) => format!(
                    "adversarially trained: {} at eps {} ({} step{} of {:.4}{}{}), dropout on\n",
                    a.method,
                    a.eps,
                    a.steps,
                    if a.steps == 1 { "" } else { "s" },
                    a.step_size,
                    a.beta.map(|b| format!(", beta {b}")).unwrap_or_default(),
                    match a.eps_warmup_epochs {
                        0 => String::new(),
                        w => format!(", eps ramped over {w} epochs"),
                    }
                ),
                    None => String::new(),
                }
            }
            Provenance::Converted(c) => format!(
                "converted from {} (sha256 {}) by `{}`\n",
                c.converted_from, c.source_sha256, c.command
            ),
            Provenance::Pretrained(p) => format!(
                "pretrained weights {} (sha256 {}; published: {}) exported at {}\n",
                p.weights, p.weights_sha256, p.published_accuracy, p.source_commit
            ),
            Provenance::Assembled(a) => format!(
                "ensemble assembled from {} at {}\n",
                a.assembled_from.join(", "),
                a.source_commit
            ),
        };
        if let Some(e) = &card.ensemble {
            s += &format!(
                "ensemble of {} members, T samples each, pooled: {} × T output rows\n",
                e.members.len(),
                e.members.len()
            );
            for m in &e.members {
                let accuracy = m
                    .metrics
                    .as_ref()
                    .map_or("no test metrics".to_string(), |x| {
                        format!(
                            "test accuracy {:.2}% deterministic, {:.2}% MC",
                            100.0 * x.test_accuracy_deterministic,
                            100.0 * x.test_accuracy_mc
                        )
                    });
                s += &format!(
                    "  member {}: masks {}; seed {}, {}\n",
                    m.name,
                    m.sites.join(", "),
                    m.training.seed,
                    accuracy
                );
            }
        }
        if let Some(sec) = &card.security {
            s += &format!(
                "security (red team {}, {}; white box, masks secret; {} images × {} secret mask \
                 draws, 8-bit frames; clean frames rejected {:.1} %; {}):\n",
                sec.date,
                sec.commit,
                sec.images,
                sec.mask_draws,
                100.0 * sec.clean_fpr,
                sec.report
            );
            for w in &sec.worst {
                let budget = match w.norm {
                    Budget::Patch => format!("patch of {:.0} % of the frame", 100.0 * w.eps),
                    Budget::Linf => format!("L∞ ε = {} ({:.1}/255)", w.eps, 255.0 * w.eps),
                    Budget::L2 => format!("L2 ε = {}", w.eps),
                };
                s += &format!(
                    "  {budget}: {:.1} % get through (95 % interval {:.1}–{:.1} %), worst attack {}\n",
                    100.0 * w.bypass,
                    100.0 * w.interval[0],
                    100.0 * w.interval[1],
                    w.attack
                );
            }
        }
        if let Some(t) = &card.tamper {
            s += &format!(
                "tamper checks on the raw frame, before the model (set on {} clean frames: {}):\n",
                t.frames, t.rule
            );
            for c in &t.checks {
                if c.kind == crate::contract::card::TamperKind::Frozen {
                    s += &format!(
                        "  frozen: reject from {} identical frames in a row on (clean frames' \
                         longest run {}; judged on frames in order)\n",
                        c.at, c.clean_extreme
                    );
                    continue;
                }
                s += &format!(
                    "  {}: reject at {} {} {:.4} (clean frames' {} {:.4})\n",
                    c.kind.name(),
                    c.kind.measure(),
                    if c.kind.rejects_low() {
                        "at or under"
                    } else {
                        "at or over"
                    },
                    c.at,
                    if c.kind.rejects_low() {
                        "lowest"
                    } else {
                        "highest"
                    },
                    c.clean_extreme
                );
            }
        }
        if let Some(f) = &card.fusion {
            // Loading checked that the level can be made.
            if let Ok(gate) = crate::score::fusion::FusedGate::new(f, None) {
                s += &format!(
                    "signals: {} fused ({:?}), decides instead of the MI threshold: level {:.5} \
                     rejects {:.1} % of {} calibration frames (target {:.1} %)\n",
                    crate::score::fusion::names(gate.signals()),
                    gate.rule(),
                    gate.level(),
                    100.0 * gate.calibration_fpr(),
                    f.signals[0].clean.len(),
                    100.0 * f.target_fpr
                );
            }
            if let Some(h) = &f.holdout {
                let [r, lo, hi] = h.clean_fpr;
                s += &format!(
                    "  on {} held-out clean frames: {:.1} % rejected (95 % interval {:.1}–{:.1} %)\n",
                    h.frames,
                    100.0 * r,
                    100.0 * lo,
                    100.0 * hi
                );
            }
        } else if card.output.log_density.is_some() {
            s += "signals: mi (the MI threshold decides); the model also gives density \
                  (calibrate --signals mi,density fuses it)\n";
        } else {
            s += "signals: mi (the MI threshold decides)\n";
        }
        if let Some(digest) = &self.card_sha256 {
            s += &format!("card SHA-256 {digest} (pin it: gate --card-sha256 {digest})\n");
        }
        s += &format!(
            "onnx sha256 {} (verified)\ngraph: {} nodes\n",
            card.onnx_sha256, self.summary.nodes
        );
        for (name, fact) in &self.summary.inputs {
            s += &format!("  input  {name}: {fact}\n");
        }
        for (name, fact) in &self.summary.outputs {
            s += &format!("  output {name}: {fact}\n");
        }
        let ops: Vec<String> = self
            .summary
            .ops
            .iter()
            .map(|(op, n)| format!("{op}×{n}"))
            .collect();
        s += &format!("  ops    {}\n", ops.join(" "));
        s
    }
}
