"""The results store moved to ``bastion.store``; this name stays so that existing imports keep working."""

from bastion.store import SAMPLE_COLUMNS, Run, Store, StoreError, default_home

__all__ = ["SAMPLE_COLUMNS", "Run", "Store", "StoreError", "default_home"]
