"""Executor ``runtime=ray``: panoramas spread over a pool of Ray actors that survives worker and node loss.

Design (why not Ray Data, why not ``max_task_retries``: README, "Ray clusters", "Design"):

* Cluster: ``runtime.address`` null starts a private local Ray instance bound to 127.0.0.1 (``runtime.local_num_cpus``
  CPUs, null = all) and shuts it down at the end; it never joins a running cluster. ``auto`` joins the cluster
  ``ray start`` left on this machine (or ``RAY_ADDRESS``); ``<host>:<port>`` joins that one; ``ray://<head>:10001``
  goes through Ray Client (needs ``ray[client]``). A Ray session already initialised in this process (tests,
  notebooks) is reused as is.
* Workers: ``runtime.num_workers`` actors (null = as many as the cluster holds: one per ``runtime.num_gpus_per_worker``
  GPUs, null = 1 when the cluster has GPUs, else one per ``runtime.num_cpus_per_worker`` CPUs; never more than there
  are panoramas). Each runs :class:`~modules.runtime.worker.PanoramaWorker`: the same code and therefore the same
  files as ``runtime=local`` at the same torch thread count (``runtime.num_threads``, null = the actor's CPUs). More
  actors than the cluster can place now are fine: work starts as soon as the first actor has loaded its models, the
  log says how many fit, the others join when resources appear.
* Actors are created with ``max_restarts=runtime.max_worker_restarts``: Ray itself restarts a worker whose process
  died (crash, out-of-memory kill, lost node, death while loading models) wherever the cluster has room, and we
  ping it (``ready`` with ``max_task_retries=-1``) to learn when it is back. Panorama calls are at-most-once
  (``max_task_retries=0``): a call on a dead worker fails at once and the driver gives the panorama to any worker
  that is ready, so a retry never waits for a replacement that cannot be placed. Every panorama gets at most
  ``runtime.max_retries`` + 1 tries; one that fails all of them is reported with the last reason.
* Overlap: each actor holds ``runtime.prefetch`` + 1 calls (a threaded actor): the next input is decoded and the
  last panorama's files are written while the pipeline runs; the pipeline takes the calls one at a time, in order.
  When an actor dies with several calls in flight each of them counts a try and is then run alone (see
  :class:`_Pool`), so a panorama that kills its worker cannot use up the tries of its neighbours.
* A panorama running longer than ``runtime.task_timeout_s`` counts as a failed try: its worker is killed (Ray
  restarts it) and the panorama goes back to the queue. With work left and no worker ready for
  ``runtime.start_timeout_s`` the remaining panoramas are reported as failed (or, if no worker ever started, the run
  stops with a user error naming Ray's reason). Nothing waits without a bound.
* Inputs: with ``runtime.ship_inputs`` (auto: when the cluster has more than one node) the driver reads each input
  and ships its bytes through the object store (inputs up to ``runtime.ship_max_mb``; larger ones are read by the
  worker from their path). Outputs are written by the workers: ``batch.output_dir`` must be a path every node writes
  at the same place (NFS or similar); the driver checks existing outputs and writes summary.json.
* Progress: ``on_status`` gets the pool's state (workers ready, running, retried, done per node) after every change;
  a line goes to the log every ``runtime.progress_interval_s`` seconds; summary.json's ``executor`` holds the workers
  (id, node, state, panoramas, deaths), the nodes, deaths, retries and timeouts.
* Code on the nodes: the workers import ``modules``; install the project on every node, or ship it with
  ``runtime.runtime_env`` (e.g. ``{working_dir: ., excludes: [outputs, .venv]}``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from ..extras import missing_message
from .staging import remove_staging_of, staging_tag
from .worker import FAILED, PanoramaTask, PanoramaWorker, TaskResult, failure_reason

__all__ = ["run_ray", "RayRuntimeError", "loopback_ray_init"]

log = logging.getLogger(__name__)

#: seconds between checks of timeouts and of the state of the pool while waiting (does not change results)
_POLL_S = 0.5
_MIB = 1 << 20


class RayRuntimeError(UserError, RuntimeError):
    """The Ray cluster cannot be reached or no worker can start."""


class _Turns:
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


class _RayPanoramaWorker:
    """Body of a Ray actor: a :class:`PanoramaWorker` built from the resolved config. The actor is threaded (up to
    ``runtime.prefetch`` + 1 calls at once, plus the ``ready`` ping): one call's input is decoded and the previous
    call's files are written while the pipeline runs, and the pipeline takes the calls in the driver's order."""

    def __init__(self, cfg_container: dict, num_threads: int):
        import ray
        import torch

        torch.set_num_threads(num_threads)
        cfg = OmegaConf.create(cfg_container)
        # an out-of-memory error is the worker's trouble, not the panorama's: the driver retries it elsewhere
        self.worker = PanoramaWorker(cfg, propagate=(ray.exceptions.OutOfMemoryError, MemoryError))
        self.node = ray.get_runtime_context().get_node_id()
        self.turns = _Turns()

    def ready(self) -> dict:
        import ray
        import torch

        return {"worker": self.worker.id, "node": self.node, "tag": staging_tag(), "pid": os.getpid(),
                "torch_threads": torch.get_num_threads(),
                "restarted": ray.get_runtime_context().was_current_actor_reconstructed}

    def process(self, task: PanoramaTask, data: bytes | None, seq: int) -> TaskResult:
        result = self.worker.process(task, data, turn=self.turns.turn(seq))
        result.node = self.node
        return result


def _ray():
    try:
        import ray
    except ImportError:
        raise RayRuntimeError(missing_message("runtime=ray", "ray")) from None
    return ray


@contextlib.contextmanager
def _loopback():
    """While starting or joining Ray in this process, resolve "127.0.0.1" to itself: Ray otherwise replaces a
    loopback address with the machine's outward IP, so nodes started on 127.0.0.1 could not be reached."""
    import ray._private.ray_constants as constants

    previous = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = previous


