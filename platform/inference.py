"""ARGUS vectors of users and items, in both spaces, from history windows: the one place they are computed.

Three spaces (``SPACES``):

- ``tower``: the fine-tuned two-tower vectors (ranking feature ``argus_dot``, tower-ANN candidates);
- ``nip``: the next-item-prediction head: a user's query for the NEXT event in a serving context
  (a recommendation request on the feed at ``as_of``) and the items' NIP embeddings
  (NIP-ANN candidates, ARGUS.md section 5);
- ``fp``: the feedback-prediction head split at its linear first layer: the user part of the NEXT
  event in the same serving context, and the items' parts (ranker features ``fp_*``,
  ``features/argus_features.py``; one token per event only: ``ArgusModel.fp_separable``).

The NIP query (and the FP user part) is read by appending the serving context as one more (placeholder) event to the
history window: the model is causal, so the query at that position sees the history and the
context only, exactly as in training (position t predicts item t from events < t and context t).
Used by the export job (Ray Data) and by the offline candidate evaluation alike.
"""
from __future__ import annotations

import numpy as np
import torch

from argusrank.features.schema import SURFACE_CODE
from argusrank.features.sequences import gather_windows

SPACES = ("tower", "nip", "fp")
#: the context of a served request: recommendation traffic on the feed
SERVING_SURFACE, SERVING_ORGANIC = SURFACE_CODE["feed"], False


def window_arrays(hist, start: np.ndarray, length: np.ndarray, as_of: np.ndarray, space: str,
                  max_len: int) -> dict[str, np.ndarray]:
    """Batch arrays of history windows ``start:start+length``; for ``nip`` and ``fp`` one more slot holding the serving
    context at ``as_of`` (item 0, feedback unknown) right after each window's last event (a window of
    ``max_len`` events gives up its oldest one for it)."""
    start, length = np.asarray(start, np.int64), np.asarray(length, np.int64)
    if space == "tower":
        return gather_windows(hist, start, length, int(length.max()))
    full = length >= max_len
    start, length = start + full, length - full
    arrays = gather_windows(hist, start, length, int(length.max()) + 1)
    rows = np.arange(len(length))
    for key, value in (("item_id", 0), ("timestamp", as_of), ("surface", SERVING_SURFACE),
                       ("is_organic", SERVING_ORGANIC), ("played_ratio", np.nan), ("liked", np.nan),
                       ("disliked", np.nan), ("valid", True), ("target_mask", False)):
        arrays[key][rows, length] = value
    return arrays


def user_vectors(model, arrays: dict[str, np.ndarray], space: str, device: str = "cpu") -> np.ndarray:
    """(B, d) float32: the tower vector after each window's last event, or the NIP query (FP user part) of
    the slot after it."""
    from argusrank.models.batch import SequenceBatch

    batch = SequenceBatch.from_numpy(arrays, device)
    with torch.no_grad():
        if space == "tower":
            return model.user_vectors(batch).float().cpu().numpy()
        queries = model.nip_queries(batch) if space == "nip" else model.fp_user_parts(batch)  # (B, L, d) prepared order
        last = model.prepare_batch(batch).valid.sum(1) - 1  # the serving-context slot comes last
        return queries[torch.arange(len(last)), last].float().cpu().numpy()


def space_dim(model, space: str) -> int:
    """Width of ``space``'s vectors (user and item sides match: features are their dot products)."""
    return int(item_vectors(model, np.zeros(1, np.int64), space).shape[1])


def item_vectors(model, item_ids: np.ndarray, space: str, device: str = "cpu") -> np.ndarray:
    """(N, d) float32 item vectors of ``space`` for raw item IDs."""
    ids = torch.as_tensor(np.asarray(item_ids, np.int64), device=device)
    with torch.no_grad():
        vec = (model.item_vectors(ids) if space == "tower" else model.nip_item_embeddings(ids) if space == "nip"
               else model.fp_item_parts(ids))
    return vec.float().cpu().numpy()


