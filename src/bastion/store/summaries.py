"""Typed summaries per run kind: the stored summary JSON read back as a validated object, so code that reads a run
gets named, typed fields (``run.typed_summary().robust_accuracy``) and a summary that lacks one fails loudly.

Only the fields every summary of the kind has are declared; the rest (curves, flags, adaptation...) stay reachable
as extra fields. A kind without a model here (a comparison, a build) keeps its plain dict.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Summary(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class StageSummary(_Summary):
    """One attack stage of a suite run (docs/REPORT_SCHEMA.md)."""

    attack: str
    role: str
    attacked: int
    broken: int
    robust_accuracy: float
    forward_passes: int
    backward_passes: int
    seconds: float
    peak_rss_mb: float | None = None


class EvaluateSummary(_Summary):
    """``bastion evaluate`` / ``bastion attack`` / ``bastion.evaluate`` runs."""

    schema_name: str = Field(alias="schema")
    mode: Literal["suite", "attack"]
    n: int
    clean_accuracy: float
    robust_accuracy: float
    attack_success_rate: float
    forward_passes: int
    backward_passes: int
    passes_per_point: float
    attack_seconds: float
    median_norm_of_successes: float | None = None
    stages: dict[str, StageSummary] = Field(default_factory=dict)
    flags: list[dict[str, Any]] = Field(default_factory=list)
    flags_fired: list[str] = Field(default_factory=list)


class CertifySummary(_Summary):
    """``bastion certify`` / ``bastion.certify`` runs: certified next to empirical robust accuracy."""

    n: int
    method: str
    norm: str
    eps: float
    radii: list[float]
    certified_accuracy: dict[str, float]
    empirical_robust_accuracy: dict[str, float]
    certified_accuracy_at_eps: float
    clean_accuracy: float
    robust_accuracy: float
    mean_certified_radius: float
    violations: list[int]


SUMMARIES: dict[str, type[_Summary]] = {"evaluate": EvaluateSummary, "certify": CertifySummary}


def typed_summary(kind: str, summary: dict[str, Any] | None) -> _Summary | dict[str, Any] | None:
    """The summary of a run of ``kind`` as its typed model (validated), or as it is for kinds without one."""
    if summary is None or kind not in SUMMARIES:
        return summary
    return SUMMARIES[kind].model_validate(summary)
