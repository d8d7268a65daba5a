"""`bastion models`, `bastion attacks`, `bastion train`: the zoo, the attack registry, training."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from bastion.cli.common import console, friendly, progress_bar

models_app = typer.Typer(help="The model zoo.", no_args_is_help=True)
attacks_app = typer.Typer(help="Registered attacks.", no_args_is_help=True)


@models_app.command("list")
@friendly
def models_list() -> None:
    """List zoo models and architectures."""
    from bastion.zoo import ARCHITECTURES, MODELS

    table = Table("model", "data set", "description", title="Trained models")
    for name in MODELS:
        e = MODELS.get(name)
        table.add_row(name, e.dataset, e.description)
    console.print(table)
    arch = Table("architecture", "modality", "description", title="Architectures (bastion train --arch)")
    for name in ARCHITECTURES:
        a = ARCHITECTURES.get(name)
        arch.add_row(name, a.modality, a.description)
    console.print(arch)


@models_app.command("show")
@friendly
def models_show(name: str) -> None:
    """Show a zoo model's or checkpoint's metadata."""
    from dataclasses import asdict

    from bastion.zoo import load_model

    model, meta = load_model(name)
    params = sum(p.numel() for p in model.parameters())
    console.print_json(json.dumps(asdict(meta) | {"parameters": params}, default=str))


# attacks ----------------------------------------------------------------------------------------
@attacks_app.command("list")
@friendly
def attacks_list() -> None:
    """List registered attacks with their norms, goal, access and paper."""
    from bastion.attacks import ATTACKS

    table = Table("attack", "norms", "goal", "access", "paper")
    for name in ATTACKS:
        a = ATTACKS.get(name)
        table.add_row(name, ", ".join(a.norms), a.goal, a.access, a.paper)
    console.print(table)


# train ------------------------------------------------------------------------------------------
@friendly
def train(
    ctx: typer.Context,
    arch: str = typer.Option("cnn", help="architecture (bastion models list)"),
    dataset: str = typer.Option("mnist", help="data set (bastion data list)"),
    out: Path = typer.Option(..., help="checkpoint path stem: writes OUT.safetensors and OUT.json"),
    epochs: int = typer.Option(10, min=1),
    batch_size: int = typer.Option(128, min=1),
    lr: float = typer.Option(1e-3, min=0.0),
    patience: int = typer.Option(2, min=1, help="early stopping: epochs without validation improvement"),
    seed: int = 0,
    defense: str = typer.Option(None, help="train adversarially instead: pgd-at | fast-at | trades | mart | awp; "
                                           "every `bastion adv-train` option then applies"),
    recipe: Path = typer.Option(None, help="adversarial-training recipe YAML (as `bastion adv-train --recipe`)"),
) -> None:
    """Train a model normally (Adam, early stopping on validation accuracy) and save a checkpoint; with
    --defense or --recipe, train it adversarially (the same as `bastion adv-train`)."""
    if defense is not None or recipe is not None:
        raise typer.Exit(_adversarial(ctx))
    if ctx.args:
        raise typer.BadParameter(f"unknown option(s) {' '.join(ctx.args)}; options of `bastion adv-train` "
                                 "need --defense or --recipe")
    from bastion.zoo.train import TrainConfig, TrainEvent, train_and_save

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed)
    with progress_bar() as bar:
        task = bar.add_task(f"train {arch} on {dataset}", total=None, info="")

        def tick(e: TrainEvent) -> None:
            bar.update(task, total=e.batches, completed=e.batch + 1,
                       description=f"epoch {e.epoch + 1}/{epochs}", info=f"loss {e.loss:.3f}")

        _, meta = train_and_save(arch, dataset, out, config, on_batch=tick)
    m = meta.metrics
    console.print(f"test accuracy [bold]{100 * m['test_accuracy']:.2f}%[/] (best epoch {m['best_epoch'] + 1}, "
                  f"{m['train_seconds']} s) -> {out}.safetensors")


TRAIN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def _adversarial(ctx: typer.Context) -> int:
    """Hand `bastion train --defense/--recipe ...` to `bastion adv-train` with the options given on the command
    line (the standard-training defaults do not override the recipe)."""
    from bastion.cli.adv_train import adv_train

    args: list[str] = []
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if source is None or source.name != "COMMANDLINE":  # typer vendors its own click: compare by name
            continue
        if name == "patience":
            raise typer.BadParameter("--patience is for standard training; for adversarial training set "
                                     "`patience` in the recipe")
        args += [f"--{name.replace('_', '-')}", str(value)]
    sub = typer.Typer()
    sub.command()(adv_train)
    code = typer.main.get_command(sub).main(args=args + ctx.args, prog_name="bastion train", standalone_mode=False)
    return code if isinstance(code, int) else 0
