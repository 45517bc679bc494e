#!/usr/bin/env bash
# The ort engine on aarch64: cross-builds mcgate with `--features ort` and runs the ort
# parity test (tests/ort_engine.rs: every shipped model through onnxruntime against tract,
# in process and through the binary) under qemu-user, with the library of the PyPI wheel's
# aarch64 build (onnxruntime 1.31.1, manylinux_2_28_aarch64: glibc 2.28 or newer).
# armv7 has no such wheel: 32-bit boards run the tract engine only.
# qemu timings say nothing about ARM speed; none are reported.
#
# Usage: scripts/arm-ort-check.sh   (RUST_TEST_THREADS=1 to leave the other cores free)
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
version=1.31.1
scripts/arm-tools.sh "$target"

# The wheel is a zip: only its C library is needed, not a Python for aarch64.
lib_dir=target/ort-aarch64
lib=$lib_dir/libonnxruntime.so.$version
if [ ! -e "$lib" ]; then
  mkdir -p "$lib_dir"
  [ -x .venv/bin/python ] || python3 -m venv .venv >&2
  .venv/bin/pip download --quiet --disable-pip-version-check "onnxruntime==$version" \
    --platform manylinux_2_28_aarch64 --only-binary=:all: --no-deps -d "$lib_dir" >&2
  .venv/bin/python - "$lib_dir" "$version" <<'PY'
import glob, sys, zipfile
folder, version = sys.argv[1:]
wheel = zipfile.ZipFile(glob.glob(f"{folder}/onnxruntime-{version}-*aarch64.whl")[0])
name = f"onnxruntime/capi/libonnxruntime.so.{version}"
open(f"{folder}/libonnxruntime.so.{version}", "wb").write(wheel.read(name))
PY
fi
ln -sf "libonnxruntime.so.$version" "$lib_dir/libonnxruntime.so"

# onnxruntime reads the CPU's make from /proc/cpuinfo (pytorch's cpuinfo) and crashes
# (SIGSEGV) on finding no ARM core in it; qemu-user 7.2 (Debian 12) passes the host's x86
# /proc/cpuinfo through. qemu's -L prefix is consulted for every absolute path, so a prefix
# holding the cross libraries and a /proc/cpuinfo of two Cortex-A72 cores (a Raspberry Pi 4's,
# without the dot-product extension: onnxruntime picks its plain NEON kernels) stands in
# for a board's. A board has its own; nothing of this ships.
root=$PWD/$lib_dir/root
mkdir -p "$root/proc"
ln -sfn /usr/aarch64-linux-gnu/lib "$root/lib"
for cpu in 0 1; do
  printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$cpu"
done >"$root/proc/cpuinfo"
runner="qemu-aarch64 -L $root"
# The test binary runs under the runner (overriding .cargo/config.toml's); the binary the
# tests start runs under MCGATE_TEST_RUNNER (qemu-user does not follow exec into another
# aarch64 program by itself).
# Emulated, the float models' test over all 513 digit frames takes hours (MNIST and Fashion
# took 52 minutes together here, beside other work; the five-member ensemble costs five
# times one model): it takes every 8th digit frame (MCGATE_PARITY_EVERY) and every photo;
# the int8 and binary tests take everything.
MCGATE_PARITY_EVERY="${MCGATE_PARITY_EVERY:-8}" \
  ORT_DYLIB_PATH="$PWD/$lib_dir/libonnxruntime.so" MCGATE_TEST_RUNNER="$runner" \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$runner" \
  cargo test --release --target "$target" --features ort --test ort_engine -- --nocapture

bin=target/$target/release/mcgate
stripped=$(mktemp)
aarch64-linux-gnu-strip -o "$stripped" "$bin"
mb() { stat -c %s "$1" | awk '{printf "%.1f", $1 / 1e6}'; }
echo "aarch64 mcgate --features ort: $(mb "$stripped") MB stripped; libonnxruntime.so.$version: $(mb "$lib") MB; glibc needed: binary $(aarch64-linux-gnu-objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1), library $(aarch64-linux-gnu-objdump -T "$lib" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
rm -f "$stripped"
