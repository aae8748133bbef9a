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
   read) uses them. With ``serve.fresh_nip`` (default) the user's NIP query moves too
   (``models/incremental_nip.py``: the query for a feed request at the latest event's time, one token
   against the same cache), written to ``user_nip_vectors``: the NIP-ANN candidates follow the new event.
   The version is the served bundle's, so the version guard still holds: when the ``champion`` alias
   moves, the states are dropped and vectors of the new version are computed.
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
            self.keep = max(1, int(self.cfg.serve.fresh_keep * model.cfg.max_len))  # events kept when a window is full
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
        """New states and vectors of the users in ``events``, batched across users: per round, the next event of
        every cached user in one ``append_batch`` step; users not cached (or sent an event older than their window's
        last) get one full pass over their history, which already holds these events (logged first)."""
        from argusrank.features import store, vectors
        from argusrank.models import incremental

        events = events.sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
        ids, ts = events["user_id"].to_numpy(), events["timestamp"].to_numpy()
        users, first, counts = np.unique(ids, return_index=True, return_counts=True)
        rows = events.to_pylist()
        states = [self.states.pop(u, None) for u in users.tolist()]
        for i, s in enumerate(states):
            if s is None or (s.last_timestamp is not None and int(ts[first[i]]) < s.last_timestamp):
                states[i] = incremental.init_state(self.model, self._history(int(users[i])))
                counts[i] = 0  # the full pass covered this batch's events
        for r in range(int(counts.max(initial=0))):
            idx = np.flatnonzero(counts > r)
            stepped = incremental.append_batch(self.model, [states[i] for i in idx], [rows[first[i] + r] for i in idx],
                                               keep=self.keep)
            for i, s in zip(idx.tolist(), stepped):
                states[i] = s
        for u, s in zip(users.tolist(), states):
            self.states[u] = s
        while len(self.states) > self.cache_users:
            self.states.popitem(last=False)
        latest = np.asarray([int(s.last_timestamp) for s in states], dtype=np.int64)
        now = time.time()
        table = vectors.vector_table("user", users, incremental.user_vectors(self.model, states),
                                     self.bundle.argus_version, latest, now)
        store.push_user_vectors(self.cfg, table)
        if self.cfg.serve.fresh_nip:  # the NIP-ANN candidates' user row: the query for a feed request right after
            from argusrank.models.incremental_nip import nip_queries
            from argusrank.platform.inference import SERVING_ORGANIC, SERVING_SURFACE

            queries = nip_queries(self.model, states, latest, SERVING_SURFACE, SERVING_ORGANIC)
            store.push_user_vectors(self.cfg, vectors.vector_table("user_nip", users, queries,
                                                                   self.bundle.argus_version, latest, now),
                                    kind="user_nip")
        return [{"user_id": int(u), "event_timestamp": int(t), "model_version": self.bundle.argus_version}
                for u, t in zip(users, latest)]

    def _history(self, user: int) -> dict[str, np.ndarray]:
        """One full read of the user's recent history: the dataset's events, then the logged online ones (which
        include the events being ingested), the last ``max_len`` in time order, as one window row."""
        from argusrank.features.histories import build_histories
        from argusrank.features.io import read_events, user_buckets_of
        from argusrank.features.sequences import gather_windows

        offline = read_events(self.cfg.dataset_dir, user_buckets=[user % user_buckets_of(self.cfg.dataset_dir)])
        offline = offline.filter(pa.compute.equal(offline["user_id"], user))
        last = int(offline["timestamp"][-1].as_py()) if offline.num_rows else -1
        hist = build_histories(pa.concat_tables([offline, self.log.user_events(user, after_ts=last)]))
        L = int(self.model.cfg.max_len)
        start = np.maximum(hist.offsets[:1], hist.offsets[1:] - L)
        return gather_windows(hist, start, hist.offsets[1:] - start, int((hist.offsets[1:] - start)[0]))
