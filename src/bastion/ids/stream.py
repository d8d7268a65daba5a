"""Real-time scoring: flows are classified one by one as the meter finishes them, with their latencies.

A source puts nfstream flows (``flows.flow_record`` mappings, each stamped ``_emitted``: the wall-clock time the
meter handed the finished flow over) on a queue, then ``END``; ``score_stream`` takes whatever has arrived (a
micro-batch of at most ``batch`` flows, never waiting for more than ``poll`` seconds), maps it with the snapshot's own
code path (``flows.to_features``), asks the detector, and records per flow its features, its verdict (class and
score) and its wall-clock times: ``emitted`` (the meter finished the flow) -> ``features`` (its feature row is
ready) -> ``verdict``. Latencies (milliseconds): ``features`` = features - emitted, ``verdict`` = verdict -
features, ``total`` = verdict - emitted; from a live interface also ``since_last_packet`` = verdict - the flow's
last packet, which includes the meter's idle timeout. Flows of one micro-batch share the features and verdict times.

Sources: ``pcap_source`` (a file read offline by nfstream, no root; CIC's 120 s idle timeout, so its features are
exactly ``flows.pcap_to_flows``'s), and in ``bastion.ids.streamnet`` a replayed pcap and the generator's live traffic,
both metered live inside network namespaces with short timeouts.

Every run is bounded: ``max_seconds`` always (default 600 s), ``max_flows`` optionally; each wait is at most ``poll``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bastion.errors import InvalidInputError
from bastion.ids.features import BENIGN, FEATURE_NAMES, LABEL
from bastion.ids.flows import UNLABELLED, flow_record, streamer_options, to_features

log = logging.getLogger(__name__)

END = object()  # a source's last item; an ``Exception`` on the queue is raised by the scorer
FlowQueue = queue.Queue
Sink = Callable[[dict[str, Any]], None]


@dataclass
class StreamReport:
    """What a run measured: flows scored, verdict counts, wall seconds from start to the last verdict, the
    scorer's busy seconds (mapping + detector), and the per-flow latencies (ms)."""

    flows: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    correct: int = 0  # verdicts that agree with the ground-truth label (binary: benign vs attack), labelled flows only
    labelled: int = 0
    seconds: float = 0.0
    busy_seconds: float = 0.0
    ended: str = ""  # "source" (it had no more flows), "max_flows" or "max_seconds"
    latency: dict[str, list[float]] = field(default_factory=lambda: {"features": [], "verdict": [], "total": [],
                                                                     "since_last_packet": []})

    def percentile(self, kind: str, q: float) -> float | None:
        values = self.latency[kind]
        return float(np.percentile(values, q)) if values else None

    def summary(self) -> dict[str, Any]:
        lat = {k: {"p50": self.percentile(k, 50), "p99": self.percentile(k, 99)} for k in self.latency}
        return {"flows": self.flows, "verdicts": self.verdicts, "seconds": self.seconds, "ended": self.ended,
                "flows_per_second": self.flows / self.seconds if self.seconds > 0 else 0.0,
                "scorer_flows_per_second": self.flows / self.busy_seconds if self.busy_seconds > 0 else 0.0,
                "agreement_with_labels": self.correct / self.labelled if self.labelled else None,
                "latency_ms": lat}


def _probabilities(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)).double(), dim=1).numpy()


