"""Decoding inputs and encoding outputs of ``runtime=ray`` on the cluster's CPU-only nodes.

When the workers hold GPUs (``runtime.num_gpus_per_worker`` > 0, or null on a cluster with GPUs) and the cluster has
nodes without GPUs, ``runtime.io_on_cpu_nodes: auto`` moves the two CPU-bound ends of a panorama off the GPU nodes:
the driver names a CPU-only node for each call (in turn), and the worker runs the decode and the encode (the files,
written all-or-nothing as always) as Ray tasks of ``runtime.io_num_cpus`` CPUs there, with a soft node affinity (a
node that is gone or full is replaced by any node with room). The worker keeps only the pipeline; its
``runtime.prefetch`` + 1 calls in flight still overlap reading the next panorama and writing the last one with it.
A task lost with its node is a failed try of the panorama (retried like a worker death, without restarting the
worker); an error raised by the decoder or the writer (a broken input ...) is the panorama's, as in the worker.
"""

from __future__ import annotations

import dataclasses
import pickle

from omegaconf import OmegaConf

from ..errors import UserError
from .jobs import job_for
from .worker import PanoramaTask, read_input, write_outputs

__all__ = ["IOTaskLost", "RemoteIO", "cpu_only_nodes"]


class IOTaskLost(RuntimeError):
    """A decode or encode task was lost with its node or process (the driver retries the panorama)."""


def cpu_only_nodes(nodes: list[dict], num_cpus: float) -> list[str]:
    """Ids of the alive nodes without GPUs that hold a task of ``num_cpus`` CPUs (``ray.nodes()`` entries)."""
    return sorted(n["NodeID"] for n in nodes if n.get("Alive") and not n.get("Resources", {}).get("GPU")
                  and n.get("Resources", {}).get("CPU", 0) >= num_cpus)


class RemoteError(RuntimeError):
    """An error of a decode / encode task that does not survive pickling, as ``<type>: <message>``."""


def _portable(exc: Exception) -> Exception:
    """``exc`` if it crosses processes intact, else a user error with its message (or a :class:`RemoteError`)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return UserError(str(exc)) if isinstance(exc, UserError) else RemoteError(f"{type(exc).__name__}: {exc}")


def _decode(cfg_container: dict, task: PanoramaTask, data: bytes | None):
    try:
        return read_input(task, data, OmegaConf.create(cfg_container))
    except Exception as exc:
        raise _portable(exc) from None


def _encode(cfg_container: dict, task: PanoramaTask, rgb, out, extra: dict, input_info: dict | None,
            num_threads: int) -> dict:
    import torch

    torch.set_num_threads(num_threads)  # the worker's count: the same files as when it writes them itself
    try:
        cfg = OmegaConf.create(cfg_container)
        return write_outputs(cfg, job_for(cfg), task, rgb, out, extra, input_info)
    except Exception as exc:
        raise _portable(exc) from None


class RemoteIO:
    """``io`` of :meth:`~modules.runtime.worker.PanoramaWorker.process` for one call: decode and encode as Ray tasks
    on ``node``. Built inside the worker (the actor); ``cfg_ref``: the resolved config in the object store."""

    def __init__(self, ray, node: str, num_cpus: float, cfg_ref, num_threads: int):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.node, self.cfg_ref = ray, node, cfg_ref
        self.num_threads = num_threads
        strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=True)
        self.decode = ray.remote(_decode).options(num_cpus=num_cpus, max_retries=0, scheduling_strategy=strategy)
        self.encode = ray.remote(_encode).options(num_cpus=num_cpus, max_retries=0, scheduling_strategy=strategy)

    def read(self, task: PanoramaTask, data: bytes | None):
        """(rgb, input info) of :func:`~modules.runtime.worker.read_input`."""
        return self._get(self.decode.remote(self.cfg_ref, task, data), "decoding")

    def write(self, task: PanoramaTask, rgb, out, extra: dict, input_info: dict | None) -> dict:
        # the maps travel on the CPU; the aligned faces are not written (write_outputs reads distance, confidence,
        # timings and info)
        out = dataclasses.replace(out, distance=out.distance.cpu(), confidence=out.confidence.cpu(), faces=None)
        return self._get(self.encode.remote(self.cfg_ref, task, rgb.cpu(), out, extra, input_info, self.num_threads),
                         "writing")

    def _get(self, ref, what: str):
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:  # raised by the decoder / writer: the panorama's error
            raise exc.cause if isinstance(exc.cause, BaseException) else exc from None
        except self.ray.exceptions.RayError as exc:
            text = str(exc).strip().splitlines()
            raise IOTaskLost(f"{what} on node {self.node[:12]} was lost ({type(exc).__name__}: "
                             f"{text[0] if text else ''})") from None
