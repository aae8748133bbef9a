"""A real multi-node Ray cluster on this machine, for tests and ``bench/scale.py --cluster-nodes``: ``ray start
--head`` plus ``ray start --address``.

Each node is one ``ray start --block`` process with its own ``--temp-dir``, CPUs, object store and ports, in its
own session: stopping it (SIGTERM to that process) ends only that node's Ray processes; anything still running
from its temp dir afterwards is killed by PID. Never ``ray stop``: that ends every Ray on the machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterUnavailable(RuntimeError):
    """``ray start`` could not bring the cluster up here (the message says why)."""


@dataclass
class LocalCluster:
    """A head and worker nodes started with ``ray start``; ``address`` is the GCS, ``dashboard`` the State API."""

    address: str = ""
    dashboard: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)

    def _start_node(self, head: bool, num_cpus: int, object_store_bytes: int, env: dict) -> None:
        tmp = tempfile.mkdtemp(prefix="arc", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
        self.temp_dirs.append(tmp)
        ray_bin = str(Path(sys.executable).with_name("ray"))
        args = [ray_bin, "start", "--block", "--num-cpus", str(num_cpus), "--num-gpus", "0",
                "--object-store-memory", str(object_store_bytes), "--temp-dir", tmp, "--disable-usage-stats",
                "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]
        if head:
            port, dash = free_port(), free_port()
            args += ["--head", "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash)]
            self.address, self.dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
        else:
            args += ["--address", self.address]
        log = open(Path(tmp) / "ray_start.log", "w")
        self.procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def _wait(self, what: str, ok, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise ClusterUnavailable(f"`ray start` exited ({dead[0].returncode}) while waiting for {what}: "
                                         f"{self.log_tail()}")
            if ok():
                return
            time.sleep(0.5)
        raise ClusterUnavailable(f"timed out after {timeout_s:.0f}s waiting for {what}: {self.log_tail()}")

    def log_tail(self, n: int = 800) -> str:
        return " | ".join((Path(t) / "ray_start.log").read_text()[-n:] for t in self.temp_dirs
                          if (Path(t) / "ray_start.log").exists())

    def alive_nodes(self) -> int:
        from ray.util.state import list_nodes

        try:
            return sum(n.state == "ALIVE" for n in list_nodes(address=self.dashboard, timeout=5))
        except Exception:  # dashboard not up yet
            return 0

    def pids(self) -> list[int]:
        """Every live process started from this cluster's temp dirs (and the ``ray start`` processes)."""
        out = {p.pid for p in self.procs if p.poll() is None}
        for proc in psutil.process_iter(["cmdline"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
            except (psutil.Error, TypeError):
                continue
            if any(t in cmd for t in self.temp_dirs):
                out.add(proc.pid)
        return sorted(out)

    def stop(self) -> None:
        """End this cluster only: SIGTERM to each node's ``ray start --block`` (it stops its own processes), then
        SIGTERM and SIGKILL by PID to whatever of its temp dirs still runs (a head busy shutting down Train's
        actors can take 30 s and more to exit by itself)."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for sig, grace in ((None, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            if sig is not None:
                for pid in self.pids():
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
            deadline = time.monotonic() + grace
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for t in self.temp_dirs:
            shutil.rmtree(t, ignore_errors=True)


def start_cluster(nodes: int = 2, cpus_per_node: int = 1, object_store_bytes: int = 100_000_000,
                  timeout_s: float = 120.0, env: dict | None = None) -> LocalCluster:
    """Start a head and ``nodes - 1`` worker nodes; raises :class:`ClusterUnavailable` (after cleaning up)."""
    if not Path(sys.executable).with_name("ray").exists():
        raise ClusterUnavailable(f"no `ray` CLI next to {sys.executable}")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    env.pop("RAY_ADDRESS", None)
    cluster = LocalCluster()
    try:
        cluster._start_node(True, cpus_per_node, object_store_bytes, env)
        cluster._wait("the head node", lambda: cluster.alive_nodes() >= 1, timeout_s)
        for _ in range(nodes - 1):
            cluster._start_node(False, cpus_per_node, object_store_bytes, env)
        cluster._wait(f"{nodes} nodes", lambda: cluster.alive_nodes() >= nodes, timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster
