#!/usr/bin/env python3
"""Would the energy score, logsumexp(logits), flag the attacks on the photo model?

Energy (Liu et al. 2020, E = −logsumexp(logits)) is usually read in its low-logsumexp tail, as
an out-of-distribution score. Iterative attacks make the model over-confident, so they may
show in the *high* tail instead. This measures both tails on the eval bundle's folders against
clean photos, next to the low tail of predictive entropy (too confident), which the gate
already computes.

Frames: every folder of the eval bundle (`--bundle`; a frame's scene is its manifest label,
the `imagenet_NN_LABEL` photo it was made from) and the photo variants (`--variants`,
SCENE_VARIANT.png). Clean reference: the variants plus the bundle's clean/ folder.

1. The binary gates each folder once, `mcgate gate MODEL DIR --seed 1 --threshold 2.99
   --accepted FED/` (2.99 < ln 20, the largest MI T = 20 samples can give, so every frame is
   accepted and written): FED/ holds the exact 224×224 pixels the model was fed (its resize,
   its crop), and each verdict line the frame's mask seed and the gate's predictive entropy.
2. onnxruntime runs the model on those pixels with the Softmax's input as an extra output,
   once per frame with T + 1 mask rows: all ones (the deterministic network: lse_det) and the
   T masks the gate drew for the frame, rebuilt from its seed with wyrand as
   src/run/rng.rs and src/run/masks.rs draw them (lse_mc: the mean of the T logsumexps). The
   predictive entropy recomputed from these probabilities must equal the binary's (checked,
   printed): the same pixels, the same masks, the same network.
3. Statistics, as the research run that this ports:
   - AUC: P(attacked > clean) + ½ P(tie), "high is suspicious"; 1 − AUC is "low is
     suspicious". 95 % percentile interval over 1,000 bootstrap resamples of the scenes (a
     drawn scene brings all its clean, attacked and noise frames; seed 12345; the same
     resamples serve every cell);
   - leave-scene-out rules: a frame is judged against numpy (linear) quantiles of the clean
     frames of the *other* scenes: high 5 % = above q95, low 5 % = below q5. The clean frames'
     own rate uses the same rule. Shares carry the same scene-bootstrap interval.

Columns: n; AUC of lse_det and of lse_mc (high tail) [95 %]; share caught by the high-5 % rule
on lse_det and on lse_mc; the low-5 % rule on lse_mc (classic energy); for comparison the
low-5 % rule on the gate's predictive entropy (the too-confident tail of a signal the gate
has). The first row is the clean frames' own leave-scene-out rate.

Usage: .venv/bin/python scripts/energy_probe.py [--binary target/release/mcgate]
       [--model models/lite0-imagenet] [--bundle bundles/lite0-imagenet]
       [--variants data/lite0/variants] [--keep DIR] [--out FILE]
--binary: the mcgate binary that gates the frames (a release build: `cargo build --release`);
any build whose `gate` has --seed, --threshold and --accepted. --keep DIR keeps the fed
frames and verdict lines there (default: a temporary folder, deleted).
Needs numpy, onnx, onnxruntime and Pillow (.venv).

Measured (2 shared CPU cores; --binary a release build copied aside, as target/ was mid-rebuild):
  .venv/bin/python scripts/energy_probe.py --binary /tmp/helper/mcgate
  24 s wall (gating 390 frames and the 390 onnxruntime calls), 170 MB peak RSS; it prints
  the same numbers as the research run it ports, every cell (that run gated each folder a
  second time at the card's threshold for the verdicts, with the same mask seeds, and took
  the predictive entropy from its own recomputation rather than the binary's line; neither
  moves a cell):

390 frames; clean reference 230 frames in 28 scenes; 28 scenes resampled 1000 times (seed 12345). Check: the predictive entropy from the gate's own masks on its fed pixels is the binary's to 1.6e-05 nats; MC class = the gate's class on 390/390 frames.

| folder | n | AUC lse_det (high) [95 %] | AUC lse_mc (high) [95 %] | high 5 % lse_det | high 5 % lse_mc | low 5 % lse_mc (classic energy) | low 5 % predictive entropy |
|---|---|---|---|---|---|---|---|
| clean (own scene left out) | 230 | — | — | 0.06 [0.00, 0.16] | 0.06 [0.00, 0.16] | 0.06 [0.00, 0.13] | 0.07 [0.00, 0.16] |
| fgm_eps10 | 6 | 0.18 [0.06, 0.37] | 0.18 [0.07, 0.35] | 0.00 [0.00, 0.00] | 0.00 [0.00, 0.00] | 0.17 [0.00, 0.50] | 0.00 [0.00, 0.00] |
| bim_eps10 | 6 | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 0.00 [0.00, 0.00] | 0.83 [0.50, 1.00] |
| redteam_pgd-deterministic_eps1 | 17 | 0.95 [0.86, 1.00] | 0.95 [0.86, 1.00] | 0.82 [0.61, 1.00] | 0.82 [0.61, 1.00] | 0.00 [0.00, 0.00] | 0.82 [0.64, 1.00] |
| redteam_pgd-deterministic_eps2 | 17 | 0.99 [0.98, 1.00] | 0.99 [0.98, 1.00] | 0.94 [0.80, 1.00] | 0.94 [0.80, 1.00] | 0.00 [0.00, 0.00] | 0.94 [0.80, 1.00] |
| redteam_pgd-deterministic_eps4 | 17 | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 0.00 [0.00, 0.00] | 1.00 [1.00, 1.00] |
| redteam_pgd-deterministic_eps8 | 17 | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 0.00 [0.00, 0.00] | 1.00 [1.00, 1.00] |
| redteam_pgd-eot_l2_0.5 | 17 | 0.65 [0.51, 0.77] | 0.64 [0.51, 0.77] | 0.00 [0.00, 0.00] | 0.00 [0.00, 0.00] | 0.00 [0.00, 0.00] | 0.06 [0.00, 0.19] |
| redteam_patch-eot_patch_0.05 | 17 | 0.42 [0.28, 0.56] | 0.42 [0.29, 0.56] | 0.06 [0.00, 0.19] | 0.00 [0.00, 0.00] | 0.06 [0.00, 0.19] | 0.00 [0.00, 0.00] |
| redteam_patch-eot_patch_0.1 | 17 | 0.79 [0.63, 0.91] | 0.79 [0.63, 0.90] | 0.47 [0.23, 0.71] | 0.47 [0.23, 0.71] | 0.00 [0.00, 0.00] | 0.47 [0.23, 0.71] |
| redteam_patch-eot_patch_0.15 | 17 | 0.90 [0.80, 0.97] | 0.90 [0.80, 0.97] | 0.53 [0.27, 0.78] | 0.53 [0.27, 0.78] | 0.00 [0.00, 0.00] | 0.53 [0.27, 0.78] |
| noise_for_fgm_eps10 | 6 | 0.78 [0.64, 0.90] | 0.78 [0.65, 0.91] | 0.17 [0.00, 0.57] | 0.17 [0.00, 0.57] | 0.00 [0.00, 0.00] | 0.17 [0.00, 0.57] |
| noise_for_bim_eps10 | 6 | 0.81 [0.71, 0.92] | 0.82 [0.71, 0.92] | 0.17 [0.00, 0.57] | 0.17 [0.00, 0.57] | 0.00 [0.00, 0.00] | 0.17 [0.00, 0.57] |

"""
import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

