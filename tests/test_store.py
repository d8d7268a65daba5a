"""Store round trip and resume: a killed evaluation resumes and gives the uninterrupted run's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import UnknownNameError
from bastion.evaluation.config import EvalConfig
from bastion.evaluation.job import Progress, evaluate
from bastion.evaluation.store import Store


class Killed(Exception):
    pass


def _config(checkpoint: Path, **change: object) -> EvalConfig:
    fields = {"model": str(checkpoint), "n": 96, "batch_size": 32, "eps": 0.1, "suite": None, "attack": "pgd",
              "params": {"steps": 10}, "seed": 5}
    return EvalConfig(**(fields | change))


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted-random"])
def test_killed_run_resumes_and_matches_uninterrupted(digits_checkpoint: Path, tmp_path: Path,
                                                      targeted: bool) -> None:
    config = _config(digits_checkpoint, targeted=targeted, eps=0.3 if targeted else 0.1)
    reference = evaluate(config, Store(tmp_path / "ref.sqlite"))

    store = Store(tmp_path / "killed.sqlite")
    seen: list[Progress] = []

    def kill_after_first_batch(p: Progress) -> None:
        seen.append(p)
        if p.done == 32:
            raise Killed

    with pytest.raises(Killed):
        evaluate(config, store, on_progress=kill_after_first_batch)
    run_id = store.list_runs()[0].id
    assert store.get_run(run_id).status == "running"
    assert len(store.samples(run_id)) == 32  # the finished batch was kept

    resumed = evaluate(config, Store(tmp_path / "killed.sqlite"))
    assert resumed.run_id == run_id and resumed.resumed_points == 32
    assert resumed.summary["robust_accuracy"] == reference.summary["robust_accuracy"]
    assert resumed.summary["forward_passes"] == reference.summary["forward_passes"]
    ref_rows = Store(tmp_path / "ref.sqlite").samples(reference.run_id)
    new_rows = store.samples(run_id)
    strip = [{k: v for k, v in r.items() if k != "run_id"} for r in ref_rows]
    assert strip == [{k: v for k, v in r.items() if k != "run_id"} for r in new_rows]
    if targeted:  # the resumed batches drew the same random targets
        for b in range(3):
            assert store.get_artifact(run_id, f"targets/{b}") == Store(tmp_path / "ref.sqlite").get_artifact(
                reference.run_id, f"targets/{b}")
        assert 0 < resumed.summary["targeted_success_rate"] < 1


def test_targeted_config_rules(digits_checkpoint: Path) -> None:
    base = _config(digits_checkpoint)
    # untargeted runs ignore the target choice, and their keys are what they were before it existed
    assert base.key() == _config(digits_checkpoint, targets="least-likely").key()
    assert _config(digits_checkpoint, targeted=True).key() != base.key()
    assert _config(digits_checkpoint, targeted=True).key() != _config(digits_checkpoint, targeted=True,
                                                                      targets="least-likely").key()
    with pytest.raises(ValueError, match="targeted run takes one attack"):
        EvalConfig(model=str(digits_checkpoint), suite="fast", targeted=True)


def test_finished_run_is_not_resumed_and_fresh_starts_new(digits_checkpoint: Path, store: Store) -> None:
    config = _config(digits_checkpoint)
    first = evaluate(config, store)
    second = evaluate(config, store)
    assert first.run_id != second.run_id and second.resumed_points == 0
    run = store.get_run(first.run_id)
    assert run.status == "finished" and run.summary == first.summary
    assert run.environment["torch"] and run.config["dataset"] == "digits" and run.seed == 5
    assert len(store.samples(first.run_id)) == 96


def test_run_lookup_by_prefix_and_unknown(digits_checkpoint: Path, store: Store) -> None:
    out = evaluate(_config(digits_checkpoint), store)
    assert store.get_run(out.run_id[:17]).id == out.run_id
    with pytest.raises(UnknownNameError, match="No run"):
        store.get_run("nope")


def test_summary_counts_match_rows(digits_checkpoint: Path, store: Store) -> None:
    out = evaluate(_config(digits_checkpoint), store)
    rows = store.samples(out.run_id)
    s = out.summary
    assert s["n"] == 96
    assert s["clean_accuracy"] == sum(r["clean_correct"] for r in rows) / 96
    assert s["robust_accuracy"] == sum(r["clean_correct"] and not r["success"] for r in rows) / 96
    assert s["forward_passes"] == sum(r["forward"] for r in rows)
