#!/usr/bin/env python3
"""Does an int8 EfficientNet-Lite0 run faster in tract? A probe, not a shipped model.

Quantises the float photo model with onnxruntime's static quantiser (QOperator: QLinearConv with
per-channel int8 weights, uint8 activations; only the convolutions, so every other op stays a
standard ONNX float op tract runs), activation ranges from clean photos, and writes it with a
copy of the card (new onnx_sha256) so `mcgate` and `examples/profile_nodes.rs` load it:

    .venv-bench/bin/python scripts/quantize_probe.py models/lite0-imagenet /tmp/lite0-int8 \
        data/lite0/variants
    cargo run --release --example profile_nodes -- /tmp/lite0-int8 50 20

It also prints the top-1 of the float and the int8 file (onnxruntime, masks all one) on the
labelled photos of data/lite0/photos/foolbox, so a speed-up is not bought with accuracy unseen.
Needs .venv-bench (scripts/setup-bench.sh): onnx, onnxruntime, pillow.
"""

import hashlib
import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)
from PIL import Image


def preprocess(path, card):
    """Shorter side to 256 (PIL bilinear), centre 224, (x - mean) / std, NCHW: close to the
    runtime's cut, enough for activation ranges and a top-1 count."""
    spec = card["input"]
    side, crop = spec["resize"]["shorter_side"], spec["resize"]["crop"]
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = side / min(w, h)
    img = img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - crop) // 2, (h - crop) // 2
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.float32) * spec["scale"]
    x = (x - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
    return x.transpose(2, 0, 1)[None]


def feeds(card, x, samples=1):
    out = {card["input"]["name"]: x}
    for site in card["dropout_sites"]:
        out[site["input"]] = np.ones([samples] + site["shape"], np.float32)
    return out


class Photos(CalibrationDataReader):
    def __init__(self, paths, card):
        self.items = iter([feeds(card, preprocess(p, card)) for p in paths])

    def get_next(self):
        return next(self.items, None)


def top1(onnx_path, card, photos):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    right = 0
    for p in photos:
        label = int(p.stem.rsplit("_", 1)[1])
        probs = s.run(None, feeds(card, preprocess(p, card)))[0]
        right += int(np.argmax(probs[0]) == label)
    return right


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    stem, out, calib_dir = (pathlib.Path(a) for a in sys.argv[1:])
    card = json.loads(pathlib.Path(f"{stem}.card.json").read_text())
    calib = sorted(p for p in calib_dir.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    if not calib:
        sys.exit(f"no PNG/JPEG photos in {calib_dir}")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx_out = pathlib.Path(f"{out}.onnx")
    quantize_static(
        f"{stem}.onnx", str(onnx_out), Photos(calib, card),
        quant_format=QuantFormat.QOperator, op_types_to_quantize=["Conv"],
        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    card["onnx_sha256"] = hashlib.sha256(onnx_out.read_bytes()).hexdigest()
    card["name"] = out.name
    pathlib.Path(f"{out}.card.json").write_text(json.dumps(card, indent=2) + "\n")
    labelled = sorted(pathlib.Path("data/lite0/photos/foolbox").glob("*.jpg"))
    print(f"wrote {onnx_out} ({len(calib)} calibration photos)")
    print(f"top-1 on {len(labelled)} foolbox photos (onnxruntime): "
          f"float {top1(f'{stem}.onnx', card, labelled)}, int8 {top1(onnx_out, card, labelled)}")


if __name__ == "__main__":
    main()
