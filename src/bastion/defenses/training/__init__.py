"""Adversarial training: one step function per method, a resumable data-parallel loop, recipes.

``METHODS`` maps ``pgd-at``, ``fast-at``, ``trades``, ``mart`` and ``awp`` to their step functions
``step(model, optimizer, x, y, threat, ctx, **hyper) -> StepStats``. ``adversarial_train(recipe, out)``
runs a whole recipe (``Recipe`` / ``load_recipe``) and saves a checkpoint; see docs/TRAINING.md.
"""

from bastion.defenses.training import awp, fast_at, mart, pgd_at, trades  # noqa: F401  (import registers)
from bastion.defenses.training.averaging import ema_update, recompute_bn, swa_model, swa_update
from bastion.defenses.training.awp import awp_step
from bastion.defenses.training.base import METHODS, MethodSpec, StepContext, StepStats
from bastion.defenses.training.curriculum import AutoSchedule
from bastion.defenses.training.fast_at import fast_at_step
from bastion.defenses.training.guard import CollapseGuard, robust_accuracy
from bastion.defenses.training.loop import Event, adversarial_train, train_epochs
from bastion.defenses.training.mart import mart_step
from bastion.defenses.training.pgd_at import pgd_at_step
from bastion.defenses.training.recipe import Recipe, load_recipe
from bastion.defenses.training.trades import trades_step

__all__ = [
    "METHODS",
    "AutoSchedule",
    "CollapseGuard",
    "Event",
    "MethodSpec",
    "Recipe",
    "StepContext",
    "StepStats",
    "adversarial_train",
    "awp_step",
    "ema_update",
    "fast_at_step",
    "load_recipe",
    "mart_step",
    "pgd_at_step",
    "recompute_bn",
    "robust_accuracy",
    "swa_model",
    "swa_update",
    "trades_step",
    "train_epochs",
]
