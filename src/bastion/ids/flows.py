"""Bidirectional flows of a pcap, as rows of bastion's CIC-IDS2017 layout (``bastion.ids.features``), with labels.

The flow meter is nfstream (Aouini & Pekar, "NFStream: a flexible network data analysis framework", Computer
Networks 2022), run with ``statistical_analysis=True`` and ``accounting_mode=3`` (lengths are transport payload
bytes, as CICFlowMeter counts them), ``idle_timeout=120`` s (CICFlowMeter's flow timeout in CIC-IDS2017) and
``active_timeout=1800`` s (nfstream's default). Mapping, and where it differs from CICFlowMeter:

- Times: nfstream keeps milliseconds; bastion's columns are microseconds (``ms * 1000``), so every duration and
  inter-arrival time here is a multiple of 1000 us (CICFlowMeter has microsecond resolution).
- ``Fwd IAT Total`` / ``Bwd IAT Total``: the time from the direction's first to last packet (the sum of its gaps,
  CIC's definition), nfstream's ``src2dst_duration_ms`` / ``dst2src_duration_ms``.
- Standard deviations are sample standard deviations (n - 1), as in CICFlowMeter; one value gives 0.
- ``Flow Bytes/s``, ``Flow Packets/s``, ``Fwd Packets/s``, ``Bwd Packets/s``: totals over the flow duration in
  seconds; **a flow of zero duration (a single packet, or all within one millisecond) has rate 0** (CICFlowMeter
  writes Infinity or NaN there).
- ``Down/Up Ratio``: ``floor(backward packets / forward packets)``, as CICFlowMeter computes it.
- ``Fwd/Bwd PSH/URG Flags``: the number of packets of that direction carrying the flag.
- ``CWE Flag Count`` is the CWR flag (CICFlowMeter's name). ``Avg Fwd/Bwd Segment Size`` equal the direction's mean
  payload length (also CIC's definition).
- Flows end on the idle/active timeouts only (nfstream does not split a flow on FIN as CICFlowMeter does), so a
  reused 5-tuple within 120 s is one flow.
- Only IPv4 flows are kept: IPv6 (link-local, ICMPv6 neighbour discovery) is dropped, and ARP is not IP so it never
  forms a flow.

Labels come from ground truth, not heuristics: ``labels`` maps an actor's address to its class; a flow takes the
class of its source address, else of its destination address (a flow first seen from the answering side), else
``unlabelled`` (the caller decides what to do with those)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bastion.errors import InvalidInputError
from bastion.ids.features import FEATURE_NAMES, LABEL

META = ("Source IP", "Destination IP", "Source Port", "Timestamp")
UNLABELLED = "unlabelled"
IDLE_TIMEOUT_S = 120
ACTIVE_TIMEOUT_S = 1800


def meter(pcap: str | Path) -> pd.DataFrame:
    """nfstream's raw flow table of ``pcap``."""
    try:
        from nfstream import NFStreamer
    except ImportError as exc:
        raise InvalidInputError("nfstream is not installed: pip install 'nfstream==6.6.0'") from exc
    if not Path(pcap).is_file():
        raise InvalidInputError(f"no pcap at {pcap}; give the path of a capture file")
    return NFStreamer(source=str(pcap), **streamer_options()).to_pandas()


def streamer_options(*, idle_timeout: int = IDLE_TIMEOUT_S, active_timeout: int = ACTIVE_TIMEOUT_S) -> dict[str, Any]:
    """The ``NFStreamer`` settings of every bastion meter (a pcap read here, or a live meter with shorter timeouts)."""
    return {"statistical_analysis": True, "accounting_mode": 3, "n_dissections": 0, "idle_timeout": idle_timeout,
            "active_timeout": active_timeout, "n_meters": 1}


def _rate(total: pd.Series, seconds: pd.Series) -> np.ndarray:
    t = seconds.to_numpy(dtype=float)
    return np.divide(total.to_numpy(dtype=float), t, out=np.zeros(len(t)), where=t > 0)


