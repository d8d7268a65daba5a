"""Remote endpoints through the evaluation job and the CLI: label-only targets, honest query totals, failed runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn
from typer.testing import CliRunner

from bastion.blackbox import serve_model
from bastion.blackbox.http import RemoteTargetError
from bastion.cli import app
from bastion.evaluation.config import EvalConfig
from bastion.evaluation.job import evaluate
from bastion.store import Store


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_a_label_only_endpoint_runs_decision_attacks_end_to_end(digits_model: nn.Module, tmp_path: Path) -> None:
    with serve_model(digits_model, mode="labels") as server:
        code, out = _cli("attack", "hopskipjump", "--target", server.url, "--dataset", "digits", "--n", "6",
                         "--eps", "0.5", "--norm", "l2", "--max-queries", "300", "--store", str(tmp_path / "s.db"))
        assert code == 0, out
        assert "robust accuracy" in out
        code, out = _cli("attack", "square", "--target", server.url, "--dataset", "digits", "--n", "4",
                         "--eps", "0.2", "--max-queries", "50", "--store", str(tmp_path / "s.db"))
        assert code == 2 and "answers labels only" in out and "hopskipjump" in out


@pytest.mark.parametrize(("mode", "attack", "norm", "eps"), [("scores", "square", "linf", 0.3),
                                                       ("labels", "boundary", "l2", 1.0)])
def test_query_totals_equal_the_servers_count(digits_model: nn.Module, tmp_path: Path, mode: str, attack: str,
                                              norm: str, eps: float) -> None:
    with serve_model(digits_model, mode=mode) as server:
        config = EvalConfig(model=server.url, dataset="digits", n=12, batch_size=5, eps=eps, norm=norm, suite=None,
                            attack=attack, max_queries=120)
        outcome = evaluate(config, Store(tmp_path / "s.db"))
        # every input the endpoint evaluated: the probe, the clean check, the attack and the re-check
        assert outcome.summary["remote_queries"] == server.queries
        assert outcome.summary["forward_passes"] < server.queries  # the attack's own count leaves those out


def test_a_run_whose_endpoint_dies_is_marked_failed_and_resumes(digits_model: nn.Module, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    server = serve_model(digits_model, mode="scores")
    config = EvalConfig(model=server.url, dataset="digits", n=10, batch_size=5, eps=0.3, suite=None,
                        attack="square", max_queries=40)
    from bastion.evaluation.job import Progress

    def stop_server_after_first_batch(p: Progress) -> None:
        if p.done == 5:
            server.close()

    with pytest.raises(RemoteTargetError):
        evaluate(config, store, on_progress=stop_server_after_first_batch)
    run = store.list_runs()[0]
    assert run.status == "failed" and "could not be reached" in store.get_artifact(run.id, "error")
    assert len(store.samples(run.id)) == 5  # the finished batch is kept
    with serve_model(digits_model, mode="scores", port=int(server.url.split(":")[2].split("/")[0])) as again:
        resumed = evaluate(config, store)
        assert again.queries > 0
    assert resumed.run_id == run.id and resumed.resumed_points == 5
    assert store.get_run(run.id).status == "finished"


def test_an_endpoint_for_another_number_of_classes_is_refused(tmp_path: Path) -> None:
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(64, 12)).eval()  # 12 classes, digits has 10
    with serve_model(wrong, mode="scores") as server:
        code, out = _cli("attack", "square", "--target", server.url, "--dataset", "digits", "--n", "4",
                         "--eps", "0.2", "--max-queries", "20", "--store", str(tmp_path / "s.db"))
    assert code == 2 and "answered 12 scores per input, but the data set has 10 classes" in out


def _raw_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    import http.client
    import json as _json

    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", path)
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    conn.send(body)
    response = conn.getresponse()
    return response.status, _json.loads(response.read() or b"{}")


class Raises(nn.Module):
    def forward(self, x: object) -> object:
        raise RuntimeError("out of memory")


@pytest.mark.parametrize(("path", "headers", "status", "words"), [
    ("/predict", {"Content-Length": "-1"}, 400, "Content-Length"),
    ("/predict", {}, 400, "bad request"),
    ("/elsewhere", {"Content-Length": "2"}, 404, "POST to /predict"),
])
def test_the_reference_server_answers_bad_requests_at_once(digits_model: nn.Module, path: str, headers: dict,
                                                           status: int, words: str) -> None:
    with serve_model(digits_model) as server:
        code, body = _raw_post(server.url, path, b"{}", headers)
    assert code == status and words in body["error"]


def test_the_reference_server_answers_when_the_model_fails() -> None:
    import json as _json

    with serve_model(Raises()) as server:
        body = _json.dumps({"inputs": [[0.0]], "shape": [1, 1]}).encode()
        code, answer = _raw_post(server.url, "/predict", body, {"Content-Length": str(len(body))})
    assert code == 500 and "out of memory" in answer["error"]
