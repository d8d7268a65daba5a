"""``bastion.steal``: run a stealing experiment from Python, as ``bastion steal run`` does.

    import bastion
    result = bastion.steal("mnist", quick=True, store="results.sqlite")
    print(result.cell("knockoff-random", "top1")["fidelity"])
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.stealing.config import NONE, StealConfig, load_steal, parse_steal
from bastion.store import Store


@dataclass(frozen=True)
class StealReport:
    """The stored experiment: ``summary`` (cells with their curves, defenses, detectors), the run id, and where the
    report files are (if written)."""

    run_id: str
    summary: dict[str, Any]
    files: dict[str, Path]

    def cell(self, attack: str, defense: str = NONE) -> dict[str, Any]:
        from bastion.stealing.table import cell

        return cell(self.summary, attack, defense)

    def to_markdown(self) -> str:
        from bastion.stealing.table import markdown

        return markdown(self.summary, self.run_id)


def steal(config: str | Path | dict[str, Any] | StealConfig = "mnist", *, quick: bool = False,
          store: Store | str | Path | None = None, workdir: str | Path | None = None,
          report_dir: str | Path | None = None) -> StealReport:
    """Run (or resume) the stealing experiment ``config``: a preset name, a YAML file, a mapping or a
    ``StealConfig``. ``store`` None: a temporary store and work folder, deleted afterwards; give a store (and a
    ``workdir``, default next to the store) to keep the runs and resume."""
    from bastion.stealing.run import run_steal
    from bastion.stealing.table import write_outputs

    cfg = config if isinstance(config, StealConfig) else parse_steal(config) if isinstance(config, dict) else \
        load_steal(config, quick=quick)
    with tempfile.TemporaryDirectory(prefix="bastion-steal-") as tmp:
        st = store if isinstance(store, Store) else Store(Path(tmp) / "steal.sqlite" if store is None else store)
        try:
            root = Path(workdir) if workdir is not None else (Path(tmp) if store is None else st.home / "steal")
            result = run_steal(cfg, st, root)
            files = write_outputs(st, result.run_id, Path(report_dir)) if report_dir is not None else {}
            return StealReport(result.run_id, st.get_run(result.run_id).summary or {}, files)
        finally:
            if not isinstance(store, Store):
                st.close()
