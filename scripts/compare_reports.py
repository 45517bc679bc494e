#!/usr/bin/env python3
"""Compares two mcgate outputs from different builds (x86 vs ARM): gate JSON lines or
`validate --json`. Strings, booleans, integers and verdicts must be equal; floats within a
tolerance (default 1e-4); `reason` texts are compared without their digits (they embed the
MI rounded to 4 decimals).

Usage: scripts/compare_reports.py REFERENCE OTHER [--tol 1e-4]
Prints the largest float difference; exits 1 on any mismatch.
"""
import json
import re
import sys

args = sys.argv[1:]
tol = 1e-4
if "--tol" in args:
    i = args.index("--tol")
    tol = float(args[i + 1])
    del args[i : i + 2]
ref_path, other_path = args


def load(path):
    text = open(path).read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines()]


worst = [0.0, ""]
problems = []


def compare(a, b, where):
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            problems.append(f"{where}: {a!r} vs {b!r}")
            return
        d = abs(a - b)
        if d > worst[0]:
            worst[:] = [d, where]
        if d > tol:
            problems.append(f"{where}: {a} vs {b} (|Δ| {d:.2e} > {tol})")
    elif isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            problems.append(f"{where}: keys {sorted(a)} vs {sorted(b)}")
            return
        for k in a:
            if k == "reason" and a[k] and b[k]:
                # Embeds the MI rounded to 4 decimals: compare the words, not the digits.
                compare(re.sub(r"[0-9.]+", "#", a[k]), re.sub(r"[0-9.]+", "#", b[k]), f"{where}/{k}")
                continue
            compare(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            problems.append(f"{where}: {len(a)} vs {len(b)} items")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, f"{where}[{i}]")
    elif a != b:
        problems.append(f"{where}: {a!r} vs {b!r}")


compare(load(ref_path), load(other_path), "")
for p in problems[:20]:
    print("MISMATCH", p)
print(f"largest float difference {worst[0]:.2e} at {worst[1] or '-'}; {len(problems)} mismatches")
sys.exit(1 if problems else 0)
