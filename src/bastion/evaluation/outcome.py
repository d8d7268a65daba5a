"""Outcome diagnostics that need attacks: single-step vs iterative, unbounded eps, monotonicity in eps.

They run on the first few points of the run (the probe points) with the same adaptation as the suite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from bastion.evaluation.config import EvalConfig
from bastion.evaluation.diagnostics import Flag, box_covering_eps, check_monotone, check_single_step, check_unbounded
from bastion.evaluation.runner import Adaptation, run_attack
from bastion.threat import LpThreat

if TYPE_CHECKING:
    from bastion.evaluation.setup import Setup

EPS_MULTIPLES = (0.25, 0.5, 1.0, 2.0)


Memo = Callable[[str, Callable[[], list[bool]]], list[bool]]  # (name, compute) -> the stored or computed result


def outcome_checks(setup: Setup, adapt: Adaptation, config: EvalConfig, points: int,
                   on_check: Callable[[str], None] | None = None, memo: Memo | None = None) -> list[Flag]:
    """The checks that need attacks, on the first ``points`` points; ``on_check`` hears which attack runs next (the
    six runs can take minutes on a randomized model, where every gradient is an EOT average); ``memo`` keeps each
    run's result (the job stores them, so a run stopped during the checks does not redo the finished ones)."""
    x, y = setup.points.x[:points], setup.points.y[:points]
    threat = setup.threat
    iters = 50 if config.suite == "fast" else 100
    runs = iter(range(1, 7))

    def robust(eps: float, attack: str = "apgd", **params: object) -> torch.Tensor:
        if on_check:
            on_check(f"{attack} at eps {eps:.4g} ({next(runs)}/{5 + (threat.norm in ('linf', 'l2'))})")

        def compute() -> list[bool]:
            t = LpThreat(threat.norm, eps, lower=threat.lower, upper=threat.upper, mask=threat.mask)
            return run_attack(setup.model, x, y, t, attack, adapt=adapt,
                              generator=torch.Generator(device=x.device).manual_seed(config.seed),
                              **params).robust.tolist()

        name = f"outcome/{attack}/eps={eps!r}/{sorted(params.items())}"
        return torch.tensor(memo(name, compute) if memo is not None else compute(), dtype=torch.bool)

    base = float(threat.eps) if not isinstance(threat.eps, torch.Tensor) else float(threat.eps.max())
    curve = [robust(m * base, n_iter=iters) for m in EPS_MULTIPLES]
    flags = [check_monotone([m * base for m in EPS_MULTIPLES], [float(r.float().mean()) for r in curve], len(y))]
    if threat.norm in ("linf", "l2"):
        at_eps = curve[EPS_MULTIPLES.index(1.0)]
        single = robust(base, "fgsm")
        flags.append(check_single_step(~at_eps, ~single))
    big = box_covering_eps(threat.norm, tuple(x.shape[1:]), *threat.bounds(x))
    flags.append(check_unbounded(float(robust(big, n_iter=iters).float().mean()), big, 1.0 / setup.num_classes))
    return flags
