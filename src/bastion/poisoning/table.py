"""The poisoning matrix as a table, a Markdown page and an HTML report with plots: the attack success rate and
clean accuracy heat maps, trigger examples, detection score histograms and ROC curves."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from bastion.poisoning.config import PoisonConfig
from bastion.store import Store
from bastion.tables import html_table


def summarize(config: PoisonConfig, store: Store, result: Any) -> dict[str, Any]:
    """The stored summary of a matrix: one row per build, one per cell, each with the run id behind it."""
    builds = []
    for a in config.attacks:
        rid = result.builds[a.key]
        s = store.get_run(rid).summary or {}
        builds.append({"attack": a.key, "run_id": rid, **{k: s.get(k) for k in (
            "name", "kind", "n_train", "n_poisoned", "n_attack_test", "target", "source", "attack_seconds",
            "attack_cpu_seconds", "train_seconds", "train_cpu_seconds", "attack_passes", "train_passes", "examples")}})
    cells = []
    for a in config.attacks:
        for d in config.defenses:
            rid = result.cells[(a.key, d.key)]
            s = store.get_run(rid).summary or {}
            cells.append({"attack": a.key, "defense": d.key, "run_id": rid, **s})
    return {"name": config.name, "dataset": config.dataset, "rate": config.rate, "target": config.target,
            "recipe": config.recipe.model_dump(mode="json"), "attacks": [a.key for a in config.attacks],
            "defenses": [d.key for d in config.defenses], "builds": builds, "cells": cells}


def _passes(p: dict[str, int] | None) -> str:
    return "-" if not p else f"{p['forward_passes']:,} / {p['gradient_passes']:,}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def cell(summary: dict[str, Any], attack: str, defense: str) -> dict[str, Any]:
    return next(c for c in summary["cells"] if c["attack"] == attack and c["defense"] == defense)


def baseline_asr(summary: dict[str, Any], attack: str) -> float | None:
    """The attack success rate of the model trained on the clean set (attack ``none``), on this attack's inputs."""
    found = [c.get("clean_model_attack_success_rate") for c in summary["cells"] if c["attack"] == attack]
    return next((v for v in found if v is not None), None)


def markdown(summary: dict[str, Any], run_id: str) -> str:
    """The matrix as Markdown: ASR / clean accuracy per cell, then detection and cost."""
    lines = [f"# Poisoning matrix {summary['name']} ({summary['dataset']}, rate {summary['rate']:g}, "
             f"target {summary['target']})", "", f"Run `{run_id}`. Each cell: attack success rate / clean accuracy "
             "(a rejected input counts as a failed attack and as a wrong answer).", "",
             "| attack | clean model's ASR | " + " | ".join(summary["defenses"]) + " |",
             "|---" * (len(summary["defenses"]) + 2) + "|"]
    for a in summary["attacks"]:
        row = [f"{_pct(cell(summary, a, d).get('attack_success_rate'))} / "
               f"{_pct(cell(summary, a, d).get('clean_accuracy'))}" for d in summary["defenses"]]
        lines.append(f"| {a} | {_pct(baseline_asr(summary, a))} | " + " | ".join(row) + " |")
    det = [c for c in summary["cells"] if c.get("detection")]
    if det:
        lines += ["", "## Detection (against the recorded poisoned points)", "",
                  "| attack | defense | TPR | FPR | AUC | flagged |", "|---|---|---|---|---|---|"]
        for c in det:
            d = c["detection"]
            auc = "-" if d.get("auc") is None else f"{d['auc']:.3f}"
            lines.append(f"| {c['attack']} | {c['defense']} | {_pct(d.get('tpr'))} | {_pct(d.get('fpr'))} | {auc} | "
                         f"{c.get('n_flagged', '-')} |")
    lines += ["", "## Cost", "", "Passes: samples through the model (forward) and, of those, with gradients "
              "(each followed by a backward).", "",
              "| attack | poisoned points | attack CPU s | attack passes (forward / gradient) | train CPU s |",
              "|---|---|---|---|---|"]
    for b in summary["builds"]:
        lines.append(f"| {b['attack']} | {b['n_poisoned']} | {b['attack_cpu_seconds']:.1f} | "
                     f"{_passes(b.get('attack_passes'))} | {b['train_cpu_seconds']:.1f} |")
    lines += ["", "| attack | defense | defense CPU s | defense passes (forward / gradient) |", "|---|---|---|---|"]
    lines += [f"| {c['attack']} | {c['defense']} | {c.get('defense_cpu_seconds', 0):.1f} | "
              f"{_passes(c.get('defense_passes'))} |" for c in summary["cells"] if c["defense"] != "none"]
    return "\n".join(lines) + "\n"


