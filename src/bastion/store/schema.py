"""The tables of the results store (SQLAlchemy Core), one definition for SQLite and PostgreSQL.

Version 1 is the store of bastion before schema versions (runs, samples, batches, artifacts, no ``meta`` table);
version 2 adds ``meta`` (the schema version), the long-format ``metrics`` table and a ``stages`` artifact on every
suite run (see ``bastion.store.migrate``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
)

SCHEMA_VERSION = 2

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created", Text, nullable=False),
    Column("finished", Text),
    Column("config", Text, nullable=False),  # JSON, sort_keys: the exact text comes back
    Column("seed", BigInteger),
    Column("environment", Text, nullable=False),
    Column("summary", Text),
    Index("runs_key", "kind", "key", "status"),
)

SAMPLE_COLUMNS = ("idx", "label", "clean_pred", "adv_pred", "clean_correct", "success", "norm", "forward", "backward")

samples = Table(
    "samples", metadata,
    Column("run_id", Text, ForeignKey("runs.id"), primary_key=True),
    Column("part", Text, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("label", BigInteger),
    Column("clean_pred", BigInteger),
    Column("adv_pred", BigInteger),
    Column("clean_correct", Integer),
    Column("success", Integer),
    Column("norm", Double),
    Column("forward", BigInteger),
    Column("backward", BigInteger),
)

batches = Table(
    "batches", metadata,
    Column("run_id", Text, ForeignKey("runs.id"), primary_key=True),
    Column("part", Text, primary_key=True),
    Column("batch", BigInteger, primary_key=True),
    Column("start", BigInteger, nullable=False),
    Column("stop", BigInteger, nullable=False),
    Column("seconds", Double, nullable=False),
    Column("outside_threat", BigInteger, nullable=False, server_default="0"),
)

artifacts = Table(
    "artifacts", metadata,
    Column("run_id", Text, ForeignKey("runs.id"), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),  # JSON
)

# Results that are not one row per test point (poisoning, extraction, serving): one number per (name, step, tags).
metrics = Table(
    "metrics", metadata,
    Column("run_id", Text, ForeignKey("runs.id"), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("tags", Text, primary_key=True),  # canonical JSON object ("{}" when none), part of the key
    Column("value", Double),
)

meta = Table(
    "meta", metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

# Tables that hold a run's data, in the order export/import walks them (runs first: the others refer to it).
RUN_TABLES = {"runs": runs, "samples": samples, "batches": batches, "artifacts": artifacts, "metrics": metrics}
