"""Locate files shipped inside installed packages, without importing those packages."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from bastion.errors import DataUnavailableError


def package_file(dist: str, rel: str, *, install: str) -> Path:
    """Path of ``rel`` inside the installed distribution ``dist``; a clear error naming ``install`` if absent."""
    try:
        path = Path(str(distribution(dist).locate_file(rel)))
    except PackageNotFoundError:
        raise DataUnavailableError(
            f"The data package {dist!r} is not installed. Install it with: {install} "
            "(or run `make demo`, which installs every data package)."
        ) from None
    if not path.exists():
        raise DataUnavailableError(f"{dist} is installed but {rel} is missing from it; reinstall: {install}")
    return path
