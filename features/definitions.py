"""Feast definitions of the argusrank feature repo (read by ``feast -c features apply``).

Entities ``user`` and ``item``; batch feature views on parquet written by
argusrank (``platform/export.py`` for vectors, ``features/baseline.py`` for the
baseline ranker features); one on-demand feature view for the ARGUS
dot-product feature. Every view is declared once, in :func:`build_definitions`,
parameterized by where the parquet lives:

- the Feast CLI on this folder uses the module-level objects below, which
  point at the default home ``<repo>/.argusrank`` (matching ``feature_store.yaml``);
- argusrank (``features/store.py``) calls :func:`build_definitions` with the
  absolute directories of its configured home.

Parquet layout (one directory per view, any number of files)::

    VECTORS/user_vectors/*.parquet   user_id, user_vector list<float32>, user_model_version, event_timestamp, created
    VECTORS/item_vectors/*.parquet   item_id, item_vector list<float32>, item_model_version, event_timestamp, created
    VECTORS/user_nip_vectors/, item_nip_vectors/   the same for the NIP head (features/vectors.py)
    VECTORS/user_fp_vectors/, item_fp_vectors/     the same for the FP head's user / item parts
    BASELINE/user_stats/, item_stats/, user_item/, user_item_priors/   see features/baseline.py
"""
from __future__ import annotations

import types
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float32, Float64, Int64

from argusrank.features.baseline import DOT_FEATURE, ITEM_STATS, USER_ITEM, USER_ITEM_PRIORS, USER_STATS
from argusrank.features.vectors import DOT_VIEW, ITEM_VECTORS, USER_VECTORS, USER_VECTORS_PUSH, VIEW_OF


def argus_dot_udf(inputs: dict[str, Any]) -> dict[str, Any]:
    """Python-mode transform (self-contained: Feast serializes it): dot product per row, NaN if a vector is missing."""
    import numpy as np

    users, items = inputs["user_vector"], inputs["item_vector"]
    ok = [u is not None and v is not None and len(u) > 0 and len(u) == len(v) for u, v in zip(users, items)]
    dots = np.full(len(ok), np.nan)
    if any(ok):
        idx = np.flatnonzero(ok)
        u = np.asarray([users[i] for i in idx], dtype=np.float32)  # (n, d)
        v = np.asarray([items[i] for i in idx], dtype=np.float32)  # (n, d)
        dots[idx] = np.einsum("nd,nd->n", u, v)
    return {"argus_dot": dots.tolist()}


def _fresh(fn):
    """A new function object with the same code: Feast's decorator rewrites ``__module__`` of what it wraps."""
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _source(name: str, path: Path, created: str | None = "created") -> FileSource:
    return FileSource(name=f"{name}_source", path=str(path), timestamp_field="event_timestamp",
                      created_timestamp_column=created or "")


def build_definitions(vectors_dir: str | Path, baseline_dir: str | Path) -> dict[str, Any]:
    """All Feast objects of the repo, their sources under the two given directories."""
    vectors_dir, baseline_dir = Path(vectors_dir), Path(baseline_dir)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="a user")
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64, description="a catalog item")
    no_ttl = timedelta(0)  # vectors and snapshots stay valid until replaced
    user_push = PushSource(name=USER_VECTORS_PUSH, batch_source=_source(USER_VECTORS, vectors_dir / USER_VECTORS))
    user_vectors = FeatureView(  # daily export (batch) + fresh vectors pushed online (platform/serving/fresh.py)
        name=USER_VECTORS, entities=[user], ttl=no_ttl, source=user_push,
        schema=[Field(name="user_vector", dtype=Array(Float32)), Field(name="user_model_version", dtype=Int64)],
        description="ARGUS user state after the user's last event as of the export time",
    )
    item_vectors = FeatureView(
        name=ITEM_VECTORS, entities=[item], ttl=no_ttl, source=_source(ITEM_VECTORS, vectors_dir / ITEM_VECTORS),
        schema=[Field(name="item_vector", dtype=Array(Float32)), Field(name="item_model_version", dtype=Int64)],
        description="ARGUS item tower output for the whole catalog",
    )
    heads = {}
    for kind, ent, what in (("user_nip", user, "ARGUS NIP-head query of a user's next (feed) event"),
                            ("item_nip", item, "ARGUS NIP-head item embedding (NIP-ANN candidates)"),
                            ("user_fp", user, "ARGUS FP-head user part of a user's next (feed) event"),
                            ("item_fp", item, "ARGUS FP-head item part (ranker fp_* features)")):
        heads[VIEW_OF[kind]] = FeatureView(
            name=VIEW_OF[kind], entities=[ent], ttl=no_ttl, source=_source(VIEW_OF[kind], vectors_dir / VIEW_OF[kind]),
            schema=[Field(name=f"{kind}_vector", dtype=Array(Float32)), Field(name=f"{kind}_model_version", dtype=Int64)],
            description=what,
        )
    views = {}
    for spec, entities in ((USER_STATS, [user]), (ITEM_STATS, [item]), (USER_ITEM, [user, item])):
        views[spec.name] = FeatureView(
            name=spec.name, entities=entities, ttl=no_ttl, source=_source(spec.name, baseline_dir / spec.name),
            schema=[Field(name=f, dtype=Float64) for f in spec.features], description=spec.description,
        )

    p = USER_ITEM_PRIORS
    views[p.name] = FeatureView(
        name=p.name, entities=[user], ttl=no_ttl, source=_source(p.name, baseline_dir / p.name),
        schema=[Field(name=p.features[0], dtype=Array(Int64))] + [Field(name=f, dtype=Array(Float64)) for f in p.features[1:]],
        description=p.description,
    )

    argus_dot_view = on_demand_feature_view(
        name=DOT_VIEW, sources=[user_vectors, item_vectors], schema=[Field(name=DOT_FEATURE, dtype=Float64)],
        mode="python",
    )(_fresh(argus_dot_udf))

    return {"user": user, "item": item, USER_VECTORS: user_vectors, ITEM_VECTORS: item_vectors, **heads, **views,
            DOT_VIEW: argus_dot_view}


# --- the objects the Feast CLI picks up (default home: <repo>/.argusrank) -----------------
_HOME = Path(__file__).resolve().parent.parent / ".argusrank"
_DEFS = build_definitions(_HOME / "vectors", _HOME / "baseline")
user = _DEFS["user"]
item = _DEFS["item"]
user_vectors = _DEFS[USER_VECTORS]
item_vectors = _DEFS[ITEM_VECTORS]
user_stats = _DEFS[USER_STATS.name]
item_stats = _DEFS[ITEM_STATS.name]
user_item = _DEFS[USER_ITEM.name]
user_item_priors = _DEFS[USER_ITEM_PRIORS.name]
argus_dot_view = _DEFS[DOT_VIEW]
user_nip_vectors = _DEFS[VIEW_OF["user_nip"]]
item_nip_vectors = _DEFS[VIEW_OF["item_nip"]]
user_fp_vectors = _DEFS[VIEW_OF["user_fp"]]
item_fp_vectors = _DEFS[VIEW_OF["item_fp"]]
