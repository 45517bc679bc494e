#!/usr/bin/env python3
"""One robust model trained with several seeds: the headline row per seed and across seeds.

Each model is given as STEM,ROBUST_ACCURACY_JSON,SECURITY_JSON (what `train`,
`robust-accuracy --out` and `redteam --out` wrote). Per model: test accuracy (its card),
robust accuracy without the gate at --eps (with its bootstrap interval), the red team's
worst bypass at --eps and, for that attack, the share misclassified and the share
misclassified *and* rejected (with their intervals), and the clean test rate: the 10,000
test images gated through the binary with the card's threshold (Wilson 95 %). Then the
mean, sample standard deviation and range of each over the seeds; the spread across seeds
is training noise, the intervals within a row are sampling noise of one model.

Usage: scripts/seed_table.py [--eps 0.3] [--data data/mnist] [--mcgate target/release/mcgate]
       STEM,RA.json,SECURITY.json ...
"""
import argparse
import json
import math
import statistics
import subprocess
from pathlib import Path

import numpy as np


def wilson(k, n, z=1.959964):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def clean_rate(mcgate, stem, images):
    """Share of the test images the gate rejects, through the binary (one draw of masks
    each, run seed 1: the same count every run)."""
    run = subprocess.run(
        [mcgate, "gate", stem, "-", "--width", "28", "--height", "28", "--format", "jsonl",
         "--seed", "1"],
        input=images.tobytes(), capture_output=True, check=False)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    if len(lines) != len(images):
        raise SystemExit(f"{stem}: {len(lines)} verdicts for {len(images)} frames: "
                         f"{run.stderr.decode().strip()}")
    rejected = sum(line["verdict"] == "reject" for line in lines)
    return wilson(rejected, len(lines))


def row(spec, eps, mcgate, images):
    stem, ra_path, sec_path = spec.split(",")
    card = json.load(open(f"{stem}.card.json"))
    ra = json.load(open(ra_path))
    sec = json.load(open(sec_path))
    ra_row = next(r for r in ra["rows"] if abs(r["eps"] - eps) < 1e-9)
    at_eps = [r for r in sec["rows"] if r["norm"] == "linf" and abs(r["eps"] - eps) < 1e-9]
    worst = max(at_eps, key=lambda r: r["bypass"])
    return {
        "model": stem,
        "seed": card["provenance"]["seed"],
        "det": card["metrics"]["test_accuracy_deterministic"],
        "mc": card["metrics"]["test_accuracy_mc"],
        "ra": (ra_row["robust_accuracy"], *ra_row["interval"]),
        "bypass": (worst["bypass"], *worst["interval"]),
        "attack": worst["attack"],
        "misclassified": (worst["misclassified"], *worst["misclassified_interval"]),
        "caught": (worst["caught"], *worst["caught_interval"]),
        "clean": clean_rate(mcgate, stem, images),
        "threshold": card["threshold"]["mutual_information"],
    }


def pct(v):
    return f"{100 * v:.1f} %"


def pct2(v):
    return f"{100 * v:.2f} %"


def cell(v):
    return f"{pct(v[0])} ({pct(v[1])}–{pct(v[2])})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--mcgate", default="target/release/mcgate")
    args = ap.parse_args()
    images = np.fromfile(Path(args.data) / "t10k-images-idx3-ubyte", np.uint8,
                         offset=16).reshape(-1, 784)
    rows = [row(m, args.eps, args.mcgate, images) for m in args.models]
    print(f"| model (seed) | test accuracy det / MC | robust accuracy, no gate | "
          f"worst bypass at {args.eps:g} (attack) | misclassified; of them rejected | "
          f"MI threshold | clean test images rejected |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['model']}` ({r['seed']}) | {pct2(r['det'])} / {pct2(r['mc'])} | "
              f"{cell(r['ra'])} | {cell(r['bypass'])} ({r['attack']}) | "
              f"{cell(r['misclassified'])}; {cell(r['caught'])} | {r['threshold']:.4f} | "
              f"{cell(r['clean'])} |")
    if len(rows) > 1:
        def across(get, fmt=pct):
            xs = [get(r) for r in rows]
            return (f"{fmt(statistics.mean(xs))} ± {fmt(statistics.stdev(xs))} "
                    f"[{fmt(min(xs))}–{fmt(max(xs))}]")
        print(f"| mean ± sd [range], {len(rows)} seeds | {across(lambda r: r['det'], pct2)} / "
              f"{across(lambda r: r['mc'], pct2)} | {across(lambda r: r['ra'][0])} | "
              f"{across(lambda r: r['bypass'][0])} | {across(lambda r: r['misclassified'][0])}; "
              f"{across(lambda r: r['caught'][0])} | – | {across(lambda r: r['clean'][0])} |")


if __name__ == "__main__":
    main()
