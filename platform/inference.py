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
