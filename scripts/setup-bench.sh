#!/usr/bin/env bash
# .venv-bench for scripts/bench_peers.py: PyTorch as users install it (with its own
# dependencies; the test venv's torch is only a libtorch for the training crate) and
# onnxruntime. Several GB; not needed by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv-bench/bin/python -c "import torch, onnxruntime, numpy" 2>/dev/null; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 onnxruntime==1.31.1 numpy==2.4.6
fi
