"""A real ``bastion serve`` process on a free loopback port, restartable on the same port and database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bastion.ids.models.factory import build_detector
from bastion.ids.models.io import save_detector
from bastion.serve.keys import KeyStore, Policy

START_TIMEOUT = 60.0  # seconds for the process to import torch, load the models and answer /healthz


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``bastion serve`` as a child process; ``start``/``stop``/``kill9`` keep the port and database."""

    def __init__(self, db: Path, models: list[str], *extra: str) -> None:
        self.db, self.models, self.extra = db, models, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = db.with_suffix(".log")

    def start(self) -> Server:
        args = [sys.executable, "-m", "bastion", "serve", "--db", str(self.db), "--port", str(self.port), *self.extra]
        for m in self.models:
            args += ["--model", m]
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bastion serve exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                if call(self.url + "/healthz", method="GET")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"bastion serve did not answer /healthz in {START_TIMEOUT} s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def call(url: str, body: bytes | dict | None = None, key: str | None = None, method: str = "POST",
         timeout: float = 30.0) -> tuple[int, Any, dict[str, str]]:
    """(status, parsed JSON answer or raw text, headers with lower-case names) of one request."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": "application/json"} | ({"X-API-Key": key} if key else {})
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, raw, head = r.status, r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as err:
        status, raw, head = err.code, err.read(), {k.lower(): v for k, v in err.headers.items()}
    try:
        return status, json.loads(raw), head
    except ValueError:
        return status, raw.decode(errors="replace"), head


def mnist_inputs(n: int, seed: int = 0) -> dict[str, Any]:
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return {"inputs": x.tolist(), "shape": list(x.shape)}


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small (untrained) IDS detector on 6 raw flow features, saved as bastion saves detectors."""
    rows = np.random.default_rng(0).gamma(2.0, 50.0, size=(64, 6))
    model = build_detector("mlp", rows, 2, generator=torch.Generator().manual_seed(0), width=16)
    path = tmp_path_factory.mktemp("det") / "flows"
    save_detector(model, path, columns=tuple(f"f{i}" for i in range(6)), classes=("BENIGN", "ATTACK"))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, detector_path: Path) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("serve") / "serve.db"
    srv = Server(db, ["mnist-cnn", f"flows={detector_path}"]).start()
    yield srv
    srv.stop()


def new_key(db: Path, name: str = "test", **kwargs: Any) -> str:
    policy = Policy(**{k: kwargs.pop(k) for k in ("output", "top_k", "decimals", "defense", "defense_params",
                                                   "on_alarm") if k in kwargs})
    store = KeyStore(db)
    try:
        return store.create(name, policy=policy, **kwargs)
    finally:
        store.close()
