#!/usr/bin/env bash
# Installs the CPU libtorch the training crate links against, when absent: a project-local
# venv (.venv, git-ignored) with the PyPI torch 2.13.0 wheel (tch 0.26 needs libtorch 2.13)
# and the two CUDA runtime libraries libtorch_cpu.so loads through its $ORIGIN runpath.
# Then links .venv/libtorch to the wheel's torch folder (.cargo/config.toml points LIBTORCH
# there), whatever the Python minor version.
# For a CUDA workstation install the full torch==2.13.0 instead and build with
# `--features cuda` (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
if [ -e "$venv/libtorch/lib/libtorch_cpu.so" ]; then
  exit 0
fi
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "error: $python is needed to install libtorch" >&2; exit 1; }
[ -x "$venv/bin/pip" ] || "$python" -m venv "$venv"
echo "installing libtorch (PyPI torch==2.13.0, CPU, ~540 MB download) into $venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
  torch==2.13.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
torch_dir=$(ls -d "$venv"/lib/python3*/site-packages/torch | head -n 1)
ln -sfn "${torch_dir#"$venv"/}" "$venv/libtorch"
[ -e "$venv/libtorch/lib/libtorch_cpu.so" ] || { echo "error: no libtorch_cpu.so under $torch_dir" >&2; exit 1; }
