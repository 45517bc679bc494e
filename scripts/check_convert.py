#!/usr/bin/env python3
"""Independent check of `mcgate convert` with onnxruntime and numpy (run by the test command).

Two classifiers are built here with onnx.helper, as exporters write them:
  A. opset 13, a Dropout node (ratio input, training_mode input) before the last Gemm;
  B. opset 17, PyTorch's eval-mode export: no Dropout, a `Reshape` to [1, -1] after a
     convolution, converted with `--site`.
For each, `mcgate convert` writes the gated model; then, in onnxruntime:
  1. onnx.checker accepts the converted file;
  2. with every mask 1 (T = 1) it gives the original's output (softmax of its logits);
  3. with random masks (T = 5) it gives what numpy computes from the original weights:
     softmax(W2 · (m_t ⊙ h) + b2), h the activation at the site.

Usage: scripts/check_convert.py MCGATE_BINARY
"""
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

TOLERANCE = 1e-5
rng = np.random.default_rng(7)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def model_a():
    """x[1,1,6,6] → Flatten → Gemm 36→16 → Relu → Dropout(0.3) → Gemm 16→4 → logits."""
    w1, b1 = rng.normal(0, 0.3, (16, 36)).astype(np.float32), rng.normal(0, 0.1, 16).astype(np.float32)
    w2, b2 = rng.normal(0, 0.5, (4, 16)).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]]
    inits += [numpy_helper.from_array(np.array(0.3, np.float32), "ratio"),
              numpy_helper.from_array(np.array(False), "training")]
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["h0"], transB=1),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("Dropout", ["h", "ratio", "training"], ["d", "unused_mask"]),
        helper.make_node("Gemm", ["d", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "a", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    head = lambda h_site, m: softmax((h_site * m) @ w2.T + b2)  # noqa: E731
    return model, [], "h", head


def model_b():
    """x[N,3,5,5] → Conv 3→4 3×3 → Relu → Reshape [1, -1] → Gemm 36→5 → logits (no Dropout)."""
    wc, bc = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32)
    w, b = rng.normal(0, 0.3, (5, 36)).astype(np.float32), rng.normal(0, 0.1, 5).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [(wc, "wc"), (bc, "bc"), (w, "w"), (b, "b")]]
    inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "flat_shape"))
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "b", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    head = lambda r_site, m: softmax((r_site * m).reshape(m.shape[0], -1) @ w.T + b)  # noqa: E731
    return model, ["--site", "r=0.4"], "r", head


def check(name, build, mcgate, tmp):
    model, flags, site, head = build()
    src = tmp / f"{name}.onnx"
    onnx.save(model, src)
    stem = tmp / f"{name}-gated"
    subprocess.run([mcgate, "convert", str(src), str(stem), *flags], check=True, capture_output=True)
    converted = onnx.load(f"{stem}.onnx")
    onnx.checker.check_model(converted)
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    # The original, with the site's activation exposed as a second output for the reference.
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.append(helper.make_empty_tensor_value_info(site))
    original = ort.InferenceSession(exposed.SerializeToString())
    gated = ort.InferenceSession(converted.SerializeToString())
    mask = next(i for i in gated.get_inputs() if i.name.startswith("mask_"))
    mask_shape = mask.shape[1:]
    worst = 0.0
    for _ in range(3):
        x = rng.normal(0, 1, shape).astype(np.float32)
        logits, activation = original.run(None, {model.graph.input[0].name: x})
        ones = np.ones([1, *mask_shape], np.float32)
        (probs,) = gated.run(None, {"x": x, mask.name: ones})
        worst = max(worst, float(np.abs(probs - softmax(logits)).max()))
        t = 5
        masks = (rng.random([t, *mask_shape]) >= 0.5).astype(np.float32) * 2.0
        (probs,) = gated.run(None, {"x": x, mask.name: masks})
        want = head(activation.reshape(1, *mask_shape), masks)
        worst = max(worst, float(np.abs(probs - want.reshape(t, -1)).max()))
    if not worst <= TOLERANCE:
        sys.exit(f"check_convert: {name}: converted model differs by {worst:.2e} (> {TOLERANCE})")
    print(f"check_convert: {name}: onnx.checker ok; every mask 1 = the original, random masks = numpy "
          f"(onnxruntime, largest difference {worst:.2e})")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    mcgate = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in [("dropout-opset13", model_a), ("pytorch-eval-reshape", model_b)]:
            check(name, build, mcgate, Path(tmp))


if __name__ == "__main__":
    main()
