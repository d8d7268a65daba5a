"""`bastion ids evaluate | train | attack | list`: detectors and constraint-respecting attacks on flows (issue 23).
The commands join `bastion ids` (bastion.cli.ids, where `generate` lives)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from bastion.cli.common import STORE, console, friendly, parse_params, progress_bar
from bastion.cli.ids import ids_app

DATA = typer.Option("snapshot", "--data", help="'snapshot' (the shipped generated flows) or a CSV of flows "
                                               "(bastion, CIC-IDS2017/2018, NSL-KDD, UNSW-NB15)")
NONFINITE = typer.Option("error", "--nonfinite", help="NaN/inf cells (real CIC files have them): error, drop or zero")
EXTRA = typer.Option("error", "--extra", help="columns outside bastion's CIC layout: error, or drop them")


@ids_app.command("evaluate")
@friendly
def evaluate_cmd(
    config: str = typer.Argument("snapshot", help="IDS evaluation YAML, or a built-in preset: snapshot"),
    quick: bool = typer.Option(False, "--quick", help="the preset's quick variant"),
    data: str | None = typer.Option(None, "--data", help="flows instead of the config's (a CSV, or 'snapshot')"),
    nonfinite: str | None = typer.Option(None, "--nonfinite", help="NaN/inf cells: error, drop or zero"),
    extra: str | None = typer.Option(None, "--extra", help="columns outside bastion's CIC layout: error or drop"),
    eps: float | None = typer.Option(None, help="the budget in the scaled space instead of the config's"),
    constraints: str | None = typer.Option(None, help="a constraint file (YAML, docs/IDS.md)"),
    store: str | None = STORE,
    workdir: Path | None = typer.Option(None, help="where detectors and adversarial flows are kept (default: in the "
                                                   "store's home, ids/)"),
    out: Path | None = typer.Option(None, help="report folder (default: the work folder's NAME/report)"),
) -> None:
    """Train every detector, run every attack against every detector on the attack flows it catches, and report per
    attack and class the success rate next to the valid rate (flows that satisfy every constraint). Finished runs are
    reused, so a killed evaluation resumes."""
    from bastion.ids.config import load_ids, parse_ids
    from bastion.ids.job import run_ids
    from bastion.ids.report import write_outputs
    from bastion.store import Store

    cfg = load_ids(config, quick=quick)
    changes = {k: v for k, v in (("data", data), ("nonfinite", nonfinite), ("extra", extra), ("eps", eps),
                                 ("constraints", constraints)) if v is not None}
    if changes:
        cfg = parse_ids({**cfg.model_dump(mode="json"), **changes}, config)
    st = Store(store)
    root = workdir or st.home / "ids"
    started = time.perf_counter()
    console.print(f"[bold]{cfg.name}[/]: {len(cfg.detectors)} detectors x {len(cfg.attacks)} attacks on {cfg.data}, "
                  f"{cfg.norm} eps {cfg.eps:g}; work folder {root}")
    with progress_bar() as bar:
        task = bar.add_task("ids", total=len(cfg.detectors) * (1 + len(cfg.attacks)), info="")

        def tick(message: str) -> None:
            bar.advance(task)
            bar.update(task, info=message)

        run_id = run_ids(cfg, st, root, progress=tick)
    paths = write_outputs(st, run_id, out or root / cfg.name / "report")
    _print(st.get_run(run_id).summary or {})
    console.print(f"ids run {run_id} in {time.perf_counter() - started:.0f} s; report: {paths['html']}")


def _print(summary: dict) -> None:
    from rich.table import Table

    from bastion.ids.report import attack_table, class_table, detector_table

    for title, (headers, rows) in (("detectors (test split)", detector_table(summary)),
                                   ("attacks: success, validity, valid success", attack_table(summary)),
                                   ("per class: valid success (the report has success and validity)",
                                    class_table(summary, compact=True))):
        table = Table(*headers, title=title)
        for r in rows:
            table.add_row(*r)
        console.print(table)


@ids_app.command("train")
@friendly
def train_cmd(
    out: Path = typer.Option(..., "--out", help="where to write the detector (NAME.safetensors + NAME.json)"),
    detector: str = typer.Option("mlp", "--detector", help="a detector (`bastion ids list`)"),
    data: str = DATA,
    nonfinite: str = NONFINITE,
    extra: str = EXTRA,
    labels: str = typer.Option("binary", help="binary (benign vs attack) or multiclass"),
    epochs: int = typer.Option(20, help="training epochs"),
    seed: int = typer.Option(0, help="seed of the split and the training"),
    param: list[str] = typer.Option([], "-p", help="detector parameter KEY=VALUE (repeatable)"),
) -> None:
    """Train one detector on the training split and save it; prints its clean detection per class on the test split."""
    from bastion.ids.config import IdsConfig, parse_ids
    from bastion.ids.job import clean_metrics, train_entry, world_of
    from bastion.ids.models.io import save_detector

    cfg: IdsConfig = parse_ids({"data": data, "nonfinite": nonfinite, "extra": extra, "labels": labels, "seed": seed,
                                "detectors": [{"name": detector, "params": parse_params(param)}],
                                "training": {"epochs": epochs}, "attacks": [{"name": "pgd"}]})
    world = world_of(cfg)
    with console.status(f"training {detector} on {len(world.train)} flows"):
        model = train_entry(cfg, cfg.detectors[0], world)
    path = save_detector(model, out, columns=world.table.columns, classes=world.labels,
                         extra={"data": data, "seed": seed, "labels": labels})
    metrics = clean_metrics(model, world)
    console.print(f"{detector}: accuracy {metrics['accuracy']:.3f}, detection rate {metrics['detection_rate']:.3f}, "
                  f"false-positive rate {metrics['false_positive_rate']:.4f}; saved {path}")
    for name, rate in metrics["detection_per_class"].items():
        console.print(f"  {name}: {100 * rate:.1f}% detected")


@ids_app.command("attack")
@friendly
def attack_cmd(
    detector: Path = typer.Option(..., "--detector", help="a detector saved by `bastion ids train`"),
    attack: str = typer.Option("capgd", "--attack", help="an attack (`bastion ids list`)"),
    data: str = DATA,
    nonfinite: str = NONFINITE,
    extra: str = EXTRA,
    eps: float = typer.Option(0.1, help="the budget in the scaled space (a feature's range is 1)"),
    norm: str = typer.Option("linf", help="linf or l2"),
    constraints: str | None = typer.Option(None, help="a constraint file (YAML, docs/IDS.md)"),
    per_class: int = typer.Option(100, help="test-split attack flows per class"),
    seed: int = typer.Option(0, help="seed of the split (use the detector's) and of the attack"),
    param: list[str] = typer.Option([], "-p", help="attack parameter KEY=VALUE (repeatable)"),
    out: Path | None = typer.Option(None, "--out", help="write the adversarial flows here (.npz)"),
    store: str | None = STORE,
) -> None:
    """Attack a saved detector on the test split's attack flows it catches; prints success, validity and valid
    success per class and stores the run (`bastion runs show RUN_ID`)."""
    import hashlib

    import numpy as np

    from bastion.errors import InvalidInputError
    from bastion.ids.config import parse_ids
    from bastion.ids.evasion import evade
    from bastion.ids.job import ATTACK_KIND, attack_rows, evasion_summary, run_environment, with_reference, world_of
    from bastion.ids.models.io import load_detector
    from bastion.store import Store

    model, meta = load_detector(detector)
    labels = "multiclass" if len(meta.get("classes", [])) > 2 else "binary"
    cfg = parse_ids({"data": data, "nonfinite": nonfinite, "extra": extra, "labels": labels, "seed": seed,
                     "eps": eps, "norm": norm, "constraints": constraints, "attacks": [{"name": attack}],
                     "per_class": per_class})
    world = world_of(cfg)
    if meta.get("columns") and tuple(meta["columns"]) != world.table.columns:
        raise InvalidInputError(f"{detector} was trained on other columns than {data} has; train it on this data "
                                "(bastion ids train).")
    index = attack_rows(cfg, world)
    with console.status(f"{attack} on {len(index)} attack flows"):
        params = with_reference(cfg.attacks[0].model_copy(update={"params": parse_params(param)}), world)
        result = evade(model, world.rows(index), world.table.labels[index], world.threat, attack, params, seed=seed)
    overall = result.rates()
    console.print(f"{attack} ({result.route}): {overall['attacked']} caught flows attacked; success "
                  f"{100 * overall['success_rate']:.1f}%, valid {100 * overall['valid_rate']:.1f}%, valid success "
                  f"{100 * overall['valid_success_rate']:.1f}% in {result.seconds:.1f} s")
    for name, r in result.per_class().items():
        console.print(f"  {name}: {r['attacked']} attacked, valid success {100 * r['valid_success_rate']:.1f}%")
    weights = hashlib.sha256(Path(detector).with_suffix(".safetensors").read_bytes()).hexdigest()[:12]
    st = Store(store)
    run_id = st.create_run(ATTACK_KIND, f"cli-{weights}-{attack}-{eps}-{norm}-{seed}",
                           {"detector": str(detector), "attack": {"name": attack, "params": parse_params(param)},
                            **cfg.model_dump(mode="json", include={"data", "eps", "norm", "constraints", "per_class"})},
                           seed, run_environment())
    st.finish_run(run_id, evasion_summary(result, world, Path(detector).stem, attack, len(index)))
    console.print(f"ids-attack run {run_id}")
    if out is not None:
        np.savez_compressed(out, clean=result.clean.numpy(), adversarial=result.adversarial.numpy(),
                            classes=result.classes.astype(str), columns=np.array(world.table.columns))
        console.print(f"adversarial flows: {out}")


@ids_app.command("list")
def list_cmd() -> None:
    """The detectors, the attacks that run on flows, and the built-in evaluation presets."""
    from rich.table import Table

    from bastion.attacks import ATTACKS
    from bastion.ids.config import preset_names
    from bastion.ids.models import factory

    IDS_MODELS = factory.IDS_MODELS

    t = Table("detector", "gradients", "paper", "description", title="detectors")
    for name in IDS_MODELS:
        s = IDS_MODELS.get(name)
        t.add_row(name, "yes" if s.differentiable else "no (attacked as a black box)", s.paper, s.description)
    console.print(t)
    a = Table("attack", "constraints", "access", "paper", title="attacks on flows")
    for name in ATTACKS:
        s = ATTACKS.get(name)
        if "tabular" in s.threats:
            a.add_row(name, "respected", s.access, s.paper)
    for name in ("pgd", "fgsm", "apgd-ce"):
        if name in ATTACKS:
            a.add_row(name, "ignored (runs on the scaled vector; its flows are checked)", "white-box",
                      ATTACKS.get(name).paper)
    console.print(a)
    console.print(f"presets: {', '.join(preset_names())}")
