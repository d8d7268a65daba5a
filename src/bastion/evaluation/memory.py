"""The peak memory one piece of work adds, for the per-stage column of the reports.

On a CUDA device: the peak of torch's allocations during the work (the peak counter is reset at its start), in MB.
On the CPU: the peak resident set size sampled every few milliseconds by a thread while the work runs, minus the
resident set size at its start, in MB (``/proc/self/statm``; ``None`` where there is no such file). The process-wide
peak (``ru_maxrss``) cannot be used: it only grows, so every stage after the hungriest one would show its number.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

import torch

_STATM = Path("/proc/self/statm")
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


def _rss_mb() -> float | None:
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError):
        return None


class PeakMemory:
    """``with PeakMemory(device) as mem: ...`` then ``mem.mb``: the peak added during the block (see the module)."""

    def __init__(self, device: torch.device | str, *, interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = self._peak = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        start = _rss_mb()
        if start is not None:
            self._start = self._peak = start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = _rss_mb()
            if now is not None and now > self._peak:
                self._peak = now

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self._start
            return
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        end = _rss_mb()
        self.mb = max(self._peak, end or 0.0) - self._start
