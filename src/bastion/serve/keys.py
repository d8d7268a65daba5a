"""API keys, per-key query budgets and token-bucket rate limits, and the append-only audit log, in one SQLite file.

Why the standard library's ``sqlite3`` and not bastion's SQLAlchemy store: the service needs exactly one thing from
its database, a single short write transaction per request (``BEGIN IMMEDIATE``: read the key, refill its bucket,
charge its budget, append the audit row, commit) that a ``kill -9`` can only ever leave fully applied or not at all.
Two tables and one hand-written transaction say that more plainly than an ORM session, add no layer to a hot path,
and keep the serving process independent of the run store's schema and migrations.

Keys are ``bst_<id>_<secret>``: ``id`` (public, 8 hex) finds the row, ``secret`` (32 random bytes) is never stored,
only ``sha256(salt || secret)`` with a per-key random salt. A salted fast hash is enough here because the secret is
256 random bits, not a password: there is nothing to guess faster.

Invariant (checked by the tests after a ``kill -9``): for every key, ``spent`` equals the sum of ``n`` over its
``allow`` audit rows since ``period_start``, because both are written in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import InvalidInputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,
    created REAL NOT NULL, revoked REAL,
    budget INTEGER NOT NULL, period_s REAL NOT NULL, period_start REAL NOT NULL, spent INTEGER NOT NULL DEFAULT 0,
    rate REAL NOT NULL, burst REAL NOT NULL, tokens REAL NOT NULL, refilled REAL NOT NULL,
    output TEXT NOT NULL DEFAULT 'scores', top_k INTEGER, decimals INTEGER,
    on_alarm TEXT NOT NULL DEFAULT 'alert', defense TEXT, defense_params TEXT, blocked REAL, throttled REAL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, key_id TEXT, endpoint TEXT NOT NULL,
    n INTEGER NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL, status INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
OUTPUTS = ("scores", "probabilities", "labels")
ACTIONS = ("alert", "throttle", "block")  # what an extraction alarm does to the key (bastion.serve.monitor)
ADDED = {"on_alarm": "TEXT NOT NULL DEFAULT 'alert'", "defense": "TEXT", "defense_params": "TEXT",
         "blocked": "REAL", "throttled": "REAL"}  # columns a database made before monitoring gets on open
THROTTLE = 0.1  # a throttled key keeps this fraction of its rate and burst


@dataclass(frozen=True)
class Policy:
    """What a key may see: ``output`` scores (as the model gives them), probabilities or labels; ``top_k`` keeps the
    k largest probabilities (the rest answered 0); ``decimals`` rounds every score; ``defense`` names an output
    defense of ``bastion.stealing`` (with its ``defense_params`` as JSON); ``on_alarm`` is what an extraction alarm
    does to the key: ``alert``, ``throttle`` or ``block``."""

    output: str = "scores"
    top_k: int | None = None
    decimals: int | None = None
    defense: str | None = None
    defense_params: str | None = None
    on_alarm: str = "alert"


@dataclass(frozen=True)
class Decision:
    """The outcome of one request's charge: ``status`` 200 when allowed, else the HTTP status and a message."""

    status: int
    reason: str
    message: str = ""
    key_id: str | None = None
    policy: Policy = Policy()
    retry_after: float | None = None
    reset_at: float | None = None


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


