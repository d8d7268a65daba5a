"""Schema versions of the results store and the upgrades between them.

A store without a ``meta`` table but with ``runs`` was written before versions existed: version 1. Opening a store
upgrades it to ``SCHEMA_VERSION`` in one transaction (on PostgreSQL under an advisory lock, on SQLite under
``BEGIN IMMEDIATE``), so concurrent openers upgrade it once and a failed upgrade leaves it as it was. A store newer
than this code is refused with the fix (upgrade bastion), never written to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select, text

from bastion.store.connect import StoreError, Target
from bastion.store.schema import SCHEMA_VERSION, artifacts, meta, metadata, runs

_LOCK = 0x62617374  # pg_advisory_xact_lock key of bastion's migrations ("bast")


def read_version(conn: Connection) -> int:
    """0: an empty database; 1: a store from before schema versions; else what ``meta`` says."""
    tables = set(inspect(conn).get_table_names())
    if "meta" in tables:
        value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one_or_none()
        return int(value) if value is not None else 1
    return 1 if "runs" in tables else 0


def upgrade(engine: Engine, target: Target) -> int:
    """Bring the store to ``SCHEMA_VERSION``; returns the version it had."""
    with engine.connect() as conn:
        found = read_version(conn)
    _check_not_newer(found, target)
    if found == SCHEMA_VERSION:
        return found
    with engine.execution_options(write=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        found = read_version(conn)  # another process may have upgraded it meanwhile
        _check_not_newer(found, target)
        if found < SCHEMA_VERSION:
            metadata.create_all(conn)  # a new store starts at the current version; an old one is walked up to it
            for version in range(found, SCHEMA_VERSION) if found else ():
                STEPS[version](conn)
            _set_version(conn, SCHEMA_VERSION)
    return found


def _check_not_newer(found: int, target: Target) -> None:
    if found > SCHEMA_VERSION:
        raise StoreError(f"The results store {target.name} has schema version {found}, written by a newer "
                         f"bastion; this bastion reads up to version {SCHEMA_VERSION}: upgrade bastion "
                         "(pip install -U bastion).")


def _set_version(conn: Connection, version: int) -> None:
    conn.execute(meta.delete().where(meta.c.key == "schema_version"))
    conn.execute(meta.insert().values(key="schema_version", value=str(version)))


def _v1_to_v2(conn: Connection) -> None:
    """``meta`` and ``metrics`` come from ``create_all``; every suite run gets its ``stages`` artifact, from the
    suite definition of the code doing the upgrade (what its reports showed until now)."""
    have = {r.run_id for r in conn.execute(select(artifacts.c.run_id).where(artifacts.c.name == "stages"))}
    for row in conn.execute(select(runs.c.id, runs.c.kind, runs.c.config)).all():
        if row.id in have:
            continue
        stages = stages_for_old_run(conn, row.id, row.kind, json.loads(row.config))
        if stages is not None:
            conn.execute(artifacts.insert().values(run_id=row.id, name="stages", value=json.dumps(stages)))


def stages_for_old_run(conn: Connection, run_id: str, kind: str, config: dict[str, Any]) -> list[dict] | None:
    if kind != "evaluate" or not config.get("suite"):
        return None
    from bastion.evaluation.suite import stage_dicts, suite_stages

    plan = conn.execute(select(artifacts.c.value).where(artifacts.c.run_id == run_id,
                                                        artifacts.c.name == "adaptation")).scalar_one_or_none()
    aware = bool(json.loads(plan).get("detector_aware")) if plan else False
    return stage_dicts(suite_stages(config["suite"], config.get("norm", "linf"), aware))


STEPS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2}  # STEPS[v] upgrades version v to v + 1
