"""Store round trip and resume: a killed evaluation resumes and gives the uninterrupted run's numbers.

Every test here runs on SQLite and on a real PostgreSQL server (a throw-away cluster, see tests/pgserver.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.errors import UnknownNameError
from bastion.evaluation.config import EvalConfig
from bastion.evaluation.job import Progress, evaluate
from bastion.evaluation.store import Store


class Killed(Exception):
    pass


@pytest.fixture(params=["sqlite", "postgresql"])
def new_target(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """``new_target(name)``: where the store ``name`` of this test lives, on the backend of this parameter."""
    if request.param == "sqlite":
        return lambda name: str(tmp_path / f"{name}.sqlite")
    server = request.getfixturevalue("pg_server")
    made: dict[str, str] = {}

    def target(name: str) -> str:
        if name not in made:
            made[name] = server.database()
        return made[name]

    return target


@pytest.fixture()
def store(new_target: Callable[[str], str]) -> Iterator[Store]:
    s = Store(new_target("store"))
    yield s
    s.close()


def _config(checkpoint: Path, **change: object) -> EvalConfig:
    fields = {"model": str(checkpoint), "n": 96, "batch_size": 32, "eps": 0.1, "suite": None, "attack": "pgd",
              "params": {"steps": 10}, "seed": 5}
    return EvalConfig(**(fields | change))


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted-random"])
def test_killed_run_resumes_and_matches_uninterrupted(digits_checkpoint: Path, new_target: Callable[[str], str],
                                                      targeted: bool) -> None:
    config = _config(digits_checkpoint, targeted=targeted, eps=0.3 if targeted else 0.1)
    reference = evaluate(config, Store(new_target("ref")))

    store = Store(new_target("killed"))
    seen: list[Progress] = []

    def kill_after_first_batch(p: Progress) -> None:
        seen.append(p)
        if p.done == 32:
            raise Killed

    with pytest.raises(Killed):
        evaluate(config, store, on_progress=kill_after_first_batch)
    run_id = store.list_runs()[0].id
    assert store.get_run(run_id).status == "failed"  # marked, with the error kept, not left "running"
    assert store.get_artifact(run_id, "error").startswith("Killed")
    assert len(store.samples(run_id)) == 32  # the finished batch was kept

    resumed = evaluate(config, Store(new_target("killed")))
    assert resumed.run_id == run_id and resumed.resumed_points == 32
    assert resumed.summary["robust_accuracy"] == reference.summary["robust_accuracy"]
    assert resumed.summary["forward_passes"] == reference.summary["forward_passes"]
    ref_rows = Store(new_target("ref")).samples(reference.run_id)
    new_rows = store.samples(run_id)
    strip = [{k: v for k, v in r.items() if k != "run_id"} for r in ref_rows]
    assert strip == [{k: v for k, v in r.items() if k != "run_id"} for r in new_rows]
    if targeted:  # the resumed batches drew the same random targets
        for b in range(3):
            assert store.get_artifact(run_id, f"targets/{b}") == Store(new_target("ref")).get_artifact(
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


def test_finished_run_is_reused_and_fresh_starts_new(digits_checkpoint: Path, store: Store) -> None:
    config = _config(digits_checkpoint)
    first = evaluate(config, store)
    again = evaluate(config, store)  # the same command again: the stored run, nothing recomputed
    assert again.reused and again.run_id == first.run_id and again.summary == first.summary
    second = evaluate(config, store, fresh=True)
    assert first.run_id != second.run_id and second.resumed_points == 0 and not second.reused
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


def test_record_batch_is_all_or_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import bastion.store.store as store_module

    run_id = store.create_run("evaluate", "k", {}, 0, {})
    rows = [(i, 1, 1, 0, 1, 1, 0.25, 3, 2) for i in range(4)]
    store.record_batch(run_id, "pgd", 0, 0, 4, 1.0, rows)
    real = store_module._upsert

    def fail_on_batches_row(conn, table, rows):  # the samples went in, then the batch row fails
        if table.name == "batches":
            raise RuntimeError("disk full")
        real(conn, table, rows)

    monkeypatch.setattr(store_module, "_upsert", fail_on_batches_row)
    with pytest.raises(RuntimeError):
        store.record_batch(run_id, "pgd", 1, 4, 8, 1.0, [(i, *r[1:]) for i, r in zip(range(4, 8), rows, strict=True)])
    assert store.done_batches(run_id, "pgd") == {0}
    assert [r["idx"] for r in store.samples(run_id)] == [0, 1, 2, 3]  # no partial batch


def test_metrics_round_trip_export_and_import(store: Store, tmp_path: Path) -> None:
    run_id = store.create_run("poison", "k", {"a": 1}, 3, {})
    store.record_metrics(run_id, [("asr", 0, 0.5), ("asr", 1, 0.75, {"defense": "none"}),
                                  {"name": "clean_acc", "step": 1, "value": 0.9}, ("loss", 2, float("nan"))])
    store.record_metrics(run_id, [("asr", 0, 0.25)])  # the same (name, step, tags) again replaces the value
    assert store.metrics(run_id, "asr") == [{"name": "asr", "step": 0, "value": 0.25, "tags": {}},
                                            {"name": "asr", "step": 1, "value": 0.75, "tags": {"defense": "none"}}]
    assert [m["name"] for m in store.metrics(run_id)] == ["asr", "asr", "clean_acc", "loss"]
    assert store.metrics(run_id, "loss")[0]["value"] is None  # NaN is stored as NULL on both backends
    store.put_artifact(run_id, "note", {"x": [1, 2]})
    store.finish_run(run_id, {"n": 1})
    exported = store.export_run(run_id)
    with Store(tmp_path / "other.sqlite") as other:  # across backends: exported data is plain Python
        assert other.import_run(exported) == run_id
        assert other.metrics(run_id) == store.metrics(run_id)
        assert other.get_run(run_id) == store.get_run(run_id)
        assert other.export_run(run_id) == exported
        assert store.import_run(other.export_run(run_id)) == run_id  # importing again replaces, never duplicates
    assert store.export_run(run_id) == exported


def test_list_parts_totals_and_status(store: Store) -> None:
    run_id = store.create_run("evaluate", "k", {}, None, {})
    for part, batch in (("worst", 0), ("apgd-ce", 0), ("apgd-ce", 1)):
        store.record_batch(run_id, part, batch, 0, 1, 0.5, [(batch, 1, 1, 1, 1, 0, None, 1, 1)], outside_threat=1)
    assert store.parts(run_id) == ["apgd-ce", "worst"]
    assert store.batch_totals(run_id, "apgd-ce") == {"seconds": 1.0, "outside_threat": 2}
    assert store.batch_totals(run_id, "none") == {"seconds": 0.0, "outside_threat": 0}
    assert store.find_unfinished("evaluate", "k") == run_id and store.find_finished("evaluate", "k") is None
    store.set_status(run_id, "failed")
    assert store.get_run(run_id).status == "failed"
    assert store.get_artifact(run_id, "missing") is None


def test_diagnostics_say_what_runs_and_a_resumed_run_only_does_what_is_left(digits_checkpoint: Path,
                                                                           tmp_path: Path) -> None:
    config = EvalConfig(model=str(digits_checkpoint), n=40, batch_size=20, eps=0.1, suite="fast")
    store = Store(tmp_path / "s.sqlite")
    seen: list[Progress] = []

    def kill_in_diagnostics(p: Progress) -> None:
        seen.append(p)
        if p.stage.startswith("diagnostics:"):
            raise Killed

    with pytest.raises(Killed):
        evaluate(config, store, on_progress=kill_in_diagnostics)
    assert seen[-1].stage == "diagnostics: apgd at eps 0.025 (1/6)" and seen[-1].done == 40
    again: list[Progress] = []
    outcome = evaluate(config, store, on_progress=again.append)
    assert outcome.resumed_points == 40
    stages = [p.stage for p in again if p.stage]
    assert all(s.startswith("diagnostics") for s in stages)  # no batch attacked again
    assert [s for s in stages if s.startswith("diagnostics:")] == [
        "diagnostics: apgd at eps 0.025 (1/6)", "diagnostics: apgd at eps 0.05 (2/6)",
        "diagnostics: apgd at eps 0.1 (3/6)", "diagnostics: apgd at eps 0.2 (4/6)",
        "diagnostics: fgsm at eps 0.1 (5/6)", "diagnostics: apgd at eps 1 (6/6)"]


def test_a_run_stopped_during_the_diagnostics_redoes_only_the_checks_left(digits_checkpoint: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import bastion.evaluation.outcome as outcome

    config = EvalConfig(model=str(digits_checkpoint), n=40, batch_size=20, eps=0.1, suite="fast")
    reference = evaluate(config, Store(tmp_path / "ref.sqlite"))
    store = Store(tmp_path / "s.sqlite")

    def kill_at_the_fourth_check(p: Progress) -> None:
        if p.stage.startswith("diagnostics: ") and "(4/6)" in p.stage:
            raise Killed

    with pytest.raises(Killed):
        evaluate(config, store, on_progress=kill_at_the_fourth_check)
    calls: list[str] = []
    real = outcome.run_attack

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(str(args[4]))
        return real(*args, **kwargs)

    monkeypatch.setattr(outcome, "run_attack", counted)
    resumed = evaluate(config, store)
    assert len(calls) == 3  # the three checks that were left; the first three were stored
    assert resumed.summary["flags"] == reference.summary["flags"]
