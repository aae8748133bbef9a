"""One typed configuration tree for every stage, loaded once and passed down.

``load_config(path, overrides)`` reads YAML (optional) and applies dotted
overrides (``["train.epochs=3", "model.preset=s"]``). This is the only module
that reads environment variables (``ENV_*`` below); everything else receives
an ``ArgusrankConfig``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import Field, field_validator, model_validator

from argusrank.features.config import DataConfig, FeaturesConfig, PathsConfig, Section, SynthConfig

__all__ = ["ArgusrankConfig", "DataConfig", "FeaturesConfig", "PathsConfig", "SynthConfig", "load_config",
           "parse_sets", "with_overrides"]

#: environment variables the platform reads (and nothing else does)
ENV_CONFIG = "ARGUSRANK_CONFIG"  # path to a YAML config
ENV_HOME = "ARGUSRANK_HOME"  # working directory for data, stores, runs
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"  # standard MLflow variable
ENV_REDIS_URL = "ARGUSRANK_REDIS_URL"  # selects the Redis online store when set
ENV_RAY_ADDRESS = "RAY_ADDRESS"  # standard Ray variable (Ray Jobs set it for the entrypoint): -> ray.address


class ModelConfig(Section):
    preset: str = "xxs"  # models/config.py PRESETS: tiny, xxs (CPU demo), xs ~3M ... xl ~1B
    kind: Literal["argus", "sasrec", "sasrec-classic"] = "argus"  # sasrec-classic: models/sasrec_classic.py
    encoder: Literal["simplified", "full", "hstu"] = "simplified"
    overrides: dict[str, Any] = {}  # fields of models' ArgusConfig set on top of the preset


class TrainConfig(Section):
    num_workers: int = Field(1, ge=1)
    use_gpu: Literal["auto"] | bool = "auto"  # auto: use GPUs when torch sees one
    epochs: int = Field(3, ge=1)
    time_budget_s: float | None = Field(None, gt=0)
    batch_size: int = Field(16, ge=1)  # small batches: more optimizer steps per epoch on small data
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(50, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(0, ge=0)  # steps; 0 = end of each epoch
    resume: bool = True
    cpus_per_worker: int | None = Field(None, ge=1)  # also torch threads per worker; None: CPUs / workers
    max_failures: int = Field(0, ge=0)  # Ray Train worker-group restarts (resume from last checkpoint)
    stop_after_steps: int | None = Field(None, ge=1)  # end this job early (checkpoints first); a rerun resumes
    log_every: int = Field(20, ge=1)  # steps between MLflow step metrics
    show_progress: bool = True  # tqdm bar on rank 0
    positive_targets_only: bool = False  # pre-train NIP/FP only on positive events (inputs keep all events)
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # after the linear warmup
    valid_every: int = Field(0, ge=0)  # epochs between validations (early stopping, best kept); 0 = off
    patience: int = Field(5, ge=1)  # validations without improvement before stopping
    # ... and at least this many optimizer steps since the best one: on a small data set an epoch is a few steps,
    # so `patience` epochs alone stop on the first plateau (bench/README.md "Quality"); 0 = epochs only
    patience_steps: int = Field(0, ge=0)
    valid_days: float | None = Field(None, gt=0)  # temporal validation window before T (None: data.test_days)
    length_buckets: int = Field(0, ge=0)  # >1: batches of similar lengths (sorted in pools of this many batches)
    # how pre-training and fine-tuning workers get their rows (training/feed.py): "arrays" = each worker builds its shard's arrays in
    # memory; "ray_data" = Ray Data builds them bucket by bucket and streams them (get_dataset_shard), memory one window;
    # "auto" = ray_data when a worker's share of the events passes feed_auto_events (arrays start faster on small jobs;
    # both feeds give the same rows in the same order: tests/test_cluster.py)
    feed: Literal["auto", "arrays", "ray_data"] = "auto"
    feed_auto_events: int = Field(2_000_000, ge=0)  # auto: events per worker above which ray_data (~270 B/event held)
    feed_window: int = Field(64, ge=1)  # ray_data: batches shuffled together (rows held = feed_window * batch_size)
    feed_cpus: float = Field(0.0, ge=0)  # ray_data: CPUs a bucket-building task asks for (0: shares the workers')
    feed_concurrency: int = Field(2, ge=1)  # ray_data: bucket-building tasks at once per training worker


class FinetuneConfig(Section):
    epochs: int = Field(8, ge=1)  # the most epochs (the LR schedule's length); validation stops it earlier
    batch_size: int = Field(8, ge=1)  # users per step; each row holds all of a user's impressions
    lr: float = Field(3e-3, gt=0)
    lag_s: int = Field(86400, ge=0)  # user state as of impression_time - lag
    # share of the user rows of each step scored with the user state at ``runtime_lag_s`` instead (one model for the
    # daily lagged vectors and the fresh runtime ones: bench/README.md "Fresh vectors"); 0 = lag_s only
    runtime_lag_share: float = Field(0.0, ge=0, le=1)
    runtime_lag_s: int = Field(1, ge=0)  # 1 s: the impression's own events (same second) stay invisible
    max_history: int = Field(512, gt=1)
    min_history: int = Field(1, ge=0)
    max_impressions: int = Field(256, gt=1)  # per user row: impressions beyond it are dropped
    # early stopping: weighted PairAccuracy of the impressions in the window [T - valid_days, T) (not trained on)
    # after every ``valid_every`` epochs, the best weights kept; ``epochs`` is then the most it may run. 0 = off
    valid_every: int = Field(1, ge=0)
    patience: int = Field(2, ge=1)  # validations without improvement before stopping
    valid_days: float | None = Field(None, gt=0)  # validation window before T (None: data.test_days)


class RankerConfig(Section):
    n_estimators: int = Field(200, ge=1)
    max_depth: int = Field(6, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    ndcg_k: int = Field(10, ge=1)
    train_frac: float = Field(0.6, gt=0, lt=1)  # earliest share of the ranker window's requests used for training
    alias: str = "champion"  # registry alias set on the chosen ranker
    # the ARGUS features of the "argus" ranker next to the baseline ones (features/argus_features.py: argus_dot,
    # nip_dot, fp_liked/fp_disliked/fp_skip/fp_played, argus_dot_b<k>of<B>); recorded with the registered ranker,
    # computed by serving. Default: what won the ablation (bench/README.md "Final-ranker uplift")
    argus_features: list[str] = Field(default_factory=lambda: ["argus_dot"], min_length=1)
    ablation: bool = True  # also train base + argus_dot + each other ARGUS feature group (and all) and report each
    # impressions: train on the logged impressions only; candidates: also on the merged candidates /recommend
    # serves per (user, daily snapshot) of the train part, labelled by what the user did next
    # (platform/training/final_list.py; works on data without impressions)
    train_on: Literal["impressions", "candidates"] = "impressions"
    # the user vectors of the training rows' ARGUS features that fresh events move (argus_dot and its blocks,
    # nip_dot): daily = the snapshot before each request (what Feast serves when events reach the platform by
    # the daily export); fresh = the vectors after every event before the request (what POST /events serves)
    user_vectors: Literal["daily", "fresh"] = "daily"
    candidate_negatives: int = Field(20, ge=0)  # unlabelled candidates kept per training query (sampled, seed)
    candidate_queries: int = Field(3000, ge=1)  # most (user, snapshot) training queries (sampled, seed)
    final_queries: int = Field(300, ge=1)  # most test queries of the final-list NDCG@10 (sampled, seed)
    # where the training rows live while the rankers train: memory = one frame; parts = written one user bucket
    # at a time to <home>/ranker_set/part-*.parquet and fed to XGBoost part by part (memory: a bucket's rows and
    # XGBoost's quantized matrix, ~1 byte a value; for windows too large to hold; train_on=impressions,
    # user_vectors=daily and the file store's bucket join only: platform/training/ranker_set.py)
    training_set: Literal["memory", "parts"] = "memory"
    # 0: XGBoost trains in the job's process; N: Ray Train's XGBoostTrainer with N workers (on ray.address's
    # cluster), each reading its share of the parts (training_set=parts; platform/training/ranker_ray.py)
    num_workers: int = Field(0, ge=0)

    @field_validator("argus_features")
    @classmethod
    def _known_argus_features(cls, v: list[str]) -> list[str]:
        from argusrank.features.argus_features import is_argus_feature

        bad = [f for f in v if not is_argus_feature(f)]
        if bad:
            raise ValueError(f"unknown ARGUS features {bad} (features/argus_features.py)")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _parts_need_impressions(self) -> "RankerConfig":
        if self.training_set == "parts" and (self.train_on, self.user_vectors) != ("impressions", "daily"):
            raise ValueError("ranker.training_set=parts writes the logged impressions with the daily vectors' "
                             f"features only: set ranker.train_on=impressions and ranker.user_vectors=daily (got "
                             f"train_on={self.train_on}, user_vectors={self.user_vectors}) or training_set=memory")
        if self.num_workers and self.training_set != "parts":
            raise ValueError(f"ranker.num_workers={self.num_workers} trains on Ray over the parts of the ranker set: "
                             "set ranker.training_set=parts (or num_workers=0)")
        return self


class CandidateSource(Section):
    """One candidate source of ``/recommend`` and how many items it contributes."""

    source: Literal["tower", "nip", "popular"]
    k: int = Field(gt=0)


class ServeConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    num_candidates: int = Field(500, ge=1)  # the tower source's k when `candidates` is not set
    # candidate sources merged in this order, each its best k items not already taken (de-duplicated):
    # default [{source: nip, k: 400}, {source: popular, k: 100}]; None: [{source: tower, k: num_candidates}]
    candidates: list[CandidateSource] | None = Field(
        default_factory=lambda: [CandidateSource(source="nip", k=400), CandidateSource(source="popular", k=100)],
        min_length=1)  # the best measured merge (bench/README.md "Candidates")
    max_k: int = Field(1000, ge=1)
    ann: Literal["auto", "exact", "hnsw"] = "auto"
    exact_max_items: int = Field(50_000, ge=1)  # ann=auto: exact search up to this catalog size, HNSW above
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(100, ge=8)
    hnsw_ef_search: int = Field(256, ge=8)  # raised to k when k is larger
    ranker_alias: str = "champion"  # registry alias of cfg.mlflow.ranker_model_name that is served
    reload_interval_s: float = Field(10.0, gt=0)  # how often replicas check the registry alias (hot swap)
    as_of: float | None = None  # fixed request time (epoch s) for replaying old data; None = wall clock
    max_exclude: int = Field(10_000, ge=0)  # /recommend: most item ids in `exclude`
    max_rank_items: int = Field(2_000, ge=1)  # /rank: most item ids per request
    max_events: int = Field(1_000, ge=1)  # POST /events: most events per request
    # fresh vectors: when a user's cached window is full (max_len events), the next event re-encodes the last
    # fresh_keep share of it in one full pass, then steps again: one full pass per (1 - share) * max_len events
    # instead of one per event; a fresh vector is then a full pass over the user's last share*max_len..max_len events
    fresh_keep: float = Field(0.5, gt=0, le=1)
    # fresh vectors: each accepted event also moves the user's NIP query (the NIP-ANN candidates' user row) for a
    # feed request right after the event, not only the tower vector (argus_dot); false: the NIP row stays daily
    fresh_nip: bool = True
    max_body_bytes: int = Field(262_144, ge=1024)  # larger request bodies get 413
    batch_max_size: int = Field(16, ge=1)  # @serve.batch of CandidateGenerator and Ranker
    batch_wait_timeout_s: float = Field(0.0, ge=0)  # 0: batch only what is already queued (no added latency)
    app_name: str = "argusrank"
    # feast_batched: every feature of (user, candidates) in one Feast call (vectors read there too);
    # cached_items: item stats held in RAM (refreshed on materialize), dots from the in-RAM item
    # vectors, Feast reads only the user's row (user_stats + user_item_priors): the faster (bench/README.md)
    features_path: Literal["cached_items", "feast_batched"] = "cached_items"
    # composed: CandidateGenerator, FeatureService, Ranker are deployments behind the Ingress (scaled apart on a
    # cluster; one handle hop each); fused: the Ingress runs the same three in-process (no hops: the
    # low-latency choice on one node; scale Ingress replicas instead). bench/README.md "Serving" compares them.
    # Default: fused + direct on one machine; the Helm chart (cluster) sets composed + proxy.
    topology: Literal["composed", "fused"] = "fused"
    # proxy: requests enter through Serve's HTTP proxy on `port` (any topology, any number of nodes);
    # direct: each Ingress replica ALSO answers HTTP itself on direct_port, direct_port+1, ... (Serve's direct
    # ingress, experimental in Ray 2.60; the proxy keeps `port`): no proxy hop (bench/README.md "Serving").
    ingress: Literal["proxy", "direct"] = "direct"
    direct_port: int = Field(8001, ge=1, le=65535)

    def candidate_sources(self) -> list[CandidateSource]:
        """The configured merge (``candidates: null``: tower ANN alone, ``num_candidates`` items)."""
        return list(self.candidates or [CandidateSource(source="tower", k=self.num_candidates)])

    def candidate_total(self) -> int:
        """How many candidates ``/recommend`` ranks: the merge's quotas together."""
        return sum(s.k for s in self.candidate_sources())

    @model_validator(mode="after")
    def _ports_differ(self) -> "ServeConfig":
        if self.direct_port == self.port:
            raise ValueError(f"serve.direct_port ({self.direct_port}) must differ from serve.port ({self.port})")
        return self


class RayConfig(Section):
    """Where the stages' Ray runs (``platform/ray_runtime.py``)."""

    # a running Ray cluster ("host:6379" or "auto"): every stage connects to it and Ray Train
    # places workers on any node (the home must then be a filesystem every node sees at the same path);
    # None or "local": start a small local Ray on this machine
    address: str | None = None


class MlflowConfig(Section):
    tracking_uri: str | None = None  # default: sqlite:///<home>/mlflow.db
    experiment: str = "argusrank"
    argus_model_name: str = "argus"
    ranker_model_name: str = "argus-ranker"
    promote_metric: str = "auto"  # metric `promote` compares; auto: pair_accuracy, else ndcg@10


class EvalConfig(Section):
    """Offline evaluation (platform/training/evaluate.py)."""

    protocol: Literal["temporal", "loo"] = "temporal"
    negatives: Literal["100", "all"] = "all"  # LOO: 100 sampled unseen negatives or the full catalog
    filter_seen: bool = False  # full-catalog ranking: drop items the user already had
    ks: list[int] = Field(default_factory=lambda: [10, 100], min_length=1)
    batch_size: int = Field(256, ge=1)
    # evaluate whole user buckets, in bucket order, until at least this many users (None: every user); the same
    # users for every model of a dataset. Full-catalog ranking costs users x catalog: at 50M events and more,
    # evaluating every user takes longer than the training it measures (bench/README.md "Scale")
    max_users: int | None = Field(None, ge=1)

    @field_validator("negatives", mode="before")
    @classmethod
    def _negatives_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v


