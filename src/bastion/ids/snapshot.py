"""The labelled flows shipped inside bastion, made by its own generator (``bastion ids generate``; the seed and the
exact command are in the card). Reading them needs no root and no network."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pandas as pd

from bastion.errors import DataUnavailableError

FLOWS = "flows.csv.gz"
CARD = "card.json"


def _data(name: str) -> Any:
    path = resources.files("bastion.ids") / "data" / name
    if not path.is_file():
        raise DataUnavailableError(f"the IDS snapshot file {name} is missing from this installation; reinstall "
                                   "bastion, or make one with `bastion ids generate --out DIR` (as root)")
    return path


def load_snapshot() -> pd.DataFrame:
    """The shipped flows: ``bastion.ids.features.FEATURE_NAMES`` in order, then Source IP, Destination IP, Source
    Port, Timestamp, then Label."""
    with _data(FLOWS).open("rb") as f:
        return pd.read_csv(f, compression="gzip")


def snapshot_card() -> dict[str, Any]:
    """The snapshot's data card: seed, command, versions, classes and counts, features, topology."""
    return json.loads(_data(CARD).read_text())
