"""Make a dataset directory from any source argusrank reads: the synthetic generator or an importer."""
from __future__ import annotations

from pathlib import Path

from argusrank.features.config import SynthConfig
from argusrank.features.importers import FORMATS as IMPORT_FORMATS

#: every dataset format: ``synth`` (planted truth) and the importers' formats
FORMATS = ("synth", *IMPORT_FORMATS)


def build_dataset(fmt: str, src: str | Path | None, out: str | Path, synth: SynthConfig, seed: int,
                  cache_dir: str | Path | None = None, user_buckets: int | None = None) -> dict:
    """Write dataset ``out`` from ``fmt``/``src`` (``synth``: generated from ``synth`` and ``seed``); returns its
    summary. Only ``synth`` and ``movielens-100k`` (a wheel fetched by pip) need no ``src``. ``user_buckets``:
    partitions of the events by user (``data.user_buckets``; default sized to the data)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "synth":
        from argusrank.features.synth import synthesize

        return synthesize(synth, out, seed=seed, user_buckets=user_buckets)
    from argusrank.features.importers import import_dataset

    if src is None and fmt != "movielens-100k":
        raise ValueError(f"format {fmt} needs a source path (only movielens-100k fetches itself)")
    return import_dataset(fmt, src, out, cache_dir=cache_dir, user_buckets=user_buckets)
