#!/usr/bin/env python3
"""Which signal, and which fusion, rejects what — every decision made by the binary on 8-bit
frames, all at the same 5 % clean rate set on the same clean frames.

A copy of the model is calibrated (`mcgate calibrate --fpr 0.05 --seed 1`, T = the card's) on
2,000 clean digits, by default 2,000 test digits drawn at random (seed 0; the judged clean
digits are 2,000 others of the same draw: frames exchangeable with the calibration's, as the
rate's guarantee assumes; `--calibrate-on ordered` takes test digits 8,000–9,999 and judges
0–1,999, `--calibrate-on validation` takes train images 55,000–56,999, the split the model was
not trained on — both show what a shift between calibration and gate frames does): once on MI alone, once fusing
MI and predictive entropy with Fisher's rule, once with Bonferroni's, and once with
Bonferroni's and tamper checks (`--tamper`), and once on MI with tamper checks. Six gates
(`--seed 2`) then judge:
- MI: the MI threshold alone (today's gate); MI + tamper: after the tamper checks;
- entropy: predictive entropy alone (`--signals entropy`: its level set anew at 5 %);
- Fisher and Bonferroni: both signals fused;
- Bonferroni + tamper: the same, after the tamper checks on the raw frame.
Frames: 2,000 clean test digits the calibration never saw; 100 frames of each noise kind of `scripts/noise_probe.py`; and the attacked frames of
an eval bundle (`mcgate-training bundle`: FGM, BIM, MIM on the MC model, 8-bit PNGs), counted
only where the attack worked — the bundle's clean image correctly classified and the
adversarial one called another class by the gate — since a failed attack is harmless; with
the bundle's matched-noise frames as their clean counterpart.

Each rate has its 95 % Wilson interval; each gate's difference from MI on the same frames has
a paired 95 % bootstrap interval (2,000 resamples of frames), and a difference whose interval
holds 0 is marked "~" (not shown to differ).

With --density-model STEM (a model `mcgate-training density` wrote: the same network with a
feature-density output), three more gates calibrated the same way: density alone, MI fused with
density (Bonferroni), and that after tamper checks. With --holes DIR, the latent-hole frames
`holes` wrote are judged too.

Then, with --splits N, the clean rate on held-out digits over N random splits of the test set
(2,000 to calibrate, 2,000 others judged, other masks): one split's Wilson interval leaves out
how much the calibration frames themselves vary.

Usage: python3 scripts/fusion_probe.py --bundle DIR [--model models/mnist] [--data data/mnist]
       [--density-model STEM] [--holes DIR] [--splits 8] [--mcgate BIN]
       (make the bundle with: mcgate-training bundle mnist --images 300 --eps 25.5,51,76.5
        --repeats 1 --sample-frames 0 --out DIR; Fashion-MNIST: `bundle fashion`,
        --model models/fashion --data data/fashion-mnist)
Needs numpy (the system python3 here has it).
"""
import argparse
import gzip
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise_probe import noise_frames  # noqa: E402  (the one definition of the noise kinds)

FPR = 0.05
RNG = np.random.default_rng(0)


def idx_images(path, start, stop):
    """Images start..stop of an IDX file (`.gz` beside it if the plain one is absent)."""
    path = Path(path)
    raw = (path.read_bytes() if path.exists()
           else gzip.decompress(Path(str(path) + ".gz").read_bytes()))[16:]
    return raw[start * 784:stop * 784]


def run(binary, args, stdin=None):
    out = subprocess.run([binary, *args], input=stdin, capture_output=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: exit {out.returncode}: {out.stderr.decode()}")
    return out.stdout.decode()


def gate(binary, stem, extra, frames):
    """Verdict lines for raw 28x28 frames (bytes) or a list of files."""
    common = ["gate", stem, "--seed", "2", "--no-latency", *extra]
    if isinstance(frames, bytes):
        text = run(binary, [*common[:2], "-", "--width", "28", "--height", "28", *common[2:]],
                   frames)
    else:
        text = run(binary, [*common[:2], *map(str, frames), *common[2:]])
    return [json.loads(l) for l in text.splitlines()]


def wilson(k, n):
    if n == 0:
        return (math.nan, math.nan)
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def cell(rejected):
    k, n = int(rejected.sum()), len(rejected)
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f} [{100 * lo:.1f}–{100 * hi:.1f}]"


