"""Bad input is a 4xx with a message, never a 5xx, and the server keeps serving; the batch endpoint; IDS flows."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
import torch
from tests.serve.conftest import Server, call, mnist_inputs, new_key


def _deep(levels: int) -> bytes:
    return b'{"inputs": ' + b"[" * levels + b"0.5" + b"]" * levels + b"}"


BAD = {
    "malformed JSON": (b'{"inputs": [[[', 400, "not valid JSON"),
    "not an object": (b"[1, 2]", 422, "not an object"),
    "wrong shape": (json.dumps({"inputs": [[0.5] * 10]}).encode(), 422, "the model takes [N, 1, 28, 28]"),
    "shape field disagrees": (json.dumps({**mnist_inputs(1), "shape": [2, 1, 28, 28]}).encode(), 422,
                              "does not match"),
    "ragged lists": (b'{"inputs": [[0.5, 0.5], [0.5]]}', 422, "nested lists of numbers of one shape"),
    "strings": (b'{"inputs": [["a"]]}', 422, "nested lists of numbers"),
    "booleans": (b'{"inputs": [[true]]}', 422, "must be numbers"),
    "NaN": (json.dumps(mnist_inputs(1)).replace("0.", "NaN, 0.", 1).encode(), 422, "NaN"),
    "Infinity": (b'{"inputs": [[Infinity]]}', 422, "Infinity"),
    "huge number": (b'{"inputs": [[1e999]]}', 422, "NaN or infinite"),
    "out of range": (json.dumps({"inputs": (torch.ones(1, 1, 28, 28) * 2).tolist()}).encode(), 422, "[0.0, 1.0]"),
    "deep nesting": (_deep(100_000), 400, "nests 100001 levels deep"),
    "unknown field": (json.dumps({**mnist_inputs(1), "extra": 1}).encode(), 422, "unknown fields ['extra']"),
    "empty batch": (b'{"inputs": []}', 422, "shape"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(server: Server, case: str) -> None:
    body, status, words = BAD[case]
    key = new_key(server.db, case)
    got, answer, _ = call(server.url + "/predict", body, key)
    assert got == status and words in answer["error"], (got, answer)
    assert call(server.url + "/predict", mnist_inputs(1), key)[0] == 200


def test_an_unknown_model_or_path_is_404(server: Server) -> None:
    key = new_key(server.db, "paths")
    status, answer, _ = call(server.url + "/v1/models/nope/predict", mnist_inputs(1), key)
    assert status == 404 and "no model named 'nope'" in answer["error"] and "mnist-cnn" in answer["error"]
    status, answer, _ = call(server.url + "/nowhere", mnist_inputs(1), key)
    assert status == 404 and "error" in answer


def test_a_100_mb_body_is_413_without_being_read(server: Server) -> None:
    key = new_key(server.db, "big")
    size = 100 * 2**20
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(size))
    conn.putheader("X-API-Key", key)
    conn.endheaders()
    try:
        chunk = b"[" + b"0.5," * (2**18)
        for _ in range(size // len(chunk)):
            conn.send(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before reading it all: what we want
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    assert response.status == 413 and "over the limit" in answer["error"]
    assert call(server.url + "/predict", mnist_inputs(1), key)[0] == 200


def test_no_bad_request_ever_made_a_5xx(server: Server) -> None:
    metrics = call(server.url + "/metrics", method="GET")[1]
    statuses = [line.split('status="')[1][:3] for line in metrics.splitlines()
                if line.startswith("bastion_serve_requests_total")]
    assert statuses and not [s for s in statuses if s.startswith("5")]
    assert 'bastion_serve_rejections_total{reason="nan"}' in metrics
    assert "bastion_serve_request_seconds_bucket" in metrics


def test_the_batch_endpoint_answers_like_predict(server: Server) -> None:
    key = new_key(server.db, "batch")
    body = mnist_inputs(3, seed=1)
    single = call(server.url + "/predict", body, key)[1]["scores"]
    status, batch, _ = call(server.url + "/predict/batch", {"instances": body["inputs"]}, key)
    assert status == 200 and torch.allclose(torch.tensor(batch["scores"]), torch.tensor(single))
    assert call(server.url + "/predict/batch", body, key)[0] == 422  # the /predict body is not a batch body


def test_an_ids_detector_is_served_with_its_own_shape(server: Server, detector_path: Path) -> None:
    from bastion.ids.models.io import load_detector

    key = new_key(server.db, "flows")
    rows = torch.tensor([[1.0, 200.0, 3.0, 0.0, 5000.0, 60.0], [9.0, 8.0, 7.0, 6.0, 5.0, 4.0]], dtype=torch.float64)
    status, answer, _ = call(server.url + "/v1/models/flows/predict", {"inputs": rows.tolist()}, key)
    model, _ = load_detector(detector_path)
    with torch.no_grad():
        expected = model(rows).double()
    assert status == 200 and torch.allclose(torch.tensor(answer["scores"], dtype=torch.float64), expected)
    models = call(server.url + "/v1/models", method="GET")[1]["models"]
    assert [m["name"] for m in models] == ["mnist-cnn", "flows"] and models[1]["input_shape"] == [6]


def test_health_and_readiness(server: Server) -> None:
    assert call(server.url + "/healthz", method="GET")[:2] == (200, {"status": "ok"})
    status, answer, _ = call(server.url + "/readyz", method="GET")
    assert status == 200 and answer["models"] == ["mnist-cnn", "flows"]
