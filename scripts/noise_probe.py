#!/usr/bin/env python3
"""How the gate treats synthetic garbage frames: 100 frames of each kind through
`mcgate gate - --seed 1`, reporting the MI median, the reject rate and the predicted classes.

Usage: .venv/bin/python scripts/noise_probe.py [MODEL_STEM] [MCGATE_BINARY]
"""
import json
import subprocess
import sys

import numpy as np

stem = sys.argv[1] if len(sys.argv) > 1 else "models/mnist"
binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/mcgate"
rng = np.random.default_rng(0)
xs, ys = np.meshgrid(np.arange(28), np.arange(28))
kinds = {
    "gaussian N(128, 64^2)": lambda: np.clip(128 + 64 * rng.standard_normal(784), 0, 255),
    "uniform [0, 255]": lambda: rng.uniform(0, 255, 784),
    "salt 10% white": lambda: (rng.random(784) < 0.1) * 255.0,
    "salt 30% white": lambda: (rng.random(784) < 0.3) * 255.0,
    "random gradient": lambda: (np.cos(rng.uniform(0, 6.3)) * xs + np.sin(rng.uniform(0, 6.3)) * ys).ravel(),
}
print(f"| frames (100 each) | MI median | MI 10th pct | rejected | most frequent class |")
print(f"|---|---|---|---|---|")
for name, make in kinds.items():
    frames = []
    for _ in range(100):
        f = make()
        f = (f - f.min()) / max(f.max() - f.min(), 1e-9) * 255 if "gradient" in name else f
        frames.append(f.astype(np.uint8).tobytes())
    out = subprocess.run(
        [binary, "gate", stem, "-", "--width", "28", "--height", "28", "--seed", "1", "--no-latency"],
        input=b"".join(frames), capture_output=True, check=True)
    lines = [json.loads(l) for l in out.stdout.decode().splitlines()]
    # A card with tamper checks rejects some frames before the model runs: no measures.
    mi = np.array([l["measures"]["mutual_information"] for l in lines if l["measures"]]
                  or [np.nan])
    rejected = np.mean([l["verdict"] == "reject" for l in lines])
    called = [l["class"] for l in lines if l["class"] is not None]
    classes = np.bincount(called, minlength=10)
    most = f"{classes.argmax()} ({classes.max()} of {len(called)})" if called else "– (none scored)"
    print(f"| {name} | {np.median(mi):.3f} | {np.percentile(mi, 10):.3f} | {100 * rejected:.0f} % "
          f"| {most} |")
