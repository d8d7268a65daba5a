"""Shared pieces of the command line: consoles, the error wrapper, the progress bar."""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from bastion.errors import BastionError, config_errors
from bastion.progress import progress_bar as _progress_bar

F = TypeVar("F", bound=Callable[..., Any])

STORE = typer.Option(None, help="results store: a SQLite file, sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
                                "(default $BASTION_STORE, else $BASTION_HOME/bastion.sqlite)")

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn bastion's own errors and invalid configs into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                return fn(*args, **kwargs)
        except BastionError as exc:  # the message is the user's text too (paths, names): never read as markup
            err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None
        except ValidationError as exc:
            err.print(f"[bold red]error:[/] invalid configuration: {escape(config_errors(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def progress_bar() -> Progress:
    return _progress_bar(err)


def parse_params(items: list[str], option: str = "-p") -> dict[str, Any]:
    """The one ``-p KEY=VALUE`` parser of every command: VALUE is read as JSON (numbers, true/false, lists),
    else kept as a string."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BastionError(f"{option} {item!r} is not KEY=VALUE; e.g. {option} steps=50")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def parse_number(text: str, option: str) -> float:
    """A number or a fraction (``0.3``, ``8/255``) given on the command line."""
    num, sep, den = text.partition("/")
    try:
        value = float(num) / float(den) if sep else float(num)
    except (ValueError, ZeroDivisionError):
        raise BastionError(f"{option} {text!r} is not a number; give e.g. 0.3 or 8/255.") from None
    return value


def read_threat(path: str | None) -> dict[str, Any] | None:
    """A threat's ``to_dict()`` form from a JSON file (``--threat``); checked by rebuilding it."""
    if path is None:
        return None
    from pathlib import Path

    from bastion.threats import threat_from_dict

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BastionError(f"--threat {path} cannot be read as JSON ({exc}); save threat.to_dict() with json.dump.") \
            from None
    if not isinstance(data, dict):
        raise BastionError(f"--threat {path} holds a {type(data).__name__}, not a threat's to_dict() object.")
    threat_from_dict(data)  # one clear line now rather than later
    return data
