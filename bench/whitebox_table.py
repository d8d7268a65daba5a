"""Markdown summary of white-box bench results (issue 3): one row per model, attack and norm.

    python bench/whitebox_table.py bench/results/whitebox_digits_s6.json bench/results/whitebox_mnist_s6.json

Columns: bastion's strength and the strongest peer's (robust accuracy for budget attacks, lower is stronger;
success rate / median norm / robust accuracy at eps for minimum-norm attacks), bastion's passes per attacked
point, its attack seconds (median over the reps), its time over the fastest peer's (same process, same rows; from
the eighth session on the median of the per-rep paired ratios with a 95% bootstrap interval, against the peer with
the highest such median),
and its compute-limit ratios (attack time over its passes at the full batch's unit time, and over the same passes
timed at the batch sizes it actually used). Ends with counts against the issue-3 targets.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


def _strength(r: dict[str, Any]) -> tuple[float, float]:
    """A key where smaller is stronger: (robust accuracy,) or (-success, median norm)."""
    if "robust_accuracy" in r:
        return (r["robust_accuracy"], 0.0)
    norm = r["median_norm"]
    return (-r["success_rate"], math.inf if norm == "inf" else float(norm))


def _show(r: dict[str, Any]) -> str:
    if "robust_accuracy" in r:
        return f"{100 * r['robust_accuracy']:.1f}%"
    norm = r["median_norm"] if r["median_norm"] == "inf" else f"{float(r['median_norm']):.4f}"
    return f"{100 * r['success_rate']:.1f}% / {norm} / {100 * r['robust_accuracy_at_eps']:.1f}%"


def rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for row in doc["rows"]:
        res = row["results"]
        b = res["bastion"]
        peers = {k: v for k, v in res.items() if k != "bastion" and "error" not in v}
        best = min(peers, key=lambda k: _strength(peers[k])) if peers else None
        out.append({
            "row": row, "bastion": b, "best": best, "peer": peers.get(best),
            "as_strong": best is None or _strength(b) <= _strength(peers[best]),
        })
    return out


def table(docs: list[dict[str, Any]]) -> str:
    lines = ["| model | attack | norm, eps | bastion | strongest peer | passes/pt (f/b) | bastion s | "
             "time / fastest peer | compute-limit ratio (per point / batch-aware) |",
             "|---|---|---|---|---|---|---|---|---|"]
    summary = {"rows": 0, "as_strong": 0, "le_105": 0, "le_100": 0, "limit_ok": 0, "limit_rows": 0,
               "paired_rows": 0, "not_slower": 0, "faster": 0}
    for doc in docs:
        for r in rows(doc):
            row, b = r["row"], r["bastion"]
            peer = f"{_show(r['peer'])} ({r['best']})" if r["peer"] else "-"
            ratio = row["time_vs_fastest_peer"]
            fastest = f"{ratio:.2f} ({row['fastest_peer']})" if ratio is not None else "-"
            paired = row.get("paired_vs_peer") or {}
            if paired:  # benches from the eighth session on: the paired ratio to the peer bastion is closest to
                lib = max(paired, key=lambda k: paired[k]["median"])
                pair = paired[lib]
                fastest = (f"{pair['median']:.2f} [{pair['ci_low']:.2f}-{pair['ci_high']:.2f}] "
                           f"({lib}, {pair['reps']} reps)")
                ratio = pair["median"]
                summary["paired_rows"] += 1
                summary["not_slower"] += pair["ci_low"] <= 1.0
                summary["faster"] += pair["ci_high"] < 1.0
            lines.append(
                f"| {row['model']} | {row['attack']} | {row['norm']}, {row['eps']} | {_show(b)} | {peer} | "
                f"{b['fwd_per_point']}/{b['bwd_per_point']} | {b['attack_seconds_median']} | {fastest} | "
                f"{b['speed_ratio']:.2f} / {b['speed_ratio_batch_aware']:.2f} |")
            summary["rows"] += 1
            summary["as_strong"] += r["as_strong"]
            summary["le_105"] += ratio is None or ratio <= 1.05
            summary["le_100"] += ratio is None or ratio <= 1.0
            if row["attack"] in ("pgd", "apgd-ce", "apgd-t"):
                summary["limit_rows"] += 1
                summary["limit_ok"] += b["speed_ratio_batch_aware"] <= 1.10
    s = summary
    lines += ["", f"At least as strong as the strongest peer: {s['as_strong']} of {s['rows']} rows. Time at most the "
              f"fastest peer's: {s['le_100']} of {s['rows']}; at most 1.05x: {s['le_105']}. PGD/APGD rows with a "
              f"batch-aware compute-limit ratio at most 1.10: {s['limit_ok']} of {s['limit_rows']}."]
    if s["paired_rows"]:
        lines.append(f"Paired ratio to the closest peer: interval reaching 1.0 or below (not measurably slower) in "
                     f"{s['not_slower']} of {s['paired_rows']} rows; interval wholly below 1.0 (measurably faster) "
                     f"in {s['faster']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table([json.loads(Path(p).read_text()) for p in sys.argv[1:]]))
