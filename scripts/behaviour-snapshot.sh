#!/usr/bin/env bash
# Records what a build of mcgate does on everything shipped, so that a refactor can show it
# changed nothing: `gate` on the samples and bundles with every shipped model (fixed seeds,
# no latency), `validate --json` on both bundles, raw-stdin `--pass-through` bytes, and the
# shipped model files' digests.
#
# Usage: scripts/behaviour-snapshot.sh BINARY OUTDIR
# Compare two snapshots: for f in A/*.jsonl; do scripts/compare_reports.py "$f" B/"${f##*/}" --tol 1e-5; done
#   and `cmp` for the .sha256 files.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
out=$2
mkdir -p "$out"

gate() { # NAME MODEL FRAMES-AND-FLAGS... (exit 4: some frames were unreadable, as shipped)
  local name=$1 model=$2
  shift 2
  "$bin" gate "$model" "$@" --no-latency >"$out/$name.jsonl" 2>/dev/null || [ $? -eq 4 ]
}
digits=(samples/mnist bundles/mnist)
for m in mnist mnist.int8 fashion fashion.int8 mnist-ensemble; do
  gate "gate-$m" "models/$m" "${digits[@]}" --seed 1
done
gate gate-builtin builtin:mnist samples/mnist --seed 1
gate gate-lite0-imagenet models/lite0-imagenet samples/photos bundles/lite0-imagenet --seed 1
# A seed per frame given: the same masks for every frame.
gate gate-mnist-frame-seed models/mnist samples/mnist --frame-seed 7 -T 30

"$bin" validate models/mnist bundles/mnist --seed 1 --json >"$out/validate-mnist.jsonl"
# (exit 6 on lite0: its 6-photo bundle's AUCs move beyond the tolerance with the seed.)
"$bin" validate models/lite0-imagenet bundles/lite0-imagenet --seed 1 --json \
  >"$out/validate-lite0-imagenet.jsonl" || [ $? -eq 6 ]

# Raw 28×28 gray frames through the video path, every reject policy: bytes compared exactly.
python3 -c 'import sys, random; r = random.Random(1); sys.stdout.buffer.write(bytes(r.choice([0, 0, 0, 255, r.randrange(256)]) for _ in range(784 * 40)))' >"$out/raw.gray"
for policy in black repeat drop; do
  "$bin" gate models/mnist - --width 28 --height 28 --pass-through --on-reject "$policy" \
    --seed 1 --no-latency --report "$out/pass-through-$policy.jsonl" <"$out/raw.gray" |
    sha256sum | cut -d' ' -f1 >"$out/pass-through-$policy.sha256"
done
rm "$out/raw.gray"
sha256sum models/* >"$out/models.sha256"
ls "$out"