class KeyStore:
    """The service's database at ``path`` (created on first use). Thread-safe: one connection, one lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(keys)")}
        for column, kind in ADDED.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE keys ADD COLUMN {column} {kind}")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def create(self, name: str, *, budget: int = 10_000, period_s: float = 86_400.0, rate: float = 50.0,
               burst: float = 500.0, policy: Policy = Policy()) -> str:
        """A new key; returns the token (shown once, never stored)."""
        _check_limits(budget, period_s, rate, burst, policy)
        if policy.defense is not None:
            from bastion.serve.output import output_defense

            output_defense(policy.defense, policy.defense_params)  # an unknown name or parameter fails here
        key_id, secret, salt = secrets.token_hex(4), secrets.token_urlsafe(32), secrets.token_bytes(16)
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO keys (id, name, salt, hash, created, budget, period_s, period_start, rate, burst, "
                "tokens, refilled, output, top_k, decimals, defense, defense_params, on_alarm) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key_id, name, salt, _hash(salt, secret), now, budget, period_s, now, rate, burst, burst, now,
                 policy.output, policy.top_k, policy.decimals, policy.defense, policy.defense_params,
                 policy.on_alarm))
        return f"bst_{key_id}_{secret}"

    def list(self) -> list[dict[str, Any]]:
        cols = ("id", "name", "created", "revoked", "budget", "spent", "period_s", "period_start", "rate", "burst",
                "output", "top_k", "decimals", "defense", "on_alarm", "blocked", "throttled")
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(cols)} FROM keys ORDER BY created").fetchall()
        return [dict(zip(cols, row, strict=True)) for row in rows]

    def revoke(self, key_id: str) -> None:
        with self._lock:
            done = self._db.execute("UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                                    (time.time(), key_id.removeprefix("bst_").split("_")[0])).rowcount
        if not done:
            raise InvalidInputError(f"no active key with id {key_id!r}; see the ids with `bastion serve keys list`.")

    def unblock(self, key_id: str) -> None:
        """Lift a detector's block or throttle (the operator's decision after review): the throttle's cut is undone
        (a burst cut to its floor of 1 comes back as 1 / THROTTLE); an audit row (decision ``unblock``) records it."""
        key_id = key_id.removeprefix("bst_").split("_")[0]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT blocked, throttled, rate, burst FROM keys WHERE id = ? AND revoked IS "
                                       "NULL", (key_id,)).fetchone()
                if row is None or (row[0] is None and row[1] is None):
                    raise InvalidInputError(f"no blocked or throttled key with id {key_id!r}; see `bastion serve "
                                            "keys list`.")
                factor = THROTTLE if row[1] is not None else 1.0
                self._db.execute("UPDATE keys SET blocked = NULL, throttled = NULL, rate = ?, burst = ? WHERE id = ?",
                                 (row[2] / factor, row[3] / factor, key_id))
                self._db.execute("INSERT INTO audit (ts, key_id, endpoint, n, decision, reason, status) "
                                 "VALUES (?,?,?,?,?,?,?)", (time.time(), key_id, "cli", 0, "unblock", "operator", 200))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def authorize(self, token: str | None, n: int, endpoint: str) -> Decision:
        """Check ``token``, refill its bucket and charge ``n`` queries; the audit row goes in the same transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                decision = self._decide(token, n, time.time())
                self._append(decision, n, endpoint)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return decision

    def record(self, decision: Decision, n: int, endpoint: str) -> None:
        """Append a decision taken without a charge (a request refused before it was charged)."""
        with self._lock:
            self._append(decision, n, endpoint)

    def _append(self, d: Decision, n: int, endpoint: str) -> None:
        self._db.execute("INSERT INTO audit (ts, key_id, endpoint, n, decision, reason, status) VALUES (?,?,?,?,?,?,?)",
                         (time.time(), d.key_id, endpoint, n, "allow" if d.status == 200 else "deny", d.reason,
                          d.status))

    def identify(self, token: str | None) -> Decision:
        """Who ``token`` is, without charging anything (status 200 for an active key)."""
        with self._lock:
            return self._identify(token)[0]

    def _identify(self, token: str | None) -> tuple[Decision, tuple | None]:
        if not token:
            return Decision(401, "no_key", "send an API key in the X-API-Key header (bastion serve keys create)"), None
        parts = token.split("_", 2)
        row = None
        if len(parts) == 3 and parts[0] == "bst":
            row = self._db.execute("SELECT id, salt, hash, revoked, budget, period_s, period_start, spent, rate, "
                                   "burst, tokens, refilled, output, top_k, decimals, defense, defense_params, "
                                   "on_alarm, blocked FROM keys WHERE id = ?",
                                   (parts[1],)).fetchone()
        if row is None or not hmac.compare_digest(_hash(row[1], parts[2]), row[2]):
            return Decision(401, "bad_key", "the API key is not valid; check it or create one"), None
        policy = Policy(*row[12:18])
        if row[3] is not None:
            return Decision(403, "revoked", "this API key was revoked; ask for a new one", row[0], policy), None
        if row[18] is not None:
            return Decision(403, "blocked_by_detector", "this API key was blocked: its queries looked like model "
                            "extraction; ask the operator to review it", row[0], policy), None
        return Decision(200, "ok", key_id=row[0], policy=policy), row

    def alarm(self, key_id: str, action: str, detector: str, endpoint: str) -> None:
        """Apply an extraction alarm's ``action`` to the key and audit it (decision ``alarm``), in one transaction.

        ``block`` marks the key blocked (403 from now on, across restarts); ``throttle`` cuts its rate and burst to
        ``THROTTLE`` of what they are, once (a key already throttled is not cut again); ``alert`` changes nothing."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if action == "block":
                    self._db.execute("UPDATE keys SET blocked = ? WHERE id = ? AND blocked IS NULL", (now, key_id))
                elif action == "throttle":
                    self._db.execute("UPDATE keys SET rate = rate * ?, burst = max(1.0, burst * ?), tokens = "
                                     "min(tokens, max(1.0, burst * ?)), throttled = ? WHERE id = ? AND throttled IS "
                                     "NULL", (THROTTLE, THROTTLE, THROTTLE, now, key_id))
                self._db.execute("INSERT INTO audit (ts, key_id, endpoint, n, decision, reason, status) "
                                 "VALUES (?,?,?,?,?,?,?)", (now, key_id, endpoint, 0, "alarm", f"{detector}:{action}",
                                                            403 if action == "block" else 200))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _decide(self, token: str | None, n: int, now: float) -> Decision:
        who, row = self._identify(token)
        if row is None:
            return who
        key_id, budget, period_s, period_start, spent, rate, burst, tokens, refilled = (
            row[0], row[4], row[5], row[6], row[7], row[8], row[9], row[10], row[11])
        if now >= period_start + period_s:
            period_start, spent = now, 0
        reset_at = period_start + period_s
        if n > burst:
            return Decision(413, "batch_over_burst", f"a batch of {n} exceeds this key's burst of {burst:g} "
                            f"queries; send at most {int(burst)} inputs per request", key_id, who.policy)
        if spent + n > budget:
            return Decision(429, "budget", f"query budget spent ({spent} of {budget}); it resets at "
                            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(reset_at))}", key_id, who.policy,
                            retry_after=reset_at - now, reset_at=reset_at)
        tokens = min(burst, tokens + (now - refilled) * rate)
        if tokens < n:
            wait = (n - tokens) / rate
            self._db.execute("UPDATE keys SET tokens = ?, refilled = ? WHERE id = ?", (tokens, now, key_id))
            return Decision(429, "rate", f"rate limit of {rate:g} queries/s; retry in {wait:.2f} s", key_id,
                            who.policy, retry_after=wait, reset_at=reset_at)
        self._db.execute("UPDATE keys SET spent = ?, period_start = ?, tokens = ?, refilled = ? WHERE id = ?",
                         (spent + n, period_start, tokens - n, now, key_id))
        return Decision(200, "ok", key_id=key_id, policy=who.policy, reset_at=reset_at)


def _check_limits(budget: int, period_s: float, rate: float, burst: float, policy: Policy) -> None:
    if budget < 0 or period_s <= 0 or rate <= 0 or burst < 1:
        raise InvalidInputError("a key needs budget >= 0, period > 0, rate > 0 and burst >= 1; fix the numbers.")
    if policy.output not in OUTPUTS:
        raise InvalidInputError(f"--output {policy.output!r} is not one of {', '.join(OUTPUTS)}; pick one.")
    if policy.top_k is not None and policy.top_k < 1:
        raise InvalidInputError("--top-k must be at least 1; drop it to answer every class.")
    if policy.decimals is not None and not 0 <= policy.decimals <= 8:
        raise InvalidInputError("--decimals must be 0..8; drop it to answer full precision.")
    if policy.on_alarm not in ACTIONS:
        raise InvalidInputError(f"--on-alarm {policy.on_alarm!r} is not one of {', '.join(ACTIONS)}; pick one.")
    if policy.defense is not None and (policy.top_k is not None or policy.output == "labels"):
        raise InvalidInputError("--output-defense decides what the key sees; drop --top-k and --output labels.")