def score_batch(model: nn.Module, classes: tuple[str, ...], raws: list[Mapping[str, Any]],
                labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One record per IPv4 flow of ``raws`` (see the module docstring); ``classes[0]`` is the benign class."""
    raws = [r for r in raws if r.get("ip_version") == 4]
    if not raws:
        return []
    table = _features(raws, labels)
    x = table[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    ready = time.time()
    prob = _probabilities(model, x)
    done = time.time()
    pick = prob.argmax(1)
    benign = classes.index(BENIGN) if BENIGN in classes else 0
    truth = table[LABEL].tolist()
    out = []
    for i, raw in enumerate(raws):
        emitted, last = float(raw["_emitted"]), raw["bidirectional_last_seen_ms"] / 1000.0
        latency = {"features": 1000 * (ready - emitted), "verdict": 1000 * (done - ready),
                   "total": 1000 * (done - emitted)}
        if raw.get("_live"):
            latency["since_last_packet"] = 1000 * (done - last)
        out.append({"flow": {k: raw[k] for k in ("src_ip", "dst_ip", "src_port", "dst_port", "protocol")},
                    "label": truth[i], "verdict": classes[pick[i]], "score": float(prob[i, pick[i]]),
                    "attack_score": float(1.0 - prob[i, benign]),
                    "time": {"flow_end": last, "emitted": emitted, "features": ready, "verdict": done},
                    "latency_ms": latency, "features": dict(zip(FEATURE_NAMES, x[i].tolist(), strict=True))})
    return out


def _features(raws: list[Mapping[str, Any]], labels: dict[str, str] | None) -> pd.DataFrame:
    return to_features([{k: v for k, v in r.items() if not k.startswith("_")} for r in raws], labels)


def _drain(source: FlowQueue, timeout: float, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """What has arrived (waiting at most ``timeout`` for the first), at most ``limit``; and whether ``END`` came."""
    items: list[dict[str, Any]] = []
    try:
        item = source.get(timeout=timeout)
        for _ in range(limit):
            if item is END:
                return items, True
            if isinstance(item, BaseException):
                raise item
            items.append(item)
            if len(items) >= limit:
                break
            item = source.get_nowait()
    except queue.Empty:
        pass
    return items, False


def _account(report: StreamReport, records: list[dict[str, Any]], sink: Sink | None) -> None:
    for rec in records:
        report.flows += 1
        report.verdicts[rec["verdict"]] = report.verdicts.get(rec["verdict"], 0) + 1
        for k, v in rec["latency_ms"].items():
            report.latency[k].append(v)
        if rec["label"] != UNLABELLED:
            report.labelled += 1
            report.correct += int((rec["label"] == BENIGN) == (rec["verdict"] == BENIGN))
        if sink is not None:
            sink(rec)


def score_stream(model: nn.Module, classes: tuple[str, ...], source: FlowQueue, *, max_flows: int | None = None,
                 max_seconds: float = 600.0, batch: int = 256, poll: float = 0.2, labels: dict[str, str] | None = None,
                 sink: Sink | None = None, on_progress: Callable[[StreamReport], None] | None = None) -> StreamReport:
    """Score the flows of ``source`` as they come until it ends, ``max_flows`` are scored or ``max_seconds`` pass."""
    if max_seconds <= 0 or (max_flows is not None and max_flows < 1) or batch < 1:
        raise InvalidInputError("max_seconds must be > 0, max_flows >= 1 and batch >= 1; e.g. --seconds 30")
    model.eval()
    report, start = StreamReport(), time.monotonic()
    cap = max_flows if max_flows is not None else 2**62
    while True:
        left = max_seconds - (time.monotonic() - start)
        if left <= 0 or report.flows >= cap:
            report.ended = "max_seconds" if left <= 0 else "max_flows"
            break
        items, ended = _drain(source, min(poll, left), min(batch, cap - report.flows))
        if items:
            busy = time.perf_counter()
            records = score_batch(model, classes, items, labels)
            report.busy_seconds += time.perf_counter() - busy
            _account(report, records, sink)
            report.seconds = time.monotonic() - start
            if on_progress is not None:
                on_progress(report)
        if ended:
            report.ended = "source"
            break
    return report


def ndjson_sink(handle: IO[str]) -> Sink:
    """Write each record as one JSON line (flushed, so a reader can follow the file)."""

    def write(record: dict[str, Any]) -> None:
        handle.write(json.dumps(record) + "\n")
        handle.flush()

    return write


def _read_pcap(pcap: Path, out: FlowQueue, stop: threading.Event) -> None:
    try:
        from nfstream import NFStreamer

        for flow in NFStreamer(source=str(pcap), **streamer_options()):
            record = flow_record(flow)
            record["_emitted"] = time.time()
            out.put(record)
            if stop.is_set():
                break
    except BaseException as exc:  # handed to the scorer, which raises it
        out.put(exc)
    out.put(END)


@contextmanager
def pcap_source(pcap: str | Path) -> Iterator[FlowQueue]:
    """The flows of a pcap file, metered offline by nfstream (CIC's timeouts; no root) as they are finished."""
    path = Path(pcap)
    if not path.is_file():
        raise InvalidInputError(f"no pcap at {path}; give the path of a capture file (e.g. --pcap capture.pcap)")
    try:
        import nfstream  # noqa: F401
    except ImportError as exc:
        raise InvalidInputError("nfstream is not installed: pip install 'nfstream==6.6.0'") from exc
    flows: FlowQueue = queue.Queue(maxsize=10_000)
    stop = threading.Event()
    reader = threading.Thread(target=_read_pcap, args=(path, flows, stop), daemon=True)
    reader.start()
    try:
        yield flows
    finally:
        stop.set()
        _empty(flows)
        reader.join(timeout=30)


def _empty(q: FlowQueue) -> None:
    """Unblock a producer waiting on a full queue (bounded: the queue's size)."""
    for _ in range(q.maxsize or 1):
        try:
            q.get_nowait()
        except queue.Empty:
            return


__all__ = ["END", "StreamReport", "ndjson_sink", "pcap_source", "score_batch", "score_stream"]
