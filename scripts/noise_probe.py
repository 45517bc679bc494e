#!/usr/bin/env python3
"""How the gate treats synthetic garbage frames: 100 frames of each kind through
`mcgate gate - --seed 1`, reporting the MI median, the reject rate and the predicted classes.

Usage: .venv/bin/python scripts/noise_probe.py [MODEL_STEM] [MCGATE_BINARY]
`noise_frames()` is the one definition of the kinds (scripts/fusion_probe.py gates them too).
"""
import json
import subprocess
import sys

import numpy as np


def noise_frames(n=100):
    """{kind: n raw 28×28 gray frames, concatenated}, from one generator seeded 0."""
    rng = np.random.default_rng(0)
    xs, ys = np.meshgrid(np.arange(28), np.arange(28))

    def gradient():
        f = (np.cos(rng.uniform(0, 6.3)) * xs + np.sin(rng.uniform(0, 6.3)) * ys).ravel()
        return (f - f.min()) / max(f.max() - f.min(), 1e-9) * 255

    kinds = {
        "gaussian N(128, 64^2)": lambda: np.clip(128 + 64 * rng.standard_normal(784), 0, 255),
        "uniform [0, 255]": lambda: rng.uniform(0, 255, 784),
        "salt 10% white": lambda: (rng.random(784) < 0.1) * 255.0,
        "salt 30% white": lambda: (rng.random(784) < 0.3) * 255.0,
        "random gradient": gradient,
    }
    return {name: b"".join(make().astype(np.uint8).tobytes() for _ in range(n))
            for name, make in kinds.items()}


def main():
    stem = sys.argv[1] if len(sys.argv) > 1 else "models/mnist"
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/mcgate"
    print(f"| frames (100 each) | MI median | MI 10th pct | rejected | most frequent class |")
    print(f"|---|---|---|---|---|")
    for name, frames in noise_frames().items():
        out = subprocess.run(
            [binary, "gate", stem, "-", "--width", "28", "--height", "28", "--seed", "1",
             "--no-latency"],
            input=frames, capture_output=True, check=True)
        lines = [json.loads(l) for l in out.stdout.decode().splitlines()]
        # A card with tamper checks rejects some frames before the model runs: no measures.
        mi = np.array([l["measures"]["mutual_information"] for l in lines if l["measures"]]
                      or [np.nan])
        rejected = np.mean([l["verdict"] == "reject" for l in lines])
        called = [l["class"] for l in lines if l["class"] is not None]
        classes = np.bincount(called, minlength=10)
        most = (f"{classes.argmax()} ({classes.max()} of {len(called)})" if called
                else "– (none scored)")
        print(f"| {name} | {np.median(mi):.3f} | {np.percentile(mi, 10):.3f} | "
              f"{100 * rejected:.0f} % | {most} |")


if __name__ == "__main__":
    main()
