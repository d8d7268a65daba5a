"""Bad input, as a new user and a security tester would give it: one clear line naming the fix, exit code 2, no
traceback, nothing silently clamped, and no code run from a file someone hands over. One table; a new case is a row.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from bastion.cli import app

MARKER = "pwned.txt"


class Planted:
    """A pickle that, if anything unpickles it, writes a file (the code-execution probe)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.target, "code ran"))


def _malicious(path: Path, marker: Path) -> Path:
    with path.open("wb") as fh:
        pickle.dump({"model": Planted(marker)}, fh)
    return path


def _planted_module(tmp: Path, ckpt: Path) -> list[str]:
    pt = _malicious(tmp / "evil.pt", tmp / MARKER)
    digest = __import__("hashlib").sha256(pt.read_bytes()).hexdigest()
    (tmp / "evil.pt.json").write_text(json.dumps({"dataset": "digits", "input_shape": [1, 8, 8], "num_classes": 10,
                                                  "sha256": digest}))
    return ["evaluate", "--model", str(pt), "--n", "4"]


def _planted_state(tmp: Path, ckpt: Path) -> list[str]:
    _malicious(tmp / "stem.state.pt", tmp / MARKER)
    return ["adv-train", "--recipe", str(_recipe(tmp)), "--out", str(tmp / "stem")]


def _recipe(tmp: Path) -> Path:
    path = tmp / "r.yaml"
    path.write_text(yaml.safe_dump({"defense": "fast-at", "dataset": "digits", "arch": "mlp", "eps": 0.1,
                                    "epochs": 1, "train_subset": 64, "test_size": 32}))
    return path


def _meta(change: dict) -> Callable[[Path, Path], list[str]]:
    def build(tmp: Path, ckpt: Path) -> list[str]:
        stem = tmp / "ck"
        shutil.copy(f"{ckpt}.safetensors", f"{stem}.safetensors")
        meta = json.loads(Path(f"{ckpt}.json").read_text())
        meta = change["whole"] if "whole" in change else meta | change
        Path(f"{stem}.json").write_text(json.dumps(meta))
        return ["evaluate", "--model", f"{stem}.safetensors", "--n", "4"]

    return build


def _yaml_file(command: str, content: bytes | dict) -> Callable[[Path, Path], list[str]]:
    def build(tmp: Path, ckpt: Path) -> list[str]:
        path = tmp / "c.yaml"
        path.write_bytes(content if isinstance(content, bytes) else yaml.safe_dump(content).encode())
        return [command, str(path)]

    return build


POISON = {"name": "p", "dataset": "digits", "train_size": 64, "val_size": 16, "test_size": 16, "recipe": {"epochs": 1}}


def _poison_yaml(change: dict) -> Callable[[Path, Path], list[str]]:
    def build(tmp: Path, ckpt: Path) -> list[str]:
        return ["poison", "run", *_yaml_file("", POISON | change)(tmp, ckpt)[1:], "--scheduler", "sync", "--store",
                str(tmp / "s.sqlite"), "--workdir", str(tmp / "w")]

    return build


STEAL = {"name": "s", "budget": 100, "test_size": 20, "val_size": 20, "pool_size": 200, "thief": {"epochs": 1},
         "attacks": [{"name": "knockoff-random"}], "benign_clients": 1, "benign_queries": 10, "transfer": {"points": 0}}


def _steal_yaml(change: dict, *extra: str) -> Callable[[Path, Path], list[str]]:
    def build(tmp: Path, ckpt: Path) -> list[str]:
        return ["steal", "run", *_yaml_file("", STEAL | change)(tmp, ckpt)[1:], "--store", str(tmp / "s.sqlite"),
                "--workdir", str(tmp / "w"), *extra]

    return build


