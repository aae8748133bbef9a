"""ArgusConfig: every knob of the ARGUS model in one dataclass, plus size presets.

``preset("s", dropout=0.1)`` gives a preset with overrides; unknown preset
names or fields raise ``ValueError`` naming them. ``sasrec_config(cfg)`` is the
SASRec ablation of the same code (positives only, no context, no FP).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

FEEDBACK_TARGETS: tuple[str, ...] = ("played_ratio", "liked", "disliked", "skip")
ENCODERS = ("simplified", "full", "hstu")
POSITIONS = ("learned", "rotary", "none")
TOWERS = ("mlp", "residual")


@dataclass
class ArgusConfig:
    # --- encoder -----------------------------------------------------------
    encoder: str = "simplified"  # "simplified" (1 token/event) | "full" (3 tokens/event) | "hstu"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    mlp_ratio: int = 4  # transformer MLP hidden = mlp_ratio * d_model
    dropout: float = 0.0
    max_len: int = 512  # events per sequence (positions table; HSTU bias range)
    positions: str = "learned"  # "learned" | "rotary" | "none" (HSTU always uses relative bias)
    time_signal: bool = True  # log-bucketed gap since the previous event, in the context
    time_buckets: int = 32  # log2 buckets for time gaps (context and HSTU time bias)
    # --- item embeddings (unified hashed table) --------------------------------
    n_hashes: int = 3
    hash_buckets: int = 1 << 16  # rows of the one shared table
    item_dim: int = 64  # table width (projected to d_model when different)
    hash_combine: str = "sum"  # "sum" | "concat" (concat of k lookups, then a linear projection)
    item_table: str = "hashed"  # "hashed" | "catalog" (one row per item of a small catalog, models/vocab.py)
    n_items: int = 0  # rows of the catalog table (item_table="catalog"), row 0 for unknown IDs
    content_dim: int = 0  # optional item content features hook (0 = off)
    # --- what an event token carries -----------------------------------------
    use_context: bool = True  # False: context replaced by a learned constant (SASRec)
    use_feedback: bool = True  # False: no feedback in tokens and no FP head (SASRec)
    positives_only: bool = False  # keep only positive events (grade >= listen) (SASRec)
    n_surfaces: int = 7  # len(features.schema.SURFACES)
    # --- NIP head: sampled softmax with logQ correction ----------------------
    nip_dim: int = 32
    nip_weight: float = 1.0
    n_inbatch_negatives: int = 1024  # in-batch candidates shared by all queries (subsampled above this)
    n_uniform_negatives: int = 128
    item_id_max: int = 1 << 20  # uniform negatives drawn from [1, item_id_max] unless a catalog is set
    logq: str = "standard"  # "standard" (positive and negatives corrected) | "corrected" (RecSys 2025) | "none"
    temperature_init: float = 0.05
    temperature_min: float = 0.01
    temperature_max: float = 100.0
    # --- FP head -------------------------------------------------------------
    fp_weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in FEEDBACK_TARGETS})
    played_ratio_loss: str = "bce"  # "bce" (soft target) | "mse"
    # --- event tokens ----------------------------------------------------------
    feedback_gate: bool = False  # feedback token += item * gate(feedback): who liked WHAT, not just "a like"
    # --- two-tower fine-tuning ------------------------------------------------
    tower_dim: int = 32
    tower_pool: bool = False  # user tower reads LayerNorm(causal mean of the event tokens so far) + a * state (a learned, from 0)
    tower: str = "mlp"  # "mlp" (2 layers) | "residual" (x + MLP(x), MLP output at zero; tower_dim == d_model)
    # --- runtime -------------------------------------------------------------
    compile: bool = False  # torch.compile the encoder

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise ValueError(f"ArgusConfig.{name}: {msg} (got {getattr(self, name)!r})")

        check(self.encoder in ENCODERS, "encoder", f"must be one of {ENCODERS}")
        check(self.positions in POSITIONS, "positions", f"must be one of {POSITIONS}")
        check(self.tower in TOWERS, "tower", f"must be one of {TOWERS}")
        check(self.tower != "residual" or self.tower_dim == self.d_model, "tower_dim",
              f"must equal d_model={self.d_model} for tower='residual'")
        check(self.hash_combine in ("sum", "concat"), "hash_combine", "must be 'sum' or 'concat'")
        check(self.item_table in ("hashed", "catalog"), "item_table", "must be 'hashed' or 'catalog'")
        check(self.item_table == "hashed" or self.n_items > 0, "n_items", "must be > 0 for item_table='catalog'")
        check(self.logq in ("standard", "corrected", "none"), "logq", "must be 'standard', 'corrected' or 'none'")
        check(self.played_ratio_loss in ("bce", "mse"), "played_ratio_loss", "must be 'bce' or 'mse'")
        check(self.d_model % self.n_heads == 0, "d_model", f"must be divisible by n_heads={self.n_heads}")
        check(self.positions != "rotary" or (self.d_model // self.n_heads) % 2 == 0, "positions",
              "rotary needs an even head dimension")
        for name in ("d_model", "n_layers", "n_heads", "max_len", "n_hashes", "hash_buckets", "item_dim",
                     "nip_dim", "tower_dim", "time_buckets", "item_id_max"):
            check(getattr(self, name) > 0, name, "must be > 0")
        check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        check(0 < self.temperature_min <= self.temperature_init <= self.temperature_max, "temperature_init",
              "must satisfy 0 < temperature_min <= temperature_init <= temperature_max")
        unknown = set(self.fp_weights) - set(FEEDBACK_TARGETS)
        check(not unknown, "fp_weights", f"unknown targets {sorted(unknown)}; known {FEEDBACK_TARGETS}")
        self.fp_weights = {t: float(self.fp_weights.get(t, 0.0)) for t in FEEDBACK_TARGETS}

    @property
    def tokens_per_event(self) -> int:
        return 3 if self.encoder == "full" else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ArgusConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ArgusConfig: unknown field(s) {unknown}")
        return cls(**d)


def _size(d: int, layers: int, heads: int, buckets: int, item_dim: int, nip: int, tower: int) -> ArgusConfig:
    return ArgusConfig(d_model=d, n_layers=layers, n_heads=heads, hash_buckets=buckets, item_dim=item_dim,
                       nip_dim=nip, tower_dim=tower)


#: Sizes by encoder parameters (transformer blocks, ~12 d^2 per layer): tiny ~25K (unit tests),
#: xs ~3.2M, s ~19M, m ~85M, l ~302M, xl ~1.007B (ARGUS.md section 5: 3.2M .. 1.007B).
PRESETS: dict[str, ArgusConfig] = {
    "tiny": replace(_size(32, 2, 2, 1 << 12, 32, 16, 16), max_len=256, n_uniform_negatives=32),
    # xxs: the CPU default of `argusrank demo` (2 cores: a few minutes for the whole pipeline); gated
    # feedback tokens, pooled-token user state and residual towers: the ARGUS dot then orders the
    # synthetic test pairs at ~0.77 instead of ~0.73 (bench/README.md, "Final-ranker uplift")
    "xxs": replace(_size(64, 2, 2, 1 << 15, 64, 64, 64), max_len=256, n_uniform_negatives=256,
                   feedback_gate=True, tower_pool=True, tower="residual"),
    "xs": _size(256, 4, 4, 1 << 16, 64, 64, 64),
    "s": _size(512, 6, 8, 1 << 17, 128, 128, 128),
    "m": _size(768, 12, 12, 1 << 18, 256, 128, 128),
    "l": _size(1024, 24, 16, 1 << 19, 256, 256, 256),
    "xl": _size(2048, 20, 16, 1 << 19, 256, 256, 256),
}


def preset(name: str, **overrides: Any) -> ArgusConfig:
    """A copy of ``PRESETS[name]`` with ``overrides`` applied (validated)."""
    if name not in PRESETS:
        raise ValueError(f"unknown ARGUS preset {name!r}; known: {sorted(PRESETS)}")
    return ArgusConfig.from_dict({**PRESETS[name].to_dict(), **overrides})


def sasrec_config(cfg: ArgusConfig) -> ArgusConfig:
    """The SASRec ablation of ``cfg``: positives only, no context, no feedback/FP, same sizes."""
    return replace(cfg, use_context=False, use_feedback=False, positives_only=True, time_signal=False,
                   fp_weights=dict(cfg.fp_weights))
