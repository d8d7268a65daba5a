"""Automatic adversarial training: eps and attack strength follow the model's measured robustness.

Two published ideas, combined so that a user only gives the target eps:

* an eps curriculum (Cai, Liu & Song 2018, "Curriculum Adversarial Training", IJCAI): train at a small eps
  first and raise it when the model is robust at the current one. Here eps starts at ``start * eps`` and
  grows by ``growth * eps`` at each check where PGD accuracy at the current eps reaches ``advance_at`` of
  clean accuracy; a linear floor guarantees the target eps is reached by ``deadline`` of training.
* Friendly adversarial training (Zhang, Xu, Han, Niu, Cui, Sugiyama & Kankanhalli 2020, "Attacks Which Do
  Not Kill Training Make Adversarial Learning Stronger", ICML): early-stopped PGD that stops ``tau`` steps
  after a point is misclassified, so the attack spends steps only where the model is robust; ``tau`` rises
  from 0 to ``tau_max`` (the paper's dynamic schedule) over training.

The measured comparison with the fixed schedule is in docs/BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class AutoSchedule:
    """State and settings of the automatic schedule (a frozen value; ``advance`` returns the next one)."""

    target: float
    current: float
    start: float = 0.25
    growth: float = 0.25
    advance_at: float = 0.6
    deadline: float = 0.5
    tau_max: int = 3

    @staticmethod
    def begin(target: float) -> AutoSchedule:
        return AutoSchedule(target=target, current=0.25 * target)

    def eps_at(self, progress: float) -> float:
        """Eps for a batch at ``progress`` (0..1 of training): the adaptive value or the linear floor."""
        floor = self.target * min(1.0, progress / self.deadline) if self.deadline > 0 else self.target
        return min(self.target, max(self.current, floor))

    def tau_at(self, progress: float) -> int:
        return min(self.tau_max, int(progress * (self.tau_max + 1)))

    def advance(self, clean: float, robust: float, progress: float) -> AutoSchedule:
        """After a check at the current eps: raise eps if robust accuracy is at least ``advance_at`` of clean."""
        current = max(self.current, self.eps_at(progress))
        if clean > 0 and robust >= self.advance_at * clean:
            current = min(self.target, current + self.growth * self.target)
        return replace(self, current=current)