class ArgusrankConfig(Section):
    seed: int = 0
    paths: PathsConfig = Field(default_factory=PathsConfig, validate_default=True)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    features: FeaturesConfig = FeaturesConfig()
    ranker: RankerConfig = RankerConfig()
    serve: ServeConfig = ServeConfig()
    ray: RayConfig = RayConfig()
    mlflow: MlflowConfig = MlflowConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _online_views_served(self) -> "ArgusrankConfig":
        if self.serve.features_path == "feast_batched" and "user_item" in self.features.offline_only:
            raise ValueError("serve.features_path=feast_batched reads the user_item view online: remove it from "
                             "features.offline_only, or serve with features_path=cached_items")
        return self

    @field_validator("paths", mode="after")
    @classmethod
    def _absolute_home(cls, v: PathsConfig) -> PathsConfig:
        return PathsConfig(home=Path(v.home).expanduser().resolve())

    @property
    def dataset_dir(self) -> Path:
        """The configured dataset directory: ``<home>/data/<data.format>``."""
        return self.paths.data_dir / self.data.format

    @property
    def tracking_uri(self) -> str:
        """Absolute MLflow tracking URI (relative SQLite paths break ``mlflow run``)."""
        return self.mlflow.tracking_uri or f"sqlite:///{self.paths.home / 'mlflow.db'}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def stage_schedule(self, stage: str) -> "StageSchedule":
        """How long and how fast a training stage (``pretrain``: ``train.*``; ``finetune``: ``finetune.*``) runs."""
        if stage == "pretrain":
            t = self.train
            return StageSchedule("train", t.epochs, t.batch_size, t.lr, t.valid_every, t.patience, t.patience_steps)
        if stage == "finetune":
            f = self.finetune
            return StageSchedule("finetune", f.epochs, f.batch_size, f.lr, f.valid_every, f.patience, 0)
        raise ValueError(f"stage must be 'pretrain' or 'finetune', got {stage!r}")


