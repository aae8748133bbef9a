"""What fresh user vectors are worth: the ranker's PairAccuracy with daily-lagged vs fresh vectors.

:func:`fresh_vs_lagged` replays the ranker window's test requests with lagged vectors (the daily snapshot's,
scored by the daily-trained ranker) and fresh ones (after every event before the request,
``training.fresh_features``; scored by a ranker trained on fresh vectors when given, else by the same one).
The other ARGUS features (``nip_dot``, ``fp_*``) stay the daily ones in both, as served: fresh vectors update
the tower vector only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from argusrank.platform.config import ArgusrankConfig


def fresh_vs_lagged(cfg: ArgusrankConfig, dataset_dir: str | Path, ranker_ref: str | int | None = None,
                    fresh_ranker_ref: str | int | None = None) -> dict[str, Any]:
    """``{"pair_accuracy_lagged", "pair_accuracy_fresh", "n_test_requests", "model_version", ...}`` on the ranker
    window's test requests: lagged vectors scored by the ranker behind ``ranker_ref`` (default
    ``serve.ranker_alias``), fresh ones by the one behind ``fresh_ranker_ref`` (a ranker trained with
    ``ranker.user_vectors=fresh``; default: the same ranker). ``pair_accuracy_fresh_same_ranker``: fresh vectors
    scored by the lagged one. ``fresh_minus_lagged_se``: the paired bootstrap SE (over requests) of
    fresh - lagged."""
    from argusrank.features.baseline import ranker_features
    from argusrank.models.ranker import pair_accuracy, pair_accuracy_diff_se, score
    from argusrank.platform import registry
    from argusrank.platform.ranker_job import ranker_rows
    from argusrank.platform.training.fresh_features import fresh_user_features

    feats, is_train, version = ranker_rows(cfg, dataset_dir, user_vectors="daily")
    test = feats[~is_train].reset_index(drop=True)
    ranker, _, names = registry.load_ranker(cfg, ranker_ref or cfg.serve.ranker_alias)
    f_ranker, _, f_names = (ranker, None, names) if fresh_ranker_ref is None else registry.load_ranker(cfg, fresh_ranker_ref)
    fresh_cols = fresh_user_features(cfg, dataset_dir, test, version, ("argus_dot", *names, *f_names))
    raw = {c: test[c].to_numpy() for c in test.columns}
    ts, grades, groups = test["ts"].to_numpy(), test["grade"].to_numpy(), test["request_id"].to_numpy()
    s_lagged = score(ranker, ranker_features(raw, ts, names))
    s_fresh = score(f_ranker, ranker_features({**raw, **fresh_cols}, ts, f_names))
    lagged, fresh = pair_accuracy(s_lagged, grades, groups), pair_accuracy(s_fresh, grades, groups)
    fresh_same = pair_accuracy(score(ranker, ranker_features({**raw, **fresh_cols}, ts, names)), grades, groups)
    return {"pair_accuracy_lagged": lagged, "pair_accuracy_fresh": fresh, "pair_accuracy_fresh_same_ranker": fresh_same,
            "fresh_minus_lagged_se": pair_accuracy_diff_se(s_fresh, s_lagged, grades, groups),
            "model_version": version, "n_test_requests": int(np.unique(groups).size),
            "argus_dot_pair_accuracy_lagged": pair_accuracy(np.nan_to_num(raw["argus_dot"], nan=-1e9), grades, groups),
            "argus_dot_pair_accuracy_fresh": pair_accuracy(np.nan_to_num(fresh_cols["argus_dot"], nan=-1e9),
                                                           grades, groups)}
