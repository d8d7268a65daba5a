"""Real-time scoring: a pcap written here (known flows) scored offline gives the features ``pcap_to_flows`` gives and
the detector's own verdicts; runs are bounded; replay and live scoring run in network namespaces where the runner
has root (CI does) and are reported as not run without it."""

from __future__ import annotations

import queue
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import dpkt
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bastion.cli import app
from bastion.errors import InvalidInputError
from bastion.ids.features import BENIGN, FEATURE_NAMES
from bastion.ids.flows import pcap_to_flows
from bastion.ids.generate import lab as lab_mod
from bastion.ids.generate.services import TOOLS
from bastion.ids.models import build_detector, categorical_columns, predict, save_detector
from bastion.ids.stream import END, pcap_source, score_stream
from bastion.ids.streamnet import live_source, replay_source

from .flowgen import synthetic_flows

T0 = 1_700_000_000.0
SERVER, CLIENTS = "10.23.0.1", ("10.23.0.11", "10.23.0.12", "10.23.0.13")
CLASSES = (BENIGN, "ATTACK")
F = dpkt.tcp


def _ip(src: str, dst: str, l4: dpkt.Packet, proto: int) -> bytes:
    ip = dpkt.ip.IP(src=bytes(map(int, src.split("."))), dst=bytes(map(int, dst.split("."))), p=proto, data=l4,
                    ttl=64)
    ip.len = 20 + len(bytes(l4))
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip))


def _tcp(src: str, dst: str, sport: int, dport: int, flags: int, data: bytes = b"") -> bytes:
    return _ip(src, dst, dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, data=data, off=5), 6)


def _exchange(client: str, port: int, start: float, size: int) -> list[tuple[float, bytes]]:
    """A TCP exchange client:port -> server:80 with known payloads (size, 3 * size) and gaps."""
    return [(start, _tcp(client, SERVER, port, 80, F.TH_SYN)),
            (start + 0.010, _tcp(SERVER, client, 80, port, F.TH_SYN | F.TH_ACK)),
            (start + 0.020, _tcp(client, SERVER, port, 80, F.TH_ACK)),
            (start + 0.050, _tcp(client, SERVER, port, 80, F.TH_ACK | F.TH_PUSH, b"x" * size)),
            (start + 0.100, _tcp(SERVER, client, 80, port, F.TH_ACK | F.TH_PUSH, b"y" * 3 * size)),
            (start + 0.200, _tcp(client, SERVER, port, 80, F.TH_FIN | F.TH_ACK))]


def _write(path: Path, frames: list[tuple[float, bytes]], linktype: int = dpkt.pcap.DLT_EN10MB) -> Path:
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, linktype=linktype)
        for ts, frame in sorted(frames, key=lambda item: item[0]):
            w.writepkt(frame, ts=ts)
    return path


@pytest.fixture
def known_pcap(tmp_path: Path) -> Path:
    """Six TCP exchanges, two one-packet UDP flows (a scan-like probe) and an IPv6 packet (no IPv4 flow)."""
    frames = [f for i in range(6) for f in _exchange(CLIENTS[i % 3], 40000 + i, T0 + 0.3 * i, 50 + 40 * i)]
    frames += [(T0 + 2.0 + 0.1 * i, _ip(CLIENTS[0], SERVER, dpkt.udp.UDP(sport=5000 + i, dport=53 + i,
                                                                        data=b"q" * 20), 17)) for i in range(2)]
    ip6 = dpkt.ip6.IP6(src=b"\xfe\x80" + b"\0" * 13 + b"\1", dst=b"\xff\x02" + b"\0" * 13 + b"\2", nxt=58, hlim=255,
                       data=dpkt.icmp6.ICMP6(type=133, code=0, data=b"\0" * 4))
    ip6.plen = len(bytes(ip6.data))
    eth6 = bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP6, data=ip6))
    return _write(tmp_path / "known.pcap", [*frames, (T0 + 2.5, eth6)])


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    x, _ = synthetic_flows(200, seed=1)
    det = build_detector("mlp", x, 2, generator=torch.Generator().manual_seed(0),
                         categorical=categorical_columns(FEATURE_NAMES, {"Protocol": (1.0, 6.0, 17.0)}))
    return det.eval()