VARIANTS = ("original", "flip", "brighter", "darker", "shift_bottom_right", "shift_top_left",
            "shift_top_right_flip", "zoom")
BOOT, BOOT_SEED = 1000, 12345


# ---------------------------------------------------------------- the gate's masks
MASK64 = (1 << 64) - 1
INCREMENT = 0xA0761D6478BD642F


def gate_masks(seed, samples, site_len, p):
    """The [T, site_len] dropout masks the gate draws for a frame whose reported seed is `seed`
    (one site): wyrand (src/run/rng.rs), each 64-bit draw giving two 32-bit uniforms, low half
    first, kept when below (1 − p)·2³², kept values 1/(1 − p) as f32 (src/run/masks.rs)."""
    keep = 1.0 - float(np.float32(p))
    threshold = int(keep * 4294967296.0)
    uniforms = []
    state = seed
    for _ in range((samples * site_len + 1) // 2):
        state = (state + INCREMENT) & MASK64
        t = state * (state ^ 0xE7037ED1A0B428DB)
        r = ((t >> 64) ^ t) & MASK64
        uniforms += (r & 0xFFFFFFFF, r >> 32)
    u = np.array(uniforms[:samples * site_len], np.uint64).reshape(samples, site_len)
    return np.where(u < threshold, np.float32(1.0 / keep), np.float32(0)).astype(np.float32)


# ---------------------------------------------------------------- frames
def scene_of_variant(name):
    stem = Path(name).stem
    for v in sorted(VARIANTS, key=len, reverse=True):
        if stem.endswith("_" + v):
            return stem[:-len(v) - 1]
    raise SystemExit(f"{name}: not SCENE_VARIANT (variants: {', '.join(VARIANTS)})")


def gate_folder(binary, model, folder, fed, seed):
    """Verdict lines of one folder, every frame accepted and its fed pixels written to `fed`."""
    fed.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([binary, "gate", model, str(folder), "--seed", str(seed),
                          "--threshold", "2.99", "--accepted", str(fed), "--no-latency"],
                         capture_output=True)
    if out.returncode != 0:
        raise SystemExit(f"gate {folder}: exit {out.returncode}: {out.stderr.decode()}")
    lines = [json.loads(l) for l in out.stdout.decode().splitlines()]
    assert all(l["verdict"] == "accept" for l in lines), f"{folder}: a frame was not accepted"
    return lines


def logits_session(onnx_path, threads):
    """The model with the Softmax's input as a second output."""
    m = onnx.load(onnx_path)
    (softmax,) = [n for n in m.graph.node if n.op_type == "Softmax"]
    name = softmax.input[0]
    m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess, name


def lse(z):
    m = z.max(-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]


def entropy(p):
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(-1)


# ---------------------------------------------------------------- statistics
class Stats:
    """Scene-bootstrap AUCs and leave-scene-out shares against the clean frames."""

    def __init__(self, frames, clean):
        self.clean = clean
        self.scenes = sorted({f["scene"] for f in frames})
        self.index = {s: i for i, s in enumerate(self.scenes)}
        rng = np.random.default_rng(BOOT_SEED)
        n = len(self.scenes)
        # scene multiplicities of every resample, shared by every cell
        self.draws = np.stack([np.bincount(rng.integers(0, n, n), minlength=n)
                               for _ in range(BOOT)])

    def sc(self, frames):
        return np.array([self.index[f["scene"]] for f in frames])

    def auc(self, frames, key):
        c = np.array([f[key] for f in self.clean])
        a = np.array([f[key] for f in frames])
        M = (a[None] > c[:, None]) + 0.5 * (a[None] == c[:, None])
        wc, wa = self.draws[:, self.sc(self.clean)], self.draws[:, self.sc(frames)]
        num = np.einsum("bi,ij,bj->b", wc, M, wa)
        den = wc.sum(1) * wa.sum(1)
        b = num[den > 0] / den[den > 0]
        return M.mean(), np.percentile(b, 2.5), np.percentile(b, 97.5)

    def share(self, flags, frames):
        w = self.draws[:, self.sc(frames)]
        ok = w.sum(1) > 0
        b = (w[ok] @ flags) / w[ok].sum(1)
        return flags.mean(), np.percentile(b, 2.5), np.percentile(b, 97.5)

    def loso(self, frames, key, tail):
        """Flags of the leave-scene-out rule: above q95 ('high') or below q5 ('low') of the
        clean frames of the other scenes."""
        cv = np.array([f[key] for f in self.clean])
        cs = self.sc(self.clean)
        flags = []
        for f in frames:
            ref = cv[cs != self.index[f["scene"]]]
            flags.append(f[key] > np.quantile(ref, 0.95) if tail == "high"
                         else f[key] < np.quantile(ref, 0.05))
        return self.share(np.array(flags, float), frames)


def ci(t):
    p, lo, hi = t
    return f"{p:.2f} [{lo:.2f}, {hi:.2f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="target/release/mcgate", help="the mcgate binary")
    ap.add_argument("--model", default="models/lite0-imagenet", help="model stem")
    ap.add_argument("--bundle", default="bundles/lite0-imagenet", help="eval bundle folder")
    ap.add_argument("--variants", default="data/lite0/variants", help="clean photo variants")
    ap.add_argument("--seed", type=int, default=1, help="the gate's run seed")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--keep", help="keep the fed frames and verdict lines in this folder")
    ap.add_argument("--out", help="write the table here too, under a header saying when, at "
                    "which commit and with which command")
    a = ap.parse_args()
    t0 = time.time()
    binary = str(Path(a.binary).resolve())
    card = json.loads(Path(f"{a.model}.card.json").read_text())
    (site,) = card["dropout_sites"]
    site_len, p, samples = int(np.prod(site["shape"])), site["p"], card["default_samples"]
    bundle = Path(a.bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    label_of = {f["file"]: f["label"] for f in manifest["frames"]}
    folders = [g["name"] for g in manifest["groups"]]
    attacked = [g["name"] for g in manifest["groups"] if g["role"] == "positive"]
    noise = [g["name"] for g in manifest["groups"] if g["role"] == "negative" and g["name"] != "clean"]

    # scene of a bundle frame: the variants' imagenet_NN_LABEL scene with its label
    scenes_of_label = {}
    for f in Path(a.variants).glob("*.png"):
        s = scene_of_variant(f.name)
        if s.startswith("imagenet_"):
            scenes_of_label.setdefault(int(s.rsplit("_", 1)[1]), set()).add(s)

    def bundle_scene(rel):
        found = scenes_of_label.get(label_of[rel], set())
        if len(found) != 1:
            raise SystemExit(f"{rel}: label {label_of[rel]} names {len(found)} variant scenes")
        return next(iter(found))

    sess, logits_name = logits_session(f"{a.model}.onnx", a.threads)
    mean = np.array(card["input"]["mean"], np.float32)[:, None, None]
    std = np.array(card["input"]["std"], np.float32)[:, None, None]
    scale = np.float32(card["input"]["scale"])
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.keep or tmp)
        for name, src in [(n, bundle / n) for n in folders] + [("variants", Path(a.variants))]:
            lines = gate_folder(binary, a.model, src, work / "fed" / name, a.seed)
            (work / f"{name}.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
            for l in lines:
                fname = Path(l["source"]).name
                (fed,) = (work / "fed" / name).glob(f"{l['frame']:06d}_*")
                assert fed.name.endswith(fname), (fed, fname)
                px = np.asarray(Image.open(fed).convert("RGB"), np.float32).transpose(2, 0, 1)
                x = ((px * scale - mean) / std)[None]
                masks = np.concatenate([np.ones((1, site_len), np.float32),
                                        gate_masks(l["seed"], samples, site_len, p)])
                probs, z = sess.run(["probs", logits_name], {"x": x, site["input"]: masks})
                z, probs = z.astype(np.float64), probs.astype(np.float64)
                l_all = lse(z)
                frames.append(dict(
                    folder=name,
                    scene=scene_of_variant(fname) if name == "variants" else bundle_scene(f"{name}/{fname}"),
                    lse_det=l_all[0], lse_mc=l_all[1:].mean(),
                    pe=l["measures"]["predictive_entropy"],
                    pe_ours=entropy(probs[1:].mean(0)), class_ours=int(probs[1:].mean(0).argmax()),
                    gate_class=l["class"]))

    pe_diff = max(abs(f["pe"] - f["pe_ours"]) for f in frames)
    agree = sum(f["class_ours"] == f["gate_class"] for f in frames)
    assert pe_diff < 1e-3, f"the recomputed predictive entropy differs from the gate's by {pe_diff}"
    clean = [f for f in frames if f["folder"] in ("variants", "clean")]
    st = Stats(frames, clean)
    by = {n: [f for f in frames if f["folder"] == n] for n in folders}
    out = [
        f"{len(frames)} frames; clean reference {len(clean)} frames in "
        f"{len({f['scene'] for f in clean})} scenes; {len(st.scenes)} scenes resampled "
        f"{BOOT} times (seed {BOOT_SEED}). Check: the predictive entropy from the gate's own "
        f"masks on its fed pixels is the binary's to {pe_diff:.1e} nats; MC class = the gate's "
        f"class on {agree}/{len(frames)} frames.",
        "",
        "| folder | n | AUC lse_det (high) [95 %] | AUC lse_mc (high) [95 %] | high 5 % lse_det | "
        "high 5 % lse_mc | low 5 % lse_mc (classic energy) | low 5 % predictive entropy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rules = lambda fs: [ci(st.loso(fs, "lse_det", "high")), ci(st.loso(fs, "lse_mc", "high")),
                        ci(st.loso(fs, "lse_mc", "low")), ci(st.loso(fs, "pe", "low"))]
    out.append("| clean (own scene left out) | " + " | ".join([str(len(clean)), "—", "—", *rules(clean)]) + " |")
    for n in attacked + noise:
        fs = by[n]
        out.append(f"| {n} | {len(fs)} | {ci(st.auc(fs, 'lse_det'))} | {ci(st.auc(fs, 'lse_mc'))} | "
                   + " | ".join(rules(fs)) + " |")
    out += ["", f"({time.time() - t0:.0f} s)"]
    text = "\n".join(out)
    print(text)
    if a.out:
        # The whole file, header and all: rerunning the command rewrites it as it was.
        from provenance import header
        Path(a.out).write_text(header("Energy (logsumexp of the logits) on the Lite0 photo bundle", time.time() - t0) + text + "\n")


if __name__ == "__main__":
    main()