def _ids_csv(edit: Callable[[list[str]], list[str]], *extra: str) -> Callable[[Path, Path], list[str]]:
    """`bastion ids evaluate` on synthetic flows in bastion's CSV layout, each line passed through ``edit``."""
    def build(tmp: Path, ckpt: Path) -> list[str]:
        from tests.ids.flowgen import write_bastion_csv

        path = Path(write_bastion_csv(str(tmp / "flows.csv"), n=120))
        path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
        config = tmp / "ids.yaml"
        config.write_text(yaml.safe_dump({"name": "bad", "data": str(path), "detectors": [{"name": "mlp"}],
                                          "training": {"epochs": 1}, "attacks": [{"name": "cpgd"}],
                                          "per_class": 5}))
        return ["ids", "evaluate", str(config), "--store", str(tmp / "s.sqlite"), "--workdir", str(tmp / "w"), *extra]

    return build


def _drop_column(name: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        at = lines[0].split(",").index(name)
        return [",".join(c for i, c in enumerate(line.split(",")) if i != at) for line in lines]

    return edit


def _cell(column: str, row: int, value: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        at = lines[0].split(",").index(column)
        cells = lines[row].split(",")
        cells[at] = value
        return [*lines[:row], ",".join(cells), *lines[row + 1:]]

    return edit


def _ids_constraints(tmp: Path, ckpt: Path) -> list[str]:
    (tmp / "c.yaml").write_text("relations:\n  - '[Total Fwd Packets] <= 0'\n")
    return _ids_csv(lambda lines: lines, "--constraints", str(tmp / "c.yaml"))(tmp, ckpt)


def _home_is_a_file(tmp: Path, ckpt: Path) -> list[str]:
    (tmp / "home").write_text("not a folder")
    return ["runs", "list", "--env-home", str(tmp / "home")]


def _damaged_store(tmp: Path, ckpt: Path) -> list[str]:
    from bastion.evaluation.config import EvalConfig
    from bastion.evaluation.job import evaluate
    from bastion.store import Store

    db = tmp / "damaged.sqlite"
    store = Store(db)
    evaluate(EvalConfig(model=str(ckpt), n=40, batch_size=40, eps=0.1, suite=None, attack="fgsm"), store)
    store.close()
    import sqlite3

    with sqlite3.connect(db) as conn:  # the samples table's root page: the runs and the schema stay readable
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'samples'").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    for i in range((root - 1) * page + 16, root * page):
        data[i] = 0xAB
    db.write_bytes(bytes(data))
    return ["runs", "list", "--store", str(db)]


def _args(*args: str) -> Callable[[Path, Path], list[str]]:
    def build(tmp: Path, ckpt: Path) -> list[str]:
        return [a.replace("{ckpt}", str(ckpt)).replace("{tmp}", str(tmp)) for a in args]

    return build


CASES: list[tuple[str, Callable[[Path, Path], list[str]], str]] = [
    # code execution: refused, and the planted pickle never runs (checked below)
    ("planted .pt module with a sidecar", _planted_module, "no longer loads pickles"),
    ("planted training state", _planted_state, "not a training state bastion wrote"),
    # attack hyperparameters, checked against the attack's signature before anything runs
    ("-p steps=abc", _args("attack", "pgd", "--model", "{ckpt}", "--eps", "0.1", "--n", "4", "-p", "steps=abc"),
     "steps must be an integer"),
    ("-p nosuchparam=3", _args("attack", "pgd", "--model", "{ckpt}", "--eps", "0.1", "--n", "4", "-p",
                               "nosuchparam=3"), "pgd has no parameter 'nosuchparam'"),
    ("-p steps=-5", _args("attack", "pgd", "--model", "{ckpt}", "--eps", "0.1", "--n", "4", "-p", "steps=-5"),
     "steps must be at least 1"),
    ("-p key without value", _args("attack", "pgd", "--model", "{ckpt}", "--eps", "0.1", "-p", "steps"),
     "is not KEY=VALUE"),
    # checkpoint metadata
    ("metadata not an object", _meta({"whole": [1, 2]}), "it is not a JSON object"),
    ("num_classes not an integer", _meta({"num_classes": "ten"}), "num_classes"),
    ("arch_kwargs not a mapping", _meta({"arch_kwargs": [3]}), "arch_kwargs"),
    ("checkpoint weights replaced", _meta({"sha256": "0" * 64}), "re-train it or copy both files again"),
    # sweep and compare files
    ("sweep with a wrong type", _yaml_file("sweep", {"models": ["m"], "threats": [{"norm": "linf", "eps": 0.1}],
                                                     "defaults": {"n": "twenty"}}), "defaults: n: Input should be"),
    ("sweep that is binary", _yaml_file("sweep", b"\xff\xfe\x00binary\x00"), "is not a text YAML file"),
    ("compare with a wrong type", _yaml_file("compare", {"name": "x", "dataset": "digits", "eval": {"n": "twenty"},
                                                         "defenses": [{"name": "a", "method": "standard"}]}),
     "eval.n"),
    ("compare that is binary", _yaml_file("compare", b"\xff\xfe\x00binary\x00"), "is not a text YAML file"),
    # poisoning (issue 21): each refused before anything is trained
    ("poison rate outside (0, 1]", _poison_yaml({"attacks": [{"name": "badnets", "rate": 1.5}]}),
     "poison rate 1.5 is outside (0, 1]"),
    ("poison trigger larger than the image", _poison_yaml({"attacks": [{"name": "badnets", "params": {"size": 9}}]}),
     "does not fit the 8x8 image"),
    ("poison target class out of range", _poison_yaml({"target": 10, "attacks": [{"name": "badnets"}]}),
     "target class 10 is out of range"),
    ("poison defense asked for test data", _poison_yaml({"attacks": [{"name": "badnets"}], "defenses": [
        {"name": "none", "params": {"tune_on": "test"}}]}), "asks for test data"),
    # model stealing (issue 22): each refused before any query
    ("steal budget of 0", _steal_yaml({"budget": 0}), "a query budget of 0 allows no query"),
    ("steal pool of another shape", _steal_yaml({"pool": "digits"}),
     "The pool 'digits' has inputs of shape 1x8x8 but the victim takes 1x28x28; set `pool_resize: true`"),
    ("steal target that does not answer", _steal_yaml({}, "--target", "http://127.0.0.1:9/predict"),
     "http://127.0.0.1:9/predict"),
    ("steal target with an API key that does not answer",
     _steal_yaml({}, "--target", "http://127.0.0.1:9/predict", "--api-key", "bst_0_x"), "http://127.0.0.1:9/predict"),
    ("steal defense before a remote target", _steal_yaml({"target": "http://127.0.0.1:9/p",
                                                          "defenses": [{"name": "top1"}]}),
     "list only the defense `none` with `target`"),
    # network intrusion detection (issue 23): the flows and the constraints, each refused before any training
    ("ids csv missing a column", _ids_csv(_drop_column("Flow Duration")), "missing column"),
    ("ids csv with an extra column", _ids_csv(lambda lines: [lines[0] + ",Extra", *(x + ",1" for x in lines[1:])]),
     "extra='drop'"),
    ("ids csv with inf", _ids_csv(_cell("Flow Bytes/s", 3, "Infinity")), "nonfinite='drop'"),
    ("ids csv with an unknown protocol", _ids_csv(_cell("Protocol", 2, "99")), "unknown value"),
    ("ids constraints contradict the data", _ids_constraints, "contradict the data"),
    # the store and its home
    ("damaged store", _damaged_store, "is damaged ("),
    ("store path inside a file", _args("runs", "list", "--store", "{tmp}/file.txt/s.sqlite"), "cannot be created"),
    ("BASTION_HOME is a file", _home_is_a_file, "cannot be created"),
    # remote targets
    ("--target not a url", _args("attack", "square", "--target", "not-a-url", "--dataset", "digits", "--eps", "0.1"),
     "--target must be an http:// or https:// URL"),
    # what already worked stays working
    ("unknown data set", _args("data", "show", "mnits"), "Did you mean 'mnist'"),
    ("unknown model", _args("evaluate", "--model", "nope"), "Unknown model 'nope'"),
    ("negative eps", _args("evaluate", "--eps", "-1"), "eps must be finite and non-negative"),
    ("unknown attack", _args("attack", "pgdd", "--eps", "0.1"), "Did you mean 'pgd'"),
    ("attack without the norm", _args("attack", "fgsm", "--norm", "l1", "--eps", "1", "--n", "5"), "supports norms"),
    ("model for other data", _args("evaluate", "--model", "mnist-cnn", "--dataset", "digits"),
     "takes inputs of shape"),
]


@pytest.mark.parametrize(("name", "build", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(name: str, build: Callable[[Path, Path], list[str]], message: str,
                                     digits_checkpoint: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_HOME", str(tmp_path / "home-dir"))
    monkeypatch.delenv("BASTION_API_KEY", raising=False)  # --api-key sets it; monkeypatch puts it back afterwards
    (tmp_path / "file.txt").write_text("a file, not a folder")
    args = build(tmp_path, digits_checkpoint)
    if "--env-home" in args:  # this case sets BASTION_HOME itself
        home = args[args.index("--env-home") + 1]
        monkeypatch.setenv("BASTION_HOME", home)
        args = args[:args.index("--env-home")]
    if args[0] in ("evaluate", "attack") and "--store" not in args:
        args += ["--store", str(tmp_path / "s.sqlite")]
    result = CliRunner().invoke(app, args)
    out = " ".join(result.output.split())
    assert result.exit_code == 2, f"{name}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert message in out, f"{name}: {out}"
    assert "Traceback" not in result.output and out.count("error:") == 1, out
    assert not (tmp_path / MARKER).exists(), "a planted pickle ran code"


def test_a_planted_pickle_is_never_unpickled_through_the_python_api(tmp_path: Path) -> None:
    from bastion.compare.deployable import load_built
    from bastion.errors import BastionError

    pt = _malicious(tmp_path / "evil.pt", tmp_path / MARKER)
    with pytest.raises(BastionError):
        load_built(pt)
    with pytest.raises(BastionError):
        from bastion.zoo.user import load_user_model

        load_user_model("torch.nn:Identity", pt)  # --weights: tensors only
    assert not (tmp_path / MARKER).exists()
    torch.save({"x": torch.zeros(1)}, tmp_path / "fine.pt")  # a plain tensor file still reads
    assert torch.load(tmp_path / "fine.pt", weights_only=True)["x"].shape == (1,)


def test_more_points_than_the_data_has_is_said_and_stored_as_evaluated(digits_checkpoint: Path,
                                                                       tmp_path: Path) -> None:
    from bastion.store import Store

    db = tmp_path / "s.sqlite"
    result = CliRunner().invoke(app, ["attack", "fgsm", "--model", str(digits_checkpoint), "--eps", "0.1", "--n",
                                      "100000", "--split", "val", "--store", str(db)])
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out
    assert "--n 100000 asked for, but the val split has" in out
    run = Store(db).list_runs()[0]
    assert run.config["n"] == run.summary["n"] < 100000  # what was evaluated, not what was asked


def test_a_rerun_after_a_kill_in_report_writing_rewrites_the_reports_and_recomputes_nothing(
        digits_checkpoint: Path, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    args = ["attack", "fgsm", "--model", str(digits_checkpoint), "--eps", "0.1", "--n", "20", "--store", str(db)]
    assert CliRunner().invoke(app, args).exit_code == 0
    folder = next((tmp_path / "runs").iterdir())
    for f in folder.iterdir():  # killed while writing the reports: an empty folder is left
        f.unlink()
    import bastion.evaluation.job as job

    calls: list[int] = []
    real = job._batch
    job._batch = lambda *a, **k: calls.append(1) or real(*a, **k)  # type: ignore[assignment]
    try:
        result = CliRunner().invoke(app, args)
    finally:
        job._batch = real
    assert result.exit_code == 0 and "already finished" in " ".join(result.output.split())
    assert not calls and (folder / "report.json").exists() and (folder / "report.html").exists()
