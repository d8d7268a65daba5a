"""Batches claimed before they are computed, so that two processes running the same run (two identical commands
started together, on one machine or on several sharing a PostgreSQL store) split its batches instead of computing
each twice.

A claim is a stored artifact ``claim/<batch>`` holding its owner (host, process id, a per-call token, the time). A
process computes a batch only when it holds the claim: it took it, or the holder is gone. On the same host a holder
is gone when its process is; on another host when the claim is older than ``STALE_AFTER_S`` (a slower batch is
then computed twice, which wastes time but not correctness: a batch's rows depend only on the seed and the batch
number, and writing them again replaces them with the same rows).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from bastion.store import Store

STALE_AFTER_S = 600.0  # a claim from another host older than this is taken over
POLL_S = 1.0  # how often a process with nothing left to claim looks for the others' batches


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    token: str
    at: float

    @staticmethod
    def current() -> Owner:
        return Owner(socket.gethostname(), os.getpid(), secrets.token_hex(6), time.time())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"at": time.time()}


def take(store: Store, run_id: str, name: str, owner: Owner) -> bool:
    """Whether this process may compute the thing ``name`` now (it claimed it, or the holder is gone)."""
    if store.claim(run_id, name, owner.as_dict()):
        return True
    holder = store.get_artifact(run_id, name)
    if holder is None:  # released between the two calls
        return store.claim(run_id, name, owner.as_dict())
    if _ours(holder, owner) or _gone(holder):
        return store.claim(run_id, name, owner.as_dict(), replacing=holder)
    return False


def _ours(holder: dict[str, Any], owner: Owner) -> bool:
    """Held by this process (an earlier call in it that stopped on an error, or this very call)."""
    return holder.get("host") == owner.host and holder.get("pid") == owner.pid


def _gone(holder: dict[str, Any]) -> bool:
    if holder.get("host") == socket.gethostname():
        return not _alive(int(holder.get("pid", -1)))
    return time.time() - float(holder.get("at", 0.0)) > STALE_AFTER_S


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
