"""Reports of a stored run: JSON (schema ``bastion.report/2``, see docs/REPORT_SCHEMA.md), Markdown, and a
self-contained HTML page with the figures embedded."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from bastion.store import Run, Store

SCHEMA = "bastion.report/2"
NORM_NAMES = {"linf": "L∞", "l2": "L2", "l1": "L1"}
EXPLAIN = ("A point counts as robust only if it is classified correctly and no attack, re-checked by the runner "
           "(projected onto the threat model and re-classified), broke it. Attacks give an upper bound on true "
           "robust accuracy, not a guarantee.")


def report_dict(run: Run, store: Store | None = None) -> dict[str, Any]:
    """The JSON report: schema tag, run identity, configuration, environment, summary, gallery."""
    out = {
        "schema": SCHEMA, "run_id": run.id, "kind": run.kind, "status": run.status, "created": run.created,
        "finished": run.finished, "config": run.config, "environment": run.environment, "summary": run.summary,
    }
    if store is not None:
        out["gallery"] = store.get_artifact(run.id, "gallery") or []
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


SUCCESS = {False: "attack success rate (on correctly classified points)",
           True: "targeted success rate (reached the target, of correctly classified points)"}


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _headline(run: Run, *, markdown: bool = True) -> str:
    """One sentence on what was run; ``markdown``: the user's names with their Markdown characters escaped (the
    HTML page escapes the plain text for HTML instead)."""
    c, s = run.config, run.summary or {}
    text = _md if markdown else str
    what = f"the **{c.get('suite')}** attack suite" if c.get("suite") else \
        f"attack **{c.get('attack')}** {json.dumps(c.get('params', {}))}"
    if c.get("targeted"):
        what += f", **targeted** ({c.get('targets', 'random')} target classes)"
    where = f"**{text(c['data'])}** (first {s.get('n')} points)" if c.get("data") else \
        f"**{text(c.get('dataset'))}** ({c.get('split')} split, first {s.get('n')} points)"
    norm = NORM_NAMES.get(c.get("norm", ""), c.get("norm"))
    return (f"Model **{text(c.get('model'))}** on {where}; threat model {norm} ε = {c.get('eps')}; {what}; "
            f"seed {c.get('seed')}.")


def _md(text: object) -> str:
    """A user's string (a model or file name) as literal Markdown text: its markup characters escaped."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|])", r"\\\1", str(text))


def _stage_rows(s: dict[str, Any]) -> list[str]:
    rows = ["| stage | role | attacked | broken first | robust accuracy after it alone | forward / backward | "
            "wall time | peak memory it added |", "|---|---|---|---|---|---|---|---|"]
    for part, st in s.get("stages", {}).items():
        mem = st.get("peak_rss_mb")
        rows.append(f"| {part} | {st['role']} | {st['attacked']} | {s['first_broken_by'].get(part, 0)} | "
                    f"{_pct(st['robust_accuracy'])} | {st['forward_passes']} / {st['backward_passes']} | "
                    f"{st['seconds']:.2f} s | {'n/a' if mem is None else f'{mem:.0f} MB'} |")
    return rows


