"""The results store: runs, their per-sample outcomes, batches, artifacts and long-format metrics.

One SQLAlchemy Core layer over SQLite (a file, the default) or PostgreSQL (a server several machines write to).
Every batch of every run is written in its own transaction as soon as it finishes, so a run that is killed loses
at most the batch in flight; re-running the same configuration resumes it.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Select, Table, func, select, text

from bastion.errors import UnknownNameError
from bastion.store.connect import StoreError, engine_for, resolve, translated
from bastion.store.migrate import stages_for_old_run, upgrade
from bastion.store.schema import (
    RUN_TABLES,
    SAMPLE_COLUMNS,
    artifacts,
    batches,
    metrics,
    runs,
    samples,
)


@dataclass(frozen=True)
class Run:
    id: str
    kind: str
    key: str
    status: str
    created: str
    finished: str | None
    config: dict[str, Any]
    seed: int | None
    environment: dict[str, Any]
    summary: dict[str, Any] | None

    def typed_summary(self) -> Any:
        """The summary as its kind's typed model (``store.summaries``), or the plain dict for other kinds."""
        from bastion.store.summaries import typed_summary

        return typed_summary(self.kind, self.summary)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """``Store()`` opens ``$BASTION_STORE`` or ``$BASTION_HOME/bastion.sqlite``; ``Store(path)`` a SQLite file;
    ``Store("postgresql://user@host:port/db")`` a PostgreSQL database. Opening upgrades an older schema.

    ``path`` is the SQLite file (``None`` on a server), ``home`` the folder for reports (the file's folder, or
    ``$BASTION_HOME`` for a server), ``name`` a printable name (no password)."""

    def __init__(self, target: str | Path | None = None) -> None:
        self.target = resolve(target)
        self.path: Path | None = self.target.path
        self.home: Path = self.target.home
        self.name: str = self.target.name
        self._engine = engine_for(self.target)
        try:
            with translated(self.target, "opened"):
                self.upgraded_from = upgrade(self._engine, self.target)
                self._check_integrity()
        except StoreError:
            self._engine.dispose()
            raise

    def _check_integrity(self) -> None:
        """SQLite: a damaged page anywhere (``PRAGMA quick_check``) is said at once, before a command reads a cached
        summary and exits 0 while the rows behind it cannot be read."""
        if not self.target.is_sqlite:
            return
        with self._engine.connect() as conn:
            problems = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise StoreError(f"The results store {self.name} is damaged ({'; '.join(problems)[:200]}); move it "
                             "aside (bastion never rewrites it) and pass another --store, or salvage it with "
                             "`sqlite3 FILE .recover`.")

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One transaction: all of it is written or none of it."""
        with translated(self.target, "written"), self._engine.execution_options(write=True).begin() as conn:
            yield conn

    def _read(self, stmt: Select[Any]) -> list[Mapping[str, Any]]:
        with translated(self.target, "read"), self._engine.connect() as conn:
            return list(conn.execute(stmt).mappings().all())

    # runs ---------------------------------------------------------------------------------------
    def create_run(self, kind: str, key: str, config: dict[str, Any], seed: int | None,
                   environment: dict[str, Any]) -> str:
        run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        with self._write() as conn:
            conn.execute(runs.insert().values(
                id=run_id, kind=kind, key=key, status="running", created=_now(),
                config=json.dumps(config, sort_keys=True), seed=seed,
                environment=json.dumps(environment, sort_keys=True)))
        return run_id

    def open_run(self, kind: str, key: str, config: dict[str, Any], seed: int | None,
                 environment: dict[str, Any]) -> str:
        """The unfinished run of ``key``, or a new one: looked up and created in one transaction, so two identical
        commands started together share one run (and then split its batches by ``claim``)."""
        with self._write() as conn:
            if conn.dialect.name == "postgresql":  # serialize get-or-create per key (SQLite: BEGIN IMMEDIATE does)
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"{kind}/{key}"})
            row = conn.execute(select(runs.c.id).where(runs.c.kind == kind, runs.c.key == key,
                                                       runs.c.status != "finished")
                               .order_by(runs.c.created.desc()).limit(1)).first()
            if row is not None:
                conn.execute(runs.update().where(runs.c.id == row[0]).values(status="running"))
                return str(row[0])
            run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
            conn.execute(runs.insert().values(
                id=run_id, kind=kind, key=key, status="running", created=_now(),
                config=json.dumps(config, sort_keys=True), seed=seed,
                environment=json.dumps(environment, sort_keys=True)))
            return run_id

    def claim(self, run_id: str, name: str, holder: dict[str, Any], *, replacing: Any = None) -> bool:
        """Take the claim ``name`` of a run for ``holder`` if nobody holds it (or, with ``replacing``, if it is still
        held by exactly that stale holder); True when this call got it. Atomic on both dialects."""
        value = json.dumps(holder, sort_keys=True)
        with self._write() as conn:
            if replacing is not None:
                done = conn.execute(artifacts.update().where(
                    artifacts.c.run_id == run_id, artifacts.c.name == name,
                    artifacts.c.value == json.dumps(replacing, sort_keys=True)).values(value=value))
                return done.rowcount == 1
            stmt = _insert(conn)(artifacts).values(run_id=run_id, name=name, value=value)
            return conn.execute(stmt.on_conflict_do_nothing(index_elements=["run_id", "name"])).rowcount == 1

    def find_unfinished(self, kind: str, key: str) -> str | None:
        return self._latest(kind, key, runs.c.status != "finished")

    def find_finished(self, kind: str, key: str) -> str | None:
        return self._latest(kind, key, runs.c.status == "finished")

    def _latest(self, kind: str, key: str, status: Any) -> str | None:
        rows = self._read(select(runs.c.id).where(runs.c.kind == kind, runs.c.key == key, status)
                          .order_by(runs.c.created.desc()).limit(1))
        return str(rows[0]["id"]) if rows else None

    def export_run(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """Everything recorded for a run, as plain data (to move a run between stores)."""
        with translated(self.target, "read"), self._engine.connect() as conn:
            return {name: [dict(r) for r in conn.execute(_of_run(table, run_id)).mappings()]
                    for name, table in RUN_TABLES.items()}

    def import_run(self, data: Mapping[str, list[dict[str, Any]]]) -> str:
        """Insert an exported run (replacing rows with the same keys), all of it or nothing. A suite run exported by
        a bastion before stored stage lists gets its stage list as the upgrade of a store would give it."""
        unknown = set(data) - set(RUN_TABLES)
        if unknown or not data.get("runs"):
            raise StoreError(f"Not an exported run (tables {sorted(data)}); pass what Store.export_run returned.")
        run = data["runs"][0]
        with self._write() as conn:
            for name, table in RUN_TABLES.items():
                _upsert(conn, table, data.get(name, []))
            if not any(a["name"] == "stages" for a in data.get("artifacts", [])):
                stages = stages_for_old_run(conn, run["id"], run["kind"], json.loads(run["config"]))
                if stages is not None:
                    _upsert(conn, artifacts, [{"run_id": run["id"], "name": "stages", "value": json.dumps(stages)}])
        return str(run["id"])

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        with self._write() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(
                status="finished", finished=_now(), summary=json.dumps(summary, sort_keys=True)))

    def set_status(self, run_id: str, status: str) -> None:
        with self._write() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(status=status))

    def get_run(self, run_id: str) -> Run:
        """A run by id or unique id prefix."""
        rows = self._read(select(runs).where(runs.c.id.startswith(run_id, autoescape=True))
                          .order_by(runs.c.created.desc()))
        exact = [r for r in rows if r["id"] == run_id]
        if exact:
            rows = exact
        if len(rows) != 1:
            what = "No run" if not rows else f"{len(rows)} runs"
            raise UnknownNameError(f"{what} with id {run_id!r} in {self.name}; see `bastion runs list`.")
        return _to_run(rows[0])

    def list_runs(self, limit: int = 20) -> list[Run]:
        rows = self._read(select(runs).order_by(runs.c.created.desc(), runs.c.id.desc()).limit(limit))
        return [_to_run(r) for r in rows]

    # batches and samples ------------------------------------------------------------------------
    def record_batch(self, run_id: str, part: str, batch: int, start: int, stop: int, seconds: float,
                     rows: Iterable[tuple[Any, ...]], outside_threat: int = 0) -> None:
        """Write one finished batch (its per-sample rows and timing) atomically: the ``batches`` row that marks it
        done commits together with its samples."""
        sample_rows = [{"run_id": run_id, "part": part, **dict(zip(SAMPLE_COLUMNS, r, strict=True))} for r in rows]
        with self._write() as conn:
            _upsert(conn, samples, sample_rows)
            _upsert(conn, batches, [{"run_id": run_id, "part": part, "batch": batch, "start": start, "stop": stop,
                                     "seconds": seconds, "outside_threat": outside_threat}])

    def done_batches(self, run_id: str, part: str) -> set[int]:
        rows = self._read(select(batches.c.batch).where(batches.c.run_id == run_id, batches.c.part == part))
        return {int(r["batch"]) for r in rows}

    def batch_totals(self, run_id: str, part: str) -> dict[str, float]:
        row = self._read(select(func.coalesce(func.sum(batches.c.seconds), 0).label("seconds"),
                                func.coalesce(func.sum(batches.c.outside_threat), 0).label("outside"))
                         .where(batches.c.run_id == run_id, batches.c.part == part))[0]
        return {"seconds": float(row["seconds"]), "outside_threat": int(row["outside"])}

    def samples(self, run_id: str, part: str | None = None) -> list[dict[str, Any]]:
        stmt = select(samples).where(samples.c.run_id == run_id)
        if part:
            stmt = stmt.where(samples.c.part == part)
        return [dict(r) for r in self._read(stmt.order_by(samples.c.part, samples.c.idx))]

    def parts(self, run_id: str) -> list[str]:
        rows = self._read(select(batches.c.part).where(batches.c.run_id == run_id).distinct().order_by(batches.c.part))
        return [r["part"] for r in rows]

    # long-format metrics: results that are not one row per test point ---------------------------
    def record_metrics(self, run_id: str, rows: Iterable[Mapping[str, Any] | tuple[Any, ...]]) -> None:
        """Write metric rows atomically: ``(name, step, value)``, ``(name, step, value, tags)`` or mappings with
        those keys. ``(run, name, step, tags)`` is the key: writing it again replaces the value. NaN is stored as
        NULL (SQLite cannot hold NaN) and read back as ``None``."""
        with self._write() as conn:
            _upsert(conn, metrics, [_metric_row(run_id, r) for r in rows])

    def metrics(self, run_id: str, name: str | None = None) -> list[dict[str, Any]]:
        """Rows ``{"name", "step", "value", "tags"}`` of a run (one metric if ``name``), by name, step and tags."""
        stmt = select(metrics.c.name, metrics.c.step, metrics.c.value, metrics.c.tags).where(metrics.c.run_id == run_id)
        if name is not None:
            stmt = stmt.where(metrics.c.name == name)
        rows = self._read(stmt.order_by(metrics.c.name, metrics.c.step, metrics.c.tags))
        return [{"name": r["name"], "step": int(r["step"]), "value": r["value"], "tags": json.loads(r["tags"])}
                for r in rows]

    # artifacts: small JSON values attached to a run (diagnostics, adaptation plan, stages, gallery) ----
    def put_artifact(self, run_id: str, name: str, value: Any) -> None:
        with self._write() as conn:
            _upsert(conn, artifacts, [{"run_id": run_id, "name": name, "value": json.dumps(value)}])

    def get_artifact(self, run_id: str, name: str) -> Any | None:
        rows = self._read(select(artifacts.c.value).where(artifacts.c.run_id == run_id, artifacts.c.name == name))
        return json.loads(rows[0]["value"]) if rows else None


def _of_run(table: Table, run_id: str) -> Select[Any]:
    col = table.c.id if table is runs else table.c.run_id
    return select(table).where(col == run_id).order_by(*table.primary_key.columns)


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, replacing those with the same primary key (SQLite's INSERT OR REPLACE, on both dialects)."""
    if not rows:
        return
    stmt = _insert(conn)(table)
    keys = [c.name for c in table.primary_key.columns]
    update = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=update) if update
                 else stmt.on_conflict_do_nothing(index_elements=keys), rows)


def _insert(conn: Connection) -> Any:
    """The dialect's INSERT, which has ON CONFLICT on both SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _metric_row(run_id: str, row: Mapping[str, Any] | tuple[Any, ...]) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        row = dict(zip(("name", "step", "value", "tags"), row, strict=False))
    value = None if row.get("value") is None else float(row["value"])
    return {"run_id": run_id, "name": str(row["name"]), "step": int(row.get("step", 0)),
            "value": None if value is None or math.isnan(value) else value,
            "tags": json.dumps(dict(row.get("tags") or {}), sort_keys=True)}


def _to_run(row: Mapping[str, Any]) -> Run:
    return Run(
        id=row["id"], kind=row["kind"], key=row["key"], status=row["status"], created=row["created"],
        finished=row["finished"], config=json.loads(row["config"]), seed=row["seed"],
        environment=json.loads(row["environment"]),
        summary=json.loads(row["summary"]) if row["summary"] else None,
    )
