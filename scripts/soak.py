#!/usr/bin/env python3
"""Soak test: push many raw frames through `mcgate gate -` and watch the process.

Frames cycle through MNIST test digits (data/mnist), Gaussian noise and random bytes
("corrupt": any byte pattern is a valid raw frame, so these are scored like the rest), and a
short final frame at the end (must be rejected as truncated). Checks one verdict line per frame,
in order, and samples the gate's RSS and open file descriptors every second.

Usage: scripts/soak.py [FRAMES] [MODEL_STEM] [MCGATE_BINARY] [-- extra gate flags]
Prints a Markdown summary; exits 1 if a check fails.
"""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

args = sys.argv[1:]
extra = []
if "--" in args:
    extra = args[args.index("--") + 1:]
    args = args[: args.index("--")]
frames = int(args[0]) if len(args) > 0 else 1_000_000
stem = args[1] if len(args) > 1 else "models/mnist"
binary = args[2] if len(args) > 2 else "target/release/mcgate"

digits = open("data/mnist/t10k-images-idx3-ubyte", "rb").read()[16:]
rng = np.random.default_rng(0)
noise = [np.clip(128 + 64 * rng.standard_normal(784), 0, 255).astype(np.uint8).tobytes() for _ in range(64)]
junk = [rng.integers(0, 256, 784, dtype=np.uint8).tobytes() for _ in range(64)]


def frame(i):
    kind = i % 3
    if kind == 0:
        j = (i // 3) % 10000
        return digits[j * 784 : (j + 1) * 784]
    return (noise if kind == 1 else junk)[(i // 3) % 64]


proc = subprocess.Popen(
    [binary, "gate", stem, "-", "--width", "28", "--height", "28", "--seed", "1", "--no-latency"] + extra,
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1 << 20)


def feed():
    batch = 256
    for start in range(0, frames, batch):
        proc.stdin.write(b"".join(frame(i) for i in range(start, min(frames, start + batch))))
    proc.stdin.write(b"\x00" * 100)  # a truncated final frame
    proc.stdin.close()


samples = []  # (seconds, rss_kib, fds)
stop = threading.Event()


def sample():
    t0 = time.time()
    while not stop.is_set():
        try:
            status = open(f"/proc/{proc.pid}/status").read()
            rss = int(next(l for l in status.splitlines() if l.startswith("VmRSS")).split()[1])
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            samples.append((time.time() - t0, rss, fds))
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            pass
        stop.wait(1.0)


stderr_tail = []


def drain_stderr():
    # Drained continuously: warnings (alarms, unscored frames) must not fill the pipe.
    for line in proc.stderr:
        stderr_tail.append(line.decode().rstrip())
        del stderr_tail[:-5]


threading.Thread(target=feed, daemon=True).start()
err_thread = threading.Thread(target=drain_stderr, daemon=True)
err_thread.start()
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
start = time.time()
count, in_order, verdicts = 0, True, {"accept": 0, "reject": 0}
last = None
for line in proc.stdout:
    r = json.loads(line)
    in_order &= r["frame"] == count
    verdicts[r["verdict"]] += 1
    count += 1
    last = r
code = proc.wait()
elapsed = time.time() - start
stop.set()
sampler.join()
err_thread.join()
summary = next((l for l in reversed(stderr_tail) if l.startswith("mcgate:")), "none")

ok = count == frames + 1 and in_order and last is not None and "truncated" in (last["reason"] or "") and code == 4
steady = [s for s in samples if s[0] >= 5] or samples
rss = [s[1] for s in steady]
fds = [s[2] for s in steady]
print(f"| frames | {frames:,} (+1 truncated) in {elapsed:.0f} s, {frames / elapsed:,.0f} frames/s |")
print(f"|---|---|")
print(f"| verdict lines | {count:,}, in order: {in_order}; accepted {verdicts['accept']:,}, rejected {verdicts['reject']:,} |")
print(f"| exit code | {code} (4: the truncated final frame) |")
print(f"| RSS after 5 s / at end / max | {rss[0] / 1024:.1f} / {rss[-1] / 1024:.1f} / {max(rss) / 1024:.1f} MiB |")
print(f"| open fds after 5 s, min / max | {min(fds)} / {max(fds)} |")
print(f"| gate's own summary | {summary} |")
sys.exit(0 if ok and rss[-1] <= rss[0] * 1.05 + 1024 and max(fds) == min(fds) else 1)
