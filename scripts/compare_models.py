#!/usr/bin/env python3
"""Detection of two models on the same eval bundle frames, with the same masks: per attack,
the mean ROC AUC of MI over RUNS seeds (negatives: clean + that attack's matched noise, as
`mcgate validate`), and the share of the attack's frames each model's own threshold rejects.
Made to compare an int8 model with its float twin on frames attacked through the float model.

Usage: scripts/compare_models.py MODEL_A MODEL_B [--bundle bundles/mnist] [--runs 8]
       [--mcgate target/release/mcgate]
"""
import argparse
import json
import subprocess

p = argparse.ArgumentParser()
p.add_argument("models", nargs=2)
p.add_argument("--bundle", default="bundles/mnist")
p.add_argument("--runs", type=int, default=8)
p.add_argument("--mcgate", default="target/release/mcgate")
args = p.parse_args()
manifest = json.load(open(f"{args.bundle}/manifest.json"))
files = [f"{args.bundle}/{f['file']}" for f in manifest["frames"]]
groups = [f["group"] for f in manifest["frames"]]


def auc(neg, pos):
    """P(positive > negative), ties ½ (scikit-learn's roc_auc_score)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def mi_runs(model):
    runs = []
    for run in range(args.runs):
        out = subprocess.run([args.mcgate, "gate", model, *files, "--seed", str(run), "--no-latency"],
                             capture_output=True, text=True, check=False)
        lines = [json.loads(l) for l in out.stdout.splitlines()]
        assert len(lines) == len(files), out.stderr[-300:]
        runs.append([l["measures"]["mutual_information"] for l in lines])
        threshold = lines[0]["threshold"]
    return runs, threshold


results = {m: mi_runs(m) for m in args.models}
print(f"{len(files)} frames of {args.bundle}, {args.runs} runs (seeds 0..{args.runs - 1}), T = card default")
print()
print("| attack | " + " | ".join(f"MI AUC {m}" for m in args.models) + " | Δ AUC | "
      + " | ".join(f"rejected by {m}" for m in args.models) + " |")
print("|---|" + "---|" * (2 * len(args.models) + 1))
for g in manifest["groups"]:
    if g["role"] != "positive":
        continue
    name = g["name"]
    row, rejected = [], []
    for m in args.models:
        runs, threshold = results[m]
        aucs, rej = [], []
        for mi in runs:
            neg = [v for v, k in zip(mi, groups) if k in ("clean", f"noise_for_{name}")]
            pos = [v for v, k in zip(mi, groups) if k == name]
            aucs.append(auc(neg, pos))
            rej.append(sum(v > threshold for v in pos) / len(pos))
        row.append(sum(aucs) / len(aucs))
        rejected.append(sum(rej) / len(rej))
    print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in row) + f" | {row[1] - row[0]:+.3f} | "
          + " | ".join(f"{100 * r:.1f} %" for r in rejected) + " |")