def snapshot_user_vectors(models: dict, hist, start: np.ndarray, length: np.ndarray, as_of: np.ndarray,
                          batch_size: int, device: str = "cpu") -> dict[str, np.ndarray]:
    """``{space: (R, d)}`` user vectors of ``models`` (space -> network) for the tower windows
    ``start:start+length`` (a snapshot's last ``max_len`` events) at serving time ``as_of``.

    A network that allows it (``ArgusModel.one_pass_prefixes``) runs once per distinct window start: a user's
    snapshots share one pass while the history fits ``max_len`` (causal: each snapshot is a prefix), and every
    space of the network reads the same pass; equal, to float rounding, to :func:`window_arrays` +
    :func:`user_vectors` window by window and space by space, which other networks still use."""
    if len(start) == 0:
        return {space: np.zeros((0, space_dim(m, space)), np.float32) for space, m in models.items()}
    out: dict[str, np.ndarray] = {}
    by_net: dict[int, list[str]] = {}
    for space, model in models.items():
        by_net.setdefault(id(model), []).append(space)
    for spaces in by_net.values():
        model = models[spaces[0]]
        if getattr(model, "one_pass_prefixes", lambda: False)():
            out.update(_one_pass_vectors(model, spaces, hist, start, length, as_of, batch_size, device))
            continue
        for space in spaces:
            out[space] = window_user_vectors(model, space, hist, start, length, as_of, batch_size, device)
    return {space: out[space] for space in models}


def window_user_vectors(model, space: str, hist, start: np.ndarray, length: np.ndarray, as_of: np.ndarray,
                        batch_size: int, device: str = "cpu") -> np.ndarray:
    """(R, d) ``space`` vectors of the windows ``start:start+length`` at ``as_of``, one encoder pass per window
    (:func:`window_arrays` + :func:`user_vectors`, ``batch_size`` windows at a time)."""
    return np.concatenate([
        user_vectors(model, window_arrays(hist, start[i:i + batch_size], length[i:i + batch_size],
                                          as_of[i:i + batch_size], space, int(model.cfg.max_len)), space, device)
        for i in range(0, len(start), batch_size)])


def _one_pass_vectors(model, spaces: list[str], hist, start, length, as_of, batch_size: int,
                      device: str) -> dict[str, np.ndarray]:
    """:func:`snapshot_user_vectors` for one network of one token per event: requests = (pass start, last event);
    the tower reads the window's last event, NIP / FP the same event in a window one shorter when it is full
    (the request slot takes the last position, as :func:`window_arrays` does); passes sorted by length."""
    from argusrank.models.batch import SequenceBatch

    start, length, as_of = (np.asarray(a, np.int64) for a in (start, length, as_of))
    R, queries = len(start), [s for s in spaces if s != "tower"]
    last = start + length - 1
    req_start = np.concatenate([start] * ("tower" in spaces) + [start + (length >= model.cfg.max_len)] * bool(queries))
    req_last = np.concatenate([last] * ("tower" in spaces) + [last] * bool(queries))
    passes, inv = np.unique(req_start, return_inverse=True)
    ends = np.zeros(len(passes), np.int64)
    np.maximum.at(ends, inv, req_last + 1)
    order = np.argsort(passes - ends, kind="stable")  # longest first: batches of similar length
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    req_rank = rank[inv]
    by_rank = np.argsort(req_rank, kind="stable")
    bounds = np.searchsorted(req_rank[by_rank], np.arange(0, len(order) + batch_size, batch_size))
    res = {space: np.zeros((R, space_dim(model, space)), np.float32) for space in spaces}
    with torch.no_grad():
        for c, c0 in enumerate(range(0, len(order), batch_size)):
            p = order[c0:c0 + batch_size]
            plen = ends[p] - passes[p]
            batch = SequenceBatch.from_numpy(gather_windows(hist, passes[p], plen, int(plen.max())), device)
            req = by_rank[bounds[c]:bounds[c + 1]]
            rows = torch.as_tensor(req_rank[req] - c0, device=device)
            pos = torch.as_tensor(req_last[req] - req_start[req], device=device)
            tower_in, state = model.prefix_states(batch, rows, pos)
            is_q = req >= R if "tower" in spaces else np.ones(len(req), bool)
            if "tower" in spaces:
                tower = torch.as_tensor(~is_q, device=device)
                res["tower"][req[~is_q]] = model.towers.user(tower_in[tower]).float().cpu()
            if queries:
                q = torch.as_tensor(is_q, device=device)
                r = req[is_q] - (R if "tower" in spaces else 0)
                x = model.serving_input(state[q], torch.as_tensor(hist.timestamp[last[r]], device=device),
                                        torch.as_tensor(as_of[r], device=device), SERVING_SURFACE, SERVING_ORGANIC)
                for space in queries:
                    res[space][r] = (model.nip.query(x) if space == "nip" else model.fp.user_part(x)).float().cpu()
    return res
