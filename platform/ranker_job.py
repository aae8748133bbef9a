"""``argusrank ranker train``: the deployment metric (ARGUS.md section 4).

On the impressions of the temporal test window (requests after T), builds a
point-in-time training set through Feast (``features.store.historical_features``),
splits requests by time (earliest ``cfg.ranker.train_frac`` train the ranker, the
rest evaluate it), and trains the same XGBoost ranker on several feature sets, same
rows, same seed (:func:`feature_sets`): the baseline features (``base``), + the ARGUS
dot product (``dot``), + the configured ARGUS features (``argus``: ``ranker.argus_features``,
``features/argus_features.py``) and, with ``ranker.ablation``, + each other ARGUS feature.
Reports weighted PairAccuracy, NDCG@K and the relative PairAccuracy uplift; on
synthetic data also the oracle PairAccuracy of the planted ``true_affinity`` and the
share of the base-to-oracle gap the ARGUS ranker closes. The base and argus rankers go to
MLflow; the better one is registered (``cfg.mlflow.ranker_model_name``) with its feature
list and aliased ``cfg.ranker.alias``.

``ranker.train_on=candidates`` adds the candidates ``/recommend`` serves to the training rows (and works on
logs without impressions); either way the job reports ``final_ndcg@10``: NDCG@10 of the final list (candidates
of each configuration ranked by the chosen ranker) over the test part of the window
(:mod:`argusrank.platform.training.final_list`).

``ranker.training_set=parts`` writes the rows by user bucket (:mod:`argusrank.platform.training.ranker_set`) and
feeds XGBoost part by part; both modes train through the same batches (``RankerRows``), same results. With
``ranker.num_workers`` > 0 Ray Train's XGBoostTrainer trains each ranker over the parts
(:mod:`argusrank.platform.training.ranker_ray`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from argusrank.features.argus_features import ABLATION_GROUPS, DOT, all_features, is_argus_feature
from argusrank.features.baseline import BASE_FEATURES, ranker_features
from argusrank.features.splits import dataset_split
from argusrank.features.vectors import check_versions
from argusrank.models.ranker import ndcg_at_k, pair_accuracy, score, train_ranker_on_batches
from argusrank.platform import registry
from argusrank.platform.config import ArgusrankConfig, RankerConfig
from argusrank.platform.training.ranker_ray import train_ranker_on_ray
from argusrank.platform.training.ranker_set import (
    RankerRows, impressions, split_requests, split_time, write_ranker_set,
)
from argusrank.platform.tracking import start_run


def _importance_plot(models: dict[str, Any]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 5))
    for ax, (name, m) in zip(np.atleast_1d(axes), models.items()):
        gain = (m.get_booster() if hasattr(m, "get_booster") else m).get_score(importance_type="gain")
        names = sorted(gain, key=gain.get)
        ax.barh(names, [gain[n] for n in names], color=["tab:red" if is_argus_feature(n) else "tab:blue" for n in names])
        ax.set_title(f"{name}: feature importance (gain)")
    fig.tight_layout()
    return fig


def feature_sets(r: RankerConfig) -> dict[str, tuple[str, ...]]:
    """The rankers trained, name -> features in matrix order: ``base``, ``dot`` (+ argus_dot), ``argus``
    (+ ``r.argus_features``, the one registered when it beats base) and with ``r.ablation`` ``+<group>``
    (base + argus_dot + each group of ``ABLATION_GROUPS``) and ``all`` (base + every ARGUS feature)."""
    sets = {"base": BASE_FEATURES, "dot": (*BASE_FEATURES, DOT)}
    if r.ablation:
        sets.update({f"+{label}": (*BASE_FEATURES, DOT, *group) for label, group in ABLATION_GROUPS.items()})
        sets["all"] = (*BASE_FEATURES, *all_features())
    sets["argus"] = (*BASE_FEATURES, *r.argus_features)
    return sets


def ranker_rows(cfg: ArgusrankConfig, dataset_dir: str | Path,
                user_vectors: str | None = None) -> tuple[pd.DataFrame, np.ndarray, int]:
    """The ranker's impressions of the test window with point-in-time features (Feast; every ARGUS feature of
    :func:`feature_sets`; user vectors ``user_vectors``, default ``ranker.user_vectors``), the train mask
    (earliest ``ranker.train_frac`` of requests) and the vectors' model version."""
    split = dataset_split(dataset_dir, "temporal", cfg.data.test_days)
    imp = impressions(dataset_dir, split.T, split.T_end)
    if imp.empty:
        raise ValueError(f"no recommendation impressions (request_id set) after T={split.T} in {dataset_dir}")
    feats, version = _with_features(cfg, imp, dataset_dir, user_vectors or cfg.ranker.user_vectors)
    return feats, split_requests(feats, cfg.ranker.train_frac), version


