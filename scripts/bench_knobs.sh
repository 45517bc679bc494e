#!/usr/bin/env bash
# tract's runtime knobs (environment variables read when a model is optimised) against the
# defaults: one criterion run of the gate bench per setting, medians side by side.
# Usage: scripts/bench_knobs.sh [BENCH_REGEX]   (results: docs/BENCHMARKS.md, "tract's knobs")
set -euo pipefail
cd "$(dirname "$0")/.."
filter=${1:-'^(gate_t20|gate_int8_t20|forward_t1)$'}
bin=$(cargo bench --bench gate --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[[ -x $bin ]] || { echo "error: could not build the gate bench" >&2; exit 1; }
settings=(
  "defaults"
  "TRACT_DISABLE_DIRECT_SPATIAL=true"
  "TRACT_LAZY_IM2COL_MIN_KERNEL=1"
  "TRACT_LAZY_IM2COL_MIN_KERNEL=1000000"
  "TRACT_AVX512_FMA_UNITS=2"
  "TRACT_CPU_ISA=-avx512f"
)
for s in "${settings[@]}"; do
  if [[ $s == defaults ]]; then env_args=(); else env_args=("$s"); fi
  env "${env_args[@]}" "$bin" --bench "$filter" 2>/dev/null |
    awk -v s="$s" '/time:/ { name = ($1 == "time:") ? prev : $1; med = $0;
        sub(/.*time: *\[[^ ]+ [^ ]+ /, "", med); split(med, m, " ");
        printf "%-40s %-16s %s %s\n", s, name, m[1], m[2] }
      { prev = $1 }'
done
