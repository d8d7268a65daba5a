"""bastion's traffic generator, its flow meter and the shipped snapshot.

The end-to-end test builds a real virtual network in namespaces and so needs root (CI runs as root); without the
privilege or a tool it is reported as not run, never as passed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import dpkt
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.errors import InvalidInputError
from bastion.ids import flows as flows_mod
from bastion.ids.features import BENIGN, FEATURE_NAMES, LABEL
from bastion.ids.flows import META, UNLABELLED, pcap_to_flows
from bastion.ids.generate import lab as lab_mod
from bastion.ids.generate.actors import ATTACKERS, SERVER_IP
from bastion.ids.generate.services import TOOLS
from bastion.ids.snapshot import load_snapshot, snapshot_card

CLIENT, T0 = "10.23.0.11", 1_700_000_000.0
COLUMNS = [*FEATURE_NAMES, *META, LABEL]


def _ip(src: str, dst: str, l4: dpkt.Packet, proto: int) -> dpkt.ip.IP:
    ip = dpkt.ip.IP(src=bytes(map(int, src.split("."))), dst=bytes(map(int, dst.split("."))), p=proto, data=l4,
                    ttl=64)
    ip.len = 20 + len(bytes(l4))
    return ip


def _write(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f)
        for ts, frame in frames:
            w.writepkt(frame, ts=ts)
    return path


def _eth(payload: dpkt.Packet, kind: int = dpkt.ethernet.ETH_TYPE_IP) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=kind, data=payload))


def _tcp(src: str, dst: str, sport: int, dport: int, flags: int, data: bytes = b"") -> bytes:
    return _eth(_ip(src, dst, dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, data=data, off=5), 6))


F = dpkt.tcp
# (seconds after T0, frame): a TCP exchange client -> server:80 with known payloads and gaps
HTTP = [(0.000, _tcp(CLIENT, SERVER_IP, 40000, 80, F.TH_SYN)),
        (0.010, _tcp(SERVER_IP, CLIENT, 80, 40000, F.TH_SYN | F.TH_ACK)),
        (0.020, _tcp(CLIENT, SERVER_IP, 40000, 80, F.TH_ACK)),
        (0.050, _tcp(CLIENT, SERVER_IP, 40000, 80, F.TH_ACK | F.TH_PUSH, b"x" * 100)),
        (0.100, _tcp(SERVER_IP, CLIENT, 80, 40000, F.TH_ACK | F.TH_PUSH, b"y" * 300)),
        (0.200, _tcp(CLIENT, SERVER_IP, 40000, 80, F.TH_FIN | F.TH_ACK))]


@pytest.fixture
def known_pcap(tmp_path: Path) -> Path:
    udp = _eth(_ip(SERVER_IP, "10.23.0.101", dpkt.udp.UDP(sport=53, dport=5353, data=b"z" * 40), 17))
    ip6 = dpkt.ip6.IP6(src=b"\xfe\x80" + b"\0" * 13 + b"\1", dst=b"\xff\x02" + b"\0" * 13 + b"\2", nxt=58, hlim=255,
                       data=dpkt.icmp6.ICMP6(type=133, code=0, data=b"\0" * 4))
    ip6.plen = len(bytes(ip6.data))
    arp = _eth(dpkt.arp.ARP(), dpkt.ethernet.ETH_TYPE_ARP)
    frames = [(T0 + t, f) for t, f in HTTP] + [(T0 + 1.0, udp), (T0 + 1.5, _eth(ip6, dpkt.ethernet.ETH_TYPE_IP6)),
                                               (T0 + 2.0, arp)]
    return _write(tmp_path / "known.pcap", frames)


def test_flow_features_match_the_packets(known_pcap: Path) -> None:
    df = pcap_to_flows(known_pcap, {CLIENT: BENIGN, "10.23.0.101": "PortScan"})
    assert list(df.columns) == COLUMNS
    assert len(df) == 2  # the TCP exchange and the UDP packet; IPv6 and ARP form no flow
    tcp = df[df["Protocol"] == 6].iloc[0]
    fwd, bwd, both = [0, 0, 100, 0], [0, 300], [0, 0, 0, 100, 300, 0]
    want = {"Destination Port": 80, "Flow Duration": 200_000, "Total Fwd Packets": 4, "Total Backward Packets": 2,
            "Total Length of Fwd Packets": 100, "Total Length of Bwd Packets": 300,
            "Fwd Packet Length Max": 100, "Fwd Packet Length Mean": 25, "Fwd Packet Length Std": np.std(fwd, ddof=1),
            "Bwd Packet Length Mean": 150, "Bwd Packet Length Std": np.std(bwd, ddof=1),
            "Flow Bytes/s": 400 / 0.2, "Flow Packets/s": 6 / 0.2, "Fwd Packets/s": 4 / 0.2, "Bwd Packets/s": 2 / 0.2,
            "Flow IAT Mean": np.mean([10, 10, 30, 50, 100]) * 1000, "Flow IAT Max": 100_000, "Flow IAT Min": 10_000,
            "Flow IAT Std": np.std([10, 10, 30, 50, 100], ddof=1) * 1000,
            "Fwd IAT Total": 200_000, "Fwd IAT Mean": np.mean([20, 30, 150]) * 1000, "Fwd IAT Max": 150_000,
            "Bwd IAT Total": 90_000, "Bwd IAT Mean": 90_000, "Fwd PSH Flags": 1, "Bwd PSH Flags": 1,
            "Max Packet Length": 300, "Min Packet Length": 0, "Packet Length Mean": np.mean(both),
            "Packet Length Std": np.std(both, ddof=1), "FIN Flag Count": 1, "SYN Flag Count": 2,
            "ACK Flag Count": 5, "PSH Flag Count": 2, "RST Flag Count": 0, "Down/Up Ratio": 0,
            "Avg Fwd Segment Size": 25, "Avg Bwd Segment Size": 150}
    for name, value in want.items():
        assert tcp[name] == pytest.approx(value), name
    assert (tcp["Source IP"], tcp["Source Port"], tcp[LABEL]) == (CLIENT, 40000, BENIGN)
    assert tcp["Timestamp"] == "2023-11-14 22:13:20.000"
    udp = df[df["Protocol"] == 17].iloc[0]
    # one packet: zero duration, so every rate is defined as 0; labelled by the non-server end (its destination)
    assert udp["Flow Duration"] == 0 and udp["Flow Bytes/s"] == 0 and udp["Flow Packets/s"] == 0
    assert udp["Total Length of Fwd Packets"] == 40 and udp["Total Backward Packets"] == 0
    assert udp[LABEL] == "PortScan"


def test_flows_without_a_known_address_are_unlabelled(known_pcap: Path) -> None:
    assert set(pcap_to_flows(known_pcap)[LABEL]) == {UNLABELLED}


def test_a_missing_pcap_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no pcap at") as e:
        flows_mod.pcap_to_flows(tmp_path / "absent.pcap")
    assert "\n" not in str(e.value)


def test_the_snapshot_has_every_class_and_matches_its_card() -> None:
    df, card = load_snapshot(), snapshot_card()
    assert list(df.columns) == COLUMNS
    classes = {BENIGN, *(a.label for a in ATTACKERS)}
    assert set(df[LABEL]) == classes
    counts = df[LABEL].value_counts()
    assert card["classes"] == {k: int(v) for k, v in counts.items()}
    assert card["flows"] == len(df) and card["features"] == list(FEATURE_NAMES)
    assert counts[BENIGN] >= 1000 and counts.drop(BENIGN).min() >= 50
    assert np.isfinite(df[list(FEATURE_NAMES)].to_numpy(dtype=float)).all()
    assert "bastion ids generate" in card["command"] and isinstance(card["seed"], int)


def test_without_privilege_generate_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(lab_mod, "has_privilege", lambda: False)
    from bastion.ids.generate import generate

    with pytest.raises(InvalidInputError, match="run as root") as e:
        generate(tmp_path, seed=0, minutes=0.2)
    assert "\n" not in str(e.value)
    result = CliRunner().invoke(app, ["ids", "generate", "--out", str(tmp_path), "--minutes", "0.2"])
    assert result.exit_code == 2
    assert "run as root" in result.output and not (tmp_path / "flows.csv.gz").exists()


def test_a_missing_tool_names_its_package() -> None:
    with pytest.raises(InvalidInputError, match="apt-get install -y no-such-package") as e:
        lab_mod.require_tools({"no-such-tool-bastion": "no-such-package"})
    assert "\n" not in str(e.value)


def _not_run_reason() -> str | None:
    if not lab_mod.has_privilege():
        return "not run: needs root or CAP_NET_ADMIN (network namespaces); CI runs it as root"
    missing = [pkg for exe, pkg in TOOLS.items() if shutil.which(exe) is None and not Path(exe).exists()]
    return f"not run: apt-get install -y {' '.join(missing)}" if missing else None


def test_generate_end_to_end_in_namespaces(tmp_path: Path) -> None:
    reason = _not_run_reason()
    if reason:
        pytest.skip(reason)
    from bastion.ids.generate import generate

    path = generate(tmp_path, seed=5, minutes=0.25, clients=2)
    df = pd.read_csv(path)
    card = json.loads((tmp_path / "card.json").read_text())
    assert list(df.columns) == COLUMNS and card["classes"] == {k: int(v) for k, v in df[LABEL].value_counts().items()}
    by_ip = {a.ip: a.label for a in ATTACKERS}
    assert set(df[LABEL]) == {BENIGN, *by_ip.values()}  # every attack left flows
    client = df["Source IP"].where(df["Source IP"] != SERVER_IP, df["Destination IP"])
    assert (df[LABEL] == client.map(by_ip).fillna(BENIGN)).all()  # the label is the initiating namespace's class
    scan = df[df[LABEL] == "PortScan"]
    assert scan["Destination Port"].nunique() >= 50  # nmap -sS -p 1-50 at this intensity, one flow per port
    flood = df[df[LABEL] == "SYN Flood"]
    assert 0 < len(flood) <= 150 and (flood["Destination Port"] == 80).all()  # hping3 -c 150
    benign = df[df[LABEL] == BENIGN]
    assert ((benign["Destination Port"] == 80) & (benign["Protocol"] == 6)).any()
    assert ((benign["Destination Port"] == 53) & (benign["Protocol"] == 17)).any()
    for label, port in (("SSH-Patator", 22), ("FTP-Patator", 21), ("Web Attack - Sql Injection", 80)):
        assert (df.loc[df[LABEL] == label, "Destination Port"] == port).all(), label
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout
    assert card["topology"]["namespace_prefix"] not in listed  # torn down


@pytest.mark.parametrize(("kw", "match"), [({"minutes": 0.0}, "minutes must be between"),
                                           ({"minutes": 1.0, "clients": 0}, "clients must be between")])
def test_bad_sizes_are_one_line(tmp_path: Path, kw: dict, match: str) -> None:
    from bastion.ids.generate import generate

    with pytest.raises(InvalidInputError, match=match) as e:
        generate(tmp_path, seed=0, **kw)
    assert "\n" not in str(e.value)
