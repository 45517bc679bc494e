#!/usr/bin/env python3
"""Which density signal rejects the MNIST latent holes without just flagging the VAE's style.

The holes (`mcgate-training holes --raw PATH`) are VAE decodes of latent points far from every
training digit that the model calls a digit confidently with low MI. The near-data control
(`--near-raw PATH`) is VAE decodes of real digits: the same decoder, the same grey and blurred
rendering, but on the data. A signal that rejects holes *and* the control is measuring the
decoder's style, not whether the frame is off the data.

Features come from `MODEL.onnx` run with all-ones masks (dropout off, deterministic): relu1,
relu2, pool, fc1 (before the ReLU) and ReLU(fc1). Every fit uses train images 0..54,999 with
their labels, in float64. Calibration: clean test images perm[0:2000], perm =
np.random.default_rng(0).permutation(10000); the cut is their 95th percentile
(`np.quantile(..., 0.95, method="higher")`), a frame is rejected when its score is above it; the
held-out clean rate is measured on perm[2000:10000]. Signals, higher = more anomalous:

(a) class Gaussians with one shared covariance on ReLU(fc1), −log density (the baseline, the
    gate's density branch today); the ridge is 1e-3 × the mean variance everywhere;
(b) the same on fc1 before the ReLU;
(c) one covariance per class on fc1 before the ReLU, min over classes of the Mahalanobis d²;
(d) pixel-space PCA reconstruction error ‖x−μ‖² − ‖Vᵀ(x−μ)‖² at k = 50 and k = 100 (PCA by
    randomized SVD on the training pixels, seed 0);
(e) (b) fused with (d) by min-p (Bonferroni): each part's tail probability
    p = (1 + #val ≥ s)/(1 + 5000) on train images 55,000..59,999 (no fit uses them),
    score = max −log p, then calibrated like a single signal;
(f) two "style" signals: per-class covariance on pool's channel mean + max (128-d), min d²; and a
    shared covariance on relu1 + relu2 + pool channel mean + max (320-d), −log density;
(g) the style check, a column for every row: holes rejected at a cut that rejects 5 % of the
    near-control instead of 5 % of clean digits. A style detector falls to about 0 there.

Columns: holes rejected % [Wilson 95 %]; near-control rejected %; held-out clean rate %
[Wilson 95 %]; holes 0..1,999 / last 2,000 rejected % (`holes --raw` writes them farthest
first, so the last 2,000 are the nearest); holes rejected % at the near-control's 5 % cut.

Usage: .venv/bin/python scripts/holes_signals.py --holes HOLES.raw --near NEAR.raw
       [--model models/mnist] [--data data/mnist] [--cache DIR] [--out FILE]
       (make both files with one run: `cargo run -p mcgate-training --release -- holes
        --raw HOLES.raw --near-raw NEAR.raw`)
Needs numpy, onnx and onnxruntime (.venv). Only reduced features are kept, in memory (1.4 GB
peak RSS); --cache DIR saves them (156 MB, keyed by the model's and the frames' SHA-256) so a
second run skips the network (25 s instead of 64 s).

Measured (2 shared CPU cores, no cache):
  .venv/bin/python scripts/holes_signals.py --holes /tmp/holes/holes.raw --near /tmp/holes/near.raw
  1 min 04 s wall (the network about 40 s, the fits the rest); it prints (the same numbers as the
  research run it ports, to the last digit):

10,184 holes, 10,888 near-control frames; cut at the 95th percentile of 2,000 clean test digits; held-out clean: the other 8,000.

| signal | holes rejected % [Wilson 95 %] | near-control rejected % | held-out clean rejected % [Wilson 95 %] | holes first 2,000 / last 2,000 % | (g) holes rejected % at 5 % of the near-control |
|---|---|---|---|---|---|
| (a) ReLU(fc1), shared covariance, −log density (baseline) | 28.9 [28.1, 29.8] | 0.1 | 6.3 [5.8, 6.8] | 71.2 / 1.8 | 66.9 |
| (b) fc1 before the ReLU, shared covariance, −log density | 49.4 [48.5, 50.4] | 2.1 | 6.0 [5.5, 6.6] | 83.0 / 15.6 | 60.0 |
| (c) fc1 before the ReLU, per-class covariance, min Mahalanobis | 60.3 [59.4, 61.3] | 7.3 | 4.6 [4.1, 5.1] | 82.2 / 35.1 | 54.3 |
| (d) pixel PCA k = 50, reconstruction error | 59.2 [58.3, 60.2] | 1.9 | 5.3 [4.9, 5.8] | 81.1 / 30.5 | 65.7 |
| (d) pixel PCA k = 100, reconstruction error | 62.2 [61.2, 63.1] | 4.9 | 5.1 [4.6, 5.6] | 83.8 / 35.1 | 62.5 |
| (e) min-p of (b) and pixel PCA k = 50 | 60.2 [59.3, 61.2] | 2.0 | 5.4 [4.9, 5.9] | 82.2 / 32.9 | 66.2 |
| (e) min-p of (b) and pixel PCA k = 100 | 63.3 [62.4, 64.2] | 4.9 | 5.6 [5.1, 6.1] | 83.0 / 39.2 | 63.5 |
| (f) style: pool channel mean + max, per-class covariance, min Mahalanobis | 96.7 [96.3, 97.0] | 94.2 | 4.9 [4.4, 5.4] | 98.5 / 96.6 | 0.6 |
| (f) style: relu1 + relu2 + pool channel stats, shared covariance, −log density | 94.4 [94.0, 94.9] | 94.5 | 5.3 [4.8, 5.8] | 98.2 / 89.0 | 7.4 |
"""
import argparse
import gzip
import hashlib
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