def plot_heatmaps(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    attacks, defenses = summary["attacks"], summary["defenses"]
    fig, axes = plt.subplots(1, 2, figsize=(2.2 + 2.4 * len(defenses), 1.2 + 0.45 * len(attacks)), squeeze=False)
    for ax, key, title, cmap in ((axes[0][0], "attack_success_rate", "attack success rate", "Reds"),
                                 (axes[0][1], "clean_accuracy", "clean accuracy", "Greens")):
        vals = np.array([[np.nan if (v := cell(summary, a, d).get(key)) is None else v for d in defenses]
                         for a in attacks], dtype=float)
        ax.imshow(vals, vmin=0, vmax=1, cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(defenses)), defenses, rotation=30, ha="right")
        ax.set_yticks(range(len(attacks)), attacks)
        ax.set_title(title)
        for i in range(len(attacks)):
            for j in range(len(defenses)):
                text = "n/a" if np.isnan(vals[i, j]) else f"{100 * vals[i, j]:.0f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_examples(summary: dict[str, Any], path: Path) -> Path | None:
    """Per attack: poisoned training points above their clean originals, and attack test inputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    builds = [b for b in summary["builds"] if b.get("examples") and b["examples"].get("poisoned")]
    if not builds:
        return None
    cols = 4
    fig, axes = plt.subplots(len(builds), 3 * cols, figsize=(1.0 * 3 * cols, 1.15 * len(builds)), squeeze=False)
    for i, b in enumerate(builds):
        ex = b["examples"]
        rows = [("clean", ex.get("clean", [])), ("poisoned", ex.get("poisoned", [])), ("test", ex.get("attack_test",
                                                                                                        []))]
        for k, (what, imgs) in enumerate(rows):
            for j in range(cols):
                ax = axes[i][k * cols + j]
                ax.axis("off")
                if j < len(imgs):
                    img = np.asarray(imgs[j], dtype=float)
                    img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
                    ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
                if j == 0:
                    ax.set_title(f"{b['attack']}: {what}" if k == 0 else what, fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_detection(summary: dict[str, Any], path: Path) -> Path | None:
    """Score histograms (poisoned vs clean) and ROC curves of every detecting cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in summary["cells"] if c.get("histogram") and c["histogram"]["poisoned"] and
             sum(c["histogram"]["poisoned"]) > 0]
    if not cells:
        return None
    fig, axes = plt.subplots(len(cells), 2, figsize=(8, 2.2 * len(cells)), squeeze=False)
    for i, c in enumerate(cells):
        h = c["histogram"]
        centers = [(a + b) / 2 for a, b in zip(h["edges"][:-1], h["edges"][1:], strict=True)]
        width = h["edges"][1] - h["edges"][0]
        ax = axes[i][0]
        ax.bar(centers, h["clean"], width=width, alpha=0.6, label="clean", color="tab:green")
        ax.bar(centers, h["poisoned"], width=width, alpha=0.6, label="poisoned", color="tab:red")
        ax.set_yscale("log")
        ax.set_title(f"{c['defense']} on {c['attack']}: scores", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[i][1]
        if c.get("roc"):
            fpr, tpr = zip(*c["roc"], strict=True)
            ax.plot(fpr, tpr, color="tab:blue")
        ax.plot([0, 1], [0, 1], ls=":", color="gray")
        auc = (c.get("detection") or {}).get("auc")
        ax.set_title(f"ROC (AUC {auc:.3f})" if auc is not None else "ROC", fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _shade(asr: float | None) -> str:
    """A cell background from white (0% attack success) to red (100%)."""
    if asr is None:
        return ""
    g = round(255 * (1 - asr))
    return f" style='background:rgb(255,{g},{g})'"


def html_page(summary: dict[str, Any], run_id: str, images: dict[str, str]) -> str:
    esc = html.escape
    matrix = []
    for a in summary["attacks"]:
        row = [esc(a), _pct(baseline_asr(summary, a))]
        for d in summary["defenses"]:
            c = cell(summary, a, d)
            asr = c.get("attack_success_rate")
            row.append(f"<span{_shade(asr)}>{_pct(asr)}</span> / {_pct(c.get('clean_accuracy'))}")
        matrix.append(row)
    det = [[esc(c["attack"]), esc(c["defense"]), _pct(c["detection"].get("tpr")), _pct(c["detection"].get("fpr")),
            "-" if c["detection"].get("auc") is None else f"{c['detection']['auc']:.3f}", str(c.get("n_flagged", "-"))]
           for c in summary["cells"] if c.get("detection")]
    cost = [[esc(b["attack"]), str(b["n_poisoned"]), f"{b['attack_cpu_seconds']:.1f}", _passes(b.get("attack_passes")),
             f"{b['train_cpu_seconds']:.1f}"] for b in summary["builds"]]
    dcost = [[esc(c["attack"]), esc(c["defense"]), f"{c.get('defense_cpu_seconds', 0):.1f}",
              _passes(c.get("defense_passes"))] for c in summary["cells"] if c["defense"] != "none"]
    figs = "".join(f"<h2>{esc(title)}</h2><img src='{esc(name)}' alt='{esc(title)}'>" for title, name in images.items())
    title = f"Poisoning matrix {esc(summary['name'])}"
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}"
            "td,th{border:1px solid #ccc;padding:3px 8px}th{background:#eee}img{max-width:100%}</style></head><body>"
            f"<h1>{title}</h1><p>Data set {esc(summary['dataset'])}, poison rate {summary['rate']:g}, target class "
            f"{summary['target']}, victim {esc(summary['recipe']['arch'])} trained {summary['recipe']['epochs']} "
            f"epochs; run {esc(run_id)}. Each cell: attack success rate / clean accuracy (an input the defense "
            "rejects counts as a failed attack and as a wrong answer).</p>"
            + html_table(["attack", "clean model's ASR", *summary["defenses"]], matrix, markup=True)
            + ("<h2>Detection against the recorded poisoned points</h2>" + html_table(
                ["attack", "defense", "TPR", "FPR", "AUC", "flagged"], det, markup=True) if det else "")
            + "<h2>Cost</h2><p>Passes: samples through the model (forward) and, of those, with gradients.</p>"
            + html_table(["attack", "poisoned points", "attack CPU s", "attack passes (fwd / grad)", "train CPU s"],
                          cost, markup=True)
            + (html_table(["attack", "defense", "defense CPU s", "defense passes (fwd / grad)"], dcost,
                          markup=True) if dcost else "")
            + figs + "</body></html>")


def write_outputs(store: Store, run_id: str, folder: Path) -> dict[str, Path]:
    """Markdown, HTML (with its PNGs next to it) and JSON of the stored matrix ``run_id`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = store.get_run(run_id).summary or {}
    images: dict[str, str] = {}
    for title, name, fn in (("Attack success rate and clean accuracy", "heatmap.png", plot_heatmaps),
                            ("Trigger examples", "examples.png", plot_examples),
                            ("Detection scores and ROC curves", "detection.png", plot_detection)):
        if fn(summary, folder / name) is not None:
            images[title] = name
    paths = {"markdown": folder / "poison.md", "html": folder / "poison.html", "json": folder / "poison.json"}
    paths["markdown"].write_text(markdown(summary, run_id))
    paths["html"].write_text(html_page(summary, run_id, images))
    paths["json"].write_text(json.dumps({"run_id": run_id, **summary}, indent=1))
    return paths
