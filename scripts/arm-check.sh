#!/usr/bin/env bash
# Builds the runtime for 64-bit and 32-bit ARM with Debian's cross gcc, runs it under
# qemu-user over the shipped samples and eval bundle, and compares with the x86 build:
# equal verdicts and classes, every measure and AUC within 1e-4 (scripts/compare_reports.py).
# Also prints binary sizes and the newest glibc symbol each binary needs.
# qemu timings say nothing about ARM speed; none are reported.
#
# Usage: scripts/arm-check.sh [TARGET...]   (default: aarch64 and armv7 gnueabihf)
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

scripts/arm-tools.sh "${targets[@]}"

out=target/arm-check
mkdir -p "$out"
# Every MNIST frame the project ships: samples (23) and the bundle's frames (490); and the
# photo samples (11) through the photo model, whose depthwise convolutions run another kernel
# on each architecture (tract's NEON channel-last kernel on aarch64).
frames=(samples/mnist bundles/mnist)
# --jobs: frames on every core (the output does not depend on it; qemu-user runs threads).
jobs=$(nproc)
gate_args=(gate models/mnist "${frames[@]}" --seed 1 --no-latency --jobs "$jobs")
# One MC run instead of the bundle's eight: qemu runs a frame in ~0.5 s; the x86 build makes
# the same single run, so the comparison is exact either way.
validate_args=(validate models/mnist bundles/mnist --runs 1 --json --jobs "$jobs")
photo_args=(gate models/lite0-imagenet samples/photos --seed 1 --no-latency --jobs "$jobs")

run_all() { # name, command prefix...
  local name=$1; shift
  local rc=0
  "$@" "${gate_args[@]}" >"$out/$name.gate.jsonl" 2>"$out/$name.gate.err" || rc=$?
  echo "$rc" >"$out/$name.gate.rc"
  rc=0
  "$@" "${validate_args[@]}" >"$out/$name.validate.json" 2>"$out/$name.validate.err" || rc=$?
  echo "$rc" >"$out/$name.validate.rc"
  rc=0
  "$@" "${photo_args[@]}" >"$out/$name.photo.jsonl" 2>"$out/$name.photo.err" || rc=$?
  echo "$rc" >"$out/$name.photo.rc"
}

mb() { stat -c %s "$1" | awk '{printf "%.1f", $1 / 1e6}'; }

glibc_floor() { # objdump, binary
  "$1" -T "$2" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1
}

cargo build --release >&2
run_all x86_64 target/release/mcgate
echo "| target | gate exit | validate exit | photo gate exit | verdicts vs x86 | largest measure Δ (gate; validate; photo) | binary (stripped) | glibc needed |"
echo "|---|---|---|---|---|---|---|---|"
summary() { # name, binary, objdump, strip, result, gate diff, validate diff, photo diff
  local stripped
  stripped=$(mktemp)
  "$4" -o "$stripped" "$2"
  printf '| %s | %s | %s | %s | %s | %s; %s; %s | %s MB (%s MB) | %s |\n' "$1" \
    "$(cat "$out/$1.gate.rc")" "$(cat "$out/$1.validate.rc")" "$(cat "$out/$1.photo.rc")" "$5" "$6" "$7" "$8" \
    "$(mb "$2")" "$(mb "$stripped")" "$(glibc_floor "$3" "$2")"
  rm -f "$stripped"
}
summary x86_64 target/release/mcgate objdump strip "reference" "-" "-" "-"

status=0
for target in "${targets[@]}"; do
  case "$target" in
    aarch64-unknown-linux-gnu) runner=(qemu-aarch64 -L /usr/aarch64-linux-gnu); tools=aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) runner=(qemu-arm -L /usr/arm-linux-gnueabihf); tools=arm-linux-gnueabihf ;;
    *) echo "error: no qemu runner known for $target" >&2; exit 2 ;;
  esac
  cargo build --release --target "$target" >&2
  bin=target/$target/release/mcgate
  run_all "$target" "${runner[@]}" "$bin"
  result=same
  for what in gate validate photo; do
    if ! cmp -s "$out/x86_64.$what.rc" "$out/$target.$what.rc"; then result="exit code differs"; status=1; fi
  done
  gate_diff=$(python3 scripts/compare_reports.py "$out/x86_64.gate.jsonl" "$out/$target.gate.jsonl" | tee "$out/$target.gate.compare" | tail -1 | awk '{print $4}') || { result="DIFFER (see $out/$target.gate.compare)"; status=1; }
  validate_diff=$(python3 scripts/compare_reports.py "$out/x86_64.validate.json" "$out/$target.validate.json" | tee "$out/$target.validate.compare" | tail -1 | awk '{print $4}') || { result="DIFFER (see $out/$target.validate.compare)"; status=1; }
  photo_diff=$(python3 scripts/compare_reports.py "$out/x86_64.photo.jsonl" "$out/$target.photo.jsonl" | tee "$out/$target.photo.compare" | tail -1 | awk '{print $4}') || { result="DIFFER (see $out/$target.photo.compare)"; status=1; }
  summary "$target" "$bin" "$tools-objdump" "$tools-strip" "$result" "$gate_diff" "$validate_diff" "$photo_diff"
done
echo
echo "frames: $(wc -l <"$out/x86_64.gate.jsonl") MNIST and $(wc -l <"$out/x86_64.photo.jsonl") photo frames gated per build ($(grep -c '"accept"' "$out/x86_64.gate.jsonl") and $(grep -c '"accept"' "$out/x86_64.photo.jsonl") accepted on x86); outputs in $out/"
exit $status