def _key(flow: dict[str, Any]) -> tuple:
    return flow["src_ip"], flow["src_port"], flow["dst_ip"], flow["dst_port"], flow["protocol"]


def _check_record(rec: dict[str, Any], model: torch.nn.Module) -> None:
    row = np.array([[rec["features"][n] for n in FEATURE_NAMES]])
    with torch.no_grad():
        prob = torch.softmax(model(torch.from_numpy(row)), 1)[0]
    assert rec["verdict"] == CLASSES[int(predict(model, row)[0])]  # the detector's own answer on the row
    assert rec["score"] == pytest.approx(float(prob.max())) and rec["attack_score"] == pytest.approx(float(prob[1]))
    lat, t = rec["latency_ms"], rec["time"]
    assert min(lat.values()) >= 0 and t["emitted"] <= t["features"] <= t["verdict"]
    assert lat["total"] == pytest.approx(lat["features"] + lat["verdict"])


def test_offline_scoring_gives_the_snapshot_features_and_a_verdict_per_flow(known_pcap: Path, model) -> None:
    records: list[dict[str, Any]] = []
    labels = {CLIENTS[0]: "PortScan", CLIENTS[1]: BENIGN}
    with pcap_source(known_pcap) as flows:
        report = score_stream(model, CLASSES, flows, labels=labels, sink=records.append, max_seconds=60)
    batch = pcap_to_flows(known_pcap, labels)
    assert report.ended == "source" and report.flows == len(records) == len(batch) == 8  # IPv6 forms no row
    by_key = {(r["Source IP"], r["Source Port"], r["Destination IP"], r["Destination Port"], r["Protocol"]): r
              for _, r in batch.iterrows()}
    for rec in records:
        want = by_key[_key(rec["flow"])]
        for name in FEATURE_NAMES:
            assert rec["features"][name] == pytest.approx(float(want[name])), name
        assert rec["label"] == want["Label"]
        _check_record(rec, model)
        assert "since_last_packet" not in rec["latency_ms"]  # a file's packet clock is not the wall clock
    assert sum(report.verdicts.values()) == 8 and len(report.latency["total"]) == 8
    summary = report.summary()
    assert summary["latency_ms"]["total"]["p50"] <= summary["latency_ms"]["total"]["p99"]
    assert report.labelled == 8 - 2  # CLIENTS[2]'s two exchanges have no label


def test_runs_are_bounded_by_flows_and_by_time(known_pcap: Path, model) -> None:
    with pcap_source(known_pcap) as flows:
        report = score_stream(model, CLASSES, flows, max_flows=3, batch=2)
    assert (report.flows, report.ended) == (3, "max_flows")
    silent: queue.Queue = queue.Queue()  # a source that never sends: only the time bound ends the run
    started = time.monotonic()
    report = score_stream(model, CLASSES, silent, max_seconds=0.5, poll=0.1)
    assert report.ended == "max_seconds" and report.flows == 0 and time.monotonic() - started < 2.0
    silent.put(END)
    assert score_stream(model, CLASSES, silent).ended == "source"