class StageSchedule(NamedTuple):
    """The stage-specific part of a training job's loop (the rest of ``train.*`` is shared)."""
    section: str  # the config section the values come from
    epochs: int  # the most epochs (the LR schedule's length)
    batch_size: int
    lr: float
    valid_every: int  # epochs between validations; 0 = no early stopping
    patience: int  # validations without improvement before stopping
    patience_steps: int  # ... and at least this many optimizer steps since the best


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ValueError(f"config override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=value", ...]`` (values parsed as YAML: ``3`` is an int, ``[1, 2]`` a list) -> ``{"a.b": value}``.

    The one parser of ``--set`` overrides (CLI, ``mlflow run`` steps, Serve app args)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"config override {item!r} must look like key=value")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def with_overrides(cfg: ArgusrankConfig, overrides: dict[str, Any]) -> ArgusrankConfig:
    """A validated copy of ``cfg`` with dotted-key overrides (``{"train.epochs": 3}``)."""
    tree = cfg.model_dump(mode="json")
    for key, value in overrides.items():
        _set_dotted(tree, key, value)
    return ArgusrankConfig.model_validate(tree)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> ArgusrankConfig:
    """Load the config: defaults <- YAML file <- environment <- overrides.

    ``overrides`` are ``"a.b=value"`` strings (:func:`parse_sets`) or a dict of
    dotted keys. Errors name the offending field.
    """
    env = dict(os.environ) if env is None else env
    path = path or env.get(ENV_CONFIG)
    tree: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        tree = yaml.safe_load(p.read_text()) or {}
        if not isinstance(tree, dict):
            raise ValueError(f"config file {p} must hold a mapping at its top")
    if env.get(ENV_HOME):
        _set_dotted(tree, "paths.home", env[ENV_HOME])
    if env.get(ENV_TRACKING_URI):
        _set_dotted(tree, "mlflow.tracking_uri", env[ENV_TRACKING_URI])
    if env.get(ENV_REDIS_URL):
        _set_dotted(tree, "features.online_store", "redis")
        _set_dotted(tree, "features.redis_url", env[ENV_REDIS_URL])
    if env.get(ENV_RAY_ADDRESS):
        _set_dotted(tree, "ray.address", env[ENV_RAY_ADDRESS])
    sets = overrides if isinstance(overrides, dict) else parse_sets(overrides)
    for key, value in sets.items():
        _set_dotted(tree, key, value)
    return ArgusrankConfig.model_validate(tree)
