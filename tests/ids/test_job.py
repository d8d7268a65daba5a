"""The IDS evaluation end to end on synthetic flows written as a bastion snapshot: detectors, attacks, store runs,
resume, report."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.ids.flowgen import write_bastion_csv

from bastion.ids.config import parse_ids
from bastion.ids.job import ATTACK_KIND, DETECTOR_KIND, run_ids
from bastion.ids.report import write_outputs
from bastion.store import Store


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str, Path, dict]:
    root = tmp_path_factory.mktemp("ids")
    data = write_bastion_csv(str(root / "flows.csv"), n=800)
    config = parse_ids({"name": "t", "data": data, "detectors": [{"name": "mlp"}, {"name": "gbt"}],
                        "training": {"epochs": 15}, "attacks": [{"name": "pgd", "params": {"steps": 10}}],
                        "per_class": 40, "eps": 0.2})
    store = Store(root / "store.db")
    run_id = run_ids(config, store, root / "work")
    return store, run_id, root, config.model_dump(mode="json")


def test_the_evaluation_records_detectors_and_cells(finished) -> None:
    store, run_id, _, _ = finished
    summary = store.get_run(run_id).summary
    assert set(summary["detectors"]) == {"mlp", "gbt"}
    assert summary["detectors"]["mlp"]["accuracy"] > 0.8
    assert summary["class_counts"]["BENIGN"] > 0 and set(summary["class_counts"]) == {"BENIGN", "Flood", "Scan"}
    routes = {c["detector"]: c["route"] for c in summary["cells"]}
    assert routes == {"mlp": "unconstrained", "gbt": "transfer from mlp"}
    for cell in summary["cells"]:
        assert 0 < cell["attacked"] <= 80 and set(cell["per_class"]) <= {"Flood", "Scan"}
        assert cell["valid_success_rate"] <= min(cell["success_rate"], cell["valid_rate"])
    mlp = next(c for c in summary["cells"] if c["detector"] == "mlp")
    assert mlp["success_rate"] > 0.3 and mlp["valid_rate"] < 0.1 and mlp["violated"]


def test_a_second_run_reuses_everything(finished, tmp_path: Path) -> None:
    store, run_id, root, config = finished
    before = {r.id for r in store.list_runs(100)}
    again = run_ids(parse_ids(config), store, root / "work")
    after = {r.id for r in store.list_runs(100)}
    assert again == run_id and before == after
    kinds = [r.kind for r in store.list_runs(100)]
    assert kinds.count(DETECTOR_KIND) == 2 and kinds.count(ATTACK_KIND) == 2


def test_the_report(finished) -> None:
    store, run_id, root, _ = finished
    paths = write_outputs(store, run_id, root / "report")
    page = paths["html"].read_text()
    assert "valid success" in page and "transfer from mlp" in page
    for png in ("confusion.png", "classes.png", "validity.png"):
        assert (root / "report" / png).stat().st_size > 1000
    assert "| mlp | pgd |" in paths["md"].read_text()


def test_a_defended_entry_shares_the_trained_detector(tmp_path: Path) -> None:
    data = write_bastion_csv(str(tmp_path / "flows.csv"), n=400)
    config = parse_ids({"name": "g", "data": data, "training": {"epochs": 3}, "attacks": [{"name": "pgd"}],
                        "per_class": 10, "eps": 0.2,
                        "detectors": [{"name": "mlp"},
                                      {"name": "mlp", "label": "gated", "defense": "constraint_gate"}]})
    store = Store(tmp_path / "s.sqlite")
    summary = store.get_run(run_ids(config, store, tmp_path / "w")).summary
    assert len(list((tmp_path / "w" / "detectors").glob("*.safetensors"))) == 1
    plain, gated = summary["detectors"]["mlp"], summary["detectors"]["gated"]
    assert gated["train_seconds"] == plain["train_seconds"]
    cells = {c["detector"]: c for c in summary["cells"]}
    # the gate turns every unconstrained PGD flow (none of them could exist) into an alarm
    assert cells["mlp"]["success_rate"] > 0.3 and cells["gated"]["success_rate"] == 0.0
