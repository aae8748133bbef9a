"""The one event schema every importer writes and every stage reads.

An event is a (context, item, feedback) triple of one user at one time
(ARGUS.md section 1). Positive and negative, organic and recommended events
are all kept.

Feedback conventions (documented in the README):
- ``played_ratio``: fraction of the item consumed, in [0, 1]; null if unknown.
- ``liked`` / ``disliked``: explicit signals; null if the source has none.
- ``rating``: the raw explicit rating where the source has one (MovieLens).
- a *skip* is ``played_ratio < SKIP_THRESHOLD`` (derived, not stored).

``grade`` (derived by :func:`feedback_grade`) orders feedback for pairwise
fine-tuning and the final ranker: dislike -1 < skip 0 < listen 1 < like 2.
A pair's weight is the difference of the two grades, so like-vs-skip weighs
twice listen-vs-skip.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

#: surfaces (context) as small integer codes; index == code.
SURFACES: tuple[str, ...] = ("unknown", "search", "library", "playlist", "feed", "radio", "similar")
SURFACE_CODE = {name: code for code, name in enumerate(SURFACES)}

#: event types as small integer codes; index == code.
EVENT_TYPES: tuple[str, ...] = ("interaction", "listen", "like", "dislike", "unlike", "undislike", "rating")
EVENT_TYPE_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}

SKIP_THRESHOLD = 0.3

EVENT_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),  # seconds (epoch or dataset-relative)
        pa.field("item_id", pa.int64(), nullable=False),
        # context
        pa.field("is_organic", pa.bool_(), nullable=False),
        pa.field("surface", pa.int8(), nullable=False),  # code into SURFACES
        pa.field("request_id", pa.int64()),  # impressions shown together share it; null if organic
        pa.field("position", pa.int16()),  # slot within the request; null if organic
        # feedback
        pa.field("event_type", pa.int8(), nullable=False),  # code into EVENT_TYPES
        pa.field("played_ratio", pa.float32()),
        pa.field("liked", pa.bool_()),
        pa.field("disliked", pa.bool_()),
        pa.field("rating", pa.float32()),
    ]
)

#: Rejected rows keep their raw values as strings plus the reason.
REJECT_SCHEMA_EXTRA = [pa.field("row", pa.int64()), pa.field("reason", pa.string())]

#: hive partition column of OUT/events/ (derived: user_id % the dataset's bucket count, a power of two recorded in
#: metadata.json), so workers can read disjoint user shards without copying the whole log.
PARTITION_COLUMN = "user_bucket"
EVENT_PARTITIONS = 8  # the fewest buckets (and the count of datasets written before it was recorded)
MAX_EVENT_PARTITIONS = 1024
EVENTS_PER_PARTITION = 500_000  # the automatic bucket count aims at about this many events per bucket


def default_user_buckets(n_events: int) -> int:
    """User buckets sized to the data: the power of two nearest above n_events / 500K, within [8, 1024]."""
    want = -(-int(n_events) // EVENTS_PER_PARTITION)
    return int(min(MAX_EVENT_PARTITIONS, max(EVENT_PARTITIONS, 1 << max(want - 1, 0).bit_length())))


def check_user_buckets(n: int) -> int:
    """``n`` if it is a valid bucket count (a power of two in [1, 1024]), else ValueError naming it."""
    if not (1 <= n <= MAX_EVENT_PARTITIONS and n & (n - 1) == 0):
        raise ValueError(f"user_buckets: {n} is not a power of two in [1, {MAX_EVENT_PARTITIONS}]")
    return n


def nullable(values: np.ndarray, null: np.ndarray, typ: pa.DataType) -> pa.Array:
    """``values`` as an arrow array of ``typ``, null where ``null``."""
    return pa.array(values, type=typ, mask=np.asarray(null, dtype=bool))


def event_columns(n: int, user, item, ts, is_organic, event_type, played_ratio=None, liked=None,
                  disliked=None, rating=None, request_id=None, position=None) -> dict:
    """Full-length EVENT_SCHEMA columns of ``n`` parsed input rows (None -> all null); what an importer hands
    to ``Checker.split``."""
    def nulls(t):
        return pa.nulls(n, t)
    return {
        "user_id": user, "timestamp": ts, "item_id": item,
        "is_organic": is_organic, "surface": np.full(n, SURFACE_CODE["unknown"], np.int8),
        "request_id": request_id if request_id is not None else nulls(pa.int64()),
        "position": position if position is not None else nulls(pa.int16()),
        "event_type": event_type,
        "played_ratio": played_ratio if played_ratio is not None else nulls(pa.float32()),
        "liked": liked if liked is not None else nulls(pa.bool_()),
        "disliked": disliked if disliked is not None else nulls(pa.bool_()),
        "rating": rating if rating is not None else nulls(pa.float32()),
    }


def feedback_grade(played_ratio: np.ndarray, liked: np.ndarray, disliked: np.ndarray) -> np.ndarray:
    """Ordinal feedback grade per event: dislike -1, skip 0, listen 1, like 2.

    Inputs are numpy arrays with NaN (float) / False for missing values; a
    missing played_ratio with no like/dislike counts as a listen (an
    interaction the user chose to make).
    """
    pr = np.asarray(played_ratio, dtype=np.float32)
    grade = np.where(np.isnan(pr) | (pr >= SKIP_THRESHOLD), 1, 0).astype(np.int8)
    grade = np.where(np.asarray(liked, dtype=bool), 2, grade)
    grade = np.where(np.asarray(disliked, dtype=bool), -1, grade)
    return grade.astype(np.int8)
