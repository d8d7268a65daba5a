"""The comparison table: rows computed from the stored runs, rendered as Markdown, HTML and plots.

Every number in a row is read from one stored run (its id is kept next to the number), so the table can be
re-derived from the store at any time. The columns follow the layout of the usual defense-family table
(defense, effectiveness, cost, generalization, limitations) with measured values instead of words:

* effectiveness: robust accuracy under the adaptive evaluation at the trained-for threat, the non-adaptive
  number next to it, and their gap (how much an evaluation that does not adapt would overstate it);
* cost: training wall time as a multiple of standard training, inference latency as a multiple of the bare
  model, and the seconds the evaluation's attacks took;
* generalization: robust accuracy under the threat models and attack families it was not trained for;
* clean price: clean accuracy and its drop against standard training; certified accuracy where certified;
* limitations: written from the measurements (thresholds below), never by hand.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from bastion.compare.config import CompareConfig
from bastion.store import Store

GAP_BYPASS = 0.05  # adaptive evaluation lowers robust accuracy by 5 points or more: "bypassed by adaptive attacks"
CLEAN_PRICE = 0.02  # clean accuracy drops by 2 points or more
LATENCY_HEAVY = 3.0
TRAIN_HEAVY = 5.0


def _summary(store: Store, run_id: str | None) -> dict[str, Any]:
    if run_id is None:
        return {}
    return store.get_run(run_id).summary or {}


def _train_seconds(config: CompareConfig, builds: dict[str, dict[str, Any]], name: str) -> float:
    """A defense's whole training cost: its own, its base's and its members' (each counted once)."""
    seen: set[str] = set()

    def visit(n: str) -> float:
        if n in seen:
            return 0.0
        seen.add(n)
        entry, rec = config.entry(n), builds[n]
        own = rec.get("train_seconds", 0.0) + rec.get("build_seconds", 0.0)
        below = [*([entry.base or config.baseline().name] if entry.kind == "inference" else []), *entry.members]
        return own + sum(visit(b) for b in below)

    return visit(name)


def summarize(config: CompareConfig, store: Store, result: Any) -> dict[str, Any]:
    """The comparison's summary: one row per defense plus the settings, every number with its run id."""
    builds = {name: _summary(store, rid) for name, rid in result.builds.items()}
    by_defense: dict[str, list[tuple[Any, str]]] = {}
    for job, rid in result.measurements:
        by_defense.setdefault(job.defense, []).append((job, rid))
    base_name = config.baseline().name
    base_train = _train_seconds(config, builds, base_name)
    rows = [_row(config, store, d.name, by_defense.get(d.name, []), builds, base_train) | {
        "runs": {"build": result.builds[d.name]}} for d in config.defenses]
    for row, d in zip(rows, config.defenses, strict=True):
        row["runs"] |= {job.role: rid for job, rid in by_defense.get(d.name, [])
                        if job.role in ("main", "non-adaptive", "certify")}
    base_clean = next(r["clean_accuracy"] for r in rows if r["defense"] == base_name)
    for r in rows:
        r["clean_drop"] = base_clean - r["clean_accuracy"]
        r["limitations"] = limitations(r)
    return {"schema": "bastion.compare/1", "name": config.name, "dataset": config.dataset, "arch": config.arch,
            "threat": config.threat.label(), "n": config.eval.n, "suite": config.eval.suite,
            "baseline": base_name, "rows": rows}


