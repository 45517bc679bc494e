#!/usr/bin/env python3
"""End-to-end latency of `mcgate gate` on a paced live stream: frames are written to its stdin
at a fixed rate (as a camera delivers them), and each frame's latency is the time from
writing it to reading its verdict line. Prints median, p90, p99 and max per --jobs value.

Frames: the 28×28 MNIST sample digits (decoded by ffmpeg), cycled. Python's own overhead is in the numbers
(a few tens of µs); compare the rows with each other, not with the criterion benchmarks.

Usage: scripts/paced_latency.py MCGATE_BINARY [--fps 50] [--frames 300] [--jobs 1,2]
"""
import argparse
import statistics
import subprocess
import threading
import time
from pathlib import Path



def frames():
    """The sample digits as raw 28×28 gray frames (decoded by ffmpeg, as a camera feed is)."""
    root = Path(__file__).resolve().parent.parent
    return [
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(p), "-f", "rawvideo", "-pix_fmt",
                        "gray", "-"], check=True, capture_output=True).stdout
        for p in sorted((root / "samples" / "mnist" / "clean").glob("*.png"))
    ]


def run(binary, jobs, fps, n, pool):
    proc = subprocess.Popen(
        [binary, "gate", "models/mnist", "-", "--width", "28", "--height", "28", "--seed", "1",
         "--jobs", str(jobs), "--no-latency"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent)
    sent = [0.0] * n
    got = [0.0] * n

    def read():
        for i in range(n):
            proc.stdout.readline()
            got[i] = time.perf_counter()

    reader = threading.Thread(target=read)
    reader.start()
    start = time.perf_counter()
    for i in range(n):
        due = start + i / fps
        # Sleep, not spin: a spinning feeder would take one of the cores from the gate.
        time.sleep(max(0.0, due - time.perf_counter()))
        sent[i] = time.perf_counter()
        proc.stdin.write(pool[i % len(pool)])
        proc.stdin.flush()
    reader.join()
    proc.stdin.close()
    proc.wait()
    lat = sorted((g - s) * 1e3 for s, g in zip(sent, got))
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
    return statistics.median(lat), q(0.9), q(0.99), lat[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--fps", type=float, default=50)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--jobs", default="1,2")
    a = ap.parse_args()
    pool = frames()
    print(f"{a.frames} frames at {a.fps:g} fps, T=20, shipped MNIST model")
    print("jobs  median ms  p90 ms  p99 ms  max ms")
    for jobs in [int(j) for j in a.jobs.split(",")]:
        med, p90, p99, mx = run(a.binary, jobs, a.fps, a.frames, pool)
        print(f"{jobs:>4}  {med:>9.2f}  {p90:>6.2f}  {p99:>6.2f}  {mx:>6.2f}")


if __name__ == "__main__":
    main()
