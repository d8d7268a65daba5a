"""``bastion.ids_evaluate``: run an IDS evaluation from Python, as ``bastion ids evaluate`` does.

    import bastion
    result = bastion.ids_evaluate("snapshot", quick=True, store="results.sqlite")
    print(result.cell("mlp", "capgd")["valid_success_rate"])
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.ids.config import IdsConfig, load_ids, parse_ids
from bastion.store import Store


@dataclass(frozen=True)
class IdsReport:
    """The stored evaluation: ``summary`` (detectors, cells per detector and attack), the run id, the report files."""

    run_id: str
    summary: dict[str, Any]
    files: dict[str, Path]

    def cell(self, detector: str, attack: str) -> dict[str, Any]:
        return next(c for c in self.summary["cells"] if c["detector"] == detector and c["attack"] == attack)

    def to_markdown(self) -> str:
        from bastion.ids.report import markdown

        return markdown(self.summary, self.run_id)


def ids_evaluate(config: str | Path | dict[str, Any] | IdsConfig = "snapshot", *, quick: bool = False,
                 store: Store | str | Path | None = None, workdir: str | Path | None = None,
                 report_dir: str | Path | None = None) -> IdsReport:
    """Run (or resume) the IDS evaluation ``config``: a preset name, a YAML file, a mapping or an ``IdsConfig``.
    ``store`` None: a temporary store and work folder, deleted afterwards; give a store to keep the runs and resume."""
    from bastion.ids.job import run_ids
    from bastion.ids.report import write_outputs

    cfg = config if isinstance(config, IdsConfig) else parse_ids(config) if isinstance(config, dict) else \
        load_ids(config, quick=quick)
    with tempfile.TemporaryDirectory(prefix="bastion-ids-") as tmp:
        st = store if isinstance(store, Store) else Store(Path(tmp) / "ids.sqlite" if store is None else store)
        try:
            root = Path(workdir) if workdir is not None else (Path(tmp) if store is None else st.home / "ids")
            run_id = run_ids(cfg, st, root)
            files = write_outputs(st, run_id, Path(report_dir)) if report_dir is not None else {}
            return IdsReport(run_id, st.get_run(run_id).summary or {}, files)
        finally:
            if not isinstance(store, Store):
                st.close()