def loopback_ray_init(**kwargs):
    """``ray.init`` with every address on 127.0.0.1 (a private instance, or a test cluster started on loopback)."""
    ray = _ray()
    with _loopback():
        return ray.init(_node_ip_address="127.0.0.1", **kwargs)


def _connect(rt: DictConfig) -> bool:
    """Start or join Ray; True when this call started/joined it (and so must shut it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    runtime_env = OmegaConf.to_container(rt.runtime_env, resolve=True) if rt.runtime_env is not None else None
    kwargs: dict[str, Any] = {"include_dashboard": False, "runtime_env": runtime_env}
    address = None if rt.address is None else str(rt.address)
    try:
        if address is None:
            loopback_ray_init(address="local", num_cpus=rt.local_num_cpus, **kwargs)
            log.info("started a private Ray instance on 127.0.0.1 (runtime.address=null)")
        else:
            if address.startswith("ray://"):
                kwargs.pop("include_dashboard")
            ray.init(address=address, **kwargs)
    except Exception as exc:
        hint = ""
        if address and address.startswith("ray://"):
            try:
                import grpc  # noqa: F401  (what ray[client] adds)
            except ImportError:
                hint = " (ray:// needs Ray Client: pip install 'ray[client]')"
        raise RayRuntimeError(f"runtime.address={address}: cannot start or join Ray ({exc}){hint}") from exc
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
    n = _fits(resources, cpus, gpus)
    if n < 1:
        raise RayRuntimeError(
            f"the Ray cluster ({resources.get('CPU', 0)} CPUs, {resources.get('GPU', 0)} GPUs) cannot hold one worker "
            f"of {cpus} CPUs and {gpus} GPUs (runtime.num_cpus_per_worker / runtime.num_gpus_per_worker)"
        )
    if rt.num_workers is not None:
        n = int(rt.num_workers)
        if n < 1:
            raise RayRuntimeError(f"runtime.num_workers must be >= 1 or null, got {n}")
    return min(n, num_tasks), cpus, gpus


def _fits(resources: dict, cpus: float, gpus: float) -> int:
    """How many workers of ``cpus`` / ``gpus`` the resources hold."""
    limits = []
    if cpus > 0:
        limits.append(math.floor(resources.get("CPU", 0) / cpus + 1e-9))
    if gpus > 0:
        limits.append(math.floor(resources.get("GPU", 0) / gpus + 1e-9))
    return min(limits) if limits else 1 << 30


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _wait_for_exit(worker: str, timeout: float = 10.0) -> None:
    """Wait (bounded) until the process ``worker`` (``host:pid``) has exited, when it runs on this machine."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        time.sleep(0.05)


