"""Ray cluster setup for ``runtime=ray``: start a private instance or join a cluster (``runtime.address``), keep
every address on loopback when asked, and plan the pool (how many actors of how many CPUs / GPUs the cluster holds).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from ..extras import missing_message

__all__ = ["RayRuntimeError", "import_ray", "loopback_ray_init", "connect_keeping_sigterm", "plan_workers", "fits"]

log = logging.getLogger(__name__)


class RayRuntimeError(UserError, RuntimeError):
    """The Ray cluster cannot be reached or no worker can start."""



def import_ray():
    try:
        import ray
    except ImportError:
        raise RayRuntimeError(missing_message("runtime=ray", "ray")) from None
    return ray


@contextlib.contextmanager
def loopback_addresses():
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
    ray = import_ray()
    with loopback_addresses():
        return ray.init(_node_ip_address="127.0.0.1", **kwargs)


def _connect(rt: DictConfig) -> bool:
    """Start or join Ray; True when this call started/joined it (and so must shut it down)."""
    ray = import_ray()
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


def connect_keeping_sigterm(rt: DictConfig) -> bool:
    """:func:`_connect`, then put back the SIGTERM handler ``ray.init`` replaces (it would ``sys.exit`` at once;
    the batch mode's handler stops the run cleanly and writes the summary; ``run_ray`` shuts Ray down itself)."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    started = _connect(rt)
    if main and handler is not None:
        signal.signal(signal.SIGTERM, handler)
    return started


def plan_workers(rt: DictConfig, resources: dict, num_tasks: int) -> tuple[int, float, float]:
    """(number of actors, CPUs per actor, GPUs per actor) from the config and the cluster's resources."""
    cpus = float(rt.num_cpus_per_worker)
    if rt.num_gpus_per_worker is not None:
        gpus = float(rt.num_gpus_per_worker)
    else:
        gpus = 1.0 if resources.get("GPU") else 0.0
    if cpus < 0 or gpus < 0:
        raise RayRuntimeError("runtime.num_cpus_per_worker and runtime.num_gpus_per_worker must be >= 0")
    n = fits(resources, cpus, gpus)
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


def fits(resources: dict, cpus: float, gpus: float) -> int:
    """How many workers of ``cpus`` / ``gpus`` the resources hold."""
    limits = []
    if cpus > 0:
        limits.append(math.floor(resources.get("CPU", 0) / cpus + 1e-9))
    if gpus > 0:
        limits.append(math.floor(resources.get("GPU", 0) / gpus + 1e-9))
    return min(limits) if limits else 1 << 30

