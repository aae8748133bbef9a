"""Events that arrive online (``POST /events``): validated like an import, kept durably, read per user.

- :func:`validate_events`: JSON-like records -> accepted events (EVENT_SCHEMA) and rejected rows with
  ``{"row", "reason": "<field>: <problem>"}`` — the importer's rules (``features/validate.py``):
  IDs int64 >= 0, timestamps in seconds, booleans, ratios in [0, 1], known surface and event type.
- :class:`OnlineEventLog`: an append-only SQLite log (WAL, ``synchronous=FULL``): an event is on disk
  when :meth:`~OnlineEventLog.append` returns, so nothing answered 2xx is lost if the process dies
  after. It is also the recent-history store: one indexed read returns a user's events after a time.
  SQLite serves one node (every replica on it opens the same file); a cluster would put this log in
  a shared store (Redis streams, Kafka) behind the same two methods.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from argusrank.features.schema import EVENT_SCHEMA, EVENT_TYPES, SURFACES
from argusrank.features.validate import MAX_TIMESTAMP, Checker

#: the fields an online event may carry (user_id, item_id, timestamp required)
FIELDS = ("user_id", "item_id", "timestamp", "is_organic", "surface", "event_type", "played_ratio", "liked",
          "disliked", "request_id", "position")


def _raw_table(records: Sequence[dict]) -> tuple[pa.Table, np.ndarray]:
    """Records as a table of strings (what the Checker parses) and a mask of records with unknown fields."""
    unknown = np.array([bool(set(r) - set(FIELDS)) if isinstance(r, dict) else True for r in records], bool)
    cols = {f: pa.array([None if not isinstance(r, dict) or r.get(f) is None else str(r[f]).lower()
                         if isinstance(r[f], bool) else str(r[f]) for r in records], pa.string()) for f in FIELDS}
    return pa.table(cols), unknown


def validate_events(records: Sequence[dict]) -> tuple[pa.Table, list[dict[str, Any]]]:
    """``(accepted events in EVENT_SCHEMA, [{"row": i, "reason": "field: problem"}, ...])``; accepted + rejected
    = records. ``surface`` and ``event_type`` are names (``feed``, ``listen``) or codes."""
    raw, unknown = _raw_table(records)
    ck = Checker(raw)
    for i in np.flatnonzero(unknown):
        r = records[i]
        extra = sorted(set(r) - set(FIELDS)) if isinstance(r, dict) else ["event"]
        ck.fail(np.arange(ck.n) == i, f"{extra[0]}: unknown field" if isinstance(r, dict) else "event: not an object")
    user, item = ck.int_column("user_id", lo=0), ck.int_column("item_id", lo=0)
    ts = ck.int_column("timestamp", lo=0, hi=MAX_TIMESTAMP)
    organic = ck.bool_column("is_organic")
    ratio = ck.float_column("played_ratio", lo=0.0, hi=1.0)
    liked, disliked = ck.bool_column("liked"), ck.bool_column("disliked")
    request = ck.int_column("request_id", required=False, lo=0)
    position = ck.int_column("position", required=False, lo=0, hi=2**15 - 1)
    codes = {}
    for name, names, default in (("surface", SURFACES, "unknown"), ("event_type", EVENT_TYPES, "interaction")):
        text = np.array([default if v is None else v for v in raw[name].to_pylist()], dtype=object)
        code = np.array([names.index(v) if v in names else int(v) if v.isdigit() and int(v) < len(names) else -1
                         for v in text], np.int64)
        ck.fail(code < 0, f"{name}: not one of {list(names)}")
        codes[name] = np.maximum(code, 0).astype(np.int8)
    n = ck.n
    events = {
        "user_id": user.values, "timestamp": ts.values, "item_id": item.values,
        "is_organic": np.where(organic.null, False, organic.values),
        "surface": codes["surface"], "request_id": pa.array(request.values, mask=request.null),
        "position": pa.array(position.values.astype(np.int16), mask=position.null),
        "event_type": codes["event_type"],
        "played_ratio": pa.array(ratio.values.astype(np.float32), mask=ratio.null),
        "liked": pa.array(liked.values, mask=liked.null), "disliked": pa.array(disliked.values, mask=disliked.null),
        "rating": pa.nulls(n, pa.float32()),
    }
    accepted, _ = ck.split(events)
    reasons = ck.reasons()
    rejected = [{"row": int(i), "reason": str(reasons[i])} for i in np.flatnonzero(~ck.ok)]
    return accepted, rejected


_COLUMNS = [f.name for f in EVENT_SCHEMA]


class OnlineEventLog:
    """Durable append-only log of accepted online events; also each user's recent history."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                       f"{', '.join(_COLUMNS)})")
            db.execute("CREATE INDEX IF NOT EXISTS by_user ON events (user_id, timestamp)")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # committed = on disk
            self._local.db = db
        return db

    def append(self, events: pa.Table) -> int:
        """Write ``events`` (EVENT_SCHEMA) in one transaction; returns the rows written, once durable."""
        rows = list(zip(*(events[c].to_pylist() for c in _COLUMNS)))
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                           rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(rows)

    def user_events(self, user_id: int, after_ts: int = -1) -> pa.Table:
        """A user's logged events with ``timestamp > after_ts``, in time order (EVENT_SCHEMA)."""
        cur = self._db().execute(f"SELECT {', '.join(_COLUMNS)} FROM events WHERE user_id = ? AND timestamp > ? "
                                 "ORDER BY timestamp, seq", (int(user_id), int(after_ts)))
        rows = cur.fetchall()
        cols = list(zip(*rows)) if rows else [[] for _ in _COLUMNS]
        return pa.table({c: pa.array(list(v)).cast(EVENT_SCHEMA.field(c).type) for c, v in zip(_COLUMNS, cols)},
                        schema=EVENT_SCHEMA)

    def last_timestamp(self) -> int | None:
        """The latest logged event time (None: empty log)."""
        last = self._db().execute("SELECT MAX(timestamp) FROM events").fetchone()[0]
        return None if last is None else int(last)

    def count(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM events").fetchone()[0])

