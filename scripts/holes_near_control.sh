#!/bin/bash
# The latent holes of Fig 5 against the gate calibrated on the near-data control — the same
# VAE's decodes within 1.0 of an encoded training digit, so that the decoder's drawing style is
# what the clean frames look like: every other control frame calibrates (MI alone with tamper
# checks, density alone, MI + density, MI + density + tamper; --fpr 0.05), the others are
# judged beside the holes. Prints a Markdown table with 95 % Wilson intervals.
#
# Usage: scripts/holes_near_control.sh   (B: the mcgate binary [target/release/mcgate];
#   H: the folder with holes.raw and near.raw from `mcgate-training holes --raw H/holes.raw
#   --near-raw H/near.raw` [/tmp/holes]; M: a model with a density output, as
#   `mcgate-training density mnist --out M` writes it [runs/density/mnist-density])
set -euo pipefail
B=${B:-target/release/mcgate}
H=${H:-/tmp/holes}
M=${M:-runs/density/mnist-density}
D=$(mktemp -d)
# Interleaved: the file runs over the latent grid in order, so its halves see different digits.
.venv/bin/python - "$H/near.raw" "$D" <<'PY'
import sys
from pathlib import Path
raw = Path(sys.argv[1]).read_bytes()
frames = [raw[i:i + 784] for i in range(0, len(raw), 784)]
Path(sys.argv[2], "near-cal.raw").write_bytes(b"".join(frames[0::2]))
Path(sys.argv[2], "near-judged.raw").write_bytes(b"".join(frames[1::2]))
PY
half=$(( $(stat -c %s $D/near-cal.raw) / 784 ))
for s in mi d md mdt; do cp $M.onnx $D/$s.onnx; cp $M.card.json $D/$s.card.json; done
C="- --width 28 --height 28 --fpr 0.05 --seed 1 -j 2"
$B calibrate $D/mi $C --tamper < $D/near-cal.raw > /dev/null
$B calibrate $D/d $C --signals density < $D/near-cal.raw > /dev/null
$B calibrate $D/md $C --signals mi,density < $D/near-cal.raw > /dev/null
$B calibrate $D/mdt $C --signals mi,density --tamper < $D/near-cal.raw > /dev/null
echo "| gate (calibrated on $half near-control frames, --fpr 0.05) | near-control held out, rejected | holes rejected |"
echo "|---|---|---|"
declare -A name=([mi]="MI alone, with tamper checks" [d]="density alone" [md]="MI + density" [mdt]="MI + density + tamper")
for s in mi d md mdt; do
  row="| ${name[$s]}"
  for f in $D/near-judged.raw $H/holes.raw; do
    row="$row | $($B gate $D/$s - --width 28 --height 28 --seed 1 --no-latency -j 2 < $f | .venv/bin/python -c '
import json, sys
sys.path.insert(0, "scripts")
from tamper_probe import pct
v = [json.loads(l)["verdict"] == "reject" for l in sys.stdin]
print(f"{sum(v)} of {len(v)}, {pct(sum(v), len(v))}")')"
  done
  echo "$row |"
done
rm -rf $D
