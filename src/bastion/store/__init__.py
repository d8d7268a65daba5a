"""The results store: schema versions and migrations, runs, per-sample rows, long-format metrics; SQLite or
PostgreSQL through one SQLAlchemy Core layer."""

from bastion.store.connect import StoreError, default_home
from bastion.store.schema import SAMPLE_COLUMNS, SCHEMA_VERSION
from bastion.store.store import Run, Store

__all__ = ["SAMPLE_COLUMNS", "SCHEMA_VERSION", "Run", "Store", "StoreError", "default_home"]
