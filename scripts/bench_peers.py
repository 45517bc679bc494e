#!/usr/bin/env python3
"""Per-frame cost of MC dropout on one machine, in one run: mcgate against what a PyTorch or
onnxruntime user would write, on the same network and weights.

  mcgate            `mcgate gate - -T T` over N raw frames on stdin; each frame's `latency_ms`
                    (preprocess, masks, one batched run, measures) from its JSON line.
  pytorch-naive     eager PyTorch, nn.Dropout in train mode, T separate forward passes, then
                    softmax and MI (how MC dropout is usually written); torch threads as given.
  pytorch-batched   the same, the frame repeated T times as one batch (a careful user).
  onnxruntime       the same ONNX file mcgate runs, masks drawn in numpy, T batched, MI in numpy;
                    `ort-1t` one intra-op thread, `ort` onnxruntime's default.
Also: mcgate's peak RSS per T (VmHWM of that process, polled), its start-up time (wall
time to gate one frame file, median of 9), and its throughput with `--jobs N` at T=20 (wall
time over 4×N frames less the start-up, per frame: frames overlapped across cores).

Usage: .venv-bench/bin/python scripts/bench_peers.py [--frames N] [--model models/mnist]
       [--samples 1,20,100] [--threads 1] [--mcgate target/release/mcgate] [--jobs 1,2]
(`scripts/setup-bench.sh` makes .venv-bench: PyTorch with its own dependencies, onnxruntime.)
Prints a Markdown table of medians (ms per frame) and ratios to mcgate at the same T.
"""
import argparse
import json
import os
import platform
import statistics
import struct
import subprocess
import tempfile
import threading
import time

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--frames", type=int, default=300)
p.add_argument("--model", default="models/mnist")
p.add_argument("--samples", default="1,20,100")
p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
p.add_argument("--mcgate", default="target/release/mcgate")
p.add_argument("--skip-torch", action="store_true")
p.add_argument("--jobs", default="1,2", help="mcgate --jobs values for the throughput rows (T=20)")
args = p.parse_args()
samples = [int(t) for t in args.samples.split(",")]
card = json.load(open(args.model + ".card.json"))
sites = card["dropout_sites"]
digits = np.frombuffer(open("data/mnist/t10k-images-idx3-ubyte", "rb").read()[16:], np.uint8)
frames = digits[: args.frames * 784].reshape(args.frames, 784)
WARMUP = 20


def mi_of(probs):
    """Mutual information (nats) of MC probabilities [T, classes], float64."""
    probs = probs.astype(np.float64)
    mean = probs.mean(0)
    h = -(mean * np.log(np.clip(mean, 1e-300, None))).sum()
    eh = -(probs * np.log(np.clip(probs, 1e-300, None))).sum(1).mean()
    return h - eh


def timed(fn, inputs):
    for x in inputs[:WARMUP]:
        fn(x)
    out = []
    for x in inputs:
        t0 = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def preprocess(frame):
    scale, mean, std = card["input"]["scale"], card["input"]["mean"][0], card["input"]["std"][0]
    return ((frame.astype(np.float32) * scale - mean) / std).reshape(1, 1, 28, 28)


results = {}  # (method, T) -> median ms

# --- mcgate -----------------------------------------------------------------------------
rss = {}
for t in samples:
    proc = subprocess.Popen(
        [args.mcgate, "gate", args.model, "-", "--width", "28", "--height", "28", "-T", str(t), "--seed", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    data = np.concatenate([frames[:WARMUP], frames]).tobytes()
    feeder = threading.Thread(target=lambda: (proc.stdin.write(data), proc.stdin.close()))
    feeder.start()
    # VmHWM, polled: getrusage/wait4 would report the forked Python's size (Linux keeps the
    # pre-exec high-water mark in ru_maxrss).
    hwm = [0]

    def poll():
        while proc.poll() is None:
            try:
                status = open(f"/proc/{proc.pid}/status").read()
                hwm[0] = max(hwm[0], int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1]))
            except (FileNotFoundError, StopIteration, ProcessLookupError, ValueError):
                pass
            time.sleep(0.02)
    poller = threading.Thread(target=poll)
    poller.start()
    stdout = proc.stdout.read()
    feeder.join()
    proc.wait()
    poller.join()
    lat = [json.loads(l)["latency_ms"] for l in stdout.decode().splitlines()][WARMUP:]
    assert len(lat) == args.frames, f"{len(lat)} verdicts for {args.frames} frames"
    results[("mcgate", t)] = statistics.median(lat)
    rss[t] = hwm[0] / 1024

starts = []
for _ in range(9):
    t0 = time.perf_counter()
    subprocess.run([args.mcgate, "gate", args.model, "samples/clean/digit_7_0.png", "--seed", "1"],
                   capture_output=True, check=False)
    starts.append((time.perf_counter() - t0) * 1e3)
