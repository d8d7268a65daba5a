"""A remote model over HTTP/JSON: the client (``RemoteModel``) and a small reference server (``serve_model``).

Protocol
--------
The client sends one ``POST`` to the endpoint URL per batch, with ``Content-Type: application/json``::

    {"inputs": [[[[0.0, 0.5, ...]]], ...], "shape": [N, C, H, W]}

``inputs`` is the batch as nested lists of numbers (row-major, float32 values), ``shape`` its shape;
the first dimension is the number of inputs ``N``. A successful answer is HTTP 200 with a JSON object
holding exactly one of::

    {"scores": [[s_0, ..., s_{C-1}], ...]}     # N rows of C numbers (logits or probabilities)
    {"labels": [y_0, ..., y_{N-1}]}            # N integer class indices

An endpoint that answers labels only is a decision-based (label-only) target. Errors are any non-200
status, optionally with ``{"error": "message"}``; 4xx errors are not retried, 429 and 5xx are.

Authentication: ``RemoteModel(api_key=...)`` (or, when not given, the ``BASTION_API_KEY`` environment variable)
is sent as the ``X-API-Key`` header (what ``bastion serve`` checks); the key is never part of a run's record.

Client behaviour: each request has a ``timeout`` (seconds); connection failures, timeouts, 429 and
5xx answers are retried ``retries`` times with exponential backoff (``backoff * 2**attempt`` seconds).
Anything else (a 4xx status, a body that is not JSON, the wrong number of outputs) fails at once.
Every failure raises ``RemoteTargetError`` naming the URL, the HTTP status or the timeout, and what to
check. Note that a retried request may have reached the server: server-side counts can then exceed the
client's (``RemoteModel.sent`` counts every input sent, retries included).

Reference server: ``serve_model(model, mode="scores"|"labels")`` serves a local model with the
standard library only (``http.server`` on a background thread) and counts the inputs it evaluated.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, NoReturn

import torch
from torch import Tensor, nn

from bastion.blackbox.target import RemoteTargetError

logger = logging.getLogger(__name__)

Mode = Literal["scores", "labels"]
_EXPECTED = ('The server must answer HTTP 200 with {"scores": [[...], ...]} or {"labels": [...]}, '
             "one per input.")


class RemoteModel(nn.Module):
    """Client of a JSON model endpoint; ``forward`` returns ``(N, C)`` float scores, or for a label-only endpoint
    ``(N,)`` int64 labels (or their one-hot ``(N, num_classes)`` encoding when ``num_classes`` is given, so the
    runner's clean check and re-check and the decision-based attacks, which only take the argmax, work unchanged).

    Args:
        url: the endpoint, e.g. ``"http://127.0.0.1:8000/predict"``.
        timeout: seconds to wait for one answer.
        retries: extra attempts after a connection failure, timeout, 429 or 5xx.
        backoff: first wait between attempts in seconds; doubles after each attempt.
        num_classes: encode a label-only endpoint's answers one-hot with this many classes.
        scores_needed: the caller needs real scores (a score-based attack): a label-only answer is an error
            naming the decision-based attacks instead.
        api_key: sent as the ``X-API-Key`` header; ``None`` reads ``BASTION_API_KEY`` from the environment.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, retries: int = 2, backoff: float = 0.5,
                 num_classes: int | None = None, scores_needed: bool = False, api_key: str | None = None) -> None:
        super().__init__()
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError("timeout must be positive, retries and backoff non-negative")
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sent = 0  # inputs sent, retries included
        self.num_classes, self.scores_needed = num_classes, scores_needed
        self._api_key = api_key if api_key is not None else os.environ.get("BASTION_API_KEY") or None

    def forward(self, x: Tensor) -> Tensor:
        body = json.dumps({"inputs": x.detach().cpu().float().tolist(), "shape": list(x.shape)}).encode()
        answer = self._post(body, x.shape[0])
        out = _parse(answer, x.shape[0], self.url)
        if out.dim() == 1 and self.scores_needed:
            raise RemoteTargetError(
                f"Remote target {self.url} answers labels only, and a score-based attack needs scores; use a "
                "decision-based attack (hopskipjump, boundary) against it.", url=self.url, status=200)
        if out.dim() == 2 and self.num_classes is not None and out.shape[1] != self.num_classes:
            raise RemoteTargetError(
                f"Remote target {self.url} answered {out.shape[1]} scores per input, but the data set has "
                f"{self.num_classes} classes; point --target at the model trained on this data (or pick the "
                "matching --dataset).", url=self.url, status=200)
        if out.dim() == 1 and self.num_classes is not None:
            if out.min() < 0 or out.max() >= self.num_classes:
                raise RemoteTargetError(
                    f"Remote target {self.url} answered labels outside 0..{self.num_classes - 1}; point --target at "
                    "the model trained on this data (or pick the matching --dataset).", url=self.url, status=200)
            out = torch.nn.functional.one_hot(out, self.num_classes).float()
        return out.to(x.device)

    def _post(self, body: bytes, n: int) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["X-API-Key"] = self._api_key
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        failure = ""
        status: int | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.sent += n
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as err:
                status = err.code
                detail = _error_detail(err)
                failure = f"answered HTTP {err.code} ({err.reason}){detail}"
                if err.code != 429 and err.code < 500:
                    raise RemoteTargetError(
                        f"Remote target {self.url} {failure}. The request was refused: check the URL path "
                        "and "
                        "that the endpoint accepts the bastion JSON protocol "
                        '({"inputs": nested lists, "shape": [...]}) for inputs of this shape.',
                        url=self.url, status=err.code,
                    ) from err
            except TimeoutError as err:
                failure = f"did not answer within {self.timeout:g} s (timeout)"
                status = None
                logger.debug("%s: %s", self.url, err)
            except urllib.error.URLError as err:
                if isinstance(err.reason, TimeoutError | socket.timeout):
                    failure = f"did not answer within {self.timeout:g} s (timeout)"
                else:
                    failure = f"could not be reached ({err.reason})"
                status = None
            except (ConnectionError, OSError) as err:  # reset or closed mid-answer
                failure = f"closed the connection ({err})"
                status = None
            logger.info("remote target %s %s (attempt %d of %d)", self.url, failure, attempt + 1,
                        self.retries + 1)
        hint = ("raise timeout=..., send smaller batches (batch_size=...) or check the server's load"
                if "timeout" in failure else
                "check that the server is running, and the host, port and path of the URL")
        raise RemoteTargetError(
            f"Remote target {self.url} {failure} after {self.retries + 1} attempt(s); {hint}.",
            url=self.url, status=status,
        )