def _row(config: CompareConfig, store: Store, name: str, jobs: list[tuple[Any, str]],
         builds: dict[str, dict[str, Any]], base_train: float) -> dict[str, Any]:
    entry, build = config.entry(name), builds[name]
    runs = {job.role: (job, rid) for job, rid in jobs if job.role in ("main", "non-adaptive", "certify")}
    by_run = {rid: _summary(store, rid) for _, rid in jobs}
    summaries = list(by_run.values())
    main = by_run[runs["main"][1]] if "main" in runs else {}
    naive = by_run[runs["non-adaptive"][1]] if "non-adaptive" in runs else {}
    train = _train_seconds(config, builds, name)
    row: dict[str, Any] = {
        "defense": name, "method": entry.method, "kind": entry.kind, "n": main.get("n"),
        "clean_accuracy": main.get("clean_accuracy"),
        "robust_adaptive": main.get("robust_accuracy"), "robust_non_adaptive": naive.get("robust_accuracy"),
        "flags": sorted(set(main.get("flags_fired", []))),
        "adaptation": main.get("adaptation_notes", []),
        "train_seconds": train, "train_multiple": train / base_train if base_train > 0 else None,
        "latency_multiple": build.get("latency_multiple"),
        "eval_seconds": sum(s.get("attack_seconds", 0.0) + s.get("certify_seconds", 0.0) for s in summaries),
        "eval_passes": sum(_passes(s) for s in summaries),
    }
    row["gap"] = (row["robust_non_adaptive"] - row["robust_adaptive"]
                  if row["robust_non_adaptive"] is not None and row["robust_adaptive"] is not None else None)
    row["generalization"] = [{"threat": job.label, "robust": by_run[rid].get("robust_accuracy"),
                              "black_box": bool(job.config.get("attack")), "run": rid}
                             for job, rid in jobs if job.role == "general"]
    row["curve"] = sorted(
        [{"eps": job.config["eps"], "robust": by_run[rid].get("robust_accuracy"), "run": rid}
         for job, rid in jobs if job.role in ("main", "curve")
         or (job.role == "general" and job.config["norm"] == config.threat.norm and not job.config.get("attack"))],
        key=lambda p: p["eps"])
    if "certify" in runs:
        job, rid = runs["certify"]
        s = by_run[rid]
        row["certified"] = {"threat": job.label, "accuracy": s.get("certified_accuracy_at_eps"),
                            "clean": s.get("certified_clean_accuracy"), "abstention": s.get("abstention_rate"),
                            "run": rid}
    else:
        row["certified"] = None
    return row


def _passes(s: dict[str, Any]) -> int:
    return int(s.get("forward_passes", 0) + s.get("backward_passes", 0) + s.get("certify_forward_passes", 0)
               + s.get("attack_passes", 0))


def limitations(row: dict[str, Any]) -> list[str]:
    """Plain-language limits, each derived from a measured number of the row."""
    out = []
    if row["gap"] is not None and row["gap"] >= GAP_BYPASS:
        out.append(f"bypassed by adaptive attacks (-{100 * row['gap']:.0f} points)")
    gen = [g for g in row["generalization"] if g["robust"] is not None]
    if gen and row["robust_adaptive"] is not None:
        worst = min(gen, key=lambda g: g["robust"])
        if worst["robust"] < row["robust_adaptive"] - 0.2:
            out.append(f"does not carry over to {worst['threat']} ({100 * worst['robust']:.0f}%)")
        black = [g for g in gen if g["black_box"] and g["robust"] < row["robust_adaptive"] - 0.01]
        if black:
            g = min(black, key=lambda g: g["robust"])
            out.append(f"black-box {g['threat']} leaves {100 * g['robust']:.1f}%, below the white-box suite's "
                       f"{100 * row['robust_adaptive']:.1f}%: gradient masking, or points the suite misses")
    if row.get("clean_drop") is not None and row["clean_drop"] >= CLEAN_PRICE:
        out.append(f"costs {100 * row['clean_drop']:.1f} points of clean accuracy")
    if row["latency_multiple"] is not None and row["latency_multiple"] >= LATENCY_HEAVY:
        out.append(f"inference {row['latency_multiple']:.0f}x slower")
    if row["train_multiple"] is not None and row["train_multiple"] >= TRAIN_HEAVY:
        out.append(f"training {row['train_multiple']:.0f}x standard")
    masking = {"randomness", "shattered_gradients", "vanishing_gradients", "non_differentiable_modules"}
    fired = sorted(masking & set(row["flags"]))
    if fired:
        out.append(f"needs adaptive evaluation ({', '.join(fired)})")
    if row["robust_adaptive"] is not None and row["robust_adaptive"] < 0.05:
        out.append("no robustness at the trained-for threat")
    return out


