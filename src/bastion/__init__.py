"""bastion: adversarial resilience of deep-learning models.

Attacks are functions, threat models and results are frozen dataclasses, defenses are modules.
See docs/ARCHITECTURE.md for the map of the code.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bastion")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"

from typing import Any

from bastion.errors import BastionError
from bastion.threat import LpThreat

_API = ("Report", "attack", "certify", "evaluate")  # bastion.api, imported on first use so `import bastion` stays light


def __getattr__(name: str) -> Any:
    if name in _API:
        from bastion import api

        return getattr(api, name)
    if name == "poison":
        from bastion.poisoning.api import poison

        return poison
    if name == "ids_evaluate":
        from bastion.ids.api import ids_evaluate

        return ids_evaluate
    if name == "steal":
        from bastion.stealing.api import steal

        return steal
    raise AttributeError(f"module 'bastion' has no attribute {name!r}")


__all__ = ["BastionError", "LpThreat", "Report", "__version__", "attack", "certify", "evaluate", "ids_evaluate",
           "poison", "steal"]
