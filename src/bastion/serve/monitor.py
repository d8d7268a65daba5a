"""Extraction monitoring inside the service: every answered input of a key goes to a model-stealing detector of
``bastion.stealing`` (``bastion serve --monitor prada``), one detector state per (key, model).

The detector is one that needs no benign data of the defender's: PRADA (Juuti et al. 2019, EuroS&P; its defaults:
``delta=0.96``, ``min_distances=100``, ``min_per_class=10``; see ``bastion.stealing.detectors.prada``), the one
tested in the service, or Blacklight (``stateful-knn`` calibrates on benign data, which the service does not
have). When a key's state first flags it, the service applies the key's ``on_alarm`` action
(``bastion.serve.keys.KeyStore.alarm``).

The states live in this process's memory: a restart forgets every key's query history (a blocked or throttled key
stays so, that is in the database). A state only grows (PRADA keeps its growing sets and distances), so a key's
memory and per-query cost grow with its queries until it is flagged; a flagged key is no longer observed.
Detectors that take the victim's predicted class (PRADA) run the served model a second time on each input.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.serve.model import Served

NO_DATA_DETECTORS = ("prada", "blacklight")


class _Victim(nn.Module):
    """The served model as a detector sees it (its lock and dtype kept)."""

    def __init__(self, served: Served) -> None:
        super().__init__()
        self.served = served

    def forward(self, x: Tensor) -> Tensor:
        return self.served(x)


class Monitor:
    """Detector ``name`` with ``params`` (the paper's defaults for the rest), one state per (key, model)."""

    def __init__(self, name: str, params: dict[str, Any], models: list[Served]) -> None:
        from bastion.stealing import load_algorithms
        from bastion.stealing.base import DETECTORS, check_params

        load_algorithms()
        if name not in NO_DATA_DETECTORS:
            raise InvalidInputError(f"--monitor {name!r} is not one of {', '.join(NO_DATA_DETECTORS)} (detectors "
                                    "that need no benign data); pick one, or none.")
        self.name = name
        self.spec = DETECTORS.get(name)
        self.params = check_params("extraction detector", name, params, self.spec.defaults)
        self.victims = {m.name: _Victim(m) for m in models}
        self.states: dict[tuple[str, str], Any] = {}
        self.locks: dict[tuple[str, str], threading.Lock] = {}
        self.flagged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        for m in models:  # a bad parameter fails at start, not at a key's first query
            self._new(m)

    def _new(self, model: Served) -> Any:
        from bastion.stealing.base import DefenseContext, VictimSpec

        spec = VictimSpec(model.input_shape, model.num_classes, model.lower if model.lower is not None else 0.0,
                          model.upper if model.upper is not None else 1.0)
        ctx = DefenseContext(torch.zeros(0, *model.input_shape), torch.zeros(0, dtype=torch.long), spec,
                             torch.Generator().manual_seed(0), self.victims[model.name])
        return self.spec.fn(ctx, **self.params)

    def observe(self, key_id: str, model: Served, x: Tensor) -> bool:
        """Feed the key's answered inputs ``x``; True exactly when they make the detector flag the key."""
        slot = (key_id, model.name)
        with self._lock:
            if slot in self.flagged:
                return False
            if slot not in self.states:
                self.states[slot], self.locks[slot] = self._new(model), threading.Lock()
            state, lock = self.states[slot], self.locks[slot]
        with lock:
            if slot in self.flagged:
                return False
            hit = bool(state.observe(x.to(model.dtype)).any())
            if hit:
                with self._lock:
                    self.flagged.add(slot)
                    self.states.pop(slot, None)  # a flagged key is not observed again: its history can go
        return hit