def paired(a, b):
    """Mean of a − b (in points) and its paired bootstrap interval."""
    n = len(a)
    d = a.astype(float) - b.astype(float)
    boots = [d[RNG.integers(0, n, n)].mean() for _ in range(2000)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    mark = "~" if lo <= 0 <= hi else ""
    return f"{mark}{100 * d.mean():+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--model", default="models/mnist")
    ap.add_argument("--mcgate", default="target/release/mcgate")
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--calibrate-on", choices=["random", "ordered", "validation"],
                    default="random")
    ap.add_argument("--splits", type=int, default=0)
    ap.add_argument("--density-model",
                    help="the model with a density output (mcgate-training density): adds "
                         "the density gates")
    ap.add_argument("--holes", help="a folder of latent-hole frames (holes --frames) to judge")
    a = ap.parse_args()
    binary = str(Path(a.mcgate).resolve())
    tmp = Path(tempfile.mkdtemp())
    test = idx_images(f"{a.data}/t10k-images-idx3-ubyte", 0, 10000)
    digit = lambda i: test[i * 784:(i + 1) * 784]
    if a.calibrate_on == "random":
        order = np.random.default_rng(0).permutation(10000)
        calib = b"".join(digit(i) for i in order[:2000])
        judged = b"".join(digit(i) for i in order[2000:4000])
        judged_name = "clean test images, 2,000 others of the draw"
    else:
        calib = (test[8000 * 784:] if a.calibrate_on == "ordered"
                 else idx_images(f"{a.data}/train-images-idx3-ubyte", 55000, 57000))
        judged = test[:2000 * 784]
        judged_name = "clean test images 0–1,999"
    copies = [(a.model, "mi", []),
              (a.model, "mi-tamper", ["--tamper"]),
              (a.model, "fisher", ["--signals", "mi,entropy", "--fusion", "fisher"]),
              (a.model, "bonferroni", ["--signals", "mi,entropy", "--fusion", "bonferroni"]),
              (a.model, "tamper", ["--signals", "mi,entropy", "--fusion", "bonferroni",
                                   "--tamper"])]
    if a.density_model:
        copies += [(a.density_model, "density", ["--signals", "mi,density"]),
                   (a.density_model, "density-tamper", ["--signals", "mi,density", "--tamper"])]
    stems = {}
    for source, name, extra in copies:
        stem = tmp / name
        for ext in (".onnx", ".card.json"):
            shutil.copy(source + ext, str(stem) + ext)
        printed = run(binary, ["calibrate", str(stem), "-", "--width", "28", "--height", "28",
                               "--fpr", str(FPR), "--seed", "1", "-j", "2", *extra], calib)
        print(f"<!-- calibrate {name}: {printed.strip().splitlines()[0]} -->")
        stems[name] = str(stem)
    gates = {
        "MI": (stems["mi"], []),
        "MI + tamper": (stems["mi-tamper"], []),
        "entropy": (stems["fisher"], ["--signals", "entropy"]),
        "Fisher": (stems["fisher"], []),
        "Bonferroni": (stems["bonferroni"], []),
        "Bonferroni + tamper": (stems["tamper"], []),
    }
    compared = [("entropy", "MI"), ("Fisher", "MI"), ("Bonferroni", "MI"),
                ("Bonferroni", "Fisher"), ("Bonferroni + tamper", "MI + tamper")]
    if a.density_model:
        gates["density"] = (stems["density"], ["--signals", "density"])
        gates["MI + density"] = (stems["density"], [])
        gates["MI + density + tamper"] = (stems["density-tamper"], [])
        compared += [("density", "MI"), ("MI + density", "MI"),
                     ("MI + density + tamper", "MI + tamper")]

    rows = []  # (name, {gate: rejected bool array})

    def judge(name, frames, keep=None):
        decided = {}
        for g, (stem, extra) in gates.items():
            lines = gate(binary, stem, extra, frames)
            rejected = np.array([l["verdict"] == "reject" for l in lines])
            if keep is not None:
                rejected = rejected[keep(lines)]
            decided[g] = rejected
        rows.append((name, decided))

    judge(judged_name, judged)
    for name, frames in noise_frames().items():
        judge(f"noise: {name}", frames)
    if a.holes:
        holes = sorted(Path(a.holes).glob("*.png"))
        judge(f"latent holes (Fig 5), the {len(holes)} farthest", holes)

    bundle = Path(a.bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    by_group = {}
    for f in manifest["frames"]:
        by_group.setdefault(f["group"], []).append(f)
    clean_ok = {Path(f["file"]).name: f["label"] == f["workstation_class"]
                for f in by_group["clean"]}
    for g in manifest["groups"]:
        if g["role"] != "positive":
            continue
        frames = by_group[g["name"]]
        files = [bundle / f["file"] for f in frames]
        labels = np.array([f["label"] for f in frames])
        ok = np.array([clean_ok[Path(f["file"]).name] for f in frames])

        def worked(lines, labels=labels, ok=ok):
            # The attack worked: a correctly classified image now called another class.
            called = np.array([l["class"] if l["class"] is not None else -1 for l in lines])
            return ok & (called != labels)

        # The same frames for every gate: success judged by the MI gate's classes (the class
        # is the mean prediction's, the same whichever signal decides).
        mi_lines = gate(binary, *gates["MI"], files)
        keep_mask = worked(mi_lines)
        if not keep_mask.any():
            continue
        judge(f"{g['method']} ε {g['eps_255']} (attacks that worked: {keep_mask.sum()} of "
              f"{len(frames)})", files, keep=lambda _lines, m=keep_mask: m)
        noise = by_group[f"noise_for_{g['name']}"]
        judge(f"matched noise for {g['method']} ε {g['eps_255']}",
              [bundle / f["file"] for f in noise])

    names = list(gates)
    print("| frames | " + " | ".join(f"{g} rejects %" for g in names)
          + " | " + " | ".join(f"{x} − {y} (points)" for x, y in compared) + " |")
    print("|---" * (1 + len(names) + len(compared)) + "|")
    for name, decided in rows:
        print(f"| {name} | " + " | ".join(cell(decided[g]) for g in names) + " | "
              + " | ".join(paired(decided[x], decided[y]) for x, y in compared) + " |")
    if a.splits:
        splits(binary, a.model, a.density_model, test, digit, tmp, a.splits)
    shutil.rmtree(tmp)


def splits(binary, model, density_model, test, digit, tmp, n):
    """The held-out clean rate of MI alone and of each fusion over `n` random splits."""
    # (gate, source model, calibrate's --signals/--fusion, gate's extra flags)
    runs = [("MI", model, ["--signals", "mi,entropy", "--fusion", "fisher"], ["--signals", "mi"]),
            ("Fisher", model, ["--signals", "mi,entropy", "--fusion", "fisher"], []),
            ("Bonferroni", model, ["--signals", "mi,entropy", "--fusion", "bonferroni"], [])]
    if density_model:
        runs.append(("MI + density", density_model, ["--signals", "mi,density"], []))
    rates = {name: [] for name, *_ in runs}
    for seed in range(1, n + 1):
        order = np.random.default_rng(seed).permutation(len(test) // 784)
        calib = b"".join(digit(i) for i in order[:2000])
        judged = b"".join(digit(i) for i in order[2000:4000])
        calibrated = {}
        for name, source, signals, extra in runs:
            key = (source, tuple(signals))
            if key not in calibrated:
                stem = tmp / f"split-{len(calibrated)}"
                for ext in (".onnx", ".card.json"):
                    shutil.copy(source + ext, str(stem) + ext)
                run(binary, ["calibrate", str(stem), "-", "--width", "28", "--height", "28",
                             "--fpr", str(FPR), "--seed", str(10 + seed), "-j", "2", *signals],
                    calib)
                calibrated[key] = stem
            lines = [json.loads(l) for l in run(
                binary, ["gate", str(calibrated[key]), "-", "--width", "28", "--height", "28",
                         "--seed", str(100 + seed), "--no-latency", *extra],
                judged).splitlines()]
            rates[name].append(np.mean([l["verdict"] == "reject" for l in lines]))
    print(f"\nHeld-out clean rate over {n} random splits (2,000 calibration images, 2,000 "
          f"others judged, target {100 * FPR:.0f} %):\n")
    print("| gate | mean | min | max | sd over splits |")
    print("|---|---|---|---|---|")
    for name, r in rates.items():
        r = 100 * np.array(r)
        print(f"| {name} | {r.mean():.2f} % | {r.min():.2f} % | {r.max():.2f} % | "
              f"{r.std(ddof=1):.2f} points |")


if __name__ == "__main__":
    main()
