"""bastion: adversarial resilience of deep-learning models.

Attacks are functions, threat models and results are frozen dataclasses, defenses are modules.
See docs/ARCHITECTURE.md for the map of the code.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bastion")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"

from bastion.errors import BastionError
from bastion.threat import LpThreat

__all__ = ["BastionError", "LpThreat", "__version__"]
