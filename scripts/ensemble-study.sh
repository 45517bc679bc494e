#!/usr/bin/env bash
# The dropout-ensemble study (docs/RESULTS.md, "Dropout ensembles"): trains the four extra
# members (seeds 2–5; seed 1 is the shipped models/mnist), assembles models/mnist-ensemble,
# then measures the single model against the ensemble on the same frames. Each step skips
# what already exists, so an interrupted run resumes. On this project's 2-core machine: ~40 min
# of training, ~10 min to assemble and score, ~45 min of measurements (the ensemble's attack
# grid alone ~18 min). The evaluations also write ROC/PR figures, not kept in docs/.
#
# Outputs: runs/ensemble/ (members, logs, the noise probe), models/mnist-ensemble.{onnx,card.json},
# docs/results/ensemble-* (figures, holes, attack grids).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
bin=target/release/mcgate-training
runs=runs/ensemble
mkdir -p "$runs"

members=models/mnist
for seed in 2 3 4 5; do
  stem=$runs/mnist-seed-$seed
  [ -f "$stem.card.json" ] || "$bin" train mnist --seed "$seed" --out "$stem"
  members+=",$stem"
done
[ -f models/mnist-ensemble.card.json ] \
  || "$bin" ensemble mnist --members "$members" --out models/mnist-ensemble

# Known-limit frames: dense noise, salt, gradients through every member and the ensemble.
if [ ! -f "$runs/noise-probe.md" ]; then
  for stem in ${members//,/ } models/mnist-ensemble; do
    echo "### $stem"
    .venv/bin/python scripts/noise_probe.py "$stem"
  done > "$runs/noise-probe.md.part"
  mv "$runs/noise-probe.md.part" "$runs/noise-probe.md"
fi

# Fig 6: the ensemble's latent maps and its own holes, 10 samples per member (50 pooled, as
# many as the single model's T = 50 figures); then the single model's holes (Fig 5, the same
# search as before) gated by the ensemble too.
[ -f docs/results/ensemble-latent-maps.json ] || "$bin" latent-maps \
  --model models/mnist-ensemble --samples 10 --out docs/results/ensemble-latent-maps
[ -f docs/results/ensemble-holes.json ] || "$bin" holes \
  --model models/mnist-ensemble --samples 10 --out docs/results/ensemble-holes
grep -q '"also"' docs/results/holes.json || "$bin" holes --also models/mnist-ensemble

# The attack grid on the same 100 test digits (the evaluation's seed-1 draw): white-box
# against the ensemble, the single model alone, and attacks crafted on the single model (the
# ensemble's member 0) transferred to the ensemble. Then the table docs/RESULTS.md quotes.
[ -f docs/results/ensemble-mnist.json ] || "$bin" evaluate mnist \
  --model models/mnist-ensemble --images 100 --out docs/results/ensemble-mnist
[ -f docs/results/ensemble-mnist-single.json ] || "$bin" evaluate mnist \
  --images 100 --out docs/results/ensemble-mnist-single
[ -f docs/results/ensemble-mnist-transfer.json ] || "$bin" evaluate mnist \
  --model models/mnist-ensemble --craft-on models/mnist --images 100 \
  --out docs/results/ensemble-mnist-transfer
python3 scripts/ensemble_table.py docs/results/ensemble-mnist-single.json \
  docs/results/ensemble-mnist.json docs/results/ensemble-mnist-transfer.json
