#!/usr/bin/env python3
"""Single model against dropout ensemble, attack by attack, from `evaluate` JSON reports
(scripts/ensemble-study.sh writes them): success rate, MI ROC AUC with its 95 % bootstrap
interval, and bypass (the share of attacked digits misclassified *and* accepted by the gate),
then each report's worst-case bypass. "overlap" says whether the two MI AUC intervals overlap
(the reports attack slightly different image sets, so this is not a paired test).

Usage: scripts/ensemble_table.py SINGLE.json ENSEMBLE.json [TRANSFER.json]
"""
import json
import sys


def rows(path):
    report = json.load(open(path))
    out = {}
    for r in report["rows"]:
        target = r["target"]  # "deterministic", "mc" or "adaptive λ=…"
        mi = r["all"]["mutual_information"]
        bypass = r["success_rate"] * (1.0 - (r["tpr_at_threshold_successful"] or 0.0))
        out[(target, r["method"], r["eps_255"])] = (r["success_rate"], mi["auc"], mi.get("auc_interval"), bypass)
    return report, out


def auc(v):
    _, a, iv, _ = v
    return f"{a:.3f} [{iv[0]:.2f}–{iv[1]:.2f}]" if iv else f"{a:.3f}"


reports = [rows(p) for p in sys.argv[1:]]
names = ["single", "ensemble", "transfer → ensemble"][: len(reports)]
head = "| model attacked | attack | ε |" + "".join(f" {n}: success | {n}: MI AUC | {n}: bypass |" for n in names)
print(head)
print("|---|---|---|" + "---|---|---|" * len(names))
for key in reports[0][1]:
    cells = []
    for _, r in reports:
        v = r.get(key)
        cells.append(" — | — | — |" if v is None else f" {100 * v[0]:.1f} % | {auc(v)} | {100 * v[3]:.1f} % |")
    print(f"| {key[0]} | {key[1]} | {key[2]:g} |" + "".join(cells))
print()
for name, (report, r) in zip(names, reports):
    key, v = max(r.items(), key=lambda kv: kv[1][3])
    print(f"{name}: {report['attacked']}; clean accuracy {100 * report['clean_accuracy_deterministic']:.1f} % det, "
          f"{100 * report['clean_accuracy_mc']:.1f} % MC; clean FPR {100 * report['clean_fpr_at_threshold']:.1f} %; "
          f"worst bypass {100 * v[3]:.1f} % ({key[1]} on {key[0]}, ε = {key[2]:g})")
if len(reports) >= 2:
    (_, a), (_, b) = reports[0], reports[1]
    apart = [k for k in a if k in b and a[k][2] and b[k][2] and (a[k][2][1] < b[k][2][0] or b[k][2][1] < a[k][2][0])]
    higher = [k for k in apart if b[k][1] > a[k][1]]
    print(f"MI AUC intervals that do not overlap (single vs ensemble): {len(apart)} of {len(a)} rows, "
          f"ensemble higher in {len(higher)}: " + ", ".join(f"{k[1]} {k[0]} ε={k[2]:g}" for k in apart))
