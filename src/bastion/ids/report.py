"""The IDS evaluation's report: the summary stored with the ``ids`` run as Markdown, HTML with its plots (confusion
matrices, per-class detection clean vs under attack, success next to validity, the feature changes of the adversarial
flows) and JSON."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from bastion.store import Store
from bastion.tables import html_table, markdown_table


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}%"


def attack_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per detector and attack: what got through, what was real, what counts."""
    headers = ["detector", "attack", "route", "attacked", "success", "valid", "valid success", "seconds", "passes"]
    rows = [[c["detector"], c["attack"], c["route"], str(c["attacked"]), _pct(c["success_rate"]),
             _pct(c["valid_rate"]), _pct(c["valid_success_rate"]), f"{c['seconds']:.1f}",
             f"{c['forward_passes']} / {c['backward_passes']}"] for c in summary["cells"]]
    return headers, rows


def detector_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["detector", "accuracy", "detection rate", "false-positive rate", "train seconds"]
    rows = [[name, _pct(d["accuracy"]), _pct(d["detection_rate"]), _pct(d["false_positive_rate"]),
             f"{d['train_seconds']:.1f}"] for name, d in summary["detectors"].items()]
    return headers, rows


def class_table(summary: dict[str, Any], *, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Per attack class: each detector's clean detection rate, then per attack the valid success rate (and, unless
    ``compact``, the success and valid rates beside it)."""
    classes = sorted({k for d in summary["detectors"].values() for k in d["detection_per_class"]})
    what = "valid success" if compact else "valid success (success, valid)"
    headers = ["class", *(f"{d}: detected" for d in summary["detectors"]),
               *(f"{c['attack']}/{c['detector']}: {what}" for c in summary["cells"])]
    rows = []
    for k in classes:
        row = [k, *(_pct(d["detection_per_class"].get(k)) for d in summary["detectors"].values())]
        for c in summary["cells"]:
            r = c["per_class"].get(k)
            row.append("-" if r is None else _pct(r["valid_success_rate"]) if compact else
                       f"{_pct(r['valid_success_rate'])} ({_pct(r['success_rate'])}, {_pct(r['valid_rate'])})")
        rows.append(row)
    return headers, rows


def markdown(summary: dict[str, Any], run_id: str) -> str:
    lines = [f"# IDS evaluation {summary['name']}", "",
             f"Data: {summary['data']} ({summary['flows']} flows, {summary['features']} features, "
             f"{summary['relations']} relations); {summary['labels']} detectors; budget {summary['norm']} "
             f"eps {summary['eps']:g} in the scaled space; run {run_id}.", "",
             "An attack succeeds when the detector calls an attack flow benign; it is valid when the flow satisfies "
             "every constraint. Only a valid success is an evasion.", "",
             "## Detectors (test split)", "", *markdown_table(*detector_table(summary)), "",
             "## Attacks", "", *markdown_table(*attack_table(summary)), "",
             "## Per class", "", *markdown_table(*class_table(summary)), ""]
    return "\n".join(lines)


def _plot_confusions(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    dets = summary["detectors"]
    fig, axes = plt.subplots(1, len(dets), figsize=(4 + 2.5 * len(dets), 4), squeeze=False)
    for ax, (name, d) in zip(axes[0], dets.items(), strict=True):
        counts = np.array(d["confusion"]["counts"], dtype=float)
        shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(d["confusion"]["columns"])), d["confusion"]["columns"], rotation=45, ha="right")
        ax.set_yticks(range(len(d["confusion"]["rows"])), d["confusion"]["rows"], fontsize=7)
        for (i, j), v in np.ndenumerate(counts):
            ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=6)
        ax.set_title(f"{name}: true class x predicted")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_classes(summary: dict[str, Any], path: Path) -> Path:
    """Per class and detector: clean detection, and detection left after each attack (valid evasions removed)."""
    import matplotlib.pyplot as plt

    dets = list(summary["detectors"])
    classes = sorted({k for d in summary["detectors"].values() for k in d["detection_per_class"]})
    fig, axes = plt.subplots(len(dets), 1, figsize=(9, 2.8 * len(dets)), squeeze=False)
    for ax, det in zip(axes[:, 0], dets, strict=True):
        cells = [c for c in summary["cells"] if c["detector"] == det]
        width = 0.8 / (1 + len(cells))
        x = np.arange(len(classes))
        clean = [summary["detectors"][det]["detection_per_class"].get(k, np.nan) for k in classes]
        ax.bar(x, clean, width, label="clean")
        for i, c in enumerate(cells, start=1):
            left = [clean[j] * (1 - c["per_class"].get(k, {}).get("valid_success_rate", np.nan))
                    for j, k in enumerate(classes)]
            ax.bar(x + i * width, left, width, label=f"under {c['attack']}")
        ax.set_xticks(x + width * len(cells) / 2, classes, rotation=20, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{det}: detection rate per class")
        ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_validity(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    cells = summary["cells"]
    labels = [f"{c['attack']}\nvs {c['detector']}" for c in cells]
    x = np.arange(len(cells))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cells)), 3.5))
    for i, (key, name) in enumerate((("success_rate", "success"), ("valid_rate", "valid"),
                                     ("valid_success_rate", "valid success"))):
        ax.bar(x + (i - 1) * 0.27, [c[key] for c in cells], 0.27, label=name)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("success, validity, and the two together")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_changes(summary: dict[str, Any], path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    cells = [c for c in summary["cells"] if c.get("feature_changes")]
    if not cells:
        return None
    fig, axes = plt.subplots(1, len(cells), figsize=(3.6 * len(cells), 3.2), squeeze=False)
    for ax, c in zip(axes[0], cells, strict=True):
        names, values = list(c["feature_changes"]), list(c["feature_changes"].values())
        ax.barh(range(len(names)), values)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.invert_yaxis()
        ax.set_title(f"{c['attack']} vs {c['detector']}", fontsize=8)
        ax.set_xlabel("mean |change| / range", fontsize=7)
    fig.suptitle("features the valid adversarial flows changed most")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def html_page(summary: dict[str, Any], run_id: str, images: dict[str, str]) -> str:
    esc = html.escape
    title = f"IDS evaluation {esc(summary['name'])}"
    violated = [[c["detector"], c["attack"], ", ".join(f"{k} ({v})" for k, v in
                                                       sorted(c["violated"].items(), key=lambda kv: -kv[1])[:5])]
                for c in summary["cells"] if c["violated"]]
    figs = "".join(f"<h2>{esc(t)}</h2><img src='{esc(n)}' alt='{esc(t)}'>" for t, n in images.items())
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}"
            "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}img{max-width:100%}"
            "</style></head><body>"
            f"<h1>{title}</h1><p>Data {esc(summary['data'])}: {summary['flows']} flows, {summary['features']} "
            f"features, {summary['relations']} relations; budget {esc(summary['norm'])} eps {summary['eps']:g} in "
            f"the scaled space; run {esc(run_id)}. An attack succeeds when the detector calls an attack flow "
            "benign; it is valid when the flow satisfies every constraint; only a valid success is an evasion.</p>"
            "<h2>Detectors (test split)</h2>" + html_table(*detector_table(summary))
            + "<h2>Attacks</h2>" + html_table(*attack_table(summary))
            + "<h2>Per class</h2>" + html_table(*class_table(summary))
            + ("<h2>Constraints the invalid flows broke (most often first)</h2>"
               + html_table(["detector", "attack", "constraint (flows)"], violated) if violated else "")
            + figs + "</body></html>")


def write_outputs(store: Store, run_id: str, folder: Path) -> dict[str, Path]:
    """Markdown, HTML (its PNGs beside it) and JSON of the stored evaluation ``run_id`` in ``folder``."""
    summary = store.get_run(run_id).summary or {}
    folder.mkdir(parents=True, exist_ok=True)
    images = {"Confusion matrices": _plot_confusions(summary, folder / "confusion.png"),
              "Detection per class, clean and under attack": _plot_classes(summary, folder / "classes.png"),
              "Success and validity": _plot_validity(summary, folder / "validity.png")}
    changes = _plot_changes(summary, folder / "changes.png")
    if changes is not None:
        images["Feature changes"] = changes
    paths = {"md": folder / "ids.md", "html": folder / "ids.html", "json": folder / "ids.json"}
    paths["md"].write_text(markdown(summary, run_id))
    paths["html"].write_text(html_page(summary, run_id, {t: p.name for t, p in images.items()}))
    paths["json"].write_text(json.dumps(summary, indent=2, sort_keys=True))
    return paths


__all__ = ["attack_table", "class_table", "detector_table", "markdown", "write_outputs"]
