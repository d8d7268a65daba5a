"""Figures of a run as PNG bytes (matplotlib, Agg backend): curve, attack contributions, gallery."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def curve_png(summary: dict[str, Any], config: dict[str, Any]) -> bytes:
    """Robust accuracy vs eps from the minimal norms, with the budget attacks' point at the run's eps."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    c = summary.get("curve")
    if c:
        ax.plot(c["eps"], [100 * a for a in c["robust_accuracy"]],
                label=f"from minimum-norm results ({c.get('points', '?')} points)")
    for part, s in summary.get("stages", {}).items():
        if s["role"] != "minimal":
            ax.scatter([config["eps"]], [100 * s["robust_accuracy"]], label=f"{part} at ε", zorder=3, s=25)
    ax.scatter([config["eps"]], [100 * summary["robust_accuracy"]], marker="x", color="k", s=60,
               label="suite worst case at ε", zorder=4)
    ax.axvline(config["eps"], color="grey", lw=0.8, ls=":")
    ax.set_xlabel(f"ε ({config['norm']})")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


def contributions_png(summary: dict[str, Any]) -> bytes:
    """How many points each stage broke first (the cascade's division of labour) and what it cost."""
    parts = list(summary.get("stages", {}))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.5, 3))
    a1.bar(parts, [summary["first_broken_by"].get(p, 0) for p in parts], color="tab:red")
    a1.set_title("points broken first", fontsize=9)
    a2.bar(parts, [summary["stages"][p]["seconds"] for p in parts], color="tab:blue")
    a2.set_title("wall time (s)", fontsize=9)
    for ax in (a1, a2):
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return _png(fig)


def _image(values: list[Any]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float32)
    if a.ndim == 3:
        a = a.transpose(1, 2, 0)
        if a.shape[2] == 1:
            a = a[:, :, 0]
    return a


def gallery_png(gallery: list[dict[str, Any]], classes: list[str] | None = None) -> bytes | None:
    """Rows of clean image, adversarial image and amplified perturbation."""
    items = [g for g in gallery if np.asarray(g["clean"]).ndim == 3]
    if not items:
        return None
    fig, axes = plt.subplots(3, len(items), figsize=(1.3 * len(items), 4.2), squeeze=False)
    name = (lambda k: classes[k]) if classes else str
    for j, g in enumerate(items):
        clean, adv = _image(g["clean"]), _image(g["adversarial"])
        delta = adv - clean
        scale = max(float(np.abs(delta).max()), 1e-12)
        grey = "gray" if clean.ndim == 2 else None
        axes[0, j].imshow(clean, cmap=grey, vmin=0, vmax=1)
        axes[0, j].set_title(f"{name(g['label'])}", fontsize=8)
        axes[1, j].imshow(np.clip(adv, 0, 1), cmap=grey, vmin=0, vmax=1)
        axes[1, j].set_title(f"→ {name(g['adversarial_prediction'])}", fontsize=8, color="tab:red")
        axes[2, j].imshow(delta if delta.ndim == 2 else 0.5 + delta / (2 * scale), cmap="seismic" if grey else None,
                          vmin=-scale if grey else None, vmax=scale if grey else None)
        axes[2, j].set_title(g.get("broken_by") or "", fontsize=7)
        for i in range(3):
            axes[i, j].axis("off")
    axes[0, 0].text(-0.3, 0.5, "clean", transform=axes[0, 0].transAxes, rotation=90, va="center", fontsize=8)
    axes[1, 0].text(-0.3, 0.5, "adversarial", transform=axes[1, 0].transAxes, rotation=90, va="center", fontsize=8)
    axes[2, 0].text(-0.3, 0.5, "perturbation", transform=axes[2, 0].transAxes, rotation=90, va="center", fontsize=8)
    return _png(fig)
