"""The results store: an embedded SQLite database of runs and their per-sample outcomes.

Every batch of every run is written in its own transaction as soon as it finishes, so a run that
is killed loses at most the batch in flight; re-running the same configuration resumes it.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.errors import BastionError, UnknownNameError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    finished TEXT,
    config TEXT NOT NULL,
    seed INTEGER,
    environment TEXT NOT NULL,
    summary TEXT
);
CREATE INDEX IF NOT EXISTS runs_key ON runs (kind, key, status);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL REFERENCES runs (id),
    part TEXT NOT NULL,
    idx INTEGER NOT NULL,
    label INTEGER,
    clean_pred INTEGER,
    adv_pred INTEGER,
    clean_correct INTEGER,
    success INTEGER,
    norm REAL,
    forward INTEGER,
    backward INTEGER,
    PRIMARY KEY (run_id, part, idx)
);
CREATE TABLE IF NOT EXISTS batches (
    run_id TEXT NOT NULL REFERENCES runs (id),
    part TEXT NOT NULL,
    batch INTEGER NOT NULL,
    start INTEGER NOT NULL,
    stop INTEGER NOT NULL,
    seconds REAL NOT NULL,
    outside_threat INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, part, batch)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""

SAMPLE_COLUMNS = ("idx", "label", "clean_pred", "adv_pred", "clean_correct", "success", "norm", "forward", "backward")


def default_home() -> Path:
    """Where runs live: ``$BASTION_HOME`` or ``./bastion-runs``."""
    return Path(os.environ.get("BASTION_HOME", "bastion-runs"))


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """SQLite-backed store. ``Store()`` opens ``$BASTION_HOME/bastion.sqlite``."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_home() / "bastion.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise BastionError(
                f"The results store {self.path} cannot be opened ({exc}); move it aside or pass another --store."
            ) from None
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db:
            yield self._db

    # runs ---------------------------------------------------------------------------------------
    def create_run(self, kind: str, key: str, config: dict[str, Any], seed: int | None,
                   environment: dict[str, Any]) -> str:
        run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (id, kind, key, status, created, config, seed, environment) VALUES (?,?,?,?,?,?,?,?)",
                (run_id, kind, key, "running", _now(), json.dumps(config, sort_keys=True), seed,
                 json.dumps(environment, sort_keys=True)),
            )
        return run_id

    def find_unfinished(self, kind: str, key: str) -> str | None:
        row = self._db.execute(
            "SELECT id FROM runs WHERE kind=? AND key=? AND status!='finished' ORDER BY created DESC LIMIT 1",
            (kind, key),
        ).fetchone()
        return None if row is None else str(row["id"])

    def find_finished(self, kind: str, key: str) -> str | None:
        row = self._db.execute(
            "SELECT id FROM runs WHERE kind=? AND key=? AND status='finished' ORDER BY created DESC LIMIT 1",
            (kind, key),
        ).fetchone()
        return None if row is None else str(row["id"])

    def export_run(self, run_id: str) -> dict[str, Any]:
        """Everything recorded for a run, as plain data (to move a run between stores)."""
        tables = {}
        for table in ("runs", "samples", "batches", "artifacts"):
            col = "id" if table == "runs" else "run_id"
            tables[table] = [dict(r) for r in self._db.execute(f"SELECT * FROM {table} WHERE {col}=?", (run_id,))]
        return tables

    def import_run(self, data: dict[str, list[dict[str, Any]]]) -> str:
        """Insert an exported run (replacing a run with the same id)."""
        with self._tx() as db:
            for table, rows in data.items():
                for row in rows:
                    cols = ", ".join(row)
                    db.execute(f"INSERT OR REPLACE INTO {table} ({cols}) VALUES ({','.join('?' * len(row))})",
                               tuple(row.values()))
        return str(data["runs"][0]["id"])

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status='finished', finished=?, summary=? WHERE id=?",
                       (_now(), json.dumps(summary, sort_keys=True), run_id))

    def set_status(self, run_id: str, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status=? WHERE id=?", (status, run_id))

    def get_run(self, run_id: str) -> Run:
        """A run by id or unique id prefix."""
        rows = self._db.execute("SELECT * FROM runs WHERE id LIKE ? ORDER BY created DESC",
                                (run_id.replace("%", "") + "%",)).fetchall()
        exact = [r for r in rows if r["id"] == run_id]
        if exact:
            rows = exact
        if len(rows) != 1:
            what = "No run" if not rows else f"{len(rows)} runs"
            raise UnknownNameError(f"{what} with id {run_id!r} in {self.path}; see `bastion runs list`.")
        return _to_run(rows[0])

    def list_runs(self, limit: int = 20) -> list[Run]:
        rows = self._db.execute("SELECT * FROM runs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [_to_run(r) for r in rows]

    # batches and samples ------------------------------------------------------------------------
    def record_batch(self, run_id: str, part: str, batch: int, start: int, stop: int, seconds: float,
                     rows: Iterable[tuple[Any, ...]], outside_threat: int = 0) -> None:
        """Write one finished batch (its per-sample rows and timing) atomically."""
        marks = ",".join("?" * (len(SAMPLE_COLUMNS) + 2))
        with self._tx() as db:
            db.executemany(f"INSERT OR REPLACE INTO samples (run_id, part, {', '.join(SAMPLE_COLUMNS)}) "
                           f"VALUES ({marks})", [(run_id, part, *r) for r in rows])
            db.execute("INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?,?)",
                       (run_id, part, batch, start, stop, seconds, outside_threat))

    def done_batches(self, run_id: str, part: str) -> set[int]:
        rows = self._db.execute("SELECT batch FROM batches WHERE run_id=? AND part=?", (run_id, part))
        return {int(r["batch"]) for r in rows}

    def batch_totals(self, run_id: str, part: str) -> dict[str, float]:
        row = self._db.execute(
            "SELECT COALESCE(SUM(seconds),0) AS seconds, COALESCE(SUM(outside_threat),0) AS outside "
            "FROM batches WHERE run_id=? AND part=?", (run_id, part)).fetchone()
        return {"seconds": float(row["seconds"]), "outside_threat": int(row["outside"])}

    def samples(self, run_id: str, part: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM samples WHERE run_id=?" + (" AND part=?" if part else "") + " ORDER BY part, idx"
        args = (run_id, part) if part else (run_id,)
        return [dict(r) for r in self._db.execute(sql, args)]


    # artifacts: small JSON values attached to a run (diagnostics, adaptation plan, gallery) ----------
    def put_artifact(self, run_id: str, name: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?)", (run_id, name, json.dumps(value)))

    def get_artifact(self, run_id: str, name: str) -> Any | None:
        row = self._db.execute("SELECT value FROM artifacts WHERE run_id=? AND name=?", (run_id, name)).fetchone()
        return None if row is None else json.loads(row["value"])

    def parts(self, run_id: str) -> list[str]:
        return [r["part"] for r in self._db.execute("SELECT DISTINCT part FROM batches WHERE run_id=?", (run_id,))]


def _to_run(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"], kind=row["kind"], key=row["key"], status=row["status"], created=row["created"],
        finished=row["finished"], config=json.loads(row["config"]), seed=row["seed"],
        environment=json.loads(row["environment"]),
        summary=json.loads(row["summary"]) if row["summary"] else None,
    )
