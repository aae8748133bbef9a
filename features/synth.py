"""Synthetic event logs with a planted ground truth (``argusrank data synth``).

The generative story (all numpy, vectorized, seeded):

- items ``1..n_items`` have latent vectors ``v_i ~ N(0, I/dim)``, a small quality
  bias ``b_i ~ N(0, quality_scale^2)`` and Zipf popularity (random rank order);
- users have latent preferences ``u(t)`` that drift slowly: a random walk over
  weekly knots (step ``drift * sqrt(7)`` per dimension), linearly interpolated; with
  ``session_scale > 0`` each user also has a **session interest** per day,
  ``s_{u,day} ~ N(0, session_scale^2 I)``, added to ``u(t)`` for every event of that day:
  short-term taste that only the user's own recent events reveal (a daily-lagged
  vector cannot see it; 0 turns it off and leaves the data unchanged);
- **true affinity** ``a(u, i, t) = u(t) . v_i + b_i`` (personal part has unit
  variance and dominates the item bias);
- organic events: the user picks, among ``organic_candidates`` items drawn by
  popularity, the best by ``a / 0.5 + Gumbel`` noise (search/library/playlist);
- recommendation requests: a logging policy scores candidates drawn by
  popularity with ``a + policy_noise * N(0,1) + policy_popularity * z(log pop)``
  and shows the top ``slate_size`` as one request (shared ``request_id``,
  positions 0.., timestamps ``t_req + 60 s * position``);
- feedback from the TRUE affinity of every event: ``z = a + c_u + feedback_noise * N(0,1)``
  (``c_u`` a small per-user mood), ``played_ratio = sigmoid(2 z)``, like with
  probability ``sigmoid(2.5 (z - 1.2))`` if not skipped, dislike with
  ``sigmoid(2.5 (-z - 1.2))`` if not liked.

Users are generated in fixed blocks of ``USER_BLOCK`` with their own child seed,
so memory stays bounded at 10M+ events and the same seed gives identical tables.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from argusrank.features.io import sort_events, write_dataset
from argusrank.features.schema import EVENT_SCHEMA, EVENT_TYPE_CODE, SKIP_THRESHOLD, SURFACE_CODE
from argusrank.features.validate import concat_rejected
from argusrank.features.config import SynthConfig

T0 = 1_700_000_000  # epoch seconds of day 0
KNOT_S = 7 * 86400  # preference random-walk knots, weekly
USER_BLOCK = 2048  # users generated together (fixed: results must not depend on memory)
IMPRESSION_GAP_S = 60  # impressions of one request are consumed one after another
ORGANIC_SURFACES = np.array([SURFACE_CODE[s] for s in ("search", "library", "playlist")], np.int8)
REC_SURFACES = np.array([SURFACE_CODE[s] for s in ("feed", "radio", "similar")], np.int8)


@dataclass
class SynthData:
    """A generated dataset and its planted truth."""

    events: pa.Table  # EVENT_SCHEMA, sorted by (user_id, timestamp, position)
    truth: pa.Table  # per impression: user_id, request_id, item_id, timestamp, position, true_affinity
    user_factors: np.ndarray  # (U, K, dim) float32 preference knots at knot_times
    item_factors: np.ndarray  # (n_items + 1, dim) float32, row = item_id (row 0 unused, zeros)
    item_bias: np.ndarray  # (n_items + 1,) float32 quality bias
    popularity: np.ndarray  # (n_items + 1,) float64 Zipf probabilities (0 at row 0)
    knot_times: np.ndarray  # (K,) int64 epoch seconds
    user_sessions: np.ndarray | None = None  # (n_users, days, dim) session interests (session_scale > 0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _items(cfg: SynthConfig, rng: np.random.Generator):
    n, d = cfg.n_items, cfg.dim
    v = np.zeros((n + 1, d), np.float32)
    v[1:] = rng.normal(0.0, 1.0 / np.sqrt(d), size=(n, d))
    b = np.zeros(n + 1, np.float32)
    b[1:] = rng.normal(0.0, cfg.quality_scale, size=n)
    rank = rng.permutation(n) + 1
    pop = np.zeros(n + 1)
    pop[1:] = rank.astype(np.float64) ** -cfg.zipf_a
    pop /= pop.sum()
    return v, b, pop


def user_state(knots: np.ndarray, user_idx: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Preferences u(t) (n, dim) of users ``user_idx`` at dataset-relative seconds ``t``."""
    k = np.clip(np.asarray(t, np.float64) / KNOT_S, 0, knots.shape[1] - 1)
    k0 = np.minimum(np.floor(k).astype(np.int64), knots.shape[1] - 2)
    frac = (k - k0)[:, None].astype(np.float32)
    return knots[user_idx, k0] * (1 - frac) + knots[user_idx, k0 + 1] * frac