# rendering ----------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _link(text: str, run_id: str | None, fmt: str) -> str:
    if run_id is None:
        return text
    href = f"runs/{run_id}/" + ("report.html" if fmt == "html" else "report.md")
    return f'<a href="{href}">{html.escape(text)}</a>' if fmt == "html" else f"[{text}]({href})"


def _cells(row: dict[str, Any], fmt: str) -> list[str]:
    r = row["runs"]
    eff = (f"{_link(_pct(row['robust_adaptive']), r.get('main'), fmt)} adaptive / "
           f"{_link(_pct(row['robust_non_adaptive']), r.get('non-adaptive'), fmt)} non-adaptive")
    if row["gap"] is not None:
        eff += f" (gap {100 * row['gap']:.1f})"
    train = "-" if row["train_multiple"] is None else f"{row['train_multiple']:.1f}x"
    lat = "-" if row["latency_multiple"] is None else f"{row['latency_multiple']:.1f}x"
    cost = (f"train {_link(train, r.get('build'), fmt)}, inference {_link(lat, r.get('build'), fmt)}, "
            f"eval {row['eval_seconds']:.0f} s")
    gen = ", ".join(f"{g['threat']}: {_link(_pct(g['robust']), g['run'], fmt)}" for g in row["generalization"]) or "-"
    clean = f"{_link(_pct(row['clean_accuracy']), r.get('main'), fmt)} ({-100 * row['clean_drop']:+.1f})"
    cert = "-"
    if row["certified"]:
        c = row["certified"]
        cert = f"{_link(_pct(c['accuracy']), c['run'], fmt)} at {c['threat']}"
    lim = "; ".join(row["limitations"]) or "-"
    return [row["defense"], eff, cost, gen, clean, cert, lim]


HEADERS = ["defense", "effectiveness (robust accuracy at the trained-for threat)", "cost", "generalization",
           "clean accuracy (change)", "certified", "limitations (measured)"]


def markdown(summary: dict[str, Any], run_id: str) -> str:
    lines = [f"# Defense comparison: {summary['name']}", "",
             f"Data set {summary['dataset']}, base architecture {summary['arch']}, trained-for threat "
             f"{summary['threat']}, {summary['n']} test points, `{summary['suite']}` suite. Stored as run "
             f"`{run_id}`; every number links to the run it came from. Costs are multiples of "
             f"`{summary['baseline']}` (standard training, bare model).", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(row, "md")) + " |" for row in summary["rows"]]
    lines += ["", "![robust vs clean accuracy](robust_vs_clean.png)", "",
              "![robust accuracy vs eps](robust_vs_eps.png)", ""]
    return "\n".join(lines)


def html_page(summary: dict[str, Any], run_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in _cells(row, "html")) + "</tr>"
                   for row in summary["rows"])
    title = f"Defense comparison: {html.escape(summary['name'])}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px;vertical-align:top}th{background:#eee}</style></head><body>"
            f"<h1>{title}</h1><p>Data set {html.escape(summary['dataset'])}, base architecture "
            f"{html.escape(summary['arch'])}, trained-for threat {html.escape(summary['threat'])}, {summary['n']} "
            f"test points, {html.escape(summary['suite'])} suite; run {html.escape(run_id)}.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            "<img src='robust_vs_clean.png' alt='robust vs clean accuracy'>"
            "<img src='robust_vs_eps.png' alt='robust accuracy vs eps'></body></html>")


