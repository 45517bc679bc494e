#!/usr/bin/env bash
# onnxruntime's C library for `--engine ort` (a build with `--features ort`): the PyPI
# wheel's libonnxruntime.so, linked as .venv/libonnxruntime.so. Installs the pinned wheel
# into the project's .venv when absent; prints the library's absolute path, to give as
# `--ort-library PATH` or ORT_DYLIB_PATH.
#
# For a board (aarch64), the same wheel's manylinux_2_28_aarch64 build carries the same
# library: `pip download onnxruntime==1.31.1 --platform manylinux_2_28_aarch64
# --only-binary=:all: --no-deps`, then unzip onnxruntime/capi/libonnxruntime.so.* from it.
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.31.1
[ -x .venv/bin/python ] || python3 -m venv .venv >&2
if ! .venv/bin/python -c "import onnxruntime, sys; sys.exit(onnxruntime.__version__ != '$version')" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check "onnxruntime==$version" >&2
fi
lib=$(.venv/bin/python -c "import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so.*')))[0])")
ln -sf "$lib" .venv/libonnxruntime.so
echo "$PWD/.venv/libonnxruntime.so"