FPR = 0.05
PERM = np.random.default_rng(0).permutation(10000)
CAL, HELD = PERM[:2000], PERM[2000:]
N_FIT = 55000  # train 0..54,999 fit; 55,000..59,999 is the validation split for min-p


# ---------------------------------------------------------------- data and features
def idx_file(path):
    """Bytes of an IDX file (`.gz` beside it if the plain one is absent)."""
    path = Path(path)
    return path.read_bytes() if path.exists() else gzip.decompress(Path(f"{path}.gz").read_bytes())


def idx_images(path):
    b = idx_file(path)
    return np.frombuffer(b, np.uint8, offset=16).reshape(int.from_bytes(b[4:8], "big"), 784)


def idx_labels(path):
    return np.frombuffer(idx_file(path), np.uint8, offset=8).astype(np.int64)


def raw_frames(path):
    return np.fromfile(path, np.uint8).reshape(-1, 784)


def session(onnx_path, threads):
    """The model with a dynamic batch and relu1, relu2, pool and fc1 as extra outputs."""
    m = onnx.load(onnx_path)
    d = m.graph.input[0].type.tensor_type.shape.dim[0]
    d.ClearField("dim_value")
    d.dim_param = "N"
    for name, shape in (("relu1", [32, 26, 26]), ("relu2", [64, 24, 24]), ("pool", [64, 12, 12]),
                        ("fc1", [128])):
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape]))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess


def check_batched(sess, onnx_path, pix):
    """The batched graph gives the shipped graph's batch-1 probabilities."""
    ref = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    x = pix[:5].reshape(-1, 1, 28, 28).astype(np.float32) / 255
    m0, m1 = np.ones((1, 64, 12, 12), np.float32), np.ones((1, 128), np.float32)
    batched = sess.run(["probs"], {"x": x, "mask_0": m0, "mask_1": m1})[0]
    for i in range(5):
        one = ref.run(["probs"], {"x": x[i:i + 1], "mask_0": m0, "mask_1": m1})[0]
        assert np.allclose(one, batched[i:i + 1], atol=1e-5), "batched graph differs"


def features(sess, pix, batch=500):
    """{'stats': relu1, relu2, pool channel mean and max (320, in that order), 'fc1': (128)},
    float32. ReLU(fc1) is np.maximum(fc1, 0): the graph's relu3 node, bit for bit."""
    m0, m1 = np.ones((1, 64, 12, 12), np.float32), np.ones((1, 128), np.float32)
    stats, fc1 = [], []
    for a in range(0, len(pix), batch):
        x = pix[a:a + batch].reshape(-1, 1, 28, 28).astype(np.float32) / 255
        r1, r2, pl, f1 = sess.run(["relu1", "relu2", "pool", "fc1"],
                                  {"x": x, "mask_0": m0, "mask_1": m1})
        stats.append(np.concatenate([t for r in (r1, r2, pl) for t in (r.mean((2, 3)), r.max((2, 3)))], 1))
        fc1.append(f1)
    return {"stats": np.concatenate(stats), "fc1": np.concatenate(fc1)}


def cached_features(sess, model_digest, name, pix, cache):
    if cache is None:
        return features(sess, pix)
    key = hashlib.sha256(model_digest + pix.tobytes()).hexdigest()[:16]
    path = Path(cache) / f"holes-signals-{name}-{key}.npz"
    if path.exists():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    f = features(sess, pix)
    np.savez(path, **f)
    return f


