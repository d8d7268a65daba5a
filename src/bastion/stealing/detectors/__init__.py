"""Model-stealing detectors, one per module; importing this package imports (and so registers) every one of them."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