def report_markdown(run: Run) -> str:
    s = run.summary or {}
    lines = [f"# bastion evaluation `{run.id}`", "", _headline(run), "",
             "| metric | value |", "|---|---|",
             f"| clean accuracy | {_pct(s.get('clean_accuracy'))} |",
             f"| **robust accuracy** | **{_pct(s.get('robust_accuracy'))}** |",
             f"| {SUCCESS[bool(s.get('targeted'))]} | {_pct(s.get('attack_success_rate'))} |",
             f"| median norm of successful perturbations | {_num(s.get('median_norm_of_successes'))} |",
             f"| forward / backward passes | {s.get('forward_passes')} / {s.get('backward_passes')} |",
             *([f"| queries sent to the endpoint (clean check, attack, re-check, retries) | "
                f"{s['remote_queries']} |"] if "remote_queries" in s else []),
             f"| passes per point | {s.get('passes_per_point', 0):.1f} |",
             f"| attack wall time | {s.get('attack_seconds')} s |", ""]
    if s.get("mode") == "suite":
        lines += ["## Attack stages", "", *_stage_rows(s), ""]
        fired = [f for f in s.get("flags", []) if f["fired"]]
        lines += ["## Gradient-masking diagnostics", ""]
        lines += [f"- **{f['name']}**: {f['evidence']}" for f in fired] or ["No flag fired."]
        silent = ", ".join(f["name"] for f in s.get("flags", []) if not f["fired"])
        lines += ["", "Checks that stayed silent: " + silent]
        if s.get("adaptation_notes"):
            lines += ["", "## Adaptive switches", "", *[f"- {n}" for n in s["adaptation_notes"]]]
        curve = s.get("curve") or {}
        if curve:
            picks = [i for i in range(0, len(curve["eps"]), max(len(curve["eps"]) // 8, 1))]
            title = f"## Robust accuracy vs ε (smallest known adversarial norm of {curve.get('points')} points)"
            lines += ["", title, "",
                      "| ε | " + " | ".join(f"{curve['eps'][i]:.3g}" for i in picks) + " |",
                      "|---|" + "---|" * len(picks),
                      "| robust accuracy | " + " | ".join(_pct(curve["robust_accuracy"][i]) for i in picks) + " |"]
    if s.get("outside_threat"):
        lines.append(f"\n**Warning**: attacks returned {s['outside_threat']} examples outside the threat model; "
                     "the runner projected them back before re-checking.")
    env = run.environment
    lines += ["", EXPLAIN, "", f"bastion {env.get('bastion')}, torch {env.get('torch')}, Python {env.get('python')}, "
              f"{env.get('platform')}, {env.get('device', 'cpu')}, {env.get('threads')} threads."]
    return "\n".join(lines) + "\n"


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _md_table_to_html(lines: list[str]) -> str:
    rows = [line.strip("|").split("|") for line in lines if line.startswith("|") and not line.startswith("|---")]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip()).replace('**', '')}</td>" for c in r) + "</tr>"
                   for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_html(run: Run, store: Store | None = None, *, gallery: list[dict[str, Any]] | None = None) -> str:
    """A single self-contained page: numbers, flags, figures (embedded PNGs), gallery (from ``store``, or given)."""
    from bastion.evaluation import plots

    s = run.summary or {}
    md = report_markdown(run).splitlines()
    headline = html.escape(_headline(run, markdown=False).replace("**", ""))
    metrics = _md_table_to_html([ln for ln in md[4:14] if ln.startswith("|")])
    parts = [f"<h1>bastion evaluation <code>{html.escape(run.id)}</code></h1>", f"<p>{headline}</p>", metrics]
    if s.get("mode") == "suite":
        flags = "".join(
            f'<li class="{"fired" if f["fired"] else "ok"}"><b>{html.escape(f["name"])}</b>: '
            f'{html.escape(f["evidence"])}</li>' for f in s.get("flags", []))
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in s.get("adaptation_notes", [])) or "<li>none needed</li>"
        parts += ["<h2>Diagnostics</h2>", f"<ul>{flags}</ul>", "<h2>Adaptive switches</h2>", f"<ul>{notes}</ul>",
                  "<h2>Robust accuracy vs ε</h2>", _img(plots.curve_png(s, run.config), "robust accuracy vs eps"),
                  "<h2>Attack stages</h2>", _md_table_to_html(_stage_rows(s)),
                  _img(plots.contributions_png(s), "contribution of each attack")]
        if gallery is None and store is not None:
            gallery = store.get_artifact(run.id, "gallery")
        if gallery:
            classes = _classes(run.config.get("dataset"))
            png = plots.gallery_png(gallery, classes)
            parts += ["<h2>Examples</h2>", _img(png, "clean, adversarial, perturbation")]
    parts += [f"<p class=note>{html.escape(EXPLAIN)}</p>", f"<p class=note>{html.escape(md[-1])}</p>"]
    style = ("body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
             "li.fired{color:#b00020}li.ok{color:#2e7d32}img{max-width:100%}.note{color:#555;font-size:13px}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>bastion {html.escape(run.id)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _classes(dataset: str | None) -> list[str] | None:
    from bastion.data import DATASETS

    return list(DATASETS.get(dataset).spec.classes) if dataset in DATASETS else None


def write_reports(run: Run, folder: Path, store: Store | None = None) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "markdown": folder / "report.md", "html": folder / "report.html"}
    paths["json"].write_text(json.dumps(report_dict(run, store), indent=2, sort_keys=True) + "\n")
    paths["markdown"].write_text(report_markdown(run))
    paths["html"].write_text(report_html(run, store))
    return paths
