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
  log says how many fit, the others join when resources appear. With ``runtime.num_workers`` null the pool grows
  while panoramas wait: when nodes join, actors are added up to what the cluster holds
  (:meth:`~modules.runtime.ray_pool.Pool._grow`).
* CPU-only nodes: when the actors hold GPUs and the cluster has nodes without GPUs (``runtime.io_on_cpu_nodes``),
  each panorama is decoded and written by Ray tasks on those nodes (:mod:`.ray_io`); the actors run the pipeline.
* Actors are created with ``max_restarts=runtime.max_worker_restarts``: Ray itself restarts a worker whose process
  died (crash, out-of-memory kill, lost node, death while loading models) wherever the cluster has room, and we
  ping it (``ready`` with ``max_task_retries=-1``) to learn when it is back. Panorama calls are at-most-once
  (``max_task_retries=0``): a call on a dead worker fails at once and the driver gives the panorama to any worker
  that is ready, so a retry never waits for a replacement that cannot be placed. Every panorama gets at most
  ``runtime.max_retries`` + 1 tries; one that fails all of them is reported with the last reason.
* Overlap: each actor holds ``runtime.prefetch`` + 1 calls (a threaded actor): the next input is decoded and the
  last panorama's files are written while the pipeline runs; the pipeline takes the calls one at a time, in order.
  When an actor dies with several calls in flight each of them counts a try and is then run alone (see
  :class:`Pool`), so a panorama that kills its worker cannot use up the tries of its neighbours.
* A panorama running longer than ``runtime.task_timeout_s`` counts as a failed try: its worker is killed (Ray
  restarts it) and the panorama goes back to the queue. With work left and no worker ready for
  ``runtime.start_timeout_s`` the remaining panoramas are reported as failed (or, if no worker ever started, the run
  stops with a user error naming Ray's reason). Nothing waits without a bound.
* Inputs: with ``runtime.ship_inputs`` (auto: when the cluster has more than one node) the driver reads each input
  and ships its bytes through the object store (inputs up to ``runtime.ship_max_mb``; larger ones are read by the
  worker from their path). Outputs are written by the workers: ``batch.output_dir`` must be a path every node writes
  at the same place (NFS or similar) or a URI fsspec understands (:mod:`.remote`: each worker uploads its
  panorama's files, the marker last); the driver checks existing outputs and writes summary.json.
* Progress: ``on_status`` gets the pool's state (workers ready, running, retried, done per node) after every change;
  a line goes to the log every ``runtime.progress_interval_s`` seconds; summary.json's ``executor`` holds the workers
  (id, node, state, panoramas, deaths), the nodes, deaths, retries and timeouts.
* Code on the nodes: the workers import ``modules``; install the project on every node, or ship it with
  ``runtime.runtime_env`` (e.g. ``{working_dir: ., excludes: [outputs, .venv]}``).

Files: this one (the entry point, :func:`run_ray`); :mod:`.ray_cluster` (start / join Ray, the worker plan);
:mod:`.ray_actor` (the actor's body and the driver's record of it); :mod:`.ray_pool` (dispatch, retries, timeouts,
growth, the wait loop); :mod:`.ray_progress` (the pool's state for the bar, the log and summary.json);
:mod:`.ray_io` (decode / encode tasks on CPU-only nodes).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

from omegaconf import DictConfig

from .ray_actor import RayPanoramaWorker
from .ray_cluster import RayRuntimeError, connect_keeping_sigterm, fits, import_ray, loopback_ray_init, plan_workers
from .ray_io import cpu_only_nodes
from .ray_pool import Pool
from .worker import PanoramaTask, TaskResult

__all__ = ["run_ray", "RayRuntimeError", "loopback_ray_init"]

log = logging.getLogger(__name__)


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
    ray = import_ray()
    rt = cfg.runtime
    for key in ("max_retries", "max_worker_restarts"):
        if int(rt[key]) < 0:
            raise RayRuntimeError(f"runtime.{key} must be >= 0, got {rt[key]}")
    if rt.task_timeout_s is not None and float(rt.task_timeout_s) <= 0:
        raise RayRuntimeError(f"runtime.task_timeout_s must be > 0 or null, got {rt.task_timeout_s}")
    if str(rt.ship_inputs) not in ("auto", "True", "False"):
        raise RayRuntimeError(f"runtime.ship_inputs must be auto, true or false, got {rt.ship_inputs!r}")
    if str(rt.io_on_cpu_nodes) not in ("auto", "False") or float(rt.io_num_cpus) <= 0:
        raise RayRuntimeError(f"runtime.io_on_cpu_nodes must be auto or false (got {rt.io_on_cpu_nodes!r}) and "
                              f"runtime.io_num_cpus > 0 (got {rt.io_num_cpus})")
    started = connect_keeping_sigterm(rt)
    pool = None
    try:
        num, cpus, gpus = plan_workers(rt, ray.cluster_resources(), len(tasks))
        fits_now = fits(ray.available_resources(), cpus, gpus)
        alive_nodes = [n for n in ray.nodes() if n.get("Alive")]
        if num > fits_now:
            log.warning("%d Ray workers planned (runtime.num_workers=%s, at most one per panorama) but the cluster has "
                        "room for %d of %g CPUs and %g GPUs now: starting with those; the others join when resources "
                        "free up", num, rt.num_workers, fits_now, cpus, gpus)
        prefetch = int(rt.prefetch)
        if prefetch < 0:
            raise RayRuntimeError(f"runtime.prefetch must be >= 0, got {prefetch}")
        actor_cls = ray.remote(RayPanoramaWorker).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=int(rt.max_worker_restarts), max_task_retries=0,
            max_concurrency=prefetch + 2)  # prefetch + 1 panorama calls and the ready ping
        base = {"runtime": "ray", "address": rt.address, "workers_at_start": num,
                "workers_placeable_at_start": min(num, fits_now), "cpus_per_worker": cpus, "gpus_per_worker": gpus,
                "cluster_nodes": len(alive_nodes),
                "driver_node_ip": ray.util.get_node_ip_address(),
                "max_tries": int(rt.max_retries) + 1, "task_timeout_s": rt.task_timeout_s}
        pool = Pool(ray, actor_cls, cfg, num, on_status, base)
        ship = rt.ship_inputs
        pool.ship = len(alive_nodes) > 1 if str(ship) == "auto" else bool(ship)
        base["ship_inputs"] = pool.ship
        if gpus > 0 and str(rt.io_on_cpu_nodes) == "auto":
            pool.io_nodes = cpu_only_nodes(alive_nodes, float(rt.io_num_cpus))
            if pool.io_nodes:
                log.info("inputs are decoded and outputs written on the %d CPU-only node(s) (runtime.io_on_cpu_nodes)",
                         len(pool.io_nodes))
        pool.start()
        pool.run(tasks, on_result, fail_fast)
        pool.report(force=True)
        return pool.info()
    finally:
        if pool is not None:
            pool.stop()
        if started:
            ray.shutdown()

