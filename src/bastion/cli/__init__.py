"""The ``bastion`` command line: one entry point, rich tables and progress bars.

Each command group lives in its own module and registers on ``app`` here; a new group is one module
plus one line below.
"""

from __future__ import annotations

import typer

from bastion.cli import (
    adv_train,
    certify,
    compare,
    data,
    defend,
    evaluate,
    ids,
    ids_eval,  # noqa: F401  (adds evaluate, train, attack and list to `bastion ids`)
    ids_stream,  # noqa: F401  (adds stream to `bastion ids`)
    models,
    poison,
    runs,
    serve,
    steal,
    sweep,
)

app = typer.Typer(help="bastion: measure and improve the adversarial robustness of deep-learning models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(data.data_app, name="data")
app.add_typer(models.models_app, name="models")
app.add_typer(models.attacks_app, name="attacks")
app.add_typer(runs.runs_app, name="runs")
app.command("train", context_settings=models.TRAIN_CONTEXT)(models.train)
app.command("adv-train")(adv_train.adv_train)
app.command("evaluate")(evaluate.evaluate_cmd)
app.command("attack")(evaluate.attack_cmd)
app.command("report")(runs.report)
app.command("sweep")(sweep.sweep_cmd)
certify.register(app)  # certify, certify-train
app.add_typer(defend.defend_app, name="defend")
app.command("compare")(compare.compare_cmd)
app.add_typer(poison.poison_app, name="poison")
app.add_typer(steal.steal_app, name="steal")
app.add_typer(ids.ids_app, name="ids")
app.add_typer(serve.serve_app, name="serve")


def main() -> None:
    app()
