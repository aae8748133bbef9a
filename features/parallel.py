"""Run independent units of a data pass in this process or as Ray tasks, with a progress bar.

A pass (the import's validation of a file's row groups, its sort of one user bucket) is a list of calls of one
function whose results the caller merges in the list's order, so the result does not depend on where or in
which order the units ran. ``workers <= 1`` runs them here, one at a time; more runs them as Ray tasks of one
CPU each, at most ``workers`` in flight (memory: ``workers`` units at a time), on the Ray cluster this process
is connected to; :func:`parallel_session` joins ``address`` or starts a small local Ray for the passes of one job
when none is running, and leaves it after.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm


def run_units(fn: Callable[..., Any], units: Sequence[tuple], workers: int = 1, desc: str = "") -> list[Any]:
    """``[fn(*u) for u in units]``, run here (``workers <= 1``) or as Ray tasks (at most ``workers`` at once).
    A unit's exception is raised here, as it would be in the loop."""
    results: list[Any] = [None] * len(units)
    with tqdm(total=len(units), desc=desc, unit="part", disable=None) as bar:
        if workers <= 1 or len(units) <= 1:
            for i, u in enumerate(units):
                results[i] = fn(*u)
                bar.update(1)
            return results
        import ray

        if not ray.is_initialized():
            raise RuntimeError("run_units(workers > 1) needs Ray: run it inside parallel_session()")
        task = ray.remote(num_cpus=1, max_retries=0)(fn)
        pending: dict[Any, int] = {}
        for i, u in enumerate(units):
            if len(pending) >= workers:
                _collect(ray, pending, results, bar)
            pending[task.remote(*u)] = i
        while pending:
            _collect(ray, pending, results, bar)
    return results


@contextlib.contextmanager
def parallel_session(workers: int, address: str | None = None) -> Iterator[None]:
    """For ``workers`` > 1: use the Ray this process is connected to, else join the cluster at ``address`` or
    start a local Ray of ``workers`` CPUs, shut down on leaving. ``workers`` <= 1: nothing."""
    if workers <= 1:
        yield
        return
    import ray

    started = not ray.is_initialized()
    if started and address and address != "local":
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    elif started:
        ray.init(address="local", num_cpus=workers, include_dashboard=False, object_store_memory=200_000_000,
                 log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _collect(ray, pending: dict, results: list, bar) -> None:
    """Wait for one finished task; store its result (``ray.get`` re-raises the unit's own exception)."""
    (ref,), _ = ray.wait(list(pending), num_returns=1)
    try:
        results[pending.pop(ref)] = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise exc.as_instanceof_cause() from None
    bar.update(1)