def test_the_command_writes_one_verdict_a_flow(known_pcap: Path, model, tmp_path: Path) -> None:
    save_detector(model, tmp_path / "det", columns=FEATURE_NAMES, classes=CLASSES)
    out = tmp_path / "verdicts.ndjson"
    result = CliRunner().invoke(app, ["ids", "stream", "--detector", str(tmp_path / "det"), "--pcap", str(known_pcap),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 8
    assert "8 flows scored" in result.output and "p50" in result.output and "flows/s" in result.output


def _one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, ["ids", "stream", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_bad_input_is_one_line(tmp_path: Path, known_pcap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "no pcap at" in _one_line_error(["--pcap", str(tmp_path / "absent.pcap")])
    assert "exactly one source" in _one_line_error([])
    assert "exactly one source" in _one_line_error(["--pcap", str(known_pcap), "--live"])
    raw = _write(tmp_path / "raw.pcap", [(T0, b"\x45" + b"\0" * 19)], linktype=101)
    with pytest.raises(InvalidInputError, match="not Ethernet") as e, replay_source(raw):
        pass
    assert "\n" not in str(e.value)
    monkeypatch.setattr(lab_mod, "has_privilege", lambda: False)
    assert "run as root" in _one_line_error(["--replay", str(known_pcap)])
    assert "run as root" in _one_line_error(["--live", "--seconds", "5"])
    with pytest.raises(InvalidInputError, match="run as root"), live_source(5):
        pass


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20, check=False).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


@pytest.fixture
def prefix(monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's own namespace prefix, so only its namespaces are looked for afterwards."""
    name = f"bidst{time.time_ns() % 10**6:06d}"
    monkeypatch.setattr(lab_mod, "run_prefix", lambda: name)
    return name


def test_replay_scores_every_flow_and_leaves_no_namespace(known_pcap: Path, model, prefix: str) -> None:
    if not lab_mod.has_privilege():
        pytest.skip("not run: needs root or CAP_NET_ADMIN (network namespaces); CI runs it as root")
    if shutil.which("tcpreplay") is None:
        pytest.skip("not run: needs tcpreplay (apt-get install -y tcpreplay)")
    records: list[dict[str, Any]] = []
    with replay_source(known_pcap) as flows:
        assert {f"{prefix}-tx", f"{prefix}-rx"} <= _namespaces()
        report = score_stream(model, CLASSES, flows, sink=records.append, max_seconds=60)
    assert not {ns for ns in _namespaces() if ns.startswith(prefix)}
    batch = pcap_to_flows(known_pcap)
    assert report.ended == "source" and len(records) == len(batch) == 8
    want = {(r["Source IP"], r["Source Port"], r["Destination IP"], r["Destination Port"], r["Protocol"]):
            (r["Total Fwd Packets"], r["Total Backward Packets"], r["Total Length of Fwd Packets"]) for _, r in
            batch.iterrows()}
    got = {_key(r["flow"]): tuple(r["features"][n] for n in ("Total Fwd Packets", "Total Backward Packets",
                                                             "Total Length of Fwd Packets")) for r in records}
    assert got == want  # every flow, its packets and bytes (top speed changes only the times)
    for rec in records:
        _check_record(rec, model)
        assert rec["latency_ms"]["since_last_packet"] >= 2000 * 0.9  # the 2 s idle timeout, measured on the wire


def test_live_generated_traffic_is_scored_with_its_labels(model, prefix: str) -> None:
    if not lab_mod.has_privilege():
        pytest.skip("not run: needs root or CAP_NET_ADMIN (network namespaces); CI runs it as root")
    missing = [pkg for exe, pkg in TOOLS.items() if shutil.which(exe) is None and not Path(exe).exists()]
    if missing:
        pytest.skip(f"not run: apt-get install -y {' '.join(missing)}")
    records: list[dict[str, Any]] = []
    with live_source(5, seed=3, clients=1) as (flows, labels):
        report = score_stream(model, CLASSES, flows, labels=labels, sink=records.append, max_flows=20,
                              max_seconds=45)
    assert not {ns for ns in _namespaces() if ns.startswith(prefix)}
    assert report.flows == len(records) >= 1
    for rec in records:
        _check_record(rec, model)
        assert rec["label"] in set(labels.values())  # ground truth: the sending namespace's class
        assert rec["flow"]["src_ip"].startswith("10.")
