#!/usr/bin/env python3
"""Independent PyTorch reference for EfficientNet-Lite0 (run with .venv-bench/bin/python; pillow).

Usage: scripts/lite0_reference.py [DEST]   (default data/lite0, filled by scripts/fetch-lite0.sh)

Written from the architecture, not from any EfficientNet package, so that it checks the Rust
port rather than sharing its assumptions. Prints top-1/top-5 on the 20 foolbox ImageNet photos
with TF "SAME" padding (what the weights were trained with) and with symmetric padding, and a
1-thread batch-1 latency; writes training/tests/golden/lite0/{synthetic,photos}.json.
Goldens are computed in float64 so they do not carry this script's float32 rounding.
"""
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "training/tests/golden/lite0"
BN_EPS = 1e-3  # TF's default; several running_var entries are exactly 0, so eps matters
# (repeats, kernel, stride of the first block, expand ratio, out channels); stem has 32
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def conv(x, w, stride=1, groups=1, same=True):
    k = w.shape[-1]
    if not same:
        return F.conv2d(x, w, None, stride, k // 2, 1, groups)
    pads = []
    for n in (x.shape[3], x.shape[2]):  # F.pad order: width first
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]  # TF puts the odd pixel bottom/right
    return F.conv2d(F.pad(x, pads), w, None, stride, 0, 1, groups)


def bn(x, p, name):
    return F.batch_norm(x, p[name + ".running_mean"], p[name + ".running_var"],
                        p[name + ".weight"], p[name + ".bias"], False, 0.0, BN_EPS)


def relu6(x):
    return x.clamp(0, 6)


def features(p, x, same=True):
    """Pooled 1280-d features (eval mode: the 0.2 dropout before _fc is the identity)."""
    x = relu6(bn(conv(x, p["_conv_stem.weight"], 2, same=same), p, "_bn0"))
    i, cin = 0, 32
    for repeats, k, s, e, cout in STAGES:
        for r in range(repeats):
            b, stride, inp = f"_blocks.{i}.", s if r == 0 else 1, x
            assert p[b + "_depthwise_conv.weight"].shape[-1] == k
            if e != 1:
                x = relu6(bn(conv(x, p[b + "_expand_conv.weight"]), p, b + "_bn0"))
            x = relu6(bn(conv(x, p[b + "_depthwise_conv.weight"], stride, x.shape[1], same), p, b + "_bn1"))
            x = bn(conv(x, p[b + "_project_conv.weight"]), p, b + "_bn2")
            if stride == 1 and cin == cout:
                x = x + inp
            i, cin = i + 1, cout
    x = relu6(bn(conv(x, p["_conv_head.weight"]), p, "_bn1"))
    return x.mean((2, 3))


def logits(p, f):
    return F.linear(f, p["_fc.weight"], p["_fc.bias"])


def preprocess(path):
    """torchvision Resize(256) + CenterCrop(224) on a PIL image, then (x - 127) / 128."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    if w <= h:
        size = (256, int(256 * h / w))
    else:
        size = (int(256 * w / h), 256)
    im = im.resize(size, Image.BILINEAR)
    w, h = im.size
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    a = np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    return torch.from_numpy((a.transpose(2, 0, 1) - 127.0) / 128.0).unsqueeze(0)


def synthetic():
    # x[c,h,w] = sin(0.01 * (c*50176 + h*224 + w)), in float64 then rounded to float32
    return torch.from_numpy(np.sin(0.01 * np.arange(3 * 224 * 224, dtype=np.float64))
                            .astype(np.float32).reshape(1, 3, 224, 224))


def g(v):
    return float(f"{v:.9g}")


def main():
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data/lite0"
    p32 = load_file(dest / "efficientnet-lite0.safetensors")
    p64 = {k: v.double() for k, v in p32.items()}
    labels = (ROOT / "models/imagenet-labels.txt").read_text().splitlines()
    torch.set_grad_enabled(False)

    photos = sorted((dest / "photos/foolbox").glob("imagenet_*.jpg")) + \
        sorted((dest / "photos/skimage").glob("*.*"))
    inputs = {ph: preprocess(ph) for ph in photos}
    records = []
    for same in (True, False):
        top1 = top5 = n = 0
        for ph in photos:
            prob = logits(p64, features(p64, inputs[ph].double(), same)).softmax(1)[0]
            pv, pi = prob.topk(5)
            if ph.parent.name == "foolbox":
                label = int(ph.stem.split("_")[2])
                n, top1, top5 = n + 1, top1 + (pi[0] == label), top5 + (label in pi)
            if same:
                records.append({"file": f"{ph.parent.name}/{ph.name}",
                                "top5": pi.tolist(), "top5_prob": [g(v) for v in pv],
                                "top1_label": labels[pi[0]],
                                "input_max_abs": g(inputs[ph].abs().max()),
                                "input_sum": g(inputs[ph].double().sum())})
        print(f"{'SAME' if same else 'symmetric'} padding: top-1 {int(top1)}/{n}, top-5 {int(top5)}/{n}")
    for r in records:
        if r["file"].startswith("skimage/"):
            print(f"  {r['file']}: {r['top1_label']} ({r['top5_prob'][0]:.3f})")

    x = synthetic()
    f64 = features(p64, x.double())
    l64 = logits(p64, f64)
    l32 = logits(p32, features(p32, x))
    print(f"synthetic: float32 vs float64 logits max-abs difference {float((l32 - l64).abs().max()):.2e}")

    torch.set_num_threads(1)
    for _ in range(3):
        logits(p32, features(p32, x))
    times = []
    for _ in range(10):
        t = time.perf_counter()
        logits(p32, features(p32, x))
        times.append(time.perf_counter() - t)
    print(f"float32 forward, batch 1, 1 thread: median {1e3 * statistics.median(times):.1f} ms of 10")

    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / "synthetic.json").write_text(json.dumps({
        "input": "x[0,c,h,w] = (float32) sin(0.01 * (c*50176 + h*224 + w)), sin in float64",
        "padding": "TF SAME", "bn_eps": BN_EPS, "computed_in": "float64",
        "features_first16": [g(v) for v in f64[0, :16]],
        "features_sum": g(f64.sum()),
        "logits": [g(v) for v in l64[0]],
    }, indent=1) + "\n")
    (GOLDEN / "photos.json").write_text(json.dumps({
        "preprocess": "PIL RGB; BILINEAR resize shorter side to 256 (longer int(256*long/short)); "
                      "centre crop 224 at int(round((size-224)/2.0)); (x-127)/128; CHW",
        "padding": "TF SAME", "computed_in": "float64", "photos": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
