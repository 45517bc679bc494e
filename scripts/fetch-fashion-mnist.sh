#!/usr/bin/env bash
# Fetches Fashion-MNIST (gzipped IDX, MIT licence) from Debian's dataset-fashion-mnist
# package without installing it system-wide, verifies SHA-256, and places the four files in
# data/fashion-mnist/ (git-ignored).
# Usage: scripts/fetch-fashion-mnist.sh [DEST]    (default DEST: data/fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-data/fashion-mnist}

sums='cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa  t10k-images-idx3-ubyte.gz
8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05  t10k-labels-idx1-ubyte.gz
b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7  train-images-idx3-ubyte.gz
0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056  train-labels-idx1-ubyte.gz'

mkdir -p "$dest"
if (cd "$dest" && echo "$sums" | sha256sum --check --quiet >/dev/null 2>&1); then
  echo "Fashion-MNIST already in $dest (checksums match)"
  exit 0
fi
command -v apt-get >/dev/null || { echo "error: apt-get (Debian) is needed to fetch dataset-fashion-mnist" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt's sandbox user must be able to write the download
(cd "$tmp" && apt-get download -q dataset-fashion-mnist >/dev/null 2>&1) || {
  echo "error: apt-get download dataset-fashion-mnist failed (run 'apt-get update' first?)" >&2
  exit 1
}
dpkg-deb -x "$tmp"/dataset-fashion-mnist_*.deb "$tmp/x"
src="$tmp/x/usr/share/datasets/fashion-mnist"
(cd "$src" && echo "$sums" | sha256sum --check --quiet) || {
  echo "error: checksum mismatch in dataset-fashion-mnist; refusing to use it" >&2
  exit 1
}
cp "$src"/*.gz "$dest/"
echo "Fashion-MNIST: 4 IDX files verified and placed in $dest"