def _affinity(u: np.ndarray, v: np.ndarray, b: np.ndarray, items: np.ndarray) -> np.ndarray:
    """True affinity for u (n, d) and items (n, C) -> (n, C)."""
    return np.einsum("nd,ncd->nc", u, v[items]) + b[items]


def sample_queries(cdf: np.ndarray, rng, shape) -> np.ndarray:
    return np.searchsorted(cdf, rng.random(shape), side="right").clip(1, len(cdf) - 1)


def _feedback(aff: np.ndarray, mood: np.ndarray, cfg: SynthConfig, rng):
    z = aff + mood + cfg.feedback_noise * rng.standard_normal(aff.shape)
    played = _sigmoid(2.0 * z).astype(np.float32)
    liked = (rng.random(aff.shape) < _sigmoid(2.5 * (z - 1.2))) & (played >= SKIP_THRESHOLD)
    disliked = (rng.random(aff.shape) < _sigmoid(2.5 * (-z - 1.2))) & ~liked
    return played, liked, disliked


def _prefs(knots: np.ndarray, sessions: np.ndarray | None, user_idx: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Preferences at dataset-relative seconds ``t``: the drifting ``u(t)`` plus the day's session interest."""
    u = user_state(knots, user_idx, t)
    if sessions is None:
        return u
    day = np.clip(np.asarray(t) // 86400, 0, sessions.shape[1] - 1)
    return u + sessions[user_idx, day]


def _block(cfg: SynthConfig, rng, first_user: int, n_users: int, v, b, pop_cdf, policy_cdf, zlogpop,
           session_rng=None):
    horizon = cfg.days * 86400
    n_knots = int(horizon // KNOT_S) + 2
    d = cfg.dim
    # users: activity, drifting preference knots, mood
    activity = rng.lognormal(0.0, 0.7, n_users) / np.exp(0.7**2 / 2)
    steps = rng.standard_normal((n_users, n_knots, d)).astype(np.float32)
    steps[:, 1:] *= cfg.drift * np.sqrt(KNOT_S / 86400)
    knots = np.cumsum(steps, axis=1, dtype=np.float32)  # (nb, K, d)
    mood = rng.normal(0.0, 0.25, n_users).astype(np.float32)
    sessions = (cfg.session_scale * session_rng.standard_normal((n_users, cfg.days, d))).astype(np.float32) \
        if cfg.session_scale > 0 else None  # its own RNG stream: the knob at 0 leaves every other draw unchanged
    n_org = rng.poisson(cfg.organic_per_user * activity)
    n_req = rng.poisson(cfg.requests_per_user * activity)

    # organic events: popularity candidates, pick by true preference
    ou = np.repeat(np.arange(n_users), n_org)
    ot = rng.integers(0, horizon, ou.size)
    cand = sample_queries(pop_cdf, rng, (ou.size, cfg.organic_candidates))
    aff = _affinity(_prefs(knots, sessions, ou, ot), v, b, cand)
    pick = np.argmax(aff / 0.5 + rng.gumbel(size=aff.shape), axis=1)
    o_item = cand[np.arange(ou.size), pick]
    o_aff = aff[np.arange(ou.size), pick]
    o_pr, o_like, o_dis = _feedback(o_aff, mood[ou], cfg, rng)
    o_surface = ORGANIC_SURFACES[rng.integers(0, len(ORGANIC_SURFACES), ou.size)]

    # requests: noisy popularity-biased policy shows the top slate_size of its candidates
    S = cfg.slate_size
    ru = np.repeat(np.arange(n_users), n_req)
    rt = rng.integers(0, horizon, ru.size)
    cand = np.sort(sample_queries(policy_cdf, rng, (ru.size, cfg.policy_candidates)), axis=1)
    aff = _affinity(_prefs(knots, sessions, ru, rt), v, b, cand)
    score = aff + cfg.policy_noise * rng.standard_normal(aff.shape) + cfg.policy_popularity * zlogpop[cand]
    score[:, 1:][cand[:, 1:] == cand[:, :-1]] = -np.inf  # never show an item twice in one slate
    top = np.argsort(-score, axis=1, kind="stable")[:, :S]  # (R, S) by policy rank = position
    rows = np.arange(ru.size)[:, None]
    s_item, s_aff = cand[rows, top], aff[rows, top]
    s_pr, s_like, s_dis = _feedback(s_aff, mood[ru][:, None], cfg, rng)
    r_surface = REC_SURFACES[rng.integers(0, len(REC_SURFACES), ru.size)]
    pos = np.broadcast_to(np.arange(S, dtype=np.int16), (ru.size, S))

    n_o, n_i = ou.size, ru.size * S
    req_local = np.repeat(np.arange(ru.size), S)
    cols = {
        "user_u": np.concatenate([ou, np.repeat(ru, S)]) + first_user,
        "t": np.concatenate([ot, np.repeat(rt, S) + IMPRESSION_GAP_S * pos.ravel()]),
        "item": np.concatenate([o_item, s_item.ravel()]),
        "organic": np.concatenate([np.ones(n_o, bool), np.zeros(n_i, bool)]),
        "surface": np.concatenate([o_surface, np.repeat(r_surface, S)]),
        "req": np.concatenate([np.full(n_o, -1), req_local]),
        "pos": np.concatenate([np.full(n_o, -1, np.int16), pos.ravel()]),
        "played": np.concatenate([o_pr, s_pr.ravel()]),
        "liked": np.concatenate([o_like, s_like.ravel()]),
        "disliked": np.concatenate([o_dis, s_dis.ravel()]),
        "aff": np.concatenate([o_aff, s_aff.ravel()]).astype(np.float32),
    }
    return cols, (knots, sessions), ru.size


def generate(cfg: SynthConfig, seed: int) -> SynthData:
    """Generate events and planted truth (same ``cfg`` and ``seed`` -> identical output)."""
    children = np.random.SeedSequence(seed).spawn(1 + -(-cfg.n_users // USER_BLOCK))
    session_seeds = np.random.SeedSequence([seed, 1]).spawn(len(children))
    v, b, pop = _items(cfg, np.random.default_rng(children[0]))
    pop_cdf = np.cumsum(pop)
    policy_p = pop**0.5
    policy_cdf = np.cumsum(policy_p / policy_p.sum())
    logpop = np.log(np.where(pop > 0, pop, 1.0))
    zlogpop = ((logpop - logpop[1:].mean()) / (logpop[1:].std() + 1e-9)).astype(np.float32)
    parts, knots_all, sessions_all, n_requests = [], [], [], 0
    for blk, first in enumerate(range(0, cfg.n_users, USER_BLOCK)):
        nb = min(USER_BLOCK, cfg.n_users - first)
        cols, (knots, sessions), n_req = _block(cfg, np.random.default_rng(children[1 + blk]), first, nb, v, b,
                                                pop_cdf, policy_cdf, zlogpop, np.random.default_rng(session_seeds[blk]))
        sessions_all.append(sessions)
        cols["req"] = np.where(cols["req"] >= 0, cols["req"] + n_requests, -1)
        n_requests += n_req
        parts.append(cols)
        knots_all.append(knots)
    c = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = c["item"].size
    imp = c["req"] >= 0
    events = pa.table(
        {
            "user_id": pa.array(c["user_u"], pa.int64()),
            "timestamp": pa.array(c["t"] + T0, pa.int64()),
            "item_id": pa.array(c["item"], pa.int64()),
            "is_organic": pa.array(c["organic"]),
            "surface": pa.array(c["surface"], pa.int8()),
            "request_id": pa.array(c["req"], pa.int64(), mask=~imp),
            "position": pa.array(c["pos"], pa.int16(), mask=~imp),
            "event_type": pa.array(np.full(n, EVENT_TYPE_CODE["listen"], np.int8)),
            "played_ratio": pa.array(c["played"], pa.float32()),
            "liked": pa.array(c["liked"]),
            "disliked": pa.array(c["disliked"]),
            "rating": pa.nulls(n, pa.float32()),
            "true_affinity": pa.array(c["aff"], pa.float32()),
        }
    )
    events = sort_events(events)
    truth = events.filter(events["request_id"].is_valid()).select(
        ["user_id", "request_id", "item_id", "timestamp", "position", "true_affinity"])
    n_knots = knots_all[0].shape[1]
    return SynthData(
        events=events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA),
        truth=truth,
        user_factors=np.concatenate(knots_all, axis=0),
        item_factors=v,
        item_bias=b,
        popularity=pop,
        knot_times=T0 + KNOT_S * np.arange(n_knots, dtype=np.int64),
        user_sessions=np.concatenate(sessions_all, axis=0) if cfg.session_scale > 0 else None,
    )


def synthesize(cfg: SynthConfig, out_dir, seed: int, user_buckets: int | None = None) -> dict:
    """Generate and write a synthetic dataset (with ``truth/``) to ``out_dir``; returns its summary.
    ``user_buckets``: partitions of the events by user (default sized to the data)."""
    t0 = time.perf_counter()
    data = generate(cfg, seed)
    gen_s = time.perf_counter() - t0
    meta = {"format": "synth", "seed": seed, "synth": cfg.model_dump(), "input_rows": data.events.num_rows,
            "accepted": data.events.num_rows, "rejected": 0, "generate_s": round(gen_s, 3)}
    meta["truth"] = {"n_impressions": data.truth.num_rows, "dir": str(Path(out_dir) / "truth")}
    truth = {"truth": data.truth, **{n: getattr(data, n) for n in ("user_factors", "item_factors", "item_bias",
                                                                   "popularity", "knot_times", "user_sessions")
                                     if getattr(data, n) is not None}}
    return write_dataset(out_dir, data.events, concat_rejected([]), meta, truth=truth, user_buckets=user_buckets)


def load_truth_factors(dataset_dir) -> dict[str, np.ndarray]:
    """The planted factors saved by :func:`synthesize` (user_factors, item_factors, item_bias, ...)."""
    d = Path(dataset_dir) / "truth"
    return {p.stem: np.load(p) for p in sorted(d.glob("*.npy"))}


def true_affinity(factors: dict[str, np.ndarray], user_id: np.ndarray, item_id: np.ndarray,
                  timestamp: np.ndarray) -> np.ndarray:
    """Oracle affinity a(u, i, t) (n,) from :func:`load_truth_factors` (for any user/item/time)."""
    u = _prefs(factors["user_factors"], factors.get("user_sessions"), np.asarray(user_id), np.asarray(timestamp) - T0)
    v, b = factors["item_factors"], factors["item_bias"]
    return (u * v[item_id]).sum(-1) + b[item_id]
