"""A small generic registry: name -> entry with metadata, used for datasets, models and attacks."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from bastion.errors import InvalidInputError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries. Lookup of an unknown name suggests the closest known ones."""

    def __init__(self, kind: str, list_command: str) -> None:
        self.kind = kind
        self.list_command = list_command
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, make: Callable[[Callable], T]) -> Callable[[Callable], Callable]:
        """Return a decorator that registers ``make(fn)`` under ``name`` and returns ``fn``."""

        def wrap(fn: Callable) -> Callable:
            self.add(name, make(fn))
            return fn

        return wrap

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}. "
                f"Run `{self.list_command}` to see them all."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def keyword_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """An algorithm's parameters: its keyword-only arguments with their defaults (the paper's)."""
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}


def check_params(kind: str, name: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given``; an unknown parameter name is one clear error."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise InvalidInputError(f"{kind} {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                                f"its parameters: {known}.")
    return {**defaults, **given}
