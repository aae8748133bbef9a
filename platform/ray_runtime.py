"""The one place a local Ray runtime is started (training, export, serving).

In quiet mode (``platform/logs.py``) workers' output goes to the log file and ``<home>/logs/ray``
links the session's log folder. Every stage uses the Ray it finds (a cluster via ``ray.init(address=...)`` or ``RAY_ADDRESS``,
or one a test started); only when none runs does it start a small local one.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from argusrank.platform import logs

#: object store of a local Ray: Ray's default reserves a large part of /dev/shm
LOCAL_OBJECT_STORE_BYTES = 300_000_000


def start_local_ray(*, dashboard: bool = False, log_to_driver: bool = False, namespace: str | None = None) -> bool:
    """Start a local Ray runtime unless one is initialized; returns whether this call started it.

    ``dashboard``: serve Ray's dashboard/State API on loopback only (Ray Train's placement-group
    cleaner polls it and warns every few seconds without it)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # Train's report() otherwise waits ~2 s
    ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1", object_store_memory=LOCAL_OBJECT_STORE_BYTES,
             log_to_driver=log_to_driver, configure_logging=False, namespace=namespace)
    if logs.active():
        if log_to_driver:
            logs.route_ray_worker_logs()
        logs.link_ray_logs(ray._private.worker._global_node.get_logs_dir_path())
    return True


@contextlib.contextmanager
def ray_session(**kwargs) -> Iterator[None]:
    """Use the running Ray runtime, or start a local one (:func:`start_local_ray`) and stop it after."""
    import ray

    started = start_local_ray(**kwargs)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
