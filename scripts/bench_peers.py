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

Frames, by the card: a 1-channel card without `input.resize` (models/mnist) gets the first N
MNIST test digits (28×28 gray, default N=300, 20 warm-up). A card with a `shorter_side_crop`
resize (models/lite0-imagenet) gets the --photos cycled to N frames (default N=60, 5 warm-up),
each PIL-resized once (shorter side, bilinear) and centre-cut to a square of the resize's
shorter side: mcgate reads those raw (rgb24), so it only cuts the centre crop (no resize; decode
and resize are in the criterion benches); the peers get that same crop, normalised per frame. The
PyTorch peer for such a card is scripts/lite0_reference.py (EfficientNet-Lite0, TF-SAME padding,
--torch-weights), its one dropout site before the classifier: pytorch-naive runs the whole network
T times, pytorch-batched the frame repeated T times as one batch, pytorch-trunk-once the
features once and the dropout + classifier T times (what the ONNX file, for mcgate and
onnxruntime, does). To keep a run within minutes,
those PyTorch cells time min(N, max(5, 10·N/T)) frames after max(1, min(5, 20/T)) warm-up (the
header says which); before timing, onnxruntime and PyTorch with dropout off are checked to agree.

Usage: .venv-bench/bin/python scripts/bench_peers.py [--frames N] [--model models/mnist]
       [--samples 1,20,100] [--threads 1] [--mcgate target/release/mcgate] [--jobs 1,2]
       .venv-bench/bin/python scripts/bench_peers.py --model models/lite0-imagenet [--frames 60]
       [--photos data/lite0/photos/foolbox] [--torch-weights data/lite0/efficientnet-lite0.safetensors]
