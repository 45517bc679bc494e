#!/usr/bin/env python3
"""The clean false-positive rate of `mcgate calibrate` on frames it did not see.

A threshold set at the 95th percentile of some frames rejects 5 % of *those* frames by
construction; what a deployment gets is the rate on the next frames. This splits the frames
by scene (a scene's variants stay together: they are not independent), calibrates a copy of
the model on all scenes but one fold with `mcgate calibrate`, gates the held-out fold with
other masks, and pools the held-out rejects over the folds, with a 95 % bootstrap interval
over scenes.

Usage: scripts/heldout_fpr.py MODEL FRAMES_DIR [--exclude a,b] [--folds 5] [--fpr 0.05]
       [--mcgate target/release/mcgate]
Frame names are SCENE_VARIANT.png as `photo-variants` writes them.
"""
import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = ("original", "flip", "brighter", "darker", "shift_bottom_right",
            "shift_top_left", "shift_top_right_flip", "zoom")


def scene_of(name):
    stem = Path(name).stem
    for v in sorted(VARIANTS, key=len, reverse=True):
        if stem.endswith("_" + v):
            return stem[: -len(v) - 1]
    sys.exit(f"{name}: not SCENE_VARIANT (variants: {', '.join(VARIANTS)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("frames")
    ap.add_argument("--exclude", default="", help="comma-separated scene names to leave out")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fpr", type=float, default=0.05)
    ap.add_argument("--mcgate", default="target/release/mcgate")
    a = ap.parse_args()
    excluded = {s for s in a.exclude.split(",") if s}
    frames = sorted(p for p in Path(a.frames).iterdir() if p.suffix == ".png")
    scenes = {}
    for f in frames:
        s = scene_of(f.name)
        if s not in excluded:
            scenes.setdefault(s, []).append(f)
    names = sorted(scenes)
    model = Path(a.model)
    rejects = {}  # scene -> (rejected, frames)
    thresholds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(a.folds):
            held = [s for i, s in enumerate(names) if i % a.folds == k]
            fit = [f for s in names if s not in held for f in scenes[s]]
            copy = Path(tmp) / f"fold{k}"
            copy.mkdir()
            for ext in (".onnx", ".card.json"):
                shutil.copy(model.with_name(model.name + ext), copy / ("m" + ext))
            subprocess.run([a.mcgate, "calibrate", str(copy / "m"), *map(str, fit),
                            "--fpr", str(a.fpr), "--seed", "1"], check=True,
                           stdout=subprocess.DEVNULL)
            card = json.loads((copy / "m.card.json").read_text())
            thresholds.append(card["threshold"]["mutual_information"])
            out = subprocess.run([a.mcgate, "gate", str(copy / "m"),
                                  *[str(f) for s in held for f in scenes[s]], "--seed", "2"],
                                 check=False, capture_output=True, text=True)
            for line in out.stdout.splitlines():
                r = json.loads(line)
                s = scene_of(r["source"])
                n, m = rejects.get(s, (0, 0))
                rejects[s] = (n + (r["verdict"] != "accept"), m + 1)
    total = sum(m for _, m in rejects.values())
    rate = sum(n for n, _ in rejects.values()) / total
    rng = random.Random(1)
    boots = []
    for _ in range(2000):
        pick = [rejects[rng.choice(names)] for _ in names]
        boots.append(sum(n for n, _ in pick) / sum(m for _, m in pick))
    boots.sort()
    lo, hi = boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]
    print(f"{len(names)} scenes, {total} frames, {a.folds} folds by scene; calibrated at --fpr "
          f"{a.fpr} --seed 1 on the other folds (thresholds {min(thresholds):.4f}–"
          f"{max(thresholds):.4f}), held-out fold gated with --seed 2")
    print(f"held-out clean frames rejected: {100 * rate:.1f} % "
          f"(95 % bootstrap over scenes {100 * lo:.1f}–{100 * hi:.1f} %), in "
          f"{sum(n > 0 for n, _ in rejects.values())} of {len(names)} scenes: "
          + ", ".join(f"{s} {n}/{m}" for s, (n, m) in sorted(rejects.items()) if n))


if __name__ == "__main__":
    main()
