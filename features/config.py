"""The config sections the features layer reads: paths, data, synthetic generator, feature store.

``platform/config.py`` composes them (with the model, training and serving sections) into
the one ``ArgusrankConfig`` tree; features/ depends on nothing above it, so the store takes
any object with ``paths`` and ``features`` sections (:class:`StoreConfig`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """A config section: unknown keys and wrong types are errors that name the field."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathsConfig(Section):
    home: Path = Path(".argusrank")  # made absolute by load_config

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def runs_dir(self) -> Path:
        return self.home / "ray_results"

    @property
    def vectors_dir(self) -> Path:
        return self.home / "vectors"

    @property
    def feature_repo(self) -> Path:
        return self.home / "feature_repo"

    @property
    def baseline_dir(self) -> Path:
        return self.home / "baseline"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"


class SynthConfig(Section):
    """Synthetic planted-truth generator (features.synth)."""

    n_users: int = Field(2000, gt=0)
    n_items: int = Field(1000, gt=1)
    dim: int = Field(16, gt=0)  # latent dimension of the true preferences
    days: int = Field(60, gt=1)
    organic_per_user: float = Field(40.0, gt=0)  # mean organic events per user over all days
    requests_per_user: float = Field(12.0, gt=0)  # mean recommendation requests per user
    slate_size: int = Field(8, gt=1)
    zipf_a: float = Field(1.1, gt=0)
    drift: float = Field(0.05, ge=0)  # per-day random-walk scale of user preferences
    policy_noise: float = Field(1.0, ge=0)  # logging policy: noise on its affinity estimate
    policy_popularity: float = Field(1.0, ge=0)  # logging policy: weight on log-popularity
    quality_scale: float = Field(0.3, ge=0)  # std of the item quality bias (personal affinity has std 1)
    feedback_noise: float = Field(0.5, ge=0)  # noise on true affinity when drawing feedback
    organic_candidates: int = Field(16, gt=0)  # popularity-drawn items a user picks an organic event from
    policy_candidates: int = Field(32, gt=1)  # popularity-drawn items the logging policy ranks per request
    session_scale: float = Field(0.0, ge=0)  # std of a per-user daily session interest (0: none; features/synth.py)


class DataConfig(Section):
    format: Literal["synth", "movielens-100k", "movielens", "sasrec", "yambda"] = "synth"
    source: Path | None = None
    synth: SynthConfig = SynthConfig()
    test_days: float = Field(7.0, gt=0)  # temporal split: test window length after T
    max_len: int = Field(200, gt=1)  # chunk length for pre-training
    min_history: int = Field(2, ge=1)
    pair_window_s: int = Field(3600, ge=0)  # pairs by time window when there is no request_id
    # partitions of a written dataset's events by user_id (a power of two; the unit a training worker reads, more
    # workers share a bucket's users); None: sized to the data (8 up to 4M events, ~500K events each above, <= 1024)
    user_buckets: int | None = Field(None, ge=1, le=1024)

    @field_validator("user_buckets")
    @classmethod
    def _power_of_two(cls, v: int | None) -> int | None:
        if v is not None and v & (v - 1):
            raise ValueError(f"{v} is not a power of two")
        return v


class FeaturesConfig(Section):
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "localhost:6379"
    dot_product_mode: Literal["caller", "on_demand"] = "caller"  # caller: dot products in numpy (bench/README.md)
    snapshot_every_s: int = Field(86400, gt=0)  # export: user-vector / baseline snapshot spacing
    export_batch_size: int = Field(256, ge=1)  # Ray Data map_batches batch size
    # vector spaces the export writes: tower (ranking feature, tower ANN), nip (NIP-head ANN candidates, nip_dot),
    # fp (the FP head's user / item parts: fp_* ranker features; skipped for a model whose FP head does not split)
    export_spaces: list[Literal["tower", "nip", "fp"]] = Field(default_factory=lambda: ["tower", "fp", "nip"],
                                                               min_length=1)  # the validated (sorted) order
    # which network computes the fp space: "parent" = the pre-trained version a fine-tuned one started from (the
    # FP head is trained in pre-training only; fine-tuning moves the embeddings it reads: bench/README.md
    # "Final-ranker uplift"), "self" = the exported version itself
    fp_from: Literal["parent", "self"] = "parent"

    @field_validator("export_spaces")
    @classmethod
    def _tower_first(cls, v: list[str]) -> list[str]:
        if "tower" not in v:
            raise ValueError("must include 'tower' (the ranker's argus_dot feature)")
        return ["tower", *sorted(set(v) - {"tower"})]
    export_actors: int = Field(0, ge=0)  # model actors in the Ray Data pool; 0 = auto (2 on CPU, 1 per GPU)
    # Feast's offline store and materialization engine: "file" (in this process; the default on one machine) or
    # "ray" (Feast's Ray offline store + Ray compute engine, on the Ray this process is connected to, else the
    # config's ray.address / RAY_ADDRESS, else a local one of ray_cpus CPUs)
    offline_engine: Literal["file", "ray"] = "file"
    ray_cpus: int = Field(2, ge=1)  # CPUs of the local Ray Feast starts when none runs (offline_engine=ray)
    # materialization with the file offline store: "buckets" = a view's rows one entity bucket at a time (memory
    # bounded by a bucket: features/materialize.py), "feast" = Feast's local engine (a view's rows in one frame)
    materialize_engine: Literal["buckets", "feast"] = "buckets"
    materialize_bucket_rows: int = Field(500_000, ge=1)  # offline rows per entity bucket (both buckets engines)
    bucket_mb: int = Field(32, ge=1)  # ... and at most this many MB of them (uncompressed): wide rows, more buckets
    # point-in-time training sets with the file offline store: "buckets" = one user bucket at a time (memory bounded
    # by a bucket: features/point_in_time.py), "feast" = Feast's get_historical_features (whole views per call)
    historical_engine: Literal["buckets", "feast"] = "buckets"
    online_write_rows: int = Field(10_000, ge=1)  # rows per online-store write (every engine)
    # views kept offline only: point-in-time training sets read them, materialize leaves them out of the online
    # store. "user_item" (one row per user-item pair: about one per event) is read online only by
    # serve.features_path=feast_batched; the default serving path reads user_item_priors (one row per user)
    offline_only: list[str] = Field(default_factory=list)


class StoreConfig(Protocol):
    """What the feature store needs of a config: where things live and which online store."""

    paths: PathsConfig
    features: FeaturesConfig