def _staging_parent(task: PanoramaTask) -> str:
    return task.output_dir if task.into_existing else str(Path(task.output_dir).parent)


class _Call:
    """One panorama call in flight on an actor. ``clock``: when its time started to count (submitted, or when the
    call before it on the same actor finished); ``worker`` / ``tag``: the process it went to."""

    __slots__ = ("ref", "task", "data_ref", "clock", "worker", "tag")

    def __init__(self, ref, task: PanoramaTask, data_ref, clock: float, worker: str | None, tag: str | None):
        self.ref, self.task, self.data_ref, self.clock, self.worker, self.tag = ref, task, data_ref, clock, worker, tag


class _Slot:
    """One actor and what the driver knows about it: ``ready`` (its constructor finished and no death was seen
    since), ``ready_ref`` (a ping in flight: loading, or being restarted by Ray), ``dead`` (Ray gave up on it), the
    calls in flight (oldest first), ``seq`` (the next call's place in the actor's order)."""

    def __init__(self, key: int, actor):
        self.key, self.actor = key, actor
        self.ready = False
        self.dead = False
        self.ready_ref = None
        self.calls: deque[_Call] = deque()
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


class _Pool:
    """Hands panoramas to ready actors (``depth`` calls in flight each: ``runtime.prefetch`` + 1); turns deaths and
    timeouts into bounded retries.

    Accounting of tries: a call that fails counts as a try of its panorama. When an actor dies with several calls in
    flight, the driver cannot tell which one killed it: all count, and each of them is then run alone on an actor
    ("solo"), so an innocent panorama loses at most one try to a neighbour. A timeout blames the oldest call only;
    the others on that actor go back to the queue without a try counted.
    """

    def __init__(self, ray, actor_cls, cfg: DictConfig, num: int, on_status: Callable[[dict], None] | None,
                 base_info: dict):
        rt = cfg.runtime
        self.ray, self.actor_cls, self.cfg = ray, actor_cls, cfg
        self.num = num
        self.depth = int(rt.prefetch) + 1
        self.max_tries = int(rt.max_retries) + 1
        self.task_timeout = float(rt.task_timeout_s) if rt.task_timeout_s is not None else math.inf
        self.start_timeout = float(rt.start_timeout_s)
        self.progress_interval = float(rt.progress_interval_s)
        self.ship_max = float(rt.ship_max_mb) * _MIB
        self.ship = False
        self.on_status = on_status
        self.base_info = base_info
        self.slots: list[_Slot] = []
        self.attempts: Counter = Counter()
        self.retried: set[int] = set()
        self.solo: set[int] = set()
        self.deaths = self.retries = self.timeouts = self.shipped = 0
        self.done_per_node: Counter = Counter()
        self.zombies: dict = {}  # ref of a call on a killed actor -> _Call: its staging folder is removed later
        self.ever_ready = False
        self.total = 0
        self.finished = 0
        self._last_log = time.monotonic()

    # -- actors ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        container = OmegaConf.to_container(self.cfg, resolve=True)
        for key in range(self.num):
            slot = _Slot(key, self.actor_cls.remote(container, self._threads()))
            self._ping(slot)
            self.slots.append(slot)

    def _threads(self) -> int:
        rt = self.cfg.runtime
        if rt.num_threads:
            return int(rt.num_threads)
        return max(1, math.ceil(float(rt.num_cpus_per_worker)))

    def _ping(self, slot: _Slot) -> None:
        """Ask the actor to report once it runs (again): waits through Ray's restarts (``max_task_retries=-1``) and
        fails only when the actor is dead for good."""
        slot.ready = False
        slot.ready_ref = slot.actor.ready.options(max_task_retries=-1).remote()

    def _on_ready(self, slot: _Slot) -> None:
        previous_pid = slot.info.get("pid")
        ref, slot.ready_ref = slot.ready_ref, None
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError:
            self._ping(slot)
            return
        except Exception as exc:  # dead for good: constructor raised, restarts exhausted, killed
            slot.dead, slot.error = True, _first_line(exc)
            log.warning("Ray worker %d is gone for good: %s", slot.key, slot.error)
            return
        slot.info = info
        pid = info.get("pid")
        if (previous_pid is not None and pid != previous_pid) or (previous_pid is None and info.get("restarted")):
            slot.restarts += 1  # Ray restarted it (while loading, or after a death the driver saw)
        if pid != previous_pid:
            slot.seq = 0  # a new process: its calls are numbered from 0
        slot.ready, slot.error = True, None
        self.ever_ready = True
        log.info("Ray worker %s ready on node %s (%d torch threads)", info.get("worker"), str(info.get("node"))[:12],
                 info.get("torch_threads", 0))

    # -- panoramas ------------------------------------------------------------------------------------------------

    def _dispatch(self, pending: deque) -> None:
        """Every ready actor gets one panorama before any gets a second; a solo panorama only goes to an empty actor,
        and nothing joins it there."""
        for level in range(self.depth):
            for slot in self.slots:
                if not pending:
                    return
                if not slot.ready or slot.dead or len(slot.calls) != level:
                    continue
                if level > 0 and any(c.task.index in self.solo for c in slot.calls):
                    continue
                task = self._take(pending, solo_ok=level == 0)
                if task is not None:
                    self._submit(slot, task)

    def _take(self, pending: deque, solo_ok: bool) -> PanoramaTask | None:
        if solo_ok:
            return pending.popleft()
        for i, task in enumerate(pending):
            if task.index not in self.solo:
                del pending[i]
                return task
        return None

    def _submit(self, slot: _Slot, task: PanoramaTask) -> None:
        self.attempts[task.index] += 1
        data_ref = self._shipped(task)
        ref = slot.actor.process.remote(task, data_ref, slot.seq)
        slot.seq += 1
        slot.calls.append(_Call(ref, task, data_ref, time.monotonic(), slot.info.get("worker"), slot.info.get("tag")))

    def _shipped(self, task: PanoramaTask):
        if not self.ship:
            return None
        try:
            size = os.path.getsize(task.image_path)
            if size > self.ship_max:
                log.warning("%s (%.0f MiB) is larger than runtime.ship_max_mb: the worker reads it from its path",
                            task.image_path, size / _MIB)
                return None
            data = Path(task.image_path).read_bytes()
        except OSError:
            return None  # the worker reports the missing or unreadable file
        self.shipped += 1
        return self.ray.put(data)

    def _remove_call(self, slot: _Slot, call: _Call) -> None:
        was_head = slot.calls and slot.calls[0] is call
        slot.calls.remove(call)
        if was_head and slot.calls:
            slot.calls[0].clock = max(slot.calls[0].clock, time.monotonic())

    def _on_done(self, slot: _Slot, call: _Call, pending: deque) -> TaskResult | None:
        task = call.task
        self._remove_call(slot, call)
        try:
            result = self.ray.get(call.ref)
        except Exception as exc:
            died = not isinstance(exc, self.ray.exceptions.RayTaskError) or isinstance(
                exc, (self.ray.exceptions.OutOfMemoryError, MemoryError))
            if died:
                reason = f"worker died ({type(exc).__name__}: {_first_line(exc)})"
                if slot.ready:  # the first call to report this death: one death, every call in flight shares it
                    self.deaths += 1
                    slot.deaths += 1
                    if slot.calls:
                        self.solo.update([task.index, *(c.task.index for c in slot.calls)])
                    self._ping(slot)  # back to work once Ray has restarted it (at once if it is alive)
            else:
                reason = failure_reason(exc)
            self._clean(task, call.tag)
            return self._retry_or_fail(task, reason, pending)
        slot.panoramas += 1
        result.attempts = self.attempts[task.index]
        return result

    def _retry_or_fail(self, task: PanoramaTask, reason: str, pending: deque) -> TaskResult | None:
        n = self.attempts[task.index]
        if n < self.max_tries:
            log.warning("%s: %s; retrying on any ready worker (try %d of %d)", task.image_path, reason, n + 1,
                        self.max_tries)
            self.retries += 1
            self.retried.add(task.index)
            pending.appendleft(task)
            return None
        log.error("%s: %s; giving up after %d tries", task.image_path, reason, n)
        return TaskResult(task.index, task.name, task.image_path, task.output_dir, FAILED, attempts=n,
                          reason=f"{reason}; gave up after {n} tries")

    def _timeout(self, slot: _Slot, pending: deque) -> TaskResult | None:
        """The oldest call on ``slot`` ran past the timeout: kill the actor (Ray restarts it); that panorama counts
        a try, the others on the actor go back to the queue untouched."""
        head, *others = slot.calls
        elapsed = time.monotonic() - head.clock
        self.timeouts += 1
        slot.timeouts += 1
        for call in slot.calls:
            self.zombies[call.ref] = call
        slot.calls.clear()
        with contextlib.suppress(Exception):
            self.ray.kill(slot.actor, no_restart=False)  # Ray restarts it (within max_worker_restarts)
        self._ping(slot)
        for call in reversed(others):
            self.attempts[call.task.index] -= 1
            pending.appendleft(call.task)
        return self._retry_or_fail(head.task, f"timed out after {elapsed:.0f} s (runtime.task_timeout_s)", pending)

    def _clean(self, task: PanoramaTask, tag: str | None, worker: str | None = None) -> None:
        """Delete what a dead attempt was writing (only its own staging folder: another try may be writing). Ray
        reports a killed actor dead before its process has exited: on this machine, wait for the process first."""
        if worker:
            _wait_for_exit(worker)
        if tag:
            remove_staging_of(_staging_parent(task), task.name, tag=tag)

    # -- the loop -------------------------------------------------------------------------------------------------

    def run(self, tasks: Sequence[PanoramaTask], on_result: Callable[[TaskResult], None], fail_fast: bool) -> None:
        pending: deque[PanoramaTask] = deque(tasks)
        self.total = len(tasks)
        stop = False
        no_worker_since: float | None = None
        while True:
            if not stop:
                self._dispatch(pending)
            busy = any(s.calls for s in self.slots)
            if not busy and (stop or not pending):
                break
            if not busy and not any(s.ready and not s.dead for s in self.slots):  # work left, no worker for it
                now = time.monotonic()
                no_worker_since = no_worker_since or now
                alive = any(not s.dead for s in self.slots)
                waited = now - no_worker_since
                if not alive or waited > self.start_timeout:
                    self._give_up(pending, on_result, waited, alive)
                    break
            else:
                no_worker_since = None
            for result in self._wait(pending):
                self.finished += 1
                if result.node:
                    self.done_per_node[result.node] += 1
                on_result(result)
                stop = stop or (fail_fast and result.status == FAILED)
            self._report()

    def _wait(self, pending: deque) -> list[TaskResult]:
        refs: dict = {}
        for s in self.slots:
            if s.ready_ref is not None:
                refs[s.ready_ref] = (s, None)
            for call in s.calls:
                refs[call.ref] = (s, call)
        for ref, call in self.zombies.items():
            refs[ref] = (None, call)
        now = time.monotonic()
        deadlines = [s.calls[0].clock + self.task_timeout - now for s in self.slots if s.calls]
        timeout = max(0.0, min([_POLL_S, *deadlines]))
        done, _ = self.ray.wait(list(refs), num_returns=1, timeout=timeout, fetch_local=False) if refs else ([], [])
        results = []
        for ref in done:
            slot, call = refs[ref]
            if slot is None:
                self.zombies.pop(ref)
                with contextlib.suppress(Exception):
                    self.ray.get(ref)
                    continue  # it finished after all: its outputs are committed, nothing to clean
                self._clean(call.task, call.tag, call.worker)
            elif call is None:
                self._on_ready(slot)
            else:
                result = self._on_done(slot, call, pending)
                if result is not None:
                    results.append(result)
        now = time.monotonic()
        for slot in self.slots:
            if slot.calls and now - slot.calls[0].clock > self.task_timeout:
                result = self._timeout(slot, pending)
                if result is not None:
                    results.append(result)
        return results

    def _give_up(self, pending: deque, on_result, waited: float, alive: bool) -> None:
        errors = sorted({s.error for s in self.slots if s.error})
        why = "; ".join(errors) or "no reason given by Ray"
        if not self.ever_ready:
            self.stop()
            if alive:
                raise RayRuntimeError(
                    f"no Ray worker started within {waited:.0f} s (runtime.start_timeout_s): the cluster cannot place "
                    f"a worker of {self.base_info['cpus_per_worker']} CPUs and {self.base_info['gpus_per_worker']} "
                    f"GPUs, or loading the models takes longer")
            raise RayRuntimeError(f"Ray workers could not start: {why}")
        reason = (f"no Ray worker left ({why})" if not alive else
                  f"no Ray worker ready for {waited:.0f} s (runtime.start_timeout_s): nodes lost or busy")
        log.error("%s; %d panoramas not done", reason, len(pending))
        while pending:
            task = pending.popleft()
            self.finished += 1
            on_result(TaskResult(task.index, task.name, task.image_path, task.output_dir, FAILED,
                                 attempts=self.attempts[task.index], reason=reason))

    # -- reporting ------------------------------------------------------------------------------------------------

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
            "done_per_node": dict(self.done_per_node),
            "nodes": nodes,
            "worker_details": [s.describe() for s in self.slots],
        }

    def _report(self, force: bool = False) -> None:
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

    def stop(self) -> None:
        """Kill every actor; delete what in-flight calls were writing (after an interrupt or at the end)."""
        inflight = {c.ref: c for s in self.slots for c in s.calls}
        inflight.update(self.zombies)
        for slot in self.slots:
            with contextlib.suppress(Exception):
                self.ray.kill(slot.actor, no_restart=True)
        if inflight:
            with contextlib.suppress(Exception):
                self.ray.wait(list(inflight), num_returns=len(inflight), timeout=10)
            for call in inflight.values():
                self._clean(call.task, call.tag, call.worker)
        self.zombies.clear()


