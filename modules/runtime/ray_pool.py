"""The driver's pool of ``runtime=ray`` actors: hands panoramas to ready actors, turns deaths and timeouts into
bounded retries, and waits on the cluster without ever waiting unbounded (see :mod:`modules.runtime.ray_executor`)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from collections import Counter, deque
from pathlib import Path
from typing import Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from .ray_actor import Call, Slot, first_line
from .ray_cluster import RayRuntimeError, fits
from .ray_io import IOTaskLost
from .ray_progress import PoolProgress
from .remote import is_uri
from .staging import remove_staging_of
from .worker import FAILED, PanoramaTask, TaskResult, failure_reason

__all__ = ["Pool"]

log = logging.getLogger(__name__)

#: seconds between checks of timeouts and of the state of the pool while waiting (does not change results)
_POLL_S = 0.5
_MIB = 1 << 20
#: seconds between looks at the cluster's size for new nodes (does not change results)
_GROW_S = 1.0


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
    if is_uri(task.output_dir):  # no staging folder at a URI (remove_staging_of does nothing)
        return task.output_dir
    return task.output_dir if task.into_existing else str(Path(task.output_dir).parent)



class Pool(PoolProgress):
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
        self.slots: list[Slot] = []
        self.attempts: Counter = Counter()
        self.retried: set[int] = set()
        self.solo: set[int] = set()
        self.deaths = self.retries = self.timeouts = self.shipped = 0
        self.done_per_node: Counter = Counter()
        self.zombies: dict = {}  # ref of a call on a killed actor -> Call: its staging folder is removed later
        self.ever_ready = False
        self.total = 0
        self.finished = 0
        self._last_log = time.monotonic()
        # growth (runtime.num_workers null): actors added when nodes join
        self.fixed_size = rt.num_workers is not None
        self.added = 0
        self._next_grow = time.monotonic() + _GROW_S
        self._container: dict | None = None
        # CPU-only nodes that decode and encode (modules.runtime.ray_io), taken in turn; empty: the workers do it
        self.io_nodes: list[str] = []
        self.io_turn = 0
        self.io_lost = 0

    # -- actors ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._add_actors(self.num)

    def _add_actors(self, n: int) -> None:
        if self._container is None:
            self._container = OmegaConf.to_container(self.cfg, resolve=True)
        for _ in range(n):
            slot = Slot(len(self.slots), self.actor_cls.remote(self._container, self._threads()))
            self._ping(slot)
            self.slots.append(slot)

    def _grow(self, pending: deque) -> None:
        """With ``runtime.num_workers`` null, add actors when nodes have joined: up to as many as the cluster holds
        now (counting every actor this run created, dead ones too: a worker that died for good is not replaced, so
        ``runtime.max_worker_restarts`` stays a bound), never more than the panoramas waiting. Checked every
        ``_GROW_S`` seconds while panoramas wait."""
        now = time.monotonic()
        if self.fixed_size or not pending or now < self._next_grow:
            return
        self._next_grow = now + _GROW_S
        try:
            capacity = fits(self.ray.cluster_resources(), self.base_info["cpus_per_worker"],
                            self.base_info["gpus_per_worker"])
        except Exception:  # the cluster's state is unavailable for a moment: ask again later
            return
        n = min(capacity - len(self.slots), len(pending))
        if n > 0:
            log.info("the Ray cluster has room for %d more worker(s): adding them", n)
            self.added += n
            self._add_actors(n)

    def _threads(self) -> int:
        rt = self.cfg.runtime
        if rt.num_threads:
            return int(rt.num_threads)
        return max(1, math.ceil(float(rt.num_cpus_per_worker)))

    def _ping(self, slot: Slot) -> None:
        """Ask the actor to report once it runs (again): waits through Ray's restarts (``max_task_retries=-1``) and
        fails only when the actor is dead for good."""
        slot.ready = False
        slot.ready_ref = slot.actor.ready.options(max_task_retries=-1).remote()

    def _on_ready(self, slot: Slot) -> None:
        previous_pid = slot.info.get("pid")
        ref, slot.ready_ref = slot.ready_ref, None
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError:
            self._ping(slot)
            return
        except Exception as exc:  # dead for good: constructor raised, restarts exhausted, killed
            slot.dead, slot.error = True, first_line(exc)
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

    def _submit(self, slot: Slot, task: PanoramaTask) -> None:
        self.attempts[task.index] += 1
        data_ref = self._shipped(task)
        io_node = None
        if self.io_nodes and task.outputs == "panorama":  # video frames: the worker keeps its video open
            io_node = self.io_nodes[self.io_turn % len(self.io_nodes)]
            self.io_turn += 1
        ref = slot.actor.process.remote(task, data_ref, slot.seq, io_node)
        slot.seq += 1
        slot.calls.append(Call(ref, task, data_ref, time.monotonic(), slot.info.get("worker"), slot.info.get("tag")))

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

    def _remove_call(self, slot: Slot, call: Call) -> None:
        was_head = slot.calls and slot.calls[0] is call
        slot.calls.remove(call)
        if was_head and slot.calls:
            slot.calls[0].clock = max(slot.calls[0].clock, time.monotonic())

    def _on_done(self, slot: Slot, call: Call, pending: deque) -> TaskResult | None:
        task = call.task
        self._remove_call(slot, call)
        try:
            result = self.ray.get(call.ref)
        except Exception as exc:
            died = not isinstance(exc, self.ray.exceptions.RayTaskError) or isinstance(
                exc, (self.ray.exceptions.OutOfMemoryError, MemoryError))
            if died:
                reason = f"worker died ({type(exc).__name__}: {first_line(exc)})"
                if slot.ready:  # the first call to report this death: one death, every call in flight shares it
                    self.deaths += 1
                    slot.deaths += 1
                    if slot.calls:
                        self.solo.update([task.index, *(c.task.index for c in slot.calls)])
                    self._ping(slot)  # back to work once Ray has restarted it (at once if it is alive)
            elif isinstance(exc, IOTaskLost):
                self.io_lost += 1
                reason = str(exc.cause) if isinstance(getattr(exc, "cause", None), IOTaskLost) else first_line(exc)
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

    def _timeout(self, slot: Slot, pending: deque) -> TaskResult | None:
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
                self._grow(pending)
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
            self.report()

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