# ---------------------------------------------------------------- densities (float64)
class Gauss:
    """Class-conditional Gaussians: 'lda' (one pooled within-class covariance) or 'qda' (one per
    class, each with its own log-determinant). Ridge: ridge × mean(diag) added to the diagonal."""

    def __init__(self, X, y, kind, ridge=1e-3):
        X = np.asarray(X, np.float64)
        self.kind = kind
        C = int(y.max()) + 1
        self.mu = np.stack([X[y == c].mean(0) for c in range(C)])
        self.logpi = np.log(np.bincount(y, minlength=C) / len(y))
        d = X.shape[1]

        def whitener(S):
            S = S + ridge * np.mean(np.diag(S)) * np.eye(d)
            L = np.linalg.cholesky(S)
            return np.linalg.inv(L).T, 2 * np.log(np.diag(L)).sum()  # (xW)(xW)ᵀ = x S⁻¹ xᵀ

        if kind == "lda":
            R = X - self.mu[y]
            W, ld = whitener(R.T @ R / len(X))
            self.W, self.logdet = [W] * C, np.full(C, ld)
        else:
            self.W, ld = [], []
            for c in range(C):
                R = X[y == c] - self.mu[c]
                W, l = whitener(R.T @ R / len(R))
                self.W.append(W)
                ld.append(l)
            self.logdet = np.array(ld)

    def d2(self, X):
        """Squared Mahalanobis distance to every class mean, [n, C]."""
        X = np.asarray(X, np.float64)
        if self.kind == "lda":
            Z, M = X @ self.W[0], self.mu @ self.W[0]
            return (Z * Z).sum(1)[:, None] - 2 * Z @ M.T + (M * M).sum(1)[None]
        return np.stack([(((X - m) @ W) ** 2).sum(1) for m, W in zip(self.mu, self.W)], 1)

    def neg_logdens(self, X):
        a = self.logpi[None] - 0.5 * self.d2(X) - 0.5 * self.logdet[None]
        m = a.max(1)
        return -(m + np.log(np.exp(a - m[:, None]).sum(1)))

    def min_d2(self, X):
        return self.d2(X).min(1)


def pca_fit(X, k, iters=4, seed=0):
    """Top-k principal axes of the rows of X by randomized SVD (chunked float64)."""
    mu = X.mean(0)
    Q = np.random.default_rng(seed).standard_normal((X.shape[1], k + 20))

    def gram_times(Q):
        out = np.zeros_like(Q)
        for a in range(0, len(X), 5000):
            B = X[a:a + 5000] - mu
            out += B.T @ (B @ Q)
        return out

    for _ in range(iters):
        Q, _ = np.linalg.qr(gram_times(Q))
    w, V = np.linalg.eigh(Q.T @ gram_times(Q))
    return mu, Q @ V[:, np.argsort(w)[::-1][:k]]


# ---------------------------------------------------------------- rates
def wilson(k, n, z=1.959964):
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return p, max(0.0, c - h), min(1.0, c + h)


def row(name, s):
    """One table row from scores {'test', 'holes', 'near'} (higher = more anomalous)."""
    cut = np.quantile(s["test"][CAL], 1 - FPR, method="higher")
    near_cut = np.quantile(s["near"], 1 - FPR, method="higher")
    rate = lambda x, c=cut: 100 * np.mean(x > c)
    ci = lambda x: "{:.1f} [{:.1f}, {:.1f}]".format(*(100 * v for v in wilson(int((x > cut).sum()), len(x))))
    h = s["holes"]
    return (f"| {name} | {ci(h)} | {rate(s['near']):.1f} | {ci(s['test'][HELD])} | "
            f"{rate(h[:2000]):.1f} / {rate(h[-2000:]):.1f} | {rate(h, near_cut):.1f} |")