def run_ray(
    cfg: DictConfig,
    tasks: Sequence[PanoramaTask],
    on_result: Callable[[TaskResult], None],
    fail_fast: bool = False,
    on_status: Callable[[dict], None] | None = None,
) -> dict:
    """Process ``tasks`` on Ray actors (see module docstring); ``on_result`` is called on the driver for each.

    Returns a description of the executor for summary.json.
    """
    if not tasks:
        return {"runtime": "ray", "workers": 0}
    ray = _ray()
    rt = cfg.runtime
    for key in ("max_retries", "max_worker_restarts"):
        if int(rt[key]) < 0:
            raise RayRuntimeError(f"runtime.{key} must be >= 0, got {rt[key]}")
    if rt.task_timeout_s is not None and float(rt.task_timeout_s) <= 0:
        raise RayRuntimeError(f"runtime.task_timeout_s must be > 0 or null, got {rt.task_timeout_s}")
    if str(rt.ship_inputs) not in ("auto", "True", "False"):
        raise RayRuntimeError(f"runtime.ship_inputs must be auto, true or false, got {rt.ship_inputs!r}")
    started = _connect_keeping_sigterm(rt)
    pool = None
    try:
        num, cpus, gpus = _plan_workers(rt, ray.cluster_resources(), len(tasks))
        fits_now = _fits(ray.available_resources(), cpus, gpus)
        alive_nodes = [n for n in ray.nodes() if n.get("Alive")]
        if num > fits_now:
            log.warning("%d Ray workers planned (runtime.num_workers=%s, at most one per panorama) but the cluster has "
                        "room for %d of %g CPUs and %g GPUs now: starting with those; the others join when resources "
                        "free up", num, rt.num_workers, fits_now, cpus, gpus)
        prefetch = int(rt.prefetch)
        if prefetch < 0:
            raise RayRuntimeError(f"runtime.prefetch must be >= 0, got {prefetch}")
        actor_cls = ray.remote(_RayPanoramaWorker).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=int(rt.max_worker_restarts), max_task_retries=0,
            max_concurrency=prefetch + 2)  # prefetch + 1 panorama calls and the ready ping
        base = {"runtime": "ray", "address": rt.address, "workers": num, "workers_placeable_at_start": min(num, fits_now),
                "cpus_per_worker": cpus, "gpus_per_worker": gpus, "cluster_nodes": len(alive_nodes),
                "driver_node_ip": ray.util.get_node_ip_address(),
                "max_tries": int(rt.max_retries) + 1, "task_timeout_s": rt.task_timeout_s}
        pool = _Pool(ray, actor_cls, cfg, num, on_status, base)
        ship = rt.ship_inputs
        pool.ship = len(alive_nodes) > 1 if str(ship) == "auto" else bool(ship)
        base["ship_inputs"] = pool.ship
        pool.start()
        pool.run(tasks, on_result, fail_fast)
        pool._report(force=True)
        return pool.info()
    finally:
        if pool is not None:
            pool.stop()
        if started:
            ray.shutdown()
