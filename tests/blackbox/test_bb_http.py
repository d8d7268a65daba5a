"""The JSON endpoint: protocol, server-side query counts, budgets, and clear errors with partial results."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from torch import nn

from bastion.attacks import get_attack
from bastion.blackbox import LabelTarget, RemoteModel, RemoteTargetError, ScoreTarget, serve_model
from bastion.data import load_dataset
from bastion.threat import LpThreat


@pytest.fixture(scope="module")
def points() -> tuple[torch.Tensor, torch.Tensor]:
    test = load_dataset("digits").test
    return test.x[:4], test.y[:4]


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_protocol_scores_and_labels(mlp: nn.Module, points: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = points
    with serve_model(mlp, mode="scores") as server:
        scores = RemoteModel(server.url)(x)
        assert torch.allclose(scores, mlp(x), atol=1e-5)
        assert server.queries == 4 and server.requests == 1
    with serve_model(mlp, mode="labels") as server:
        labels = RemoteModel(server.url)(x)
        assert labels.dtype == torch.long and torch.equal(labels, mlp(x).argmax(1))


@pytest.mark.parametrize(("target_budget", "attack_budget"), [(30, 5000), (None, 25), (7, 5000)])
def test_square_budget_counted_on_server(mlp: nn.Module, points: tuple[torch.Tensor, torch.Tensor],
                                         target_budget: int | None, attack_budget: int) -> None:
    x, y = points
    with serve_model(mlp, mode="scores") as server:
        target = ScoreTarget(RemoteModel(server.url), n=len(y), max_queries=target_budget)
        adv = get_attack("square").fn(target, x, y, LpThreat("linf", 0.02), max_queries=attack_budget,
                                      generator=_gen())
        limit = min(attack_budget, target_budget or attack_budget)
        assert server.queries <= len(y) * limit
        assert server.queries == int(target.forward_counts.sum())
        assert int(target.forward_counts.max()) <= limit
    assert LpThreat("linf", 0.02).contains(adv, x).all()


def test_one_sample_budget_is_exact_on_server(mlp: nn.Module, points: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = points
    with serve_model(mlp, mode="scores") as server:
        target = ScoreTarget(RemoteModel(server.url), n=1, max_queries=120)
        get_attack("nes").fn(target, x[:1], y[:1], LpThreat("linf", 0.01), generator=_gen())
        assert 0 < server.queries <= 120


def test_decision_attack_budget_on_label_server(mlp: nn.Module, points: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = points
    with serve_model(mlp, mode="labels") as server:
        target = LabelTarget(RemoteModel(server.url), n=len(y), num_classes=10, strict=True)
        adv = get_attack("hopskipjump").fn(target, x, y, LpThreat("l2", 1.0), max_queries=300,
                                           generator=_gen())
        assert server.queries <= len(y) * 300
        assert int(target.forward_counts.max()) <= 300
    assert (mlp(adv).argmax(1) != y).all()  # a label-only endpoint suffices to find adversarials


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_dead_server_gives_clear_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/predict"
    with pytest.raises(RemoteTargetError) as info:
        RemoteModel(url, retries=1, backoff=0.01, timeout=1.0)(torch.zeros(2, 1, 8, 8))
    message = str(info.value)
    assert url in message and "could not be reached" in message and "2 attempt" in message
    assert "check that the server is running" in message
    assert info.value.status is None and info.value.url == url


def test_dead_server_through_attack_keeps_partial(points: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = points
    target = LabelTarget(RemoteModel(f"http://127.0.0.1:{_closed_port()}/p", retries=0), n=len(y), strict=True)
    with pytest.raises(RemoteTargetError) as info:
        get_attack("hopskipjump").fn(target, x, y, LpThreat("l2", 1.0), generator=_gen())
    assert info.value.partial is not None and torch.equal(info.value.partial, x)  # nothing found yet


def test_slow_server_times_out(mlp: nn.Module) -> None:
    with serve_model(mlp, delay=1.0) as server:
        start = time.perf_counter()
        with pytest.raises(RemoteTargetError) as info:
            RemoteModel(server.url, timeout=0.2, retries=0)(torch.zeros(1, 1, 8, 8))
        assert time.perf_counter() - start < 0.9
    assert "timeout" in str(info.value) and "raise timeout=" in str(info.value)


class _Flaky:
    """A stdlib server that answers the first ``good`` requests with the model, then misbehaves."""

    def __init__(self, model: nn.Module, good: int, failure: str) -> None:
        state = {"count": 0}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                state["count"] += 1
                x = torch.tensor(body["inputs"]).reshape(body["shape"])
                if state["count"] <= good:
                    payload = json.dumps({"scores": model(x).tolist()}).encode()
                    status = 200
                elif failure == "slow":
                    time.sleep(0.6)
                    payload, status = b"{}", 200
                elif failure == "bad-json":
                    payload, status = b"<html>oops</html>", 200
                elif failure == "count":
                    payload, status = json.dumps({"scores": model(x[:1]).tolist()}).encode(), 200
                elif failure == "500":
                    payload, status = b'{"error": "boom"}', 500
                else:
                    payload, status = b'{"error": "no such route"}', 404
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(("failure", "words", "status", "requests"), [
    ("bad-json", "not JSON", 200, 1), ("count", "returned 1 scores for 2 inputs", 200, 1),
    ("500", "HTTP 500", 500, 2), ("404", "HTTP 404", 404, 1),
])
def test_misbehaving_server_errors(mlp: nn.Module, failure: str, words: str, status: int, requests: int) -> None:
    server = _Flaky(mlp, good=0, failure=failure)
    try:
        with pytest.raises(RemoteTargetError) as info:
            RemoteModel(server.url, retries=1, backoff=0.01)(torch.zeros(2, 1, 8, 8))
    finally:
        server.close()
    assert words in str(info.value) and server.url in str(info.value)
    assert info.value.status == status
    assert server.state["count"] == requests  # 5xx is retried, the rest is not


def test_slow_server_mid_attack_keeps_results(mlp: nn.Module) -> None:
    test = load_dataset("digits").test
    x, y = test.x[:16], test.y[:16]
    server = _Flaky(mlp, good=40, failure="slow")
    threat = LpThreat("linf", 0.2)
    target = ScoreTarget(RemoteModel(server.url, timeout=0.2, retries=0), n=len(y))
    try:
        with pytest.raises(RemoteTargetError) as info:
            get_attack("square").fn(target, x, y, threat, generator=_gen())
    finally:
        server.close()
    partial = info.value.partial
    assert partial is not None and partial.shape == x.shape
    assert threat.contains(partial, x).all()
    broken = mlp(partial).argmax(1) != y
    assert broken.any(), "the adversarials found before the server stalled were lost"
    assert int(target.forward_counts.sum()) > 0