(`scripts/setup-bench.sh` makes .venv-bench: PyTorch with its own dependencies, onnxruntime, pillow.)
Prints a Markdown table of medians (ms per frame) and ratios to mcgate at the same T.
"""
import argparse
import glob
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
p.add_argument("--frames", type=int, default=None, help="default 300 (MNIST), 60 (photo model)")
p.add_argument("--model", default="models/mnist")
p.add_argument("--samples", default="1,20,100")
p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
p.add_argument("--mcgate", default="target/release/mcgate")
p.add_argument("--skip-torch", action="store_true")
p.add_argument("--jobs", default="1,2", help="mcgate --jobs values for the throughput rows (T=20)")
p.add_argument("--photos", default="data/lite0/photos/foolbox", help="photo model: its frames (cycled)")
p.add_argument("--torch-weights", default=None,
               help="PyTorch peer's weights [default: MODEL.safetensors; photo model: data/lite0/efficientnet-lite0.safetensors]")
args = p.parse_args()
samples = [int(t) for t in args.samples.split(",")]
card = json.load(open(args.model + ".card.json"))
sites = card["dropout_sites"]
shape = card["input"]["shape"]  # [1, C, H, W]
resize = card["input"].get("resize")
if resize is None:  # MNIST: raw frames are the model's input size
    assert shape[1:] == [1, 28, 28], f"no resize and input {shape}: only 28×28 gray (MNIST digits) is handled"
    args.frames = 300 if args.frames is None else args.frames
    digits = np.frombuffer(open("data/mnist/t10k-images-idx3-ubyte", "rb").read()[16:], np.uint8)
    frames = digits[: args.frames * 784].reshape(args.frames, 784)
    inputs = frames  # what the Python peers get per frame
    frame_w, frame_h = shape[3], shape[2]
    WARMUP = 20
    described = "MNIST test frames"
else:  # a photo model: mcgate resizes the shorter side and cuts the centre
    from PIL import Image

    assert resize["policy"] == "shorter_side_crop" and shape[1] == 3, resize
    args.frames = 60 if args.frames is None else args.frames
    side, crop = resize["shorter_side"], resize["crop"]
    assert shape[2] == shape[3] == crop, (shape, resize)

    def centre(a, size):  # torchvision CenterCrop's offsets
        top, left = int(round((a.shape[0] - size) / 2.0)), int(round((a.shape[1] - size) / 2.0))
        return a[top : top + size, left : left + size]

    squares = []  # side×side×3 uint8: a frame mcgate need not resize
    photo_paths = sorted(glob.glob(os.path.join(args.photos, "*.jpg")))
    assert photo_paths, f"no *.jpg in {args.photos}"
    for path in photo_paths:
        im = Image.open(path).convert("RGB")
        w, h = im.size  # shorter side to `side`, as scripts/lite0_reference.py
        im = im.resize((side, int(side * h / w)) if w <= h else (int(side * w / h), side), Image.BILINEAR)
        squares.append(np.ascontiguousarray(centre(np.asarray(im), side)))
    frames = np.stack([squares[i % len(squares)].reshape(-1) for i in range(args.frames)])
    crops = [centre(sq, crop) for sq in squares]
    inputs = [crops[i % len(crops)] for i in range(args.frames)]
    frame_w = frame_h = side
    WARMUP = 5
    described = (f"frames cycling the {len(squares)} photos in {args.photos} (mcgate: {side}×{side} rgb24, "
                 f"centre {crop}×{crop} cut in mcgate; the peers: that crop)")
raw_args = ["--width", str(frame_w), "--height", str(frame_h)] + (["--pixel-format", "rgb24"] if shape[1] == 3 else [])


def mi_of(probs):
    """Mutual information (nats) of MC probabilities [T, classes], float64."""
    probs = probs.astype(np.float64)
    mean = probs.mean(0)
    h = -(mean * np.log(np.clip(mean, 1e-300, None))).sum()
    eh = -(probs * np.log(np.clip(probs, 1e-300, None))).sum(1).mean()
    return h - eh


def timed(fn, inputs, warmup=None):
    for x in inputs[: WARMUP if warmup is None else warmup]:
        fn(x)
    out = []
    for x in inputs:
        t0 = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def preprocess(frame):
    if resize is None:
        scale, mean, std = card["input"]["scale"], card["input"]["mean"][0], card["input"]["std"][0]
        return ((frame.astype(np.float32) * scale - mean) / std).reshape(1, 1, 28, 28)
    # crop×crop×3 uint8 (HWC, RGB) -> [1, 3, crop, crop], per channel
    scale = np.float32(card["input"]["scale"])
    mean, std = (np.array(card["input"][k], np.float32) for k in ("mean", "std"))
    return np.ascontiguousarray(((frame.astype(np.float32) * scale - mean) / std).transpose(2, 0, 1)[None])


results = {}  # (method, T) -> median ms

# --- mcgate -----------------------------------------------------------------------------
rss = {}
for t in samples:
    proc = subprocess.Popen(
        [args.mcgate, "gate", args.model, "-", *raw_args, "-T", str(t), "--seed", "1"],
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
    assert proc.returncode == 0, f"mcgate -T {t} exited {proc.returncode}"
    lat = [json.loads(l)["latency_ms"] for l in stdout.decode().splitlines()][len(frames[:WARMUP]):]
    assert len(lat) == args.frames, f"{len(lat)} verdicts for {args.frames} frames"
    results[("mcgate", t)] = statistics.median(lat)
    rss[t] = hwm[0] / 1024

startup_dir = tempfile.TemporaryDirectory()
if resize is None:
    startup_frame = "samples/mnist/clean/digit_7_0.png"
else:  # the first frame as a PPM file: start-up plus one frame of the stream's size
    startup_frame = os.path.join(startup_dir.name, "frame0.ppm")
    with open(startup_frame, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (frame_w, frame_h) + frames[0].tobytes())
starts = []
for _ in range(9):
    t0 = time.perf_counter()
    subprocess.run([args.mcgate, "gate", args.model, startup_frame, "--seed", "1"],
                   capture_output=True, check=True)
    starts.append((time.perf_counter() - t0) * 1e3)
startup = statistics.median(starts)
startup_dir.cleanup()

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
            subprocess.run([args.mcgate, "gate", args.model, "-", *raw_args, "-T", "20",
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
            probs = sess.run([card["output"]["name"]], {card["input"]["name"]: preprocess(frame), **masks(t)})[0]
            return mi_of(probs)
        results[(name, t)] = timed(run, inputs)

# --- PyTorch ----------------------------------------------------------------------------
torch_version = None
if not args.skip_torch:
    import torch  # noqa: E402
    from torch import nn  # noqa: E402

    torch.set_num_threads(args.threads)
    torch_version = torch.__version__
if not args.skip_torch and resize is None:
    raw = open(args.torch_weights or args.model + ".safetensors", "rb").read()
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
torch_frames = {}  # T -> frames timed, where fewer than --frames
if not args.skip_torch and resize is not None:
    import torch.nn.functional as F  # noqa: E402
    from safetensors.torch import load_file  # noqa: E402

    import lite0_reference as lite0  # noqa: E402  (scripts/, this script's directory)

    assert len(sites) == 1 and sites[0]["shape"] == [1280] and len(card["classes"]) == 1000, \
        "the PyTorch peer for a photo model is EfficientNet-Lite0 with dropout before its classifier"
    weights = load_file(args.torch_weights or os.path.join(lite0.ROOT, "data/lite0/efficientnet-lite0.safetensors"))

    def net(x, dropout=True):
        return lite0.logits(weights, F.dropout(lite0.features(weights, x), sites[0]["p"], training=dropout))

    with torch.no_grad():
        # Same network and weights as the ONNX file: dropout off (masks of ones) on one frame.
        sess = ort.InferenceSession(args.model + ".onnx", providers=["CPUExecutionProvider"])
        x0 = preprocess(inputs[0])
        ort_probs = sess.run([card["output"]["name"]], {card["input"]["name"]: x0,
                             **{s["input"]: np.ones([1] + s["shape"], np.float32) for s in sites}})[0]
        torch_probs = net(torch.from_numpy(x0), dropout=False).softmax(-1).numpy()
        parity = float(np.abs(ort_probs - torch_probs).max())
        assert parity < 1e-3, f"PyTorch and onnxruntime differ by {parity} in a probability"
        del sess
        for t in samples:
            def naive(frame, t=t):
                x = torch.from_numpy(preprocess(frame))
                probs = torch.cat([net(x).softmax(-1) for _ in range(t)])
                return mi_of(probs.numpy())

            def batched(frame, t=t):
                x = torch.from_numpy(preprocess(frame)).expand(t, *shape[1:])
                return mi_of(net(x).softmax(-1).numpy())

            def trunk_once(frame, t=t):  # what the ONNX file does: features once, T heads
                f = lite0.features(weights, torch.from_numpy(preprocess(frame))).expand(t, -1)
                return mi_of(lite0.logits(weights, F.dropout(f, sites[0]["p"], training=True)).softmax(-1).numpy())
            results[("pytorch-trunk-once", t)] = timed(trunk_once, inputs)
            n, warm = min(args.frames, max(5, 10 * args.frames // t)), max(1, min(WARMUP, 20 // t))
            if (n, warm) != (args.frames, WARMUP):
                torch_frames[t] = (n, warm)
            results[("pytorch-naive", t)] = timed(naive, inputs[:n], warm)
            results[("pytorch-batched", t)] = timed(batched, inputs[:n], warm)

# --- report -----------------------------------------------------------------------------
methods = ["mcgate", "ort-1t", "ort"] + ([] if args.skip_torch else ["pytorch-naive", "pytorch-batched"]
                                         + ([] if resize is None else ["pytorch-trunk-once"]))
print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')}; "
      f"{args.frames} {described} after {len(frames[:WARMUP])} warm-up; onnxruntime {ort.__version__}"
      + (f", torch {torch_version} ({args.threads} thread)" if torch_version else ""))
if torch_frames:
    print("PyTorch rows: " + ", ".join(f"T={t} over {n} frames after {w} warm-up" for t, (n, w) in torch_frames.items())
          + " (each frame runs the network T times)")
if resize is not None and torch_version:
    print(f"PyTorch (scripts/lite0_reference.py) vs onnxruntime, dropout off, frame 0: max |Δprob| {parity:.1e}")
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
