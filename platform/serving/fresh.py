"""Fresh user vectors: an accepted event updates the user's ARGUS vector in the online store at once.

:class:`FreshVectors` is the Python API a stream consumer calls (``ingest(records)``), and what
``POST /events`` runs. Per call:

1. validate the events with the importer's rules (``features/online_events.py``): bad ones are
   answered with the field named, the rest are kept;
2. append the accepted ones to the durable online event log (committed to disk before the call
   returns: nothing answered 2xx is lost if the process dies after);
3. recompute each affected user's tower vector with the served ARGUS version: from the user's
   cached encoder state (each layer's keys/values, the pooled tokens: ``models/incremental.py``) plus
   one step per new event when the user was seen recently, else one full pass over the user's recent
   history (the dataset's events of the user, then the logged online events, the last ``max_len``);
   both equal a full pass over the same history;
4. push the vectors to the Feast ``user_vectors`` view (push source) with their model version and
   the user's latest event time: the next ``/recommend`` or ``/rank`` (and a ranking service's Feast
   read) uses them. The version is the served bundle's, so the version guard still holds: when the
   ``champion`` alias moves, the states are dropped and vectors of the new version are computed.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from argusrank.features.online_events import OnlineEventLog, validate_events
from argusrank.platform import registry
from argusrank.platform.config import ArgusrankConfig
from argusrank.platform.serving.bundle import Bundle, resolve_bundle


class FreshVectors:
    """Online event ingestion -> fresh user vectors in the online store, for one served bundle."""

    def __init__(self, cfg: ArgusrankConfig, bundle: Bundle | None = None, cache_users: int = 10_000):
        self.cfg = cfg
        self.log = OnlineEventLog(cfg.paths.home / "online" / "events.db")
        self._lock = threading.Lock()
        self.cache_users = cache_users
        self.load(bundle or resolve_bundle(cfg))

    def load(self, bundle: Bundle) -> None:
        """Serve ``bundle``: load its ARGUS version, drop every cached user state (never mix versions)."""
        model, version = registry.load_argus(self.cfg, bundle.argus_version)
        with self._lock:
            self.bundle, self.model = bundle, model.eval()
            self.states: OrderedDict[int, Any] = OrderedDict()  # user -> IncrementalUserState of this version

    def ingest(self, records: Sequence[dict]) -> dict[str, Any]:
        """Validate, log durably, update and push the affected users' vectors.

        Returns ``{"accepted", "rejected": [{"row", "reason"}], "vectors": [{"user_id", "event_timestamp",
        "model_version"}], "seconds"}``."""
        t0 = time.perf_counter()
        accepted, rejected = validate_events(records)
        out = self.ingest_valid(accepted)
        out.update(rejected=rejected, seconds=time.perf_counter() - t0)
        return out

    def ingest_valid(self, accepted: pa.Table) -> dict[str, Any]:
        """:meth:`ingest` of events already validated (EVENT_SCHEMA): log durably, update, push."""
        out: dict[str, Any] = {"accepted": accepted.num_rows, "rejected": [], "vectors": []}
        if accepted.num_rows:
            self.log.append(accepted)  # durable before anything is answered
            with self._lock:
                out["vectors"] = self._update(accepted)
        return out

    def _update(self, events: pa.Table) -> list[dict[str, Any]]:
        from argusrank.features import store, vectors
        from argusrank.models import incremental

        users = np.unique(events["user_id"].to_numpy())
        vecs, latest = [], []
        for user in users.tolist():
            mine = events.filter(pa.compute.equal(events["user_id"], user)).sort_by("timestamp")
            state = self.states.pop(user, None)
            try:
                if state is None:
                    raise LookupError(user)
                for event in mine.to_pylist():  # one step per event from the cached state
                    state = incremental.append(self.model, state, event)
            except (LookupError, ValueError):  # not cached, or an event older than the window's last one
                state = incremental.init_state(self.model, self._history(user))
            self.states[user] = state
            while len(self.states) > self.cache_users:
                self.states.popitem(last=False)
            vecs.append(incremental.user_vector(self.model, state))
            latest.append(int(state.last_timestamp))
        table = vectors.vector_table("user", users, np.stack(vecs), self.bundle.argus_version, np.asarray(latest),
                                     time.time())
        store.push_user_vectors(self.cfg, table)
        return [{"user_id": int(u), "event_timestamp": int(t), "model_version": self.bundle.argus_version}
                for u, t in zip(users, latest)]

    def _history(self, user: int) -> dict[str, np.ndarray]:
        """One full read of the user's recent history: the dataset's events, then the logged online ones (which
        include the events being ingested), the last ``max_len`` in time order, as one window row."""
        from argusrank.features.histories import build_histories
        from argusrank.features.io import read_events
        from argusrank.features.schema import EVENT_PARTITIONS
        from argusrank.features.sequences import gather_windows

        offline = read_events(self.cfg.dataset_dir, user_buckets=[user % EVENT_PARTITIONS])
        offline = offline.filter(pa.compute.equal(offline["user_id"], user))
        last = int(offline["timestamp"][-1].as_py()) if offline.num_rows else -1
        hist = build_histories(pa.concat_tables([offline, self.log.user_events(user, after_ts=last)]))
        L = int(self.model.cfg.max_len)
        start = np.maximum(hist.offsets[:1], hist.offsets[1:] - L)
        return gather_windows(hist, start, hist.offsets[1:] - start, int((hist.offsets[1:] - start)[0]))