def _argus_needed(cfg: ArgusrankConfig) -> list[str]:
    return list(dict.fromkeys(f for names in feature_sets(cfg.ranker).values() for f in names if is_argus_feature(f)))


def _with_features(cfg: ArgusrankConfig, rows: pd.DataFrame, dataset_dir: str | Path,
                   user_vectors: str) -> tuple[pd.DataFrame, int]:
    """``rows`` with their point-in-time features (``features.store.historical_features``) and the vectors' version;
    with ``user_vectors="fresh"`` the features fresh vectors change (tower dots, ``nip_dot``) from the user
    vectors at each request's time instead of the daily snapshot's (``training.fresh_features``)."""
    from argusrank.features import store
    from argusrank.platform.training.fresh_features import fresh_user_features

    cols = ["user_id", "item_id", "event_timestamp", "request_id", "ts", "grade"]
    feats = store.historical_features(cfg, rows[cols], argus=_argus_needed(cfg))
    version = check_versions(feats["user_model_version"].fillna(-1).astype(np.int64).to_numpy(),
                             feats["item_model_version"].fillna(-1).astype(np.int64).to_numpy())
    if not np.isfinite(feats["argus_dot"].to_numpy()).any():
        raise ValueError(NO_DOT_ROWS)
    if user_vectors == "fresh":
        for f, x in fresh_user_features(cfg, dataset_dir, feats, version, _argus_needed(cfg)).items():
            feats[f] = x
    return feats, version


#: a window whose rows have no ``argus_dot`` (user and item vector both as of the row's time)
NO_DOT_ROWS = ("no row in the ranker window has both vectors as of its time: "
               "export snapshots at or before the window (argusrank export) and retry")


