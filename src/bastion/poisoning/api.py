"""``bastion.poison``: run a poisoning matrix from Python, as ``bastion poison run`` does.

    import bastion
    result = bastion.poison("mnist", quick=True, store="results.sqlite")
    print(result.cell("badnets", "spectral-signatures")["attack_success_rate"])
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.poisoning.config import PoisonConfig, load_poison, parse_poison
from bastion.store import Store


@dataclass(frozen=True)
class PoisonReport:
    """The stored matrix: ``summary`` (cells, builds), the run id, and where the report files are (if written)."""

    run_id: str
    summary: dict[str, Any]
    files: dict[str, Path]

    def cell(self, attack: str, defense: str = "none") -> dict[str, Any]:
        from bastion.poisoning.table import cell

        return cell(self.summary, attack, defense)

    def to_markdown(self) -> str:
        from bastion.poisoning.table import markdown

        return markdown(self.summary, self.run_id)


def poison(config: str | Path | dict[str, Any] | PoisonConfig = "mnist", *, quick: bool = False,
           store: Store | str | Path | None = None, workdir: str | Path | None = None, report_dir: str | Path | None
           = None, scheduler: str | None = "sync", workers: int = 2) -> PoisonReport:
    """Run (or resume) the attack x defense matrix ``config``: a preset name, a YAML file, a mapping or a
    ``PoisonConfig``. ``store`` None: a temporary store and work folder, deleted afterwards; give a store (and a
    ``workdir``, default next to the store) to keep the runs and resume. ``scheduler``: ``"sync"`` (this process,
    the default), None (a local Dask cluster of ``workers`` processes) or a Dask scheduler address."""
    from bastion.poisoning.matrix import run_matrix
    from bastion.poisoning.table import write_outputs

    cfg = config if isinstance(config, PoisonConfig) else parse_poison(config) if isinstance(config, dict) else \
        load_poison(config, quick=quick)
    with tempfile.TemporaryDirectory(prefix="bastion-poison-") as tmp:
        st = store if isinstance(store, Store) else Store(Path(tmp) / "poison.sqlite" if store is None else store)
        try:
            root = Path(workdir) if workdir is not None else (Path(tmp) if store is None else st.home / "poison")
            result = run_matrix(cfg, st, root, scheduler=scheduler, workers=workers)
            files = write_outputs(st, result.run_id, Path(report_dir)) if report_dir is not None else {}
            return PoisonReport(result.run_id, st.get_run(result.run_id).summary or {}, files)
        finally:
            if not isinstance(store, Store):
                st.close()
