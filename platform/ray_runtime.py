"""The one place Ray is started or joined (training, export, serving).

Every stage uses the Ray already initialized in its process (e.g. one a test started); else, with
``ray.address`` set (config or ``RAY_ADDRESS``), it joins that cluster (``ray.init(address=...)``: Ray Train
then places workers on any node); else it starts a small local Ray. In quiet mode (``platform/logs.py``)
workers' output goes to the log file and ``<home>/logs/ray`` links the session's log folder.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from argusrank.platform import logs

#: object store of a local Ray: Ray's default reserves a large part of /dev/shm
LOCAL_OBJECT_STORE_BYTES = 300_000_000


def is_cluster(address: str | None) -> bool:
    """Whether ``ray.address`` names a running cluster (not None/empty/"local")."""
    return bool(address) and address != "local"


def start_local_ray(*, dashboard: bool = False, log_to_driver: bool = False, namespace: str | None = None,
                    address: str | None = None) -> bool:
    """Join the cluster at ``address`` (``cfg.ray.address``) or start a local Ray, unless one is initialized;
    returns whether this call connected (the caller then shuts it down).

    ``dashboard``: a local Ray serves its dashboard/State API on loopback only (Ray Train's placement-group
    cleaner polls it and warns every few seconds without it); a cluster keeps its own settings."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # Train's report() otherwise waits ~2 s
    if is_cluster(address):  # resources are the cluster's: Ray refuses object_store_memory/num_cpus here
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=False, namespace=namespace)
    else:  # "local" even when RAY_ADDRESS is set or a `ray start` cluster runs here: the config decides
        ray.init(address="local", include_dashboard=dashboard, dashboard_host="127.0.0.1",
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=log_to_driver,
                 configure_logging=False, namespace=namespace)
    if logs.active():
        if log_to_driver:
            logs.route_ray_worker_logs()
        logs.link_ray_logs(ray._private.worker._global_node.get_logs_dir_path())
    return True


@contextlib.contextmanager
def ray_session(**kwargs) -> Iterator[None]:
    """Use the running Ray, or join ``address`` / start a local one (:func:`start_local_ray`) and leave it after."""
    import ray

    started = start_local_ray(**kwargs)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
