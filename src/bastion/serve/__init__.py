"""``bastion serve``: a hardened real-time inference service (see ``bastion.serve.app`` for the protocol).

- ``keys``: API keys (salted hashes), budgets, token buckets and the audit log in SQLite.
- ``validate``: request checks, each a 4xx with a message.
- ``output``: per-key output hardening (labels only, top-k, rounding, the stealing package's output defenses).
- ``monitor``: extraction monitoring per key (a stealing detector, PRADA) that alerts, throttles or blocks.
- ``model``: zoo models, checkpoints and saved IDS detectors as served models.
- ``metrics``: Prometheus counters and histograms.
- ``app``: the FastAPI application.
"""
