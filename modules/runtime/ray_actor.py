"""One Ray actor of ``runtime=ray``: its body (:class:`RayPanoramaWorker`, runs in the worker process) and the
driver's record of it (:class:`Slot`: state, calls in flight, counters)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque

from omegaconf import OmegaConf

from .ray_io import IOTaskLost, RemoteIO
from .staging import staging_tag
from .worker import PanoramaTask, PanoramaWorker, TaskResult

__all__ = ["RayPanoramaWorker", "Call", "Slot", "first_line"]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Turns:
    """Calls numbered 0, 1, 2, ... take turns in that order (the pipeline of one actor runs one panorama at a time)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.serving = 0

    @contextlib.contextmanager
    def turn(self, seq: int):
        with self.cond:
            self.cond.wait_for(lambda: self.serving == seq)
        try:
            yield
        finally:
            with self.cond:
                self.serving += 1
                self.cond.notify_all()


class RayPanoramaWorker:
    """Body of a Ray actor: a :class:`PanoramaWorker` built from the resolved config. The actor is threaded (up to
    ``runtime.prefetch`` + 1 calls at once, plus the ``ready`` ping): one call's input is decoded and the previous
    call's files are written while the pipeline runs, and the pipeline takes the calls in the driver's order."""

    def __init__(self, cfg_container: dict, num_threads: int):
        import ray
        import torch

        torch.set_num_threads(num_threads)
        self.cfg = OmegaConf.create(cfg_container)
        # an out-of-memory error is the worker's trouble, not the panorama's, and so is a decode / encode task lost
        # with its node: the driver retries the panorama (elsewhere)
        self.worker = PanoramaWorker(self.cfg, propagate=(ray.exceptions.OutOfMemoryError, MemoryError, IOTaskLost))
        self.node = ray.get_runtime_context().get_node_id()
        self.turns = Turns()
        self.cfg_ref = ray.put(cfg_container)
        self.io: dict[str, RemoteIO] = {}  # per CPU-only node (see modules.runtime.ray_io)

    def ready(self) -> dict:
        import ray
        import torch

        return {"worker": self.worker.id, "node": self.node, "tag": staging_tag(), "pid": os.getpid(),
                "torch_threads": torch.get_num_threads(),
                "restarted": ray.get_runtime_context().was_current_actor_reconstructed}

    def process(self, task: PanoramaTask, data: bytes | None, seq: int, io_node: str | None = None) -> TaskResult:
        """One panorama; decoded and encoded on the node ``io_node`` when given (:mod:`modules.runtime.ray_io`)."""
        import ray
        import torch

        io = None
        if io_node is not None:
            io = self.io.get(io_node)
            if io is None:
                io = self.io[io_node] = RemoteIO(ray, io_node, float(self.cfg.runtime.io_num_cpus), self.cfg_ref,
                                                 torch.get_num_threads())
        result = self.worker.process(task, data, turn=self.turns.turn(seq), io=io)
        result.node = self.node
        return result


class Call:
    """One panorama call in flight on an actor. ``clock``: when its time started to count (submitted, or when the
    call before it on the same actor finished); ``worker`` / ``tag``: the process it went to."""

    __slots__ = ("ref", "task", "data_ref", "clock", "worker", "tag")

    def __init__(self, ref, task: PanoramaTask, data_ref, clock: float, worker: str | None, tag: str | None):
        self.ref, self.task, self.data_ref, self.clock, self.worker, self.tag = ref, task, data_ref, clock, worker, tag


class Slot:
    """One actor and what the driver knows about it: ``ready`` (its constructor finished and no death was seen
    since), ``ready_ref`` (a ping in flight: loading, or being restarted by Ray), ``dead`` (Ray gave up on it), the
    calls in flight (oldest first), ``seq`` (the next call's place in the actor's order)."""

    def __init__(self, key: int, actor):
        self.key, self.actor = key, actor
        self.ready = False
        self.dead = False
        self.ready_ref = None
        self.calls: deque[Call] = deque()
        self.seq = 0
        self.info: dict = {}
        self.panoramas = 0
        self.deaths = 0
        self.restarts = 0
        self.timeouts = 0
        self.error: str | None = None

    @property
    def state(self) -> str:
        if self.dead:
            return "dead"
        if self.calls:
            return "busy"
        return "idle" if self.ready else "starting"

    def describe(self) -> dict:
        return {"worker": self.info.get("worker"), "node": self.info.get("node"), "state": self.state,
                "panoramas": self.panoramas, "deaths": self.deaths, "restarts": self.restarts,
                "timeouts": self.timeouts, "torch_threads": self.info.get("torch_threads"), "error": self.error}