def sample_queries(q: tuple[np.ndarray, np.ndarray], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` of the queries ``(users, snapshots)``, uniformly with ``rng``, in their order."""
    if len(q[0]) <= n:
        return q
    keep = np.sort(rng.choice(len(q[0]), n, replace=False))
    return q[0][keep], q[1][keep]


def training_set(cfg: ArgusrankConfig, dataset_dir: str | Path) -> tuple[pd.DataFrame, np.ndarray, int, dict]:
    """The ranker's rows with point-in-time features, the train mask, the vectors' version and the final-list
    test queries (``{"ctx", "queries"}``, :mod:`training.final_list`).

    The window ``[T, T_end)`` splits at the first test request (earliest ``ranker.train_frac`` of requests;
    without impressions at ``train_frac`` of its time) ``t``. Rows: the logged impressions, plus with
    ``ranker.train_on=candidates`` the served candidates of (user, snapshot) queries whose label window ends by
    ``t`` (``final_list.candidate_rows``; at most ``ranker.candidate_queries``, sampled with the seed). Without
    impressions the queries come from the users' events and those from ``t_s`` (``t`` rounded up to a
    snapshot) are the test rows.
    Final-list queries: snapshots from ``t_s`` with a positive event (at most ``ranker.final_queries``)."""
    from argusrank.features import vectors
    from argusrank.platform.training import final_list as fl
    from argusrank.platform.training.candidate_recall import candidate_context

    r = cfg.ranker
    split = dataset_split(dataset_dir, "temporal", cfg.data.test_days)
    imp = impressions(dataset_dir, split.T, split.T_end)
    if imp.empty and r.train_on == "impressions":
        raise ValueError(f"no recommendation impressions (request_id set) after T={split.T} in {dataset_dir}: "
                         "ranker.train_on=candidates trains on served candidates instead")
    is_train = split_requests(imp, r.train_frac) if len(imp) else np.zeros(0, bool)
    final, t_lo = final_queries(cfg, dataset_dir, split_time(imp, is_train, split.T, split.T_end, r.train_frac))
    t_s = final["t_split"]
    rng = np.random.default_rng(cfg.seed)
    parts, masks = [imp], [is_train]
    if r.train_on == "candidates":  # train queries' label windows end by t_split: no test event labels them
        ctx = candidate_context(cfg, dataset_dir, version=vectors.newest_version(cfg, "item"))  # every user's
        windows = [(split.T, t_lo, True)] + ([(t_s, split.T_end, False)] if imp.empty else [])
        first = int(imp["request_id"].max()) + 1 if len(imp) else 0  # query ids after every request's
        for lo, hi, train in windows:
            q = sample_queries(fl.window_queries(ctx, lo, hi), r.candidate_queries, rng)
            rows = fl.candidate_rows(cfg, ctx, *q, rng, first_id=first)
            first += len(q[0])
            parts.append(rows)
            masks.append(np.full(len(rows), train))
    feats, version = _with_features(cfg, pd.concat([p for p in parts if len(p)], ignore_index=True), dataset_dir,
                                    r.user_vectors)
    final["n_candidate_rows"] = int(sum(len(p) for p in parts[1:]))
    return feats, np.concatenate(masks), version, final


def final_queries(cfg: ArgusrankConfig, dataset_dir: str | Path, t_split: int) -> tuple[dict, int]:
    """The final-list test queries (``{"ctx", "t_split", "queries"}``: snapshots from ``t_split`` rounded up to a
    snapshot with a positive event, at most ``ranker.final_queries``, sampled with the seed; ``ctx``: the
    candidate context of their users only) and the last snapshot at or before ``t_split`` (where training
    queries' label windows end)."""
    from argusrank.features import vectors
    from argusrank.platform.export import default_snapshots
    from argusrank.platform.training import final_list as fl
    from argusrank.platform.training.candidate_recall import candidate_context

    split = dataset_split(dataset_dir, "temporal", cfg.data.test_days)
    snaps = default_snapshots(cfg, split.T, split.T_end)
    i = int(np.searchsorted(snaps, t_split))
    t_s = int(snaps[i]) if i < len(snaps) else split.T_end  # test queries from here
    t_lo = int(snaps[max(int(np.searchsorted(snaps, t_split, side="right")) - 1, 0)])
    users, q_snap = sample_queries(fl.positive_queries(dataset_dir, snaps, t_s, split.T_end), cfg.ranker.final_queries,
                            np.random.default_rng(cfg.seed))  # its own draw: the same test queries whatever train_on is
    ctx = candidate_context(cfg, dataset_dir, version=vectors.newest_version(cfg, "item"), users=np.unique(users))
    queries = (np.searchsorted(ctx.hist.user_ids, users), q_snap)
    return {"ctx": ctx, "t_split": t_s, "queries": queries, "n_candidate_rows": 0}, t_lo


def ranker_rows_of(cfg: ArgusrankConfig, dataset_dir: str | Path) -> tuple[RankerRows, int, dict]:
    """The rows the rankers train and test on (``ranker.training_set``: one frame in memory, or written by user
    bucket to ``<home>/ranker_set`` and read part by part), the vectors' model version and the final-list
    queries (:func:`training_set`)."""
    if cfg.ranker.training_set == "memory":
        feats, is_train, version, final = training_set(cfg, dataset_dir)
        return RankerRows.of_frame(feats, is_train), version, final
    rs = write_ranker_set(cfg, dataset_dir, cfg.paths.home / "ranker_set", argus=_argus_needed(cfg))
    if rs.dot_rows == 0:
        raise ValueError(NO_DOT_ROWS)
    return RankerRows.of_parts(rs.parts), rs.model_version, final_queries(cfg, dataset_dir, rs.t_split)[0]


def final_list_ndcg(cfg: ArgusrankConfig, final: dict, model, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """NDCG@10 of the final ``/recommend`` list per candidate configuration, ``model`` ranking the candidates
    on their point-in-time features (``final_list.final_ndcg``)."""
    from argusrank.features import store
    from argusrank.platform.training.final_list import final_ndcg

    def score_rows(df: pd.DataFrame) -> np.ndarray:
        f = store.historical_features(cfg, df, argus=_argus_needed(cfg))
        X = pd.DataFrame(ranker_features({c: f[c].to_numpy() for c in f.columns}, df["ts"].to_numpy(), names),
                         columns=list(names))
        return score(model, X)

    return final_ndcg(cfg, final["ctx"], *final["queries"], score_rows)


def train_rankers(cfg: ArgusrankConfig, dataset_dir: str | Path) -> dict[str, Any]:
    """Train the rankers of :func:`feature_sets` on the same point-in-time data; returns the metrics.

    Keys: pair_accuracy_{base,dot,argus}, ndcg_{base,dot,argus}, uplift_rel (argus vs base), uplift_rel_dot,
    oracle_pair_accuracy (None without planted truth), gap_closed (share of the base-to-oracle gap the argus
    ranker closes), argus_features, ablation ({set: {features, pair_accuracy, ndcg, uplift_rel}}), ndcg_k,
    n_train/test_requests, model_version of the vectors, ranker_version, ranker_chosen.
    """
    import mlflow

    t0 = time.perf_counter()
    rows, version, final = ranker_rows_of(cfg, dataset_dir)
    seen = rows.columns(["request_id", "item_id", "grade", DOT, "is_train"])  # one pass: ~33 bytes a row
    test = seen[~seen["is_train"].to_numpy()].reset_index(drop=True)
    coverage = float(np.isfinite(seen[DOT].to_numpy()).mean())
    grades, groups = test["grade"].to_numpy(), test["request_id"].to_numpy()
    t_features = time.perf_counter() - t0

    r = cfg.ranker
    hp = dict(n_estimators=r.n_estimators, max_depth=r.max_depth, learning_rate=r.learning_rate, seed=cfg.seed)
    sets = feature_sets(r)
    models, fitted, ablation = {}, {}, {}
    for name, names in sets.items():
        if names not in fitted:  # a set equal to an earlier one is not trained twice
            m = (train_ranker_on_ray(cfg, rows.parts, names, n_workers=r.num_workers, **hp) if r.num_workers
                 else train_ranker_on_batches(lambda names=names: rows.batches(names, train=True), **hp))
            s = np.concatenate([score(m, X) for X, _, _ in rows.batches(names, train=False)] or [np.zeros(0)])
            fitted[names] = (m, pair_accuracy(s, grades, groups), ndcg_at_k(s, grades, groups, r.ndcg_k))
        models[name], pa, ndcg = fitted[names]
        ablation[name] = {"features": [f for f in names if f not in BASE_FEATURES], "pair_accuracy": pa, "ndcg": ndcg}
    out: dict[str, Any] = {}
    for name in ("base", "dot", "argus"):
        out[f"pair_accuracy_{name}"], out[f"ndcg_{name}"] = ablation[name]["pair_accuracy"], ablation[name]["ndcg"]
    base = out["pair_accuracy_base"]
    for row in ablation.values():
        row["uplift_rel"] = (row["pair_accuracy"] - base) / base
    out["uplift_rel"], out["uplift_rel_dot"] = ablation["argus"]["uplift_rel"], ablation["dot"]["uplift_rel"]
    out["oracle_pair_accuracy"] = oracle = oracle_pair_accuracy(dataset_dir, test)
    out["gap_closed"] = (out["pair_accuracy_argus"] - base) / (oracle - base) if oracle is not None and oracle > base else None
    out["argus_dot_pair_accuracy"] = pair_accuracy(np.nan_to_num(test[DOT].to_numpy(), nan=-1e9), grades, groups)
    chosen = "argus" if out["pair_accuracy_argus"] >= base else "base"
    t1 = time.perf_counter()
    fin = final_list_ndcg(cfg, final, models[chosen], sets[chosen])
    out["final_ndcg@10"], out["final_ndcg@10_seen_filtered"] = fin["seen_kept"], fin["seen_filtered"]
    out["final_ndcg@10_source_order"] = fin["source_order"]
    out.update(train_on=r.train_on, user_vectors=r.user_vectors, ranker_workers=r.num_workers,
               n_final_queries=int(len(final["queries"][0])),
               n_candidate_rows=final["n_candidate_rows"],
               final_seconds=round(time.perf_counter() - t1, 3))
    is_train = seen["is_train"].to_numpy()
    out.update(ndcg_k=r.ndcg_k, n_train_requests=int(pd.unique(seen["request_id"].to_numpy()[is_train]).size),
               n_test_requests=int(pd.unique(groups).size), training_set=r.training_set,
               n_impressions=int(len(seen)) - final["n_candidate_rows"],
               dot_coverage=coverage, model_version=version, ranker_chosen=chosen, argus_features=list(r.argus_features),
               ablation=ablation, features_seconds=round(t_features, 3))

    with start_run(cfg, "ranker"):
        mlflow.log_params({"ranker.vectors_model_version": version, "ranker.chosen": chosen,
                           "ranker.user_vectors": r.user_vectors})
        mlflow.log_metrics({k: float(v) for k, v in out.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)})
        mlflow.log_metrics({f"ablation.{k.lstrip('+')}.pair_accuracy": v["pair_accuracy"] for k, v in ablation.items()
                            if np.isfinite(v["pair_accuracy"])})
        mlflow.log_dict(ablation, "ranker_ablation.json")
        for key in ("final_ndcg@10", "final_ndcg@10_seen_filtered", "final_ndcg@10_source_order"):
            mlflow.log_metrics({f"{key.replace('@', '_at_')}.{c}": v for c, v in out[key].items() if np.isfinite(v)})
        mlflow.log_dict({k: v for k, v in out.items() if k == "train_on" or k.startswith("final_ndcg")},
                        "final_list_ndcg.json")
        fig = _importance_plot({k: models[k] for k in ("base", "argus")})
        mlflow.log_figure(fig, "plots/ranker_feature_importance.png")
        for name in ("base", "argus"):
            example = next(rows.batches(sets[name], train=True))[0].head(3)
            info = registry.log_ranker(models[name], f"ranker_{name}", input_example=example,
                                       registered_model_name=cfg.mlflow.ranker_model_name if name == chosen else None)
            if name == chosen:
                out["ranker_version"] = int(info.registered_model_version)
        # tags (ARGUS version, feature list) first, alias last
        registry.publish_ranker(cfg, out["ranker_version"], version, r.alias, features=sets[chosen],
                                user_vectors=r.user_vectors)
    return out


def oracle_pair_accuracy(dataset_dir: str | Path, rows: pd.DataFrame) -> float | None:
    """PairAccuracy of the planted ``true_affinity`` on these impression rows; None without truth."""
    from argusrank.features.io import read_truth

    try:
        truth = read_truth(dataset_dir).to_pandas()
    except FileNotFoundError:
        return None
    t = truth[["request_id", "item_id", "true_affinity"]].drop_duplicates(["request_id", "item_id"])
    m = rows[["request_id", "item_id", "grade"]].merge(t, on=["request_id", "item_id"], how="left")
    return pair_accuracy(m["true_affinity"].fillna(-np.inf).to_numpy(), m["grade"].to_numpy(), m["request_id"].to_numpy())
