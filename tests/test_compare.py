"""`bastion compare` end to end on digits with tiny budgets: the table is the stored runs, a kill resumes."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import yaml

from bastion.compare.config import load_compare
from bastion.compare.run import Event, run_compare
from bastion.compare.table import write_outputs
from bastion.errors import InvalidInputError
from bastion.evaluation.store import Store

TINY = {
    "name": "tiny",
    "dataset": "digits",
    "arch": "crown-cnn",
    "train": {"epochs": 3, "lr": 0.005},
    "eval": {"n": 16, "suite": "fast", "eot_samples": 2, "batch_size": 16, "latency_points": 16},
    "threat": {"norm": "linf", "eps": 0.2},
    "generalization": [{"norm": "l2", "eps": 0.5},
                       {"norm": "linf", "eps": 0.2, "attack": "square", "max_queries": 40}],
    "curve": [0.1],
    "defenses": [
        {"name": "standard", "method": "standard"},
        {"name": "fast-at", "method": "fast-at", "params": {"guard": "none", "val_size": 100, "check_size": 64}},
        {"name": "ensemble", "method": "ensemble-average", "seeds": 1},
        {"name": "squeeze", "method": "feature-squeezing-detector", "params": {"calibration_points": 100},
         "generalization": False},
        {"name": "ibp", "method": "ibp", "certify": {"norm": "linf", "eps": 0.1}, "generalization": False},
        {"name": "smoothing", "method": "smoothing", "params": {"sigma": 0.25},
         "certify": {"norm": "l2", "eps": 0.25, "samples": 100}, "generalization": False},
    ],
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, object, Path, list[Event], list[Event]]:
    """A comparison killed after its builds and three measurements, then resumed to the end."""
    tmp = tmp_path_factory.mktemp("compare")
    config = load_compare(_write(tmp, TINY))
    store = Store(tmp / "store.sqlite")
    first: list[Event] = []

    def kill(e: Event) -> None:
        first.append(e)
        if e.phase == "measure" and not e.skipped and e.done == 3:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        run_compare(config, store, tmp / "work", scheduler="sync", on_event=kill)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp / "work").rglob("*.module.safetensors")}
    second: list[Event] = []
    result = run_compare(config, store, tmp / "work", scheduler="sync", on_event=second.append)
    again = {p: p.stat().st_mtime_ns for p in (tmp / "work").rglob("*.module.safetensors")}
    assert again == mtimes  # nothing retrained
    return store, result, tmp, first, second


def test_resume_reuses_finished_defenses_and_measurements(finished: tuple) -> None:
    _, result, _, first, second = finished
    builds = [e for e in second if e.phase == "build"]
    assert len(builds) == len(TINY["defenses"]) and all(e.skipped for e in builds)
    measured_before = [e.run_id for e in first if e.phase == "measure"]
    assert len(measured_before) == 3
    reused = {e.run_id for e in second if e.phase == "measure" and e.skipped}
    assert set(measured_before) <= reused
    assert len([e for e in second if e.phase == "measure" and not e.skipped]) == len(result.measurements) - 3


def test_every_number_in_the_table_is_the_stored_run(finished: tuple) -> None:
    store, result, _, _, _ = finished
    summary = store.get_run(result.run_id).summary
    assert [r["defense"] for r in summary["rows"]] == [d["name"] for d in TINY["defenses"]]
    base_train = None
    for row in summary["rows"]:
        main = store.get_run(row["runs"]["main"]).summary
        naive = store.get_run(row["runs"]["non-adaptive"]).summary
        assert store.get_run(row["runs"]["main"]).config["adaptive"] is True
        assert store.get_run(row["runs"]["non-adaptive"]).config["adaptive"] is False
        assert row["robust_adaptive"] == main["robust_accuracy"]
        assert row["robust_non_adaptive"] == naive["robust_accuracy"]
        assert row["clean_accuracy"] == main["clean_accuracy"]
        assert row["gap"] == pytest.approx(naive["robust_accuracy"] - main["robust_accuracy"])
        for g in row["generalization"]:
            assert g["robust"] == store.get_run(g["run"]).summary["robust_accuracy"]
        for p in row["curve"]:
            run = store.get_run(p["run"])
            assert (p["eps"], p["robust"]) == (run.config["eps"], run.summary["robust_accuracy"])
        build = store.get_run(row["runs"]["build"]).summary
        assert row["latency_multiple"] == build["latency_multiple"]
        if row["defense"] == "standard":
            base_train = build["train_seconds"]
            assert row["train_multiple"] == pytest.approx(1.0)
        if row["certified"]:
            cert = store.get_run(row["certified"]["run"]).summary
            assert row["certified"]["accuracy"] == cert["certified_accuracy_at_eps"]
    ensemble = next(r for r in summary["rows"] if r["defense"] == "ensemble")
    own = store.get_run(ensemble["runs"]["build"]).summary
    # the ensemble's training cost includes the base model it is built around
    assert ensemble["train_seconds"] == pytest.approx(base_train + own["train_seconds"] + own["build_seconds"])


def test_the_measurements_tell_the_defenses_apart(finished: tuple) -> None:
    store, result, _, _, _ = finished
    rows = {r["defense"]: r for r in store.get_run(result.run_id).summary["rows"]}
    assert rows["standard"]["robust_adaptive"] <= 0.15  # a normally trained model has no robustness at 0.2
    assert "no robustness at the trained-for threat" in rows["standard"]["limitations"]
    assert "randomness" in rows["smoothing"]["flags"]  # the noisy classifier is recognised and attacked with EOT
    assert store.get_run(rows["smoothing"]["runs"]["main"]).summary["adaptation"]["eot_samples"] == 2
    assert store.get_run(rows["smoothing"]["runs"]["non-adaptive"]).summary["adaptation"]["eot_samples"] is None
    assert "non_differentiable_modules" in rows["squeeze"]["flags"]
    assert rows["ibp"]["certified"]["accuracy"] <= rows["ibp"]["clean_accuracy"] + 1e-9
    assert rows["ensemble"]["latency_multiple"] > 1.0  # two members answer every input


def test_outputs_link_every_cell_to_its_run(finished: tuple) -> None:
    store, result, tmp, _, _ = finished
    paths = write_outputs(store, result.run_id, tmp / "report")
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    summary = store.get_run(result.run_id).summary
    ids = {rid for r in summary["rows"] for rid in r["runs"].values()}
    ids |= {g["run"] for r in summary["rows"] for g in r["generalization"]}
    for rid in ids:
        assert f"runs/{rid}/report.md" in md and f"runs/{rid}/report.html" in page
        assert (tmp / "report" / "runs" / rid / "report.html").exists()
    HTMLParser().feed(page)
    assert paths["tradeoff"].stat().st_size > 1000 and paths["curves"].stat().st_size > 1000


def test_bad_configs_fail_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="method: standard"):
        load_compare(_write(tmp_path, TINY | {"defenses": [{"name": "jpeg", "method": "jpeg"}]}))
    with pytest.raises(InvalidInputError, match="not in the comparison"):
        load_compare(_write(tmp_path, TINY | {"defenses": [*TINY["defenses"],
                                                          {"name": "x", "method": "jpeg", "base": "nope"}]}))
    with pytest.raises(InvalidInputError, match="unknown method 'jpg'"):
        load_compare(_write(tmp_path, TINY | {"defenses": [*TINY["defenses"], {"name": "x", "method": "jpg"}]}))
    with pytest.raises(InvalidInputError, match="built-in preset"):
        load_compare("no-such-preset")


def test_presets_load_and_quick_overrides_apply() -> None:
    full, quick = load_compare("mnist"), load_compare("mnist", quick=True)
    assert quick.name == "mnist-quick" and quick.eval.n < full.eval.n and quick.train.epochs < full.train.epochs
    assert quick.entry("diffpure").n == 16 and full.entry("hybrid").n == 50 and full.entry("diffpure").eot_samples == 4
    assert quick.entry("ibp").params["epochs"] == 3 and "epochs" not in full.entry("ibp").params
    assert {d.method for d in full.defenses} >= {"standard", "pgd-at", "fast-at", "trades", "ensemble-average",
                                                 "dynamic-ensemble", "feature-squeezing-detector", "jpeg",
                                                 "distillation", "diffpure", "smoothing", "ibp", "pipeline"}
    assert load_compare("fashion-mnist").dataset == "fashion-mnist"


def test_entry_eot_samples_reach_the_evaluation_but_not_the_build_key(tmp_path: Path) -> None:
    from bastion.compare.build import build_key
    from bastion.compare.run import _eval_config

    config = load_compare(_write(tmp_path, TINY))
    entry = config.entry("smoothing")
    cheaper = entry.model_copy(update={"eot_samples": 5})
    assert _eval_config(config, entry, tmp_path / "m.pt", config.threat)["eot_samples"] == 2
    assert _eval_config(config, cheaper, tmp_path / "m.pt", config.threat)["eot_samples"] == 5
    other = config.model_copy(update={"defenses": [cheaper if d.name == "smoothing" else d for d in config.defenses]})
    assert build_key(other, cheaper) == build_key(config, entry)



def test_built_modules_are_recipes_and_weights_never_pickles(finished: tuple, tmp_path: Path) -> None:
    import json as _json

    from bastion.compare.deployable import load_built
    from bastion.errors import CheckpointError

    _, _, tmp, _, _ = finished
    built = sorted((tmp / "work").rglob("*.module.safetensors"))
    assert len(built) == 6  # training states (*.state.pt) hold tensors and numbers, read with weights_only=True
    assert all(p.name.endswith(".state.pt") for p in (tmp / "work").rglob("*.pt"))
    for path in built:
        recipe = _json.loads(path.with_name(path.name.replace(".module.safetensors", ".module.json")).read_text())
        assert recipe["recipe"]["kind"] in ("checkpoint", "defense")
        module, meta = load_built(path)  # rebuilt from the recipe, weights loaded strictly
        assert meta.num_classes == 10 and not module.training
    old = tmp_path / "old-abc.pt"
    torch.save(torch.nn.Linear(2, 2), old)
    with pytest.raises(CheckpointError, match="no longer loads pickles"):
        load_built(old)
