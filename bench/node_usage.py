"""What each node of a local Ray cluster used during a stage: RSS of all its processes and CPU seconds.

A node started with ``ray start --block`` (tests/ray_cluster.py) is that process and its descendants (GCS, raylet,
dashboard, Ray workers, which rename themselves, so they are found by parentage, not by command line). CPU seconds
of a process are its user + system time when last seen: a worker that ends between two samples (0.2 s apart) loses
at most that much.
"""
from __future__ import annotations

import psutil


class NodeUsage:
    """Samples the processes of each node (one root PID per node) and sums what they used since construction."""

    def __init__(self, roots: list[int]):
        self.roots = roots
        self.start: list[dict[int, float]] = [dict(self._cpu(r)) for r in roots]
        self.last: list[dict[int, float]] = [dict(s) for s in self.start]

    @staticmethod
    def _procs(root: int) -> list[psutil.Process]:
        try:
            p = psutil.Process(root)
            return [p, *p.children(recursive=True)]
        except psutil.Error:
            return []

    def _cpu(self, root: int):
        for p in self._procs(root):
            try:
                t = p.cpu_times()
                yield p.pid, t.user + t.system
            except psutil.Error:
                pass

    def sample(self) -> int:
        """Sum of RSS in bytes over every node's processes now (and their CPU times recorded)."""
        total = 0
        for i, root in enumerate(self.roots):
            for p in self._procs(root):
                try:
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    self.last[i][p.pid] = t.user + t.system
                except psutil.Error:
                    pass
        return total

    def cpu_seconds(self) -> list[float]:
        """CPU seconds each node's processes used since construction."""
        return [round(sum(v - s.get(pid, 0.0) for pid, v in last.items()), 1)
                for s, last in zip(self.start, self.last)]
