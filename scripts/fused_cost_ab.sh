#!/bin/bash
# The fused photo gate's cost as whole processes, interleaved: `mcgate gate` on the same 200
# photo-variant frames (256×256 raw RGB) with a copy of models/lite0-imagenet calibrated MI
# only, then with one calibrated with --tamper --signals mi,entropy, in turn, N pairs. Pairs
# taken in turn cancel the machine's drift that separate runs (criterion's, one bench after
# another) pick up. Prints each pair's seconds, their ratio and peak memory (KiB), then the
# median ratio. Needs scripts/fetch-lite0.sh's photos (data/lite0/variants) and .venv's numpy
# and Pillow.
#
# Usage: scripts/fused_cost_ab.sh [PAIRS=7]   (B: the mcgate binary [target/release/mcgate])
set -euo pipefail
pairs=${1:-7}
B=${B:-target/release/mcgate}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
.venv/bin/python - "$D/frames.raw" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
# The 25 scenes the shipped photo card was calibrated on (README, "Photos").
skip = ("hubble_deep_field", "retina", "ihc")
files = [f for f in sorted(Path("data/lite0/variants").glob("*.png")) if not f.stem.startswith(skip)]
frames = [np.asarray(Image.open(f).convert("RGB").resize((256, 256), Image.BILINEAR)) for f in files]
Path(sys.argv[1]).write_bytes(b"".join(f.tobytes() for f in frames))
PY
raw="- --width 256 --height 256 --seed 1"
for card in mi fused; do
  cp models/lite0-imagenet.onnx "$D/$card.onnx"
  cp models/lite0-imagenet.card.json "$D/$card.card.json"
done
# (Their warnings — the shipped card's red-team block dropped — are expected: kept in a log.)
calibrate() {
  "$B" calibrate "$D/$1" $raw --fpr 0.05 "${@:2}" < "$D/frames.raw" > /dev/null 2> "$D/log" \
    || { cat "$D/log" >&2; exit 1; }
}
calibrate mi
calibrate fused --tamper --signals mi,entropy
run() {
  /usr/bin/time -f "%e %M" "$B" gate "$D/$1" $raw --no-latency < "$D/frames.raw" 2>&1 >/dev/null | tail -1
}
echo "| pair | MI only s | fused s | ratio | MI only KiB | fused KiB |"
echo "|---|---|---|---|---|---|"
for i in $(seq "$pairs"); do
  read -r a ak <<< "$(run mi)"
  read -r b bk <<< "$(run fused)"
  echo "| $i | $a | $b | $(awk "BEGIN {printf \"%.3f\", $b / $a}") | $ak | $bk |"
done | tee "$D/rows"
awk -F'|' '{print $5}' "$D/rows" | sort -n | awk '{r[NR] = $1} END {printf "\nmedian ratio %.3f (%.3f–%.3f) over %d pairs\n", r[int((NR + 1) / 2)], r[1], r[NR], NR}'
