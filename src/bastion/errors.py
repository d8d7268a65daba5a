"""Errors a user can act on: each names what went wrong and how to fix it."""

from typing import Any


class BastionError(Exception):
    """Base class of every error bastion raises on purpose.

    The message always ends with what the user can do about it.
    """


class UnknownNameError(BastionError, KeyError):
    """A dataset, model, attack or other registry name that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidInputError(BastionError, ValueError):
    """Inputs, labels or hyperparameters that cannot be used as given."""


class CheckpointError(BastionError):
    """A checkpoint that is missing, corrupt or does not match its architecture."""


class DataUnavailableError(BastionError):
    """A data set whose files are not installed on this machine."""


class QueryBudgetExceeded(BastionError):
    """A model wrapper refused a query because a sample's budget is spent."""


def config_errors(exc: Any) -> str:
    """A pydantic ``ValidationError`` as one line: ``field.path: what is wrong`` per error, joined by ``;``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in exc.errors())