def _columns(raw: pd.DataFrame) -> dict[str, pd.Series | np.ndarray]:
    us = 1000.0
    fwd, bwd = raw["src2dst_packets"], raw["dst2src_packets"]
    secs = raw["bidirectional_duration_ms"] / 1000.0
    cols: dict[str, pd.Series | np.ndarray] = {
        "Destination Port": raw["dst_port"], "Protocol": raw["protocol"],
        "Flow Duration": raw["bidirectional_duration_ms"] * us,
        "Total Fwd Packets": fwd, "Total Backward Packets": bwd,
        "Total Length of Fwd Packets": raw["src2dst_bytes"], "Total Length of Bwd Packets": raw["dst2src_bytes"],
    }
    for side, d in (("Fwd", "src2dst"), ("Bwd", "dst2src")):
        for stat, col in (("Max", "max_ps"), ("Min", "min_ps"), ("Mean", "mean_ps"), ("Std", "stddev_ps")):
            cols[f"{side} Packet Length {stat}"] = raw[f"{d}_{col}"]
    cols["Flow Bytes/s"] = _rate(raw["src2dst_bytes"] + raw["dst2src_bytes"], secs)
    cols["Flow Packets/s"] = _rate(fwd + bwd, secs)
    for prefix, d in (("Flow IAT", "bidirectional"), ("Fwd IAT", "src2dst"), ("Bwd IAT", "dst2src")):
        if d != "bidirectional":
            cols[f"{prefix} Total"] = raw[f"{d}_duration_ms"] * us
        for stat, col in (("Mean", "mean"), ("Std", "stddev"), ("Max", "max"), ("Min", "min")):
            cols[f"{prefix} {stat}"] = raw[f"{d}_{col}_piat_ms"] * us
    for side, d in (("Fwd", "src2dst"), ("Bwd", "dst2src")):
        cols[f"{side} PSH Flags"] = raw[f"{d}_psh_packets"]
    for side, d in (("Fwd", "src2dst"), ("Bwd", "dst2src")):
        cols[f"{side} URG Flags"] = raw[f"{d}_urg_packets"]
    cols["Fwd Packets/s"] = _rate(fwd, secs)
    cols["Bwd Packets/s"] = _rate(bwd, secs)
    cols["Min Packet Length"] = raw["bidirectional_min_ps"]
    cols["Max Packet Length"] = raw["bidirectional_max_ps"]
    cols["Packet Length Mean"] = raw["bidirectional_mean_ps"]
    cols["Packet Length Std"] = raw["bidirectional_stddev_ps"]
    for flag, col in (("FIN", "fin"), ("SYN", "syn"), ("RST", "rst"), ("PSH", "psh"), ("ACK", "ack"),
                      ("URG", "urg"), ("CWE", "cwr"), ("ECE", "ece")):
        cols[f"{flag} Flag Count"] = raw[f"bidirectional_{col}_packets"]
    cols["Down/Up Ratio"] = (bwd // fwd.clip(lower=1)).to_numpy()
    cols["Avg Fwd Segment Size"] = raw["src2dst_mean_ps"]
    cols["Avg Bwd Segment Size"] = raw["dst2src_mean_ps"]
    return cols


def to_features(raw: pd.DataFrame | Iterable[Mapping[str, Any]], labels: dict[str, str] | None = None) -> pd.DataFrame:
    """nfstream's table -> bastion's columns (``FEATURE_NAMES`` in order, then ``META``, then ``Label``). ``raw`` may
    also be nfstream flows as mappings (``flow_record`` of each ``NFlow``, as a live meter streams them)."""
    if not isinstance(raw, pd.DataFrame):
        raw = pd.DataFrame(list(raw))
    if raw.empty or "ip_version" not in raw:
        return pd.DataFrame(columns=[*FEATURE_NAMES, *META, LABEL])
    raw = raw[raw["ip_version"] == 4].reset_index(drop=True)
    cols = _columns(raw)
    out = pd.DataFrame({name: np.asarray(cols[name]) for name in FEATURE_NAMES})
    out["Source IP"] = raw["src_ip"].to_numpy()
    out["Destination IP"] = raw["dst_ip"].to_numpy()
    out["Source Port"] = raw["src_port"].to_numpy()
    out["Timestamp"] = pd.to_datetime(raw["bidirectional_first_seen_ms"], unit="ms", utc=True).dt.strftime(
        "%Y-%m-%d %H:%M:%S.%f").str[:-3].to_numpy()
    labels = labels or {}
    src = raw["src_ip"].map(labels).astype(object)
    out[LABEL] = src.fillna(raw["dst_ip"].map(labels).astype(object)).fillna(UNLABELLED).to_numpy()
    return out


def flow_record(flow: Any) -> dict[str, Any]:
    """One nfstream ``NFlow`` as a plain mapping of its attributes (what ``to_features`` reads)."""
    return dict(zip(flow.keys(), flow.values(), strict=True))


def pcap_to_flows(pcap: str | Path, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """The labelled flows of ``pcap`` in bastion's CIC-IDS2017 layout."""
    return to_features(meter(pcap), labels)
