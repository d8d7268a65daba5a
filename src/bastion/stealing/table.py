"""The stealing experiment's report: the summary stored with the ``steal`` run, rendered as Markdown, HTML (the curves
and the three-way table: the thief's copy, the honest users' loss, the detectors) and JSON."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from bastion.stealing.config import NONE, StealConfig
from bastion.store import Store
from bastion.tables import html_table, markdown_table


def summarize(config: StealConfig, store: Store, cells: dict[tuple[str, str], str], defenses: dict[str, Any],
              detectors: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers, read back from the stored runs."""
    rows = []
    for (attack, defense), run_id in cells.items():
        curve: dict[int, dict[str, Any]] = {}
        for m in store.metrics(run_id):
            curve.setdefault(m["step"], {"queries": m["step"]})[m["name"]] = m["value"]
        rows.append({**(store.get_run(run_id).summary or {}), "attack": attack, "defense": defense, "run_id": run_id,
                     "curve": [curve[q] for q in sorted(curve)]})
    return {"name": config.name, "victim": config.target or config.victim, "dataset": config.dataset,
            "pool": config.pool, "budget": config.budget, "checkpoints": config.budget_points,
            "thief": config.thief.model_dump(mode="json"), "attacks": [a.key for a in config.attacks],
            "defenses": [d.key for d in config.defenses], "detectors": [d.key for d in config.detectors],
            "defense_runs": defenses, "detector_runs": detectors, "cells": rows}


def cell(summary: dict[str, Any], attack: str, defense: str = NONE) -> dict[str, Any]:
    return next(c for c in summary["cells"] if c["attack"] == attack and c["defense"] == defense)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _flag(v: int | None) -> str:
    return "never" if v is None else str(v)


def three_way(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per defense: honest users' accuracy loss, then per attack the copy's fidelity and the transfer
    success of adversarial examples crafted on it."""
    headers = ["defense", "honest accuracy (loss)"]
    for a in summary["attacks"]:
        headers += [f"{a}: fidelity", f"{a}: transfer"]
    rows = []
    for d in summary["defenses"]:
        run = summary["defense_runs"][d]
        row = [d, f"{_pct(run['honest_accuracy'])} ({100 * run['accuracy_loss']:+.1f})"]
        for a in summary["attacks"]:
            c = cell(summary, a, d)
            t = c.get("transfer") or {}
            row += [_pct(c.get("fidelity")) + (" (labels)" if c.get("fell_back_to_labels") else ""),
                    _pct(t.get("success_rate"))]
        rows.append(row)
    return headers, rows


def detection(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per detector: honest users flagged, then per attack (against the plain victim, or the first defense)
    the queries until the thief was flagged."""
    headers = ["detector", "honest users flagged", *[f"{a}: queries to detection" for a in summary["attacks"]]]
    first = NONE if NONE in summary["defenses"] else summary["defenses"][0]
    rows = []
    for k in summary["detectors"]:
        run = summary["detector_runs"][k]
        flagged = sum(f is not None for f in run["benign_flags"])
        rows.append([k, f"{flagged}/{run['benign_clients']} ({_pct(run['false_alarm_rate'])})",
                     *[_flag(cell(summary, a, first)["detection"].get(k)) for a in summary["attacks"]]])
    return headers, rows


def markdown(summary: dict[str, Any], run_id: str) -> str:
    lines = [f"# Stealing {summary['name']}", "",
             f"Victim {summary['victim']} ({summary['dataset']}), thief pool {summary['pool']}, budget "
             f"{summary['budget']} queries, copy {summary['thief']['arch']}; run {run_id}.", "",
             "## The copy, the honest users, the transfer", "", *markdown_table(*three_way(summary)), ""]
    if summary["detectors"]:
        lines += ["## Detection", "", *markdown_table(*detection(summary)), ""]
    lines += ["## Curves (accuracy / fidelity of the copy)", ""]
    for c in summary["cells"]:
        points = ", ".join(f"{p['queries']}: {_pct(p.get('accuracy'))} / {_pct(p.get('fidelity'))}" for p in c["curve"])
        lines.append(f"- {c['attack']} x {c['defense']}: {points}")
    return "\n".join(lines) + "\n"


def plot_curves(summary: dict[str, Any], path: Path) -> Path:
    """Fidelity and accuracy of the copy against queries: one panel per defense, one line per attack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    defenses = summary["defenses"]
    fig, axes = plt.subplots(2, len(defenses), figsize=(4 * len(defenses), 6.5), squeeze=False, sharey="row")
    for j, d in enumerate(defenses):
        for a in summary["attacks"]:
            curve = cell(summary, a, d)["curve"]
            q = [p["queries"] for p in curve]
            axes[0][j].plot(q, [p.get("fidelity") for p in curve], marker="o", label=a)
            axes[1][j].plot(q, [p.get("accuracy") for p in curve], marker="o", label=a)
        axes[0][j].set_title(f"defense: {d}")
        axes[1][j].set_xlabel("queries")
    axes[0][0].set_ylabel("fidelity (agreement with the victim)")
    axes[1][0].set_ylabel("test accuracy of the copy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def html_page(summary: dict[str, Any], run_id: str, image: str) -> str:
    esc = html.escape
    title = f"Stealing {esc(summary['name'])}"
    cost = [[c["attack"], c["defense"], str(c["queries"]), c.get("answers") or "-", f"{c['attack_seconds']:.1f}"]
            for c in summary["cells"]]
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}"
            "td,th{border:1px solid #ccc;padding:3px 8px}th{background:#eee}img{max-width:100%}</style></head><body>"
            f"<h1>{title}</h1><p>Victim {esc(summary['victim'])} ({esc(summary['dataset'])}), thief pool "
            f"{esc(summary['pool'])}, budget {summary['budget']} queries, copy {esc(summary['thief']['arch'])}; run "
            f"{esc(run_id)}. Fidelity: the copy's agreement with the plain victim on the test split; transfer: "
            "adversarial examples crafted on the copy that fool the deployed victim; honest accuracy: the deployed "
            "(defended) victim's test accuracy.</p><h2>The copy, the honest users, the transfer</h2>"
            + html_table(*three_way(summary))
            + ("<h2>Detection</h2>" + html_table(*detection(summary)) if summary["detectors"] else "")
            + f"<h2>Curves</h2><img src='{esc(image)}' alt='fidelity and accuracy against queries'>"
            + "<h2>Cost</h2>" + html_table(["attack", "defense", "queries", "answers", "attack seconds"], cost)
            + "</body></html>")


def write_outputs(store: Store, run_id: str, folder: Path) -> dict[str, Path]:
    """Markdown, HTML (with its PNG next to it) and JSON of the stored ``steal`` run in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = store.get_run(run_id).summary or {}
    plot_curves(summary, folder / "curves.png")
    paths = {"markdown": folder / "steal.md", "html": folder / "steal.html", "json": folder / "steal.json",
             "curves": folder / "curves.png"}
    paths["markdown"].write_text(markdown(summary, run_id))
    paths["html"].write_text(html_page(summary, run_id, "curves.png"))
    paths["json"].write_text(json.dumps({"run_id": run_id, **summary}, indent=1))
    return paths
