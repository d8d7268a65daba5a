"""`bastion adv-train`: adversarial training from a recipe (YAML) or options, optionally data-parallel."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from bastion.cli.common import console, err, friendly, progress_bar


@friendly
def adv_train(
    out: Path = typer.Option(..., help="checkpoint stem: writes OUT.safetensors, OUT.json, OUT.png, OUT.state.pt"),
    defense: str = typer.Option(None, help="pgd-at | fast-at | trades | mart | awp (overrides the recipe)"),
    recipe: Path = typer.Option(None, help="recipe YAML (docs/recipes/*.yaml); options below override it"),
    dataset: str = typer.Option(None, help="data set (bastion data list)"),
    arch: str = typer.Option(None, help="architecture (bastion models list)"),
    eps: float = typer.Option(None, min=0.0, help="L-inf/L2 radius"),
    epochs: int = typer.Option(None, min=1),
    batch_size: int = typer.Option(None, min=1, help="global batch size (split across --nproc ranks)"),
    lr: float = typer.Option(None, min=0.0),
    schedule: str = typer.Option(None, help="fixed | auto (eps curriculum + early-stopped PGD)"),
    ema_decay: float = typer.Option(None, help="average the weights (e.g. 0.995)"),
    swa_start: int = typer.Option(None, min=0, help="SWA instead of EMA: average the weights of every epoch from "
                                                    "this one on (counted from 0)"),
    swa_lr: float = typer.Option(None, min=0.0, help="SWA: constant learning rate from --swa-start on"),
    seed: int = typer.Option(None),
    train_subset: int = typer.Option(None, min=1, help="train on the first N training points only"),
    resume: bool = typer.Option(True, help="continue from OUT.state.pt if present"),
    threads: int = typer.Option(1, min=1, help="torch CPU threads per process"),
    nproc: int = typer.Option(1, min=1, help="data-parallel processes on this node (spawns torchrun)"),
    nnodes: int = typer.Option(1, min=1, help="nodes (multi-node needs --rdzv-endpoint)"),
    rdzv_endpoint: str = typer.Option(None, help="HOST:PORT of the c10d rendezvous for multi-node runs"),
) -> None:
    """Adversarially train a model and save a checkpoint with its recipe, costs and validation curves."""
    import torch

    from bastion.defenses.training import Recipe, adversarial_train, load_recipe
    from bastion.defenses.training.ddp import init_from_env, launch, shutdown, under_torchrun

    if (nproc > 1 or nnodes > 1) and not under_torchrun():
        args = _strip_launch_options(sys.argv[1:])
        raise typer.Exit(launch(nproc, args, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint))
    torch.set_num_threads(threads)
    overrides = {"defense": defense, "dataset": dataset, "arch": arch, "eps": eps, "epochs": epochs,
                 "batch_size": batch_size, "lr": lr, "schedule": schedule, "ema_decay": ema_decay, "seed": seed,
                 "train_subset": train_subset, "swa_start": swa_start, "swa_lr": swa_lr}
    if recipe is not None:
        config = load_recipe(recipe, **overrides)
    else:
        if defense is None:
            err.print("[bold red]error:[/] give --defense or --recipe FILE.yaml (see docs/recipes/).")
            raise typer.Exit(2)
        config = Recipe.model_validate({k: v for k, v in overrides.items() if v is not None})
    rank, world = init_from_env()
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"{config.defense} on {config.dataset}", total=None, info="", visible=rank == 0)

            def tick(e) -> None:
                if e.kind == "batch":
                    bar.update(task, total=e.batches, completed=e.batch + 1,
                               description=f"epoch {e.epoch + 1}/{config.epochs}",
                               info=f"loss {e.loss:.3f} eps {e.info['eps']:.3f}")
                elif rank == 0 and e.kind == "epoch":
                    err.print(f"epoch {e.epoch + 1}: val clean {100 * e.info['clean']:.1f}%  "
                              f"PGD {100 * e.info['robust']:.1f}%")
                elif rank == 0 and e.kind == "collapse":
                    err.print(f"[bold yellow]collapse detected[/] (PGD {e.info['robust']:.3f}); rolled back")

            _, meta = adversarial_train(config, out, resume=resume, on_event=tick)
    finally:
        shutdown()
    if rank == 0:
        m = meta.metrics
        robust = next(v for k, v in m.items() if k.startswith("test_robust_accuracy"))
        console.print(f"test clean {100 * m['test_accuracy']:.2f}%  PGD robust {100 * robust:.2f}% "
                      f"({m['test_robust_points']} points), {m['cost']['train_seconds']} s, "
                      f"{m['cost']['multiple_of_standard_training']}x standard passes, {world} rank(s) "
                      f"-> {out}.safetensors")


def _strip_launch_options(argv: list[str]) -> list[str]:
    """The command line without --nproc/--nnodes/--rdzv-endpoint (torchrun gets those)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in ("--nproc", "--nnodes", "--rdzv-endpoint"):
            skip = "=" not in a
            continue
        out.append(a)
    return out
