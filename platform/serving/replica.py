"""Process set-up shared by every serving replica (and the in-process pipeline)."""
from __future__ import annotations

import functools
import gc


def one_thread_per_request() -> None:
    """Limit BLAS (numpy matmul) and faiss to one thread in this process.

    A request's work is small (one user x N items); on a busy box extra pool threads only
    spin and contend with the other replicas. Scale with replicas instead (bench/README.md).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def replica_init(init):
    """Decorate a replica constructor: one BLAS/faiss thread per process, and the cyclic GC off while
    it loads (Feast, MLflow, XGBoost and the index make many long-lived objects; the full collections
    they trigger slow the start). Serve collects and freezes the GC once the replica is up."""

    @functools.wraps(init)
    def wrapper(*args, **kwargs):
        one_thread_per_request()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return init(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper
