"""bastion's own traffic generator: a virtual network in Linux network namespaces with real services, seeded benign
clients and real attack tools, captured to pcap and metered into labelled CIC-IDS2017 flows (``generate``).

``generate`` is imported lazily: the modules run inside the namespaces (``webapp``, ``client``, ``webattack``)
start without loading pandas."""

from __future__ import annotations

from typing import Any

__all__ = ["generate"]


def __getattr__(name: str) -> Any:
    if name == "generate":
        from bastion.ids.generate.run import generate

        return generate
    raise AttributeError(name)
