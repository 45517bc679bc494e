#!/usr/bin/env python3
"""A real PyTorch export for README's "Bring your own model" walk-through.

Builds a small torchvision-style classifier (a ResNet-like trunk with BatchNorm and a
residual block, global average pooling, `torch.flatten(x, 1)`, and a MobileNetV3-like
classifier Linear → Hardswish → Dropout(0.2) → Linear), random weights (seed 0), and writes:

  OUT/net.onnx          eval-mode export with PyTorch's default exporter, as users do:
                        the Dropout node is gone;
  OUT/net-dropout.onnx  the same network exported with its Dropout kept (BatchNorm in
                        inference mode, Dropout in training mode: TrainingMode.PRESERVE);
  OUT/frames/*.ppm      200 smooth random 48×40 colour frames to calibrate and gate on.

Needs the benchmark venv's full PyTorch (scripts/setup-bench.sh):
  .venv-bench/bin/python scripts/byom_export.py OUT
"""
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class Net(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        self.block = Block(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(16, 64), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(64, classes))

    def forward(self, x):
        x = self.pool(self.block(self.stem(x)))
        return self.classifier(torch.flatten(x, 1))


def smooth(grid, h, w):
    """`grid` [gh, gw, 3] bilinearly interpolated to [h, w, 3]."""
    gh, gw, _ = grid.shape
    ys, xs = np.linspace(0, gh - 1, h), np.linspace(0, gw - 1, w)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    (out / "frames").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = Net()
    # Non-trivial BatchNorm statistics, as a trained network has.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    x = torch.rand(1, 3, 32, 32)
    # PyTorch's default (torch.export-based) exporter; weights inside the file, which is
    # what `mcgate convert` reads.
    torch.onnx.export(net, (x,), out / "net.onnx", input_names=["image"], output_names=["logits"],
                      external_data=False)
    # Dropout kept: only the TorchScript exporter preserves training-mode nodes.
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.train()
    torch.onnx.export(net, (x,), out / "net-dropout.onnx", input_names=["image"],
                      output_names=["logits"], training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=False, opset_version=18, dynamo=False)
    rng = np.random.default_rng(1)
    for i in range(200):
        img = smooth(rng.uniform(40, 215, size=(5, 6, 3)), 40, 48)
        with open(out / "frames" / f"frame_{i:03d}.ppm", "wb") as f:
            f.write(b"P6 48 40 255\n" + img.astype(np.uint8).tobytes())
    print(f"wrote {out}/net.onnx, {out}/net-dropout.onnx and 200 frames in {out}/frames")


if __name__ == "__main__":
    main()