def plot_tradeoff(summary: dict[str, Any], path: Path) -> Path:
    """Robust (adaptive) vs clean accuracy; marker area grows with the training-cost multiple."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    names: dict[tuple[float, float], list[str]] = {}  # one label per spot: defenses on the same point share it
    for row in summary["rows"]:
        if row["clean_accuracy"] is None or row["robust_adaptive"] is None:
            continue
        xy = (round(100 * row["clean_accuracy"], 1), round(100 * row["robust_adaptive"], 1))
        size = 40 * max(row["train_multiple"] or 1.0, 0.2)
        ax.scatter(*xy, s=size, alpha=0.6)
        names.setdefault(xy, []).append(row["defense"])
    _label_without_overlap(ax, {xy: ", ".join(d) for xy, d in names.items()})
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"robust accuracy, adaptive, {summary['threat']} (%)")
    ax.set_title("Robust vs clean accuracy (marker area: training cost)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label_without_overlap(ax: Any, labels: dict[tuple[float, float], str]) -> None:
    """Annotate each point; a label whose point is close to an already labelled one moves up a line per neighbour."""
    if not labels:
        return
    xs, ys = [x for x, _ in labels], [y for _, y in labels]
    near_x = max(max(xs) - min(xs), 1.0) / 8
    near_y = max(max(ys) - min(ys), 1.0) / 20
    placed: list[tuple[float, float]] = []
    for (x, y), text in sorted(labels.items()):
        lines = sum(abs(x - px) < near_x and abs(y - py) < near_y for px, py in placed)
        ax.annotate(text, (x, y), xytext=(4, 4 + 11 * lines), textcoords="offset points", fontsize=8)
        placed.append((x, y))


def plot_curves(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for row in summary["rows"]:
        pts = [p for p in row["curve"] if p["robust"] is not None]
        if pts:
            ax.plot([p["eps"] for p in pts], [100 * p["robust"] for p in pts], marker="o", label=row["defense"])
    ax.set_xlabel(f"eps ({summary['threat'].split()[0]})")
    ax.set_ylabel("robust accuracy, adaptive (%)")
    ax.set_title("Robust accuracy vs eps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(store: Store, run_id: str, folder: Path) -> dict[str, Path]:
    """The table (md, html, json), both plots, and a report (md, json, html) of every run a cell links to.

    The linked reports are the text reports (fast to write for ~100 runs); ``bastion report RUN_ID`` renders
    any of them with its plots and gallery."""
    import json

    summary = store.get_run(run_id).summary or {}
    folder.mkdir(parents=True, exist_ok=True)
    linked = {rid for row in summary["rows"] for rid in row["runs"].values() if rid is not None}
    linked |= {g["run"] for row in summary["rows"] for g in row["generalization"] + row["curve"]}
    for rid in sorted(linked):
        _write_run_report(store, rid, folder / "runs" / rid)
    paths = {"markdown": folder / "compare.md", "html": folder / "compare.html", "json": folder / "compare.json"}
    paths["markdown"].write_text(markdown(summary, run_id))
    paths["html"].write_text(html_page(summary, run_id))
    paths["json"].write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    paths["tradeoff"] = plot_tradeoff(summary, folder / "robust_vs_clean.png")
    paths["curves"] = plot_curves(summary, folder / "robust_vs_eps.png")
    return paths


def _write_run_report(store: Store, rid: str, target: Path) -> None:
    import json

    from bastion.certification.report import report_markdown as certify_markdown
    from bastion.evaluation.report import report_dict, report_markdown

    run = store.get_run(rid)
    target.mkdir(parents=True, exist_ok=True)
    if run.kind == "evaluate":
        md = report_markdown(run)
    elif run.kind == "certify":
        md = certify_markdown(run)
    else:
        md = f"# Build record {rid}\n\n```json\n{json.dumps(run.summary, indent=2)}\n```\n"
    (target / "report.md").write_text(md)
    (target / "report.json").write_text(json.dumps(report_dict(run), indent=2, sort_keys=True, default=str) + "\n")
    (target / "report.html").write_text(_md_page(md, rid))


def _md_page(md: str, rid: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>run {html.escape(rid)}</title></head><body>"
            f"<p>Run {html.escape(rid)}; <code>bastion report {html.escape(rid)}</code> renders it with plots.</p>"
            f"<pre>{html.escape(md)}</pre></body></html>")
