"""``Report``: what ``bastion.evaluate`` / ``attack`` / ``certify`` return, read back from the store.

It holds the stored run and the JSON document; the Markdown and HTML are rendered when asked for (the HTML draws
its figures), so a sweep that only wants the numbers pays nothing for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.store import Run


@dataclass(frozen=True)
class Report:
    """One evaluation, attack or certification run (every number comes from the store).

    ``summary`` is the full summary (docs/REPORT_SCHEMA.md), ``typed`` the same as a validated object, and the
    properties are its headline numbers. ``to_json()`` is the ``report.json`` document, ``to_html()`` the
    self-contained page, ``to_markdown()`` the text report; ``paths`` names the files written for ``report_dir``.
    """

    run: Run = field(repr=False)
    document: dict[str, Any] = field(repr=False)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def config(self) -> dict[str, Any]:
        return self.run.config

    @property
    def summary(self) -> dict[str, Any]:
        return self.run.summary or {}

    @property
    def typed(self) -> Any:
        """The summary as its kind's typed, validated model (``bastion.store.summaries``)."""
        return self.run.typed_summary()

    @property
    def clean_accuracy(self) -> float:
        return float(self.summary["clean_accuracy"])

    @property
    def robust_accuracy(self) -> float:
        """Points classified correctly and not broken by any attack (re-checked), over all points; for a
        certification run the empirical one (``summary["certified_accuracy_at_eps"]`` is the certified one)."""
        return float(self.summary["robust_accuracy"])

    @property
    def flags(self) -> list[dict[str, Any]]:
        """The gradient-masking and outcome diagnostics that fired (name, evidence, numbers)."""
        return [f for f in self.summary.get("flags", []) if f.get("fired")]

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        """Per attack stage (suite runs): points attacked, robust accuracy, passes, seconds, memory."""
        return dict(self.summary.get("stages", {}))

    def to_json(self) -> str:
        return json.dumps(self.document, indent=2, sort_keys=True)

    def to_markdown(self) -> str:
        if self.run.kind == "certify":
            from bastion.certification.report import report_markdown

            return report_markdown(self.run)
        from bastion.evaluation.report import report_markdown as evaluation_markdown

        return evaluation_markdown(self.run)

    def to_html(self) -> str:
        if self.run.kind == "certify":
            from bastion.certification.report import report_html

            return report_html(self.run)
        from bastion.evaluation.report import report_html as evaluation_html

        return evaluation_html(self.run, gallery=self.document.get("gallery") or [])
