"""Schema versions: a store written before versions existed (tests/fixtures/store-v1.sqlite, made by the code of
that time) upgrades in place and reads the same numbers; newer, corrupt or unreachable stores give one clear line."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.evaluation.config import EvalConfig
from bastion.evaluation.report import report_dict
from bastion.evaluation.summary import summarize
from bastion.store import SCHEMA_VERSION, Store, StoreError

FIXTURES = Path(__file__).parent / "fixtures"
REPORTS = {"suite": "store-v1-evaluate.report.json", "attack": "store-v1-attack.report.json"}


@pytest.fixture()
def v1_store(tmp_path: Path) -> Path:
    path = tmp_path / "store-v1.sqlite"
    shutil.copy(FIXTURES / "store-v1.sqlite", path)
    return path


def _saved(which: str) -> dict:
    return json.loads((FIXTURES / REPORTS[which]).read_text())


def _version(path: Path) -> int | None:
    with sqlite3.connect(path) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
            return None
        return int(db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])


@pytest.mark.parametrize("which", ["suite", "attack"])
def test_v1_store_upgrades_and_reads_the_same_numbers(v1_store: Path, which: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert _version(v1_store) is None  # written before schema versions
    saved = _saved(which)
    with Store(v1_store) as store:
        assert store.upgraded_from == 1 and _version(v1_store) == SCHEMA_VERSION
        run = store.get_run(saved["run_id"])
        assert run.summary == saved["summary"]
        # the stage list came from the migration; summaries must not consult today's suite definition any more
        monkeypatch.setattr("bastion.evaluation.summary.suite_stages", _no_suite_definition)
        recomputed = summarize(store, run.id, EvalConfig(**run.config), saved["summary"].get("num_classes", 10))
        assert recomputed == saved["summary"]
        assert report_dict(run, store) == saved
        stages = store.get_artifact(run.id, "stages")
        if which == "suite":
            assert [s["part"] for s in stages] == ["apgd-ce", "apgd-t"]
            assert set(saved["summary"]["stages"]) == {"apgd-ce", "apgd-t"}
        else:
            assert stages is None
    with Store(v1_store) as again:
        assert again.upgraded_from == SCHEMA_VERSION  # upgraded once


def _no_suite_definition(*args: object, **kwargs: object) -> None:
    raise AssertionError("summary read today's suite definition instead of the run's stored stages")


def test_failed_upgrade_leaves_the_store_as_it_was(v1_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bastion.store.migrate as migrate

    def broken(conn: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setitem(migrate.STEPS, 1, broken)
    before = v1_store.read_bytes()
    with pytest.raises(RuntimeError):
        Store(v1_store)
    assert _version(v1_store) is None
    with sqlite3.connect(v1_store) as db:  # the finished runs are all there, readable by the old code
        assert db.execute("SELECT COUNT(*) FROM runs WHERE status='finished'").fetchone()[0] == 2
        assert "metrics" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    monkeypatch.undo()
    with Store(v1_store) as store:
        assert store.upgraded_from == 1 and len(store.list_runs()) == 2
    assert len(before) > 0


def test_v1_export_imports_with_its_stage_list(tmp_path: Path) -> None:
    """A run exported by the old code (plain rows of its four tables) imports into a current store."""
    saved = _saved("suite")
    with sqlite3.connect(FIXTURES / "store-v1.sqlite") as db:
        db.row_factory = sqlite3.Row
        exported = {t: [dict(r) for r in db.execute(f"SELECT * FROM {t} WHERE {'id' if t == 'runs' else 'run_id'}=?",
                                                     (saved["run_id"],))]
                    for t in ("runs", "samples", "batches", "artifacts")}
    with Store(tmp_path / "new.sqlite") as store:
        run_id = store.import_run(exported)
        assert [s["part"] for s in store.get_artifact(run_id, "stages")] == ["apgd-ce", "apgd-t"]
        assert report_dict(store.get_run(run_id), store) == saved


def test_store_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match=r"schema version 99.*newer bastion.*upgrade bastion"):
        Store(path)
    code, out = _cli("runs", "list", "--store", str(path))
    assert code == 2 and "upgrade bastion" in out and "Traceback" not in out


def test_corrupt_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite"
    path.write_bytes(b"this is not a database, just some bytes " * 200)
    with pytest.raises(StoreError, match="move it aside"):
        Store(path)
    assert path.read_bytes().startswith(b"this is not a database")  # never overwritten
    code, out = _cli("runs", "list", "--store", str(path))
    assert code == 2 and out.count("error:") == 1 and "Traceback" not in out


@pytest.mark.parametrize("url", ["postgresql://u@host:notaport/db", "mysql://u@localhost/db", "sqlite://",
                                 "postgresql://127.0.0.1:5432"])
def test_malformed_or_unsupported_url(url: str) -> None:
    with pytest.raises(StoreError, match=r"sqlite:///path.*postgresql://user@host:port/database"):
        Store(url)


def test_unreachable_server_is_one_line_without_traceback(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1/x could not be opened.*PostgreSQL server is running"):
        Store("postgresql://127.0.0.1:1/x")
    done = subprocess.run([sys.executable, "-m", "bastion", "runs", "list", "--store", "postgresql://127.0.0.1:1/x"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") <= 2  # one line (wrapped at most)
    assert "postgresql://127.0.0.1:1/x could not be opened" in " ".join(done.stderr.split())


def test_password_is_never_printed() -> None:
    with pytest.raises(StoreError) as info:
        Store("postgresql://me:s3cret@127.0.0.1:1/x")
    assert "s3cret" not in str(info.value)


def test_targets_homes_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BASTION_STORE", raising=False)
    with Store() as default:
        assert default.path == tmp_path / "home" / "bastion.sqlite" and default.home == tmp_path / "home"
    monkeypatch.setenv("BASTION_STORE", f"sqlite:///{tmp_path / 'env' / 'runs.sqlite'}")
    with Store() as from_env:
        assert from_env.path == tmp_path / "env" / "runs.sqlite" and from_env.home == tmp_path / "env"
    with Store(str(tmp_path / "plain.sqlite")) as plain:
        assert plain.home == tmp_path and plain.name == str(tmp_path / "plain.sqlite")


def test_server_store_reports_go_to_bastion_home(pg_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.evaluation.job import default_report_dir

    monkeypatch.setenv("BASTION_HOME", str(tmp_path / "home"))
    url = pg_server.database()
    with Store(url.replace("postgresql://", "postgresql+psycopg://")) as store:
        assert store.path is None and store.home == tmp_path / "home"
        assert default_report_dir(store, "r1") == tmp_path / "home" / "runs" / "r1"
        assert store.name == url


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_suite_run_stores_its_stage_list(digits_checkpoint: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.evaluation.job import evaluate
    from bastion.evaluation.suite import stage_dicts, suite_stages

    config = EvalConfig(model=str(digits_checkpoint), n=16, batch_size=8, eps=0.1, suite="fast", adaptive=False,
                        outcome_checks=False, seed=1)
    with Store(tmp_path / "s.sqlite") as store:
        out = evaluate(config, store)
        stored = store.get_artifact(out.run_id, "stages")
        assert stored == stage_dicts(suite_stages("fast", "linf")) and list(out.summary["stages"]) == ["apgd-ce",
                                                                                                        "apgd-t"]
        monkeypatch.setattr("bastion.evaluation.summary.suite_stages", _no_suite_definition)
        run = store.get_run(out.run_id)
        assert summarize(store, run.id, EvalConfig(**run.config), 10) == run.summary


def test_every_stored_summary_reads_as_its_typed_model(v1_store: Path) -> None:
    """The v1 fixture's runs (written by the old code) validate as typed summaries with the same numbers."""
    from bastion.store.summaries import EvaluateSummary

    store = Store(v1_store)
    runs = store.list_runs()
    assert runs
    for run in runs:
        typed = run.typed_summary()
        assert isinstance(typed, EvaluateSummary)
        assert typed.robust_accuracy == run.summary["robust_accuracy"] and typed.n == run.summary["n"]
        if typed.mode == "suite":
            assert set(typed.stages) == set(run.summary["stages"])
            assert all(st.forward_passes >= 0 for st in typed.stages.values())
