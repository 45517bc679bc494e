#!/usr/bin/env python3
"""Markdown tables of a red-team report (`mcgate-training redteam`), for docs/SECURITY.md.

Usage: scripts/security_table.py docs/results/security-mnist.json
Prints: the run's header line, then one table row per attack and budget (bypass with its
95 % bootstrap interval over images and its range over the secret mask draws, the share
the attacker's own check saw pass, seconds; where the rows carry it, the share the gate
classifies wrong whether it accepts the frame or not, and the share it classifies wrong and
rejects: what the gate adds over the network), then the worst case per budget.
"""
import json
import sys


def pct(x):
    return f"{100 * x:.1f} %"


def misclassified(row):
    if "misclassified" not in row:
        return "–"
    lo, hi = row["misclassified_interval"]
    text = f"{pct(row['misclassified'])} ({pct(lo)}–{pct(hi)})"
    if "caught" in row:
        clo, chi = row["caught_interval"]
        text += f"; rejected {pct(row['caught'])} ({pct(clo)}–{pct(chi)})"
    return text


def budget(row):
    if row["norm"] == "patch":
        return f"patch, {100 * row['eps']:.0f} % of the frame"
    if row["norm"] == "linf":
        return f"L∞ {row['eps']:g} ({255 * row['eps']:.1f}/255)"
    return f"L2 {row['eps']:g}"


def main():
    d = json.load(open(sys.argv[1]))
    # A report updated in parts (`redteam --update`) has rows of several commits.
    commits = {}
    for r in d["rows"]:
        c = r.get("commit", d["commit"])
        commits[c] = commits.get(c, 0) + 1
    several = len(commits) > 1
    # Reports from before the misclassified share was recorded have no such column.
    wrong = any("misclassified" in r for r in d["rows"])
    made = (", ".join(f"{c} ({n} rows)" for c, n in commits.items()) if several
            else d["commit"])
    print(f"{d['model']}: {d['images']} test images classified right, T = {d['samples']}, "
          f"threshold {d['threshold']:.4f}, {d['mask_draws']} secret mask draws per frame; "
          f"clean frames rejected {pct(d['clean_fpr'])}; commit{'s' if several else ''} "
          f"{made}; {d['seconds'] / 60:.0f} min")
    print()
    print("| attack | crafted on | budget | share | 95 % interval (images) | range over draws "
          "| attacker's own check |" + (" misclassified (interval); of them rejected |" if wrong else "")
          + " s |" + (" commit |" if several else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if wrong else "")
          + ("---|" if several else ""))
    for r in d["rows"]:
        share = r.get("bypass", r.get("rejected"))
        what = "bypass" if "bypass" in r else "rejected"
        target = f" → class {r['target_class']}" if "target_class" in r else ""
        lo, hi = r["interval"]
        dlo, dhi = r["draw_range"]
        print(f"| {r['attack']}{target} | {r['crafted_on']} | {budget(r)} | {what} "
              f"**{pct(share)}** | {pct(lo)}–{pct(hi)} | {pct(dlo)}–{pct(dhi)} "
              f"| {pct(r['passed_own_check'])} |"
              + (f" {misclassified(r)} |" if wrong else "")
              + f" {r['seconds']:.0f} |"
              + (f" {r.get('commit', d['commit'])} |" if several else ""))
    print()
    print("| budget | worst attack | bypass | 95 % interval |")
    print("|---|---|---|---|")
    for w in d["worst"]:
        print(f"| {budget(w)} | {w['attack']} | **{pct(w['bypass'])}** "
              f"| {pct(w['interval'][0])}–{pct(w['interval'][1])} |")
    if d.get("dos_smallest_eps") is not None:
        e = d["dos_smallest_eps"]
        print()
        print(f"Denial of service: the smallest budget tried at which most clean frames are "
              f"rejected is L∞ {e:g} ({255 * e:.0f}/255).")


if __name__ == "__main__":
    main()
