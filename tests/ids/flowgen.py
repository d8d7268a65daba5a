"""Synthetic flows in the CIC layout whose every relation holds by construction (for tests that need many rows fast;
the real data is the generator's snapshot)."""

from __future__ import annotations

import numpy as np

from bastion.ids.features import FEATURE_NAMES


def _stats(rng: np.random.Generator, count: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, ...]:
    """(max, min, mean, std) of ``count`` packet lengths summing to ``total`` (integers)."""
    mean = np.divide(total, count, out=np.zeros_like(total, dtype=float), where=count > 0)
    spread = np.floor(mean * rng.uniform(0, 0.5, len(count)))
    many = count > 1
    mx = np.where(many, np.ceil(mean) + spread, np.round(mean))
    mn = np.where(many, np.maximum(np.floor(mean) - spread, 0), np.round(mean))
    std = np.where(many, (mx - mn) / 3, 0.0)
    return mx, mn, mean, std


def synthetic_flows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(rows (n, 52), labels (n,) 0 benign / 1 attack)``: attacks send more, smaller packets, faster."""
    rng = np.random.default_rng(seed)
    attack = rng.random(n) < 0.5
    fwd = rng.integers(1, 30, n) + attack * rng.integers(0, 40, n)
    bwd = rng.integers(0, 30, n)
    size = np.where(attack, rng.integers(0, 80, n), rng.integers(40, 800, n))
    fwd_bytes = fwd * size
    bwd_bytes = bwd * rng.integers(0, 1000, n)
    duration = rng.integers(1, 5_000_000, n).astype(float) / np.where(attack, 4, 1)
    fmax, fmin, fmean, fstd = _stats(rng, fwd, fwd_bytes)
    bmax, bmin, bmean, bstd = _stats(rng, bwd, bwd_bytes)
    seconds = duration / 1e6
    packets = fwd + bwd
    col: dict[str, np.ndarray] = {
        "Destination Port": rng.choice([22, 53, 80, 443], n).astype(float), "Protocol": rng.choice([6, 17], n),
        "Flow Duration": duration, "Total Fwd Packets": fwd, "Total Backward Packets": bwd,
        "Total Length of Fwd Packets": fwd_bytes, "Total Length of Bwd Packets": bwd_bytes,
        "Fwd Packet Length Max": fmax, "Fwd Packet Length Min": fmin, "Fwd Packet Length Mean": fmean,
        "Fwd Packet Length Std": fstd, "Bwd Packet Length Max": bmax, "Bwd Packet Length Min": bmin,
        "Bwd Packet Length Mean": bmean, "Bwd Packet Length Std": bstd,
        "Flow Bytes/s": (fwd_bytes + bwd_bytes) / seconds, "Flow Packets/s": packets / seconds,
        "Fwd Packets/s": fwd / seconds, "Bwd Packets/s": bwd / seconds,
        "Max Packet Length": np.maximum(fmax, bmax),
        "Min Packet Length": np.where(bwd > 0, np.minimum(fmin, bmin), fmin),
        "Packet Length Mean": (fwd_bytes + bwd_bytes) / packets,
        "Packet Length Std": (np.maximum(fmax, bmax) - np.where(bwd > 0, np.minimum(fmin, bmin), fmin)) / 3,
        "Down/Up Ratio": np.floor(bwd / fwd), "Avg Fwd Segment Size": fmean, "Avg Bwd Segment Size": bmean,
    }
    spans = (("Flow", duration, packets), ("Fwd", duration * 0.9, fwd), ("Bwd", duration * 0.8, bwd))
    for prefix, span, count in spans:
        total = np.where(count > 1, span, 0.0)
        mean = np.divide(total, count - 1, out=np.zeros(n), where=count > 1)
        if prefix != "Flow":
            col[f"{prefix} IAT Total"] = total
        col[f"{prefix} IAT Mean"], col[f"{prefix} IAT Max"] = mean, np.minimum(mean * 2, total)
        col[f"{prefix} IAT Min"], col[f"{prefix} IAT Std"] = mean / 2, mean / 3
    for name in ("Fwd PSH Flags", "Bwd URG Flags", "Fwd URG Flags", "URG Flag Count", "CWE Flag Count",
                 "ECE Flag Count"):
        col[name] = np.zeros(n)
    col["Bwd PSH Flags"] = np.minimum(bwd, 1)
    for flag, k in (("FIN", 2), ("SYN", 1), ("RST", 1), ("PSH", 3), ("ACK", 50)):
        col[f"{flag} Flag Count"] = np.minimum(packets, k)
    rows = np.stack([np.asarray(col[name], dtype=float) for name in FEATURE_NAMES], 1)
    return rows, attack.astype(np.int64)


def write_bastion_csv(path: str, n: int = 600, seed: int = 0) -> str:
    """Synthetic flows as a bastion snapshot CSV (classes BENIGN, Flood, Scan)."""
    import csv

    from bastion.ids.features import LABEL

    rows, labels = synthetic_flows(n, seed)
    rng = np.random.default_rng(seed + 1)
    names = np.where(labels == 0, "BENIGN", np.where(rng.random(n) < 0.5, "Flood", "Scan"))
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([*FEATURE_NAMES, "Source IP", "Destination IP", "Source Port", "Timestamp", LABEL])
        for i, (row, name) in enumerate(zip(rows, names, strict=True)):
            out.writerow([*(repr(float(v)) for v in row), f"10.0.0.{i % 200}", "10.0.1.1", 40000 + i, i, name])
    return path
