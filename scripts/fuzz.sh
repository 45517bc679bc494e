#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each, one after another, from
# the committed seeds plus a working corpus in target/fuzz-corpus, and prints the executions
# each reached. A crash stops the run: libFuzzer writes the input to fuzz/artifacts/<target>/.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default 60 s, all targets)
#        RUNS=N scripts/fuzz.sh SECONDS TARGET   (stop at N executions or SECONDS, first reached)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(card raw_reader decode_preprocess gate)
cd fuzz
cargo +nightly fuzz build -O >&2
echo "| target | executions | seconds | exec/s | corpus | crashes |"
echo "|---|---|---|---|---|---|"
for t in "${targets[@]}"; do
  corpus=../target/fuzz-corpus/$t
  mkdir -p "$corpus"
  log=../target/fuzz-corpus/$t.log
  # -rss_limit_mb: the decoder may legitimately allocate up to its 512 MiB limit.
  cargo +nightly fuzz run -O "$t" "$corpus" "seeds/$t" -- \
    -max_total_time="$seconds" -runs="${RUNS:--1}" -rss_limit_mb=3072 -print_final_stats=1 >"$log" 2>&1 || {
    echo "| $t | crashed, see target/fuzz-corpus/$t.log and fuzz/artifacts/$t/ | | | | yes |"; exit 1; }
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*')
  printf '| %s | %s | %s | %s | %s files | none |\n' "$t" "$runs" "$secs" \
    "$(( runs / (secs > 0 ? secs : 1) ))" "$(ls "$corpus" | wc -l)"
done
