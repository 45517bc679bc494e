#!/usr/bin/env python3
"""Independent check of a shipped model and of mcgate's numbers.

1. onnx.checker accepts the ONNX file; its SHA-256 matches the card.
2. Frames (MNIST test images from data/mnist plus Gaussian noise) go through
   `mcgate gate - --seed S` as raw stdin frames; for each reported frame seed, this script
   redraws the same masks with its own wyrand (docs/model-format.md), runs onnxruntime on the
   same ONNX file, computes every measure in float64 with numpy, and compares with mcgate's
   JSON line: same class and verdict, measures within tolerance; for a model with a density
   output (`output.log_density`), the same log density within 1e-4 relative.

Usage: scripts/check_onnx.py MODEL_STEM MCGATE_BINARY [N_FRAMES]
"""
import hashlib
import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

M64 = (1 << 64) - 1


def wyrand_stream(seed):
    state = seed
    while True:
        state = (state + 0xA0761D6478BD642F) & M64
        t = state * (state ^ 0xE7037ED1A0B428DB)
        yield ((t >> 64) ^ t) & M64


def fill_mask(n, p, rng):
    keep = 1.0 - float(np.float32(p))
    scale = np.float32(1.0 / keep)
    threshold = int(keep * 4294967296.0)
    out = np.zeros(n, dtype=np.float32)
    i = 0
    while i + 1 < n:
        r = next(rng)
        out[i] = scale if (r & 0xFFFFFFFF) < threshold else 0.0
        out[i + 1] = scale if (r >> 32) < threshold else 0.0
        i += 2
    if i < n:
        out[i] = scale if (next(rng) & 0xFFFFFFFF) < threshold else 0.0
    return out


def measures(probs):
    p = probs.astype(np.float64)
    t, c = p.shape
    mean = p.mean(axis=0)

    def h(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    pe = h(mean)
    ee = float(np.mean([h(row) for row in p]))
    var = float(((p - mean) ** 2).mean(axis=0).mean())
    votes = np.bincount(p.argmax(axis=1), minlength=c)
    return {
        "predictive_entropy": pe,
        "expected_entropy": ee,
        "mutual_information": max(pe - ee, 0.0),
        "softmax_variance": var,
        "variation_ratio": 1.0 - votes.max() / t,
        "max_probability": float(mean.max()),
    }, int(mean.argmax())


def main():
    stem, binary = sys.argv[1], sys.argv[2]
    n_frames = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    card = json.load(open(f"{stem}.card.json"))
    onnx_bytes = open(f"{stem}.onnx", "rb").read()
    assert hashlib.sha256(onnx_bytes).hexdigest() == card["onnx_sha256"], "card SHA-256 mismatch"
    onnx.checker.check_model(onnx.load_from_string(onnx_bytes), full_check=True)

    _, c, hgt, wid = card["input"]["shape"]
    assert c == 1, "this check feeds gray frames"
    raw = open("data/mnist/t10k-images-idx3-ubyte", "rb").read()[16:]
    frames = [raw[i * 784 : (i + 1) * 784] for i in range(n_frames - 2)]
    rng = np.random.default_rng(0)
    frames += [np.clip(128 + 64 * rng.standard_normal(784), 0, 255).astype(np.uint8).tobytes() for _ in range(2)]

    out = subprocess.run(
        [binary, "gate", stem, "-", "--width", str(wid), "--height", str(hgt), "--seed", "11", "--no-latency"],
        input=b"".join(frames),
        capture_output=True,
        check=True,
    )
    lines = [json.loads(l) for l in out.stdout.decode().splitlines()]
    assert len(lines) == len(frames), f"{len(lines)} lines for {len(frames)} frames"

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    samples = lines[0]["samples"]
    worst = 0.0
    for frame, line in zip(frames, lines):
        x = np.frombuffer(frame, dtype=np.uint8).astype(np.float32)
        x = ((x * np.float32(card["input"]["scale"]) - card["input"]["mean"][0]) / card["input"]["std"][0])
        feeds = {card["input"]["name"]: x.reshape(1, c, hgt, wid)}
        stream = wyrand_stream(line["seed"])
        for site in card["dropout_sites"]:
            n = samples * int(np.prod(site["shape"]))
            feeds[site["input"]] = fill_mask(n, site["p"], stream).reshape([samples] + site["shape"])
        density_name = card["output"].get("log_density")
        names = [card["output"]["name"]] + ([density_name] if density_name else [])
        probs, *density = session.run(names, feeds)
        if density_name:
            # The density output: once per frame, every mask 1 (docs/model-format.md).
            d = float(density[0].reshape(-1)[0])
            rel = abs(line["log_density"] - d) / (1.0 + abs(d))
            worst = max(worst, rel)
            assert rel < 1e-4, f"frame {line['frame']}: log_density mcgate {line['log_density']} onnxruntime {d}"
        want, cls = measures(probs)
        assert line["class"] == cls, f"frame {line['frame']}: class {line['class']} != onnxruntime {cls}"
        for k, v in want.items():
            d = abs(line["measures"][k] - v)
            worst = max(worst, d)
            assert d < 1e-4, f"frame {line['frame']}: {k} mcgate {line['measures'][k]} onnxruntime {v}"
        verdict = "reject" if want["mutual_information"] > line["threshold"] else "accept"
        margin = abs(want["mutual_information"] - line["threshold"])
        assert verdict == line["verdict"] or margin < 1e-4, f"frame {line['frame']}: verdict differs"
    print(f"check_onnx: {stem}: onnx.checker ok, {len(frames)} frames match onnxruntime + float64 "
          f"measures (largest difference {worst:.2e})")


if __name__ == "__main__":
    main()
