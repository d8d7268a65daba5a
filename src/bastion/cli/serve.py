"""``bastion serve``: run the hardened inference service, and ``bastion serve keys ...`` to manage its API keys."""

from __future__ import annotations

import ipaddress
import logging

import typer
from rich.console import Console
from rich.table import Table

from bastion.cli.common import friendly, parse_params

serve_app = typer.Typer(help="Serve models behind API keys, budgets, validation and an audit log.",
                        invoke_without_command=True)
keys_app = typer.Typer(help="Create, list and revoke the service's API keys.", no_args_is_help=True)
serve_app.add_typer(keys_app, name="keys")
DB = typer.Option("serve.db", "--db", help="the service's SQLite database (keys, budgets, audit log)")
logger = logging.getLogger(__name__)


@serve_app.callback()
@friendly
def serve_cmd(
    ctx: typer.Context,
    model: list[str] = typer.Option([], "--model", "-m", help="a zoo name, checkpoint or saved IDS detector, "
                                                               "optionally NAME=SOURCE; repeat for more (the first "
                                                               "answers /predict)"),
    db: str = DB,
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default)"),
    port: int = typer.Option(8000),
    lower: float = typer.Option(0.0, help="smallest input value image models accept"),
    upper: float = typer.Option(1.0, help="largest input value image models accept"),
    max_body: int = typer.Option(32 * 2**20, help="largest request body in bytes"),
    max_depth: int = typer.Option(8, help="deepest JSON nesting accepted"),
    max_batch: int = typer.Option(1000, help="most inputs per request"),
    threads: int = typer.Option(1, help="torch threads for the model"),
    ssl_certfile: str | None = typer.Option(None, help="TLS certificate (PEM); with --ssl-keyfile serves HTTPS"),
    ssl_keyfile: str | None = typer.Option(None, help="TLS private key (PEM)"),
    monitor: str = typer.Option("none", help="extraction detector watching every key's answered inputs (prada; "
                                             "none: off); each key's --on-alarm says what a flag does"),
    monitor_param: list[str] = typer.Option([], "--monitor-param", help="detector parameter KEY=VALUE, e.g. "
                                                                         "delta=0.96 (repeat)"),
) -> None:
    """Serve models with the JSON protocol `bastion attack --target URL` speaks."""
    if ctx.invoked_subcommand is not None:
        return
    import torch
    import uvicorn

    from bastion.errors import InvalidInputError
    from bastion.serve.app import create_app
    from bastion.serve.keys import KeyStore
    from bastion.serve.model import load_served
    from bastion.serve.monitor import Monitor
    from bastion.serve.validate import Limits

    if not model:
        raise InvalidInputError("name a model to serve with --model (a zoo name, checkpoint or IDS detector).")
    torch.set_num_threads(threads)
    served = [load_served(m, lower=lower, upper=upper) for m in model]
    if len({s.name for s in served}) != len(served):
        raise InvalidInputError("two served models share a name; give each one as NAME=SOURCE.")
    if not _loopback(host):
        logger.warning("bastion serve binds %s: reachable beyond this machine%s", host,
                       "" if ssl_certfile else " and without TLS (give --ssl-certfile/--ssl-keyfile)")
    watch = None if monitor == "none" else Monitor(monitor, parse_params(monitor_param, "--monitor-param"), served)
    app = create_app(served, KeyStore(db), Limits(max_body=max_body, max_depth=max_depth, max_batch=max_batch),
                     watch)
    uvicorn.run(app, host=host, port=port, log_level="warning", ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@keys_app.command("create")
@friendly
def keys_create(
    name: str = typer.Argument(..., help="who the key is for"),
    db: str = DB,
    budget: int = typer.Option(10_000, help="queries (inputs) per period"),
    period: float = typer.Option(86_400.0, help="budget period in seconds"),
    rate: float = typer.Option(50.0, help="token bucket refill, queries per second"),
    burst: float = typer.Option(500.0, help="token bucket size, the most queries at once"),
    output: str = typer.Option("scores", help="scores, probabilities or labels"),
    top_k: int | None = typer.Option(None, help="answer only the k largest probabilities"),
    decimals: int | None = typer.Option(None, help="round scores to this many decimals"),
    output_defense: str | None = typer.Option(None, help="answer through this output defense: top1, rounding, "
                                                         "top-k or reverse-sigmoid"),
    defense_param: list[str] = typer.Option([], "--defense-param", help="output defense parameter KEY=VALUE "
                                                                         "(repeat)"),
    on_alarm: str = typer.Option("alert", help="what an extraction alarm (bastion serve --monitor) does to this "
                                               "key: alert, throttle or block"),
) -> None:
    """Create a key; its token is printed once and never stored."""
    import json

    from bastion.serve.keys import KeyStore, Policy

    params = json.dumps(parse_params(defense_param, "--defense-param"), sort_keys=True) if defense_param else None
    token = KeyStore(db).create(name, budget=budget, period_s=period, rate=rate, burst=burst,
                                policy=Policy(output, top_k, decimals, output_defense, params, on_alarm))
    typer.echo(token)


@keys_app.command("list")
@friendly
def keys_list(db: str = DB) -> None:
    """List the keys (ids and limits; tokens are not stored)."""
    from bastion.serve.keys import KeyStore

    table = Table("id", "name", "state", "spent", "budget", "rate/s", "burst", "output", "on alarm")
    for k in KeyStore(db).list():
        out = (k["defense"] or k["output"]) + (f", top-{k['top_k']}" if k["top_k"] else "") + \
            (f", {k['decimals']} dp" if k["decimals"] is not None else "")
        state = "revoked" if k["revoked"] else "blocked" if k["blocked"] else \
            "throttled" if k["throttled"] else "active"
        table.add_row(k["id"], k["name"], state, str(k["spent"]), str(k["budget"]), f"{k['rate']:g}",
                      f"{k['burst']:g}", out, k["on_alarm"])
    Console().print(table)


@keys_app.command("revoke")
@friendly
def keys_revoke(key_id: str = typer.Argument(..., help="the key's id (or the whole token)"), db: str = DB) -> None:
    """Revoke a key: its requests get 403 from now on."""
    from bastion.serve.keys import KeyStore

    KeyStore(db).revoke(key_id)
    typer.echo(f"revoked {key_id.removeprefix('bst_').split('_')[0]}")


@keys_app.command("unblock")
@friendly
def keys_unblock(key_id: str = typer.Argument(..., help="the key's id (or the whole token)"), db: str = DB) -> None:
    """Lift an extraction detector's block or throttle from a key (after review); audited."""
    from bastion.serve.keys import KeyStore

    KeyStore(db).unblock(key_id)
    typer.echo(f"unblocked {key_id.removeprefix('bst_').split('_')[0]}")
