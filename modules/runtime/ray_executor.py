"""Executor ``runtime=ray``: panoramas spread over Ray actors, each loading its models once.

* Cluster: ``runtime.address`` null starts a local Ray instance (``runtime.local_num_cpus`` CPUs, null = all) and shuts
  it down at the end; ``auto`` or ``ray://<head>:10001`` joins an existing cluster (only disconnects at the end). A
  Ray session that is already initialised in this process (tests, notebooks) is reused as is.
* Workers: one actor per ``runtime.num_gpus_per_worker`` GPUs (null: 1 when the cluster has GPUs, else 0), or per
  ``runtime.num_cpus_per_worker`` CPUs; ``runtime.num_workers`` null = as many as the cluster holds (never more
  than there are panoramas). Each actor runs :class:`~modules.runtime.worker.PanoramaWorker`: the same code and
  therefore the same files as ``runtime=local``. Ray pins an actor to its GPU(s) through CUDA_VISIBLE_DEVICES, so
  ``runtime.device: auto`` picks that GPU.
* Scheduling: one panorama in flight per actor; the next is handed to whichever actor finishes first.
* Dead workers: when an actor process dies (killed, out of memory, node lost) its panorama is given to a fresh actor,
  at most ``runtime.max_retries`` more times; after that it is reported as failed. Ordinary errors (a corrupt file)
  are reported by the worker itself and never retried.
* Outputs are written by the workers, so ``batch.output_dir`` must be a path every node can write at the same place
  (a shared filesystem such as NFS); the driver checks for existing outputs and writes summary.json.
* Code on the nodes: the workers import ``modules``; install the project on every node (``pip install -e .`` on the
  shared filesystem), or ship it with ``runtime.runtime_env`` (e.g. ``{working_dir: ., excludes: [outputs, .venv]}``).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from ..device import configure_runtime
from ..errors import UserError
from .staging import remove_staging_of
from .worker import FAILED, PanoramaTask, PanoramaWorker, TaskResult

__all__ = ["run_ray", "RayRuntimeError"]

log = logging.getLogger(__name__)


class RayRuntimeError(UserError, RuntimeError):
    """The Ray cluster cannot be reached or the workers cannot start."""


class _RayPanoramaWorker:
    """Body of a Ray actor: a :class:`PanoramaWorker` built from the resolved config."""

    def __init__(self, cfg_container: dict):
        cfg = OmegaConf.create(cfg_container)
        configure_runtime(cfg)
        self.worker = PanoramaWorker(cfg)

    def ready(self) -> str:
        return self.worker.id

    def process(self, task: PanoramaTask) -> TaskResult:
        return self.worker.process(task)


def _ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a normal dependency
        raise RayRuntimeError("runtime=ray needs the ray package: pip install 'ray>=2.30'") from exc
    return ray


def _connect(rt: DictConfig) -> bool:
    """Start or join Ray; True when this call started/joined it (and so must shut it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    runtime_env = OmegaConf.to_container(rt.runtime_env, resolve=True) if rt.runtime_env is not None else None
    kwargs: dict[str, Any] = {"include_dashboard": False, "runtime_env": runtime_env}
    try:
        if rt.address:
            ray.init(address=str(rt.address), **kwargs)
        else:
            ray.init(num_cpus=rt.local_num_cpus, **kwargs)
    except Exception as exc:
        raise RayRuntimeError(f"runtime.address={rt.address}: cannot start or join Ray ({exc})") from exc
    return True


def _connect_keeping_sigterm(rt: DictConfig) -> bool:
    """:func:`_connect`, then put back the SIGTERM handler ``ray.init`` replaces (it would ``sys.exit`` at once;
    the batch mode's handler stops the run cleanly and writes the summary; ``run_ray`` shuts Ray down itself)."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    started = _connect(rt)
    if main and handler is not None:
        signal.signal(signal.SIGTERM, handler)
    return started


def _plan_workers(rt: DictConfig, resources: dict, num_tasks: int) -> tuple[int, float, float]:
    """(number of actors, CPUs per actor, GPUs per actor) from the config and the cluster's resources."""
    cpus = float(rt.num_cpus_per_worker)
    if rt.num_gpus_per_worker is not None:
        gpus = float(rt.num_gpus_per_worker)
    else:
        gpus = 1.0 if resources.get("GPU") else 0.0
    if cpus < 0 or gpus < 0:
        raise RayRuntimeError("runtime.num_cpus_per_worker and runtime.num_gpus_per_worker must be >= 0")
    if rt.num_workers is not None:
        n = int(rt.num_workers)
    elif gpus > 0:
        n = math.floor(resources.get("GPU", 0) / gpus)
    else:
        n = math.floor(resources.get("CPU", 0) / cpus) if cpus > 0 else 1
    if n < 1:
        raise RayRuntimeError(
            f"the Ray cluster ({resources.get('CPU', 0)} CPUs, {resources.get('GPU', 0)} GPUs) cannot hold one worker "
            f"of {cpus} CPUs and {gpus} GPUs (runtime.num_cpus_per_worker / runtime.num_gpus_per_worker)"
        )
    return min(n, num_tasks), cpus, gpus


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Dispatcher:
    """Hands tasks to ``num`` actors, one in flight each, and replaces actors that die (see module docstring)."""

    def __init__(self, ray, remote_cls, cfg_container: dict, num: int, max_retries: int, died_errors: tuple):
        self.ray, self.remote_cls, self.cfg_container = ray, remote_cls, cfg_container
        self.num, self.max_retries, self.died_errors = num, max_retries, died_errors
        self.all_actors: list = []
        self.idle: list = []
        self.in_flight: dict = {}  # ObjectRef -> (actor, task)
        self.attempts: dict[int, int] = {}
        self.deaths = 0

    def start(self) -> None:
        """Start ``num`` actors and wait until every one has loaded its models."""
        self.idle = [self._new_actor() for _ in range(self.num)]
        try:
            self.ray.get([a.ready.remote() for a in self.idle])
        except self.died_errors as exc:
            raise RayRuntimeError(f"Ray workers could not start: {exc}") from exc

    def _new_actor(self):
        actor = self.remote_cls.remote(self.cfg_container)
        self.all_actors.append(actor)
        return actor

    def run(self, tasks: Sequence[PanoramaTask], on_result: Callable[[TaskResult], None], fail_fast: bool) -> None:
        pending: deque[PanoramaTask] = deque(tasks)
        stop = False
        while self.in_flight or (pending and not stop):
            while pending and not stop and (self.idle or len(self.in_flight) + len(self.idle) < self.num):
                actor = self.idle.pop() if self.idle else self._new_actor()  # a replacement for a dead one
                task = pending.popleft()
                self.attempts[task.index] = self.attempts.get(task.index, 0) + 1
                self.in_flight[actor.process.remote(task)] = (actor, task)
            done, _ = self.ray.wait(list(self.in_flight), num_returns=1)
            for ref in done:
                result = self._collect(ref, pending)
                if result is not None:
                    on_result(result)
                    stop = stop or (fail_fast and result.status == FAILED)

    def _collect(self, ref, pending: deque) -> TaskResult | None:
        """The finished task's result; None when its worker died and the task went back into ``pending``."""
        actor, task = self.in_flight.pop(ref)
        n = self.attempts[task.index]
        try:
            result = self.ray.get(ref)
            self.idle.append(actor)
        except self.died_errors as exc:
            self.deaths += 1
            _kill(self.ray, actor)
            remove_staging_of(_staging_parent(task), task.name)
            if n <= self.max_retries:
                log.warning("worker died on %s (%s); retrying (attempt %d of %d)", task.image_path,
                            _first_line(exc), n + 1, self.max_retries + 1)
                pending.appendleft(task)
                return None
            result = TaskResult(task.index, task.name, task.image_path, task.output_dir, FAILED,
                                reason=f"worker died {n} times ({_first_line(exc)})")
        result.attempts = n
        return result

    def stop(self) -> None:
        """Kill every actor; after an interrupt, wait for them and delete what they were writing."""
        for actor in self.all_actors:
            _kill(self.ray, actor)
        if self.in_flight:
            self.ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=30)
            for _, task in self.in_flight.values():
                remove_staging_of(_staging_parent(task), task.name)