def min_p(parts, val):
    """Bonferroni fusion: max over parts of −log p, p the part's tail on the validation split."""
    out = {}
    for s in ("test", "holes", "near"):
        L = []
        for part, v in zip(parts, val):
            v = np.sort(v)
            L.append(-np.log((1 + len(v) - np.searchsorted(v, part[s], side="left")) / (1 + len(v))))
        out[s] = np.max(L, 0)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--holes", required=True, help="raw 8-bit 28x28 frames (holes --raw)")
    ap.add_argument("--near", required=True, help="the near-data control (holes --near-raw)")
    ap.add_argument("--model", default="models/mnist", help="model stem (STEM.onnx)")
    ap.add_argument("--data", default="data/mnist", help="folder of the MNIST IDX files")
    ap.add_argument("--cache", help="folder for the reduced features (default: none written)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--out", help="write the table here too, under a header saying when, at "
                    "which commit and with which command")
    a = ap.parse_args()
    t0 = time.time()

    onnx_path = a.model if a.model.endswith(".onnx") else f"{a.model}.onnx"
    train = idx_images(f"{a.data}/train-images-idx3-ubyte")
    ytr = idx_labels(f"{a.data}/train-labels-idx1-ubyte")[:N_FIT]
    pix = {"train": train[:N_FIT], "val": train[N_FIT:],
           "test": idx_images(f"{a.data}/t10k-images-idx3-ubyte"),
           "holes": raw_frames(a.holes), "near": raw_frames(a.near)}
    sess = session(onnx_path, a.threads)
    check_batched(sess, onnx_path, pix["test"])
    digest = hashlib.sha256(Path(onnx_path).read_bytes()).digest()
    if a.cache:
        Path(a.cache).mkdir(parents=True, exist_ok=True)
    F = {s: cached_features(sess, digest, s, p, a.cache) for s, p in pix.items()}
    scored = ("val", "test", "holes", "near")

    def score(fn):
        return {s: fn(s) for s in scored}

    relu3 = lambda s: np.maximum(F[s]["fc1"], 0)
    fc1 = lambda s: F[s]["fc1"]
    pool_stats = lambda s: F[s]["stats"][:, 192:]  # pool channel mean (64), max (64)
    all_stats = lambda s: F[s]["stats"]

    S = {}
    g = Gauss(relu3("train"), ytr, "lda")
    S["a"] = score(lambda s: g.neg_logdens(relu3(s)))
    g = Gauss(fc1("train"), ytr, "lda")
    S["b"] = score(lambda s: g.neg_logdens(fc1(s)))
    g = Gauss(fc1("train"), ytr, "qda")
    S["c"] = score(lambda s: g.min_d2(fc1(s)))
    mu, V = pca_fit(pix["train"].astype(np.float64) / 255, 100)
    for k in (50, 100):
        def recon(s, Vk=V[:, :k]):
            X = pix[s].astype(np.float64) / 255 - mu
            Z = X @ Vk
            return (X * X).sum(1) - (Z * Z).sum(1)
        S[f"d{k}"] = score(recon)
    for k in (50, 100):
        S[f"e{k}"] = min_p([S["b"], S[f"d{k}"]], [S["b"]["val"], S[f"d{k}"]["val"]])
    g = Gauss(pool_stats("train"), ytr, "qda")
    S["f1"] = score(lambda s: g.min_d2(pool_stats(s)))
    g = Gauss(all_stats("train"), ytr, "lda")
    S["f2"] = score(lambda s: g.neg_logdens(all_stats(s)))

    names = [
        ("a", "(a) ReLU(fc1), shared covariance, −log density (baseline)"),
        ("b", "(b) fc1 before the ReLU, shared covariance, −log density"),
        ("c", "(c) fc1 before the ReLU, per-class covariance, min Mahalanobis"),
        ("d50", "(d) pixel PCA k = 50, reconstruction error"),
        ("d100", "(d) pixel PCA k = 100, reconstruction error"),
        ("e50", "(e) min-p of (b) and pixel PCA k = 50"),
        ("e100", "(e) min-p of (b) and pixel PCA k = 100"),
        ("f1", "(f) style: pool channel mean + max, per-class covariance, min Mahalanobis"),
        ("f2", "(f) style: relu1 + relu2 + pool channel stats, shared covariance, −log density"),
    ]
    lines = [
        f"{len(pix['holes']):,} holes, {len(pix['near']):,} near-control frames; cut at the 95th "
        f"percentile of 2,000 clean test digits; held-out clean: the other 8,000.",
        "",
        "| signal | holes rejected % [Wilson 95 %] | near-control rejected % | held-out clean "
        "rejected % [Wilson 95 %] | holes first 2,000 / last 2,000 % | (g) holes rejected % "
        "at 5 % of the near-control |",
        "|---|---|---|---|---|---|",
        *(row(n, S[k]) for k, n in names),
        "",
        f"({time.time() - t0:.0f} s)",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        # The whole file, header and all: rerunning the command rewrites it as it was.
        from provenance import header
        Path(a.out).write_text(header("Density signals on the latent holes, against the near-data control", time.time() - t0) + text + "\n")


if __name__ == "__main__":
    main()
