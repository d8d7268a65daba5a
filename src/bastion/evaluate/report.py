"""Reports of a stored run: JSON (schema ``bastion.report/1``) and Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bastion.evaluate.store import Run

SCHEMA = "bastion.report/1"


def report_dict(run: Run) -> dict[str, Any]:
    """The JSON report: schema tag, run identity, configuration, environment and summary."""
    return {
        "schema": SCHEMA,
        "run_id": run.id,
        "kind": run.kind,
        "status": run.status,
        "created": run.created,
        "finished": run.finished,
        "config": run.config,
        "environment": run.environment,
        "summary": run.summary,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def report_markdown(run: Run) -> str:
    c, s = run.config, run.summary or {}
    eps_name = {"linf": "L∞", "l2": "L2", "l1": "L1"}.get(c.get("norm", ""), c.get("norm", ""))
    median = s.get("median_norm_of_successes")
    lines = [
        f"# bastion evaluation `{run.id}`",
        "",
        f"Model **{c.get('model')}** on **{c.get('dataset')}** ({c.get('split')} split, first {s.get('n')} points); "
        f"threat model {eps_name} ε = {c.get('eps')}; attack **{c.get('attack')}** {json.dumps(c.get('params', {}))}"
        f"{' (targeted)' if c.get('targeted') else ''}; seed {c.get('seed')}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| clean accuracy | {_pct(s.get('clean_accuracy'))} |",
        f"| robust accuracy | {_pct(s.get('robust_accuracy'))} |",
        f"| attack success rate (on correctly classified points) | {_pct(s.get('attack_success_rate'))} |",
        f"| median {eps_name} norm of successful perturbations | {'n/a' if median is None else f'{median:.4f}'} |",
        f"| forward / backward passes | {s.get('forward_passes')} / {s.get('backward_passes')} |",
        f"| passes per point | {s.get('passes_per_point', 0):.1f} |",
        f"| attack wall time | {s.get('attack_seconds')} s |",
        "",
        "Robust accuracy counts a point as robust only if it is classified correctly and the attack, re-checked by "
        "the runner (projected onto the threat model and re-classified), did not break it. An attack gives an upper "
        "bound on true robust accuracy, not a guarantee.",
    ]
    if s.get("outside_threat"):
        lines.append(f"\n**Warning**: the attack returned {s['outside_threat']} examples outside the threat model; "
                     "the runner projected them back before re-checking.")
    env = run.environment
    lines += ["", f"bastion {env.get('bastion')}, torch {env.get('torch')}, Python {env.get('python')}, "
                  f"{env.get('platform')}, {env.get('threads')} threads."]
    return "\n".join(lines) + "\n"


def write_reports(run: Run, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    js, md = folder / "report.json", folder / "report.md"
    js.write_text(json.dumps(report_dict(run), indent=2, sort_keys=True) + "\n")
    md.write_text(report_markdown(run))
    return js, md