def _error_detail(err: urllib.error.HTTPError) -> str:
    try:
        text = err.read().decode(errors="replace")[:200]
    except OSError:
        return ""
    return f": {text}" if text else ""


def _parse(answer: bytes, n: int, url: str) -> Tensor:
    def fail(what: str) -> NoReturn:
        raise RemoteTargetError(f"Remote target {url} {what}. {_EXPECTED}", url=url, status=200)

    try:
        data = json.loads(answer)
    except (json.JSONDecodeError, UnicodeDecodeError):
        fail(f"answered a body that is not JSON (starts {answer[:80]!r})")
    if not isinstance(data, dict) or len({"scores", "labels"} & data.keys()) != 1:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        fail(f"answered JSON without exactly one of 'scores'/'labels' (got {keys})")
    kind = "scores" if "scores" in data else "labels"
    values = data[kind]
    if not isinstance(values, list) or len(values) != n:
        count = len(values) if isinstance(values, list) else type(values).__name__
        fail(f"returned {count} {kind} for {n} inputs")
    try:
        if kind == "labels":
            out = torch.tensor(values, dtype=torch.long).reshape(n)
        else:
            out = torch.tensor(values, dtype=torch.float32)
            if out.dim() != 2:
                raise ValueError("scores must be N rows of C numbers")
    except (TypeError, ValueError, RuntimeError) as err:
        fail(f"returned malformed {kind} ({err})")
    if kind == "scores" and not torch.isfinite(out).all():
        fail("returned scores that are not finite")
    return out


class ModelServer:
    """Handle of a running reference server: ``url``, server-side counts, ``close()``; a context manager."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        self.url = f"http://{host}:{port}/predict"
        self.queries = 0  # inputs evaluated
        self.requests = 0  # POSTs answered with 200
        self._lock = threading.Lock()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


MAX_BODY = 256 * 2**20  # bytes the reference server reads from one request


def serve_model(model: nn.Module, host: str = "127.0.0.1", port: int = 0, mode: Mode = "scores", *,
                probabilities: bool = False, delay: float = 0.0, max_batch: int | None = None) -> ModelServer:
    """Serve ``model`` on ``http://host:port/predict`` with the protocol above, on a daemon thread.

    Args:
        mode: ``"scores"`` answers ``{"scores": ...}`` (the model's outputs, or their softmax with
            ``probabilities=True``); ``"labels"`` answers ``{"labels": ...}`` only.
        port: 0 picks a free port; read the address from ``server.url``.
        delay: seconds to sleep before each answer (to simulate a slow service).
        max_batch: answer 413 to larger batches.

    Returns a ``ModelServer``; its ``queries`` counts every input the model evaluated.
    """
    if mode not in ("scores", "labels"):
        raise ValueError(f"mode must be 'scores' or 'labels', not {mode!r}")
    model_lock = threading.Lock()
    holder: dict[str, ModelServer] = {}

    class Handler(BaseHTTPRequestHandler):
        timeout = 30.0  # seconds a client may take to send its request (a short body never hangs a thread)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("serve_model: " + format, *args)

        def do_POST(self) -> None:
            if self.path.split("?")[0] != "/predict":
                self._send(404, {"error": f"no endpoint at {self.path}; POST to /predict"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
                if not 0 <= length <= MAX_BODY:
                    raise ValueError(f"Content-Length must be 0..{MAX_BODY}, not {length}")
                request = json.loads(self.rfile.read(length))
                shape = [int(s) for s in request["shape"]]
                x = torch.tensor(request["inputs"], dtype=torch.float32).reshape(shape)
            except (ValueError, KeyError, TypeError, RuntimeError) as err:
                self._send(400, {"error": f"bad request: {err}"})
                return
            if max_batch is not None and x.shape[0] > max_batch:
                self._send(413, {"error": f"batch of {x.shape[0]} exceeds max_batch={max_batch}"})
                return
            if delay:
                time.sleep(delay)
            try:
                with model_lock, torch.no_grad():
                    out = model(x)
            except Exception as err:  # the model's own failure: an answer, not a dropped connection
                self._send(500, {"error": f"the model failed on this batch: {type(err).__name__}: {err}"})
                return
            server = holder["server"]
            with server._lock:
                server.queries += x.shape[0]
                server.requests += 1
            if mode == "labels":
                self._send(200, {"labels": out.argmax(1).tolist()})
            else:
                scores = out.softmax(1) if probabilities else out
                self._send(200, {"scores": scores.tolist()})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                logger.debug("serve_model: client went away before the answer")

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="bastion-serve-model", daemon=True)
    server = ModelServer(httpd, thread)
    holder["server"] = server
    thread.start()
    return server