startup = statistics.median(starts)

throughput = {}  # jobs -> ms per frame, wall
many = np.tile(frames, (4, 1))
# Frames from a file and lines into one: a Python pipe on either end would compete for the cores.
with tempfile.TemporaryDirectory() as tmp:
    frames_path, lines_path = os.path.join(tmp, "frames.raw"), os.path.join(tmp, "lines.jsonl")
    with open(frames_path, "wb") as f:
        f.write(many.tobytes())
    for j in [int(v) for v in args.jobs.split(",")]:
        with open(frames_path, "rb") as stdin, open(lines_path, "wb") as stdout:
            t0 = time.perf_counter()
            subprocess.run([args.mcgate, "gate", args.model, "-", "--width", "28", "--height", "28", "-T", "20",
                            "--seed", "1", "--jobs", str(j)], stdin=stdin, stdout=stdout,
                           stderr=subprocess.DEVNULL, check=True)
            wall = (time.perf_counter() - t0) * 1e3
        assert open(lines_path, "rb").read().count(b"\n") == len(many)
        throughput[j] = (wall - startup) / len(many)

# --- onnxruntime ------------------------------------------------------------------------
import onnxruntime as ort  # noqa: E402

rng = np.random.default_rng(0)


def masks(t):
    return {s["input"]: ((rng.random([t] + s["shape"], dtype=np.float32) >= s["p"]).astype(np.float32)
                        / np.float32(1 - s["p"])) for s in sites}


for name, threads in (("ort-1t", 1), ("ort", 0)):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model + ".onnx", opts, providers=["CPUExecutionProvider"])
    for t in samples:
        def run(frame, t=t):
            probs = sess.run(["probs"], {"x": preprocess(frame), **masks(t)})[0]
            return mi_of(probs)
        results[(name, t)] = timed(run, frames)

# --- PyTorch ----------------------------------------------------------------------------
torch_version = None
if not args.skip_torch:
    import torch  # noqa: E402
    from torch import nn  # noqa: E402

    torch.set_num_threads(args.threads)
    torch_version = torch.__version__
    raw = open(args.model + ".safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    weights = {k: torch.frombuffer(bytearray(raw[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]]),
                                   dtype=torch.float32).reshape(v["shape"])
               for k, v in header.items() if k != "__metadata__"}
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(sites[0]["p"]), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(),
        nn.Dropout(sites[1]["p"]), nn.Linear(128, 10))
    names = {"0": "conv1", "2": "conv2", "7": "fc1", "10": "fc2"}
    net.load_state_dict({f"{i}.{k}": weights[f"{n_}.{k}"] for i, n_ in names.items() for k in ("weight", "bias")})
    net.train()  # dropout on: what MC dropout means in PyTorch

    with torch.no_grad():
        for t in samples:
            def naive(frame, t=t):
                x = torch.from_numpy(preprocess(frame))
                probs = torch.cat([net(x).softmax(-1) for _ in range(t)])
                return mi_of(probs.numpy())

            def batched(frame, t=t):
                x = torch.from_numpy(preprocess(frame)).expand(t, 1, 28, 28)
                return mi_of(net(x).softmax(-1).numpy())
            results[("pytorch-naive", t)] = timed(naive, frames)
            results[("pytorch-batched", t)] = timed(batched, frames)

# --- report -----------------------------------------------------------------------------
methods = ["mcgate", "ort-1t", "ort"] + ([] if args.skip_torch else ["pytorch-naive", "pytorch-batched"])
print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')}; "
      f"{args.frames} MNIST test frames after {WARMUP} warm-up; onnxruntime {ort.__version__}"
      + (f", torch {torch_version} ({args.threads} thread)" if torch_version else ""))
print()
print("| method | " + " | ".join(f"T={t} ms (× mcgate)" for t in samples) + " |")
print("|---|" + "---|" * len(samples))
for m in methods:
    cells = []
    for t in samples:
        v = results[(m, t)]
        cells.append(f"{v:.3f}" if m == "mcgate" else f"{v:.3f} (×{v / results[('mcgate', t)]:.1f})")
    print(f"| {m} | " + " | ".join(cells) + " |")
print()
print()
print("| mcgate --jobs (T=20) | ms per frame, wall | frames/s |" + ("" if args.skip_torch else " × pytorch-naive |"))
print("|---|---|---|" + ("" if args.skip_torch else "---|"))
for j, ms in throughput.items():
    ratio = ("" if args.skip_torch else " – |" if 20 not in samples
             else f" ×{results[('pytorch-naive', 20)] / ms:.1f} |")
    print(f"| {j} | {ms:.3f} | {1000 / ms:.0f} |{ratio}")
print()
print("mcgate peak RSS: " + ", ".join(f"T={t} {rss[t]:.1f} MiB" for t in samples)
      + f"; start-up + one frame: {startup:.1f} ms (median of 9)")
