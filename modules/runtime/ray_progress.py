"""Progress of a ``runtime=ray`` pool across the cluster: the state the driver's bar shows and summary.json's
``executor`` holds (workers ready / starting / dead, running, retried, done per node, deaths, restarts, timeouts), and
a line in the log every ``runtime.progress_interval_s`` seconds."""

from __future__ import annotations

import logging
import time
from collections import Counter

__all__ = ["PoolProgress"]

log = logging.getLogger(__name__)


class PoolProgress:
    """What :class:`~modules.runtime.ray_pool.Pool` reports (a base class: it reads the pool's slots and counters)."""

    def info(self) -> dict:
        states = Counter(s.state for s in self.slots)
        nodes: dict[str, dict] = {}
        for s in self.slots:
            node = s.info.get("node")
            if node and not s.dead:
                nodes.setdefault(node, {"workers": 0, "done": 0})["workers"] += 1
        for node, n in self.done_per_node.items():
            nodes.setdefault(node, {"workers": 0, "done": 0})["done"] = n
        return {
            **self.base_info,
            "workers": len(self.slots),
            "workers_added": self.added,
            "prefetch": self.depth - 1,
            "workers_ready": sum(s.ready and not s.dead for s in self.slots),
            "workers_starting": sum(not s.ready and not s.dead for s in self.slots),
            "workers_dead": states["dead"],
            "running": sum(len(s.calls) for s in self.slots),
            "done": self.finished,
            "retried": len(self.retried),
            "retries": self.retries,
            "worker_deaths": self.deaths,
            "worker_restarts": sum(s.restarts for s in self.slots),
            "timeouts": self.timeouts,
            "inputs_shipped": self.shipped,
            "io_nodes": list(self.io_nodes),
            "io_tasks_lost": self.io_lost,
            "done_per_node": dict(self.done_per_node),
            "nodes": nodes,
            "worker_details": [s.describe() for s in self.slots],
        }

    def report(self, force: bool = False) -> None:
        info = self.info()
        if self.on_status is not None:
            self.on_status(info)
        now = time.monotonic()
        if force or now - self._last_log >= self.progress_interval:
            self._last_log = now
            per_node = ", ".join(f"{n[:12]} {c}" for n, c in sorted(self.done_per_node.items())) or "-"
            log.info("Ray: %d/%d done, %d running, %d retried, %d workers ready, %d starting; done per node: %s",
                     info["done"], self.total, info["running"], info["retried"], info["workers_ready"],
                     info["workers_starting"], per_node)
