#!/usr/bin/env bash
# Throughput of the GStreamer element against the pipe recipe (README "On a camera: recipes",
# the GStreamer one) on the same stream: N frames of videotestsrc, 28x28 GRAY8, through
# models/mnist, the gated frames to a fakesink; wall time of the whole pipeline, RUNS runs
# each, alternating, frames per second per run. Issue 29's done-when: the element >= the pipe.
# JOBS: the element's `jobs` and the gate's `--jobs` (frames scored at once).
#
# Usage: scripts/element_throughput.sh [N=5000] [RUNS=3] [JOBS=1]
# Needs: cargo build --release (mcgate) and cargo build --release -p gst-mcgate.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
runs=${2:-3}
jobs=${3:-1}
export GST_PLUGIN_PATH="$PWD/target/release"
source="videotestsrc num-buffers=$n pattern=snow ! video/x-raw,format=GRAY8,width=28,height=28,framerate=1000/1"

element() {
  gst-launch-1.0 -q $source ! mcgate model=models/mnist on-reject=black jobs="$jobs" ! fakesink sync=false
}

pipe() {
  gst-launch-1.0 -q $source ! fdsink \
    | target/release/mcgate gate models/mnist - --width 28 --height 28 --jobs "$jobs" --pass-through \
        --on-reject black --report /dev/null 2>/dev/null \
    | gst-launch-1.0 -q fdsrc ! rawvideoparse format=gray8 width=28 height=28 framerate=1000/1 \
        ! fakesink sync=false
}

seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

echo "jobs $jobs"
echo "| run | element frames/s | pipe frames/s |"
echo "|---|---|---|"
for r in $(seq 1 "$runs"); do
  e=$(seconds element)
  p=$(seconds pipe)
  printf "| %d | %.0f | %.0f |\n" "$r" "$(echo "$n / $e" | bc -l)" "$(echo "$n / $p" | bc -l)"
done
