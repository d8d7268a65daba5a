"""Reports of a certification run: JSON (``bastion.certify-report/1``), Markdown, and a PNG of the
certified-accuracy curve next to the empirical one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bastion.certification.job import REPORT_SCHEMA
from bastion.store import Run


def report_dict(run: Run) -> dict[str, Any]:
    return {"schema": REPORT_SCHEMA, "run_id": run.id, "kind": run.kind, "status": run.status,
            "created": run.created, "finished": run.finished, "config": run.config,
            "environment": run.environment, "summary": run.summary}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def report_markdown(run: Run) -> str:
    """The report section: setup, the table of both curves, abstentions, timing, and what the numbers mean."""
    c, s = run.config, run.summary or {}
    norm = {"linf": "L∞", "l2": "L2"}.get(s.get("norm", ""), s.get("norm", ""))
    how = {"smoothing": f"randomized smoothing (Cohen et al. 2019), sigma {c.get('sigma')}, n0 {c.get('n0')}, "
                        f"n {c.get('samples')}, alpha {c.get('alpha')}",
           "ibp": "interval bound propagation (Gowal et al. 2018)",
           "crown": f"{'CROWN-IBP' if c.get('bound') == 'crown-ibp' else 'CROWN'} linear bounds (Zhang et al.)",
           "lipschitz": "1-Lipschitz margin certificate (Tsuzuku et al. 2018)"}.get(c.get("method", ""), "?")
    attack = c.get("attack")
    noise = c.get("attack_noise")
    on_smoothed = f" on the smoothed classifier ({noise} noise draws)" if c.get("method") == "smoothing" else ""
    lines = [
        f"## Certification `{run.id}`",
        "",
        f"Model **{c.get('model')}** on **{c.get('dataset')}** ({c.get('split')} split, first {s.get('n')} points); "
        f"{how}; {norm} radii; empirical attack **{attack}** {json.dumps(c.get('attack_params', {}))}"
        f"{on_smoothed}"
        f"; seed {c.get('seed')}.",
        "",
        f"| {norm} radius | certified accuracy | empirical robust accuracy ({attack}) |",
        "|---|---|---|",
    ]
    cert, emp = s.get("certified_accuracy", {}), s.get("empirical_robust_accuracy", {})
    lines += [f"| {r} | {_pct(cert.get(r))} | {_pct(emp.get(r))} |" for r in cert]
    lines += [
        "",
        f"Clean accuracy {_pct(s.get('clean_accuracy'))}; abstentions {_pct(s.get('abstention_rate'))}; "
        f"mean certified radius {s.get('mean_certified_radius', 0):.3f}; "
        f"certification {s.get('certify_seconds')} s, attack {s.get('attack_seconds')} s.",
        "",
        "Certified accuracy counts a point when the method proves the correct class on the whole ball (for "
        "smoothing: with probability at least 1 - alpha); it is a lower bound on the true robust accuracy, and "
        "the attack's robust accuracy is an upper bound.",
    ]
    if s.get("violations"):
        lines.append(f"\n**Warning**: on points {s['violations']} the attack found an adversarial example "
                     "closer than the certified radius. For smoothing this can happen with probability alpha "
                     "per point (or by Monte Carlo error near the boundary); otherwise it is a bug.")
    env = run.environment
    lines += ["", f"bastion {env.get('bastion')}, torch {env.get('torch')}, Python {env.get('python')}, "
                  f"{env.get('platform')}, {env.get('threads')} threads."]
    return "\n".join(lines) + "\n"


def plot_curves(run: Run, path: Path) -> Path:
    """PNG: certified accuracy against radius, with the empirical robust accuracy of the same points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = run.summary or {}
    radii = [float(r) for r in s.get("certified_accuracy", {})]
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    ax.plot(radii, [100 * v for v in s["certified_accuracy"].values()], "o-",
            label=f"certified ({run.config.get('method')})")
    ax.plot(radii, [100 * v for v in s["empirical_robust_accuracy"].values()], "s--",
            label=f"empirical ({run.config.get('attack')})")
    ax.set_xlabel(f"{'L-inf' if s.get('norm') == 'linf' else 'L2'} radius")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{run.config.get('model')}: certified vs empirical", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_reports(run: Run, folder: Path) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    js, md, png = folder / "report.json", folder / "report.md", folder / "certified.png"
    js.write_text(json.dumps(report_dict(run), indent=2, sort_keys=True) + "\n")
    md.write_text(report_markdown(run))
    plot_curves(run, png)
    return js, md, png


def report_html(run: Run) -> str:
    """A self-contained page: the Markdown report and the two curves (embedded PNG)."""
    import base64
    import html
    import tempfile

    markdown = report_markdown(run)
    with tempfile.TemporaryDirectory(prefix="bastion-") as tmp:
        png = plot_curves(run, Path(tmp) / "curves.png").read_bytes()
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>bastion certification {run.id}</title>"
            f"</head><body><pre>{html.escape(markdown)}</pre><img alt='certified and empirical robust accuracy' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'></body></html>\n")