def run_ray(
    cfg: DictConfig,
    tasks: Sequence[PanoramaTask],
    on_result: Callable[[TaskResult], None],
    fail_fast: bool = False,
) -> dict:
    """Process ``tasks`` on Ray actors (see module docstring); ``on_result`` is called on the driver for each.

    Returns a description of the executor for summary.json.
    """
    if not tasks:
        return {"runtime": "ray", "workers": 0}
    ray = _ray()
    from ray.exceptions import ObjectLostError, RayActorError, WorkerCrashedError

    rt = cfg.runtime
    max_retries = int(rt.max_retries)
    if max_retries < 0:
        raise RayRuntimeError(f"runtime.max_retries must be >= 0, got {max_retries}")
    started = _connect_keeping_sigterm(rt)
    dispatcher = None
    try:
        num, cpus, gpus = _plan_workers(rt, ray.cluster_resources(), len(tasks))
        remote_cls = ray.remote(_RayPanoramaWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0)
        dispatcher = _Dispatcher(ray, remote_cls, OmegaConf.to_container(cfg, resolve=True), num, max_retries,
                                 (RayActorError, WorkerCrashedError, ObjectLostError))
        dispatcher.start()
        dispatcher.run(tasks, on_result, fail_fast)
        return {"runtime": "ray", "workers": num, "cpus_per_worker": cpus, "gpus_per_worker": gpus,
                "worker_deaths": dispatcher.deaths, "address": rt.address}
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        if started:
            ray.shutdown()


def _staging_parent(task: PanoramaTask) -> str:
    return task.output_dir if task.into_existing else str(Path(task.output_dir).parent)


def _kill(ray, actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone
        pass
