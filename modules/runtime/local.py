"""Executor ``runtime=local``: every panorama in this process with one loaded pipeline.

Reading the next panoramas (``runtime.prefetch`` ahead) and writing the last one overlap with the pipeline
(:meth:`~modules.runtime.worker.PanoramaWorker.process_stream`); ``runtime.prefetch: 0`` runs them one after another.
"""

from __future__ import annotations

from typing import Callable, Sequence

from omegaconf import DictConfig

from .worker import FAILED, PanoramaTask, PanoramaWorker, TaskResult

__all__ = ["run_local"]


def run_local(
    cfg: DictConfig,
    tasks: Sequence[PanoramaTask],
    on_result: Callable[[TaskResult], None],
    fail_fast: bool = False,
    on_status: Callable[[dict], None] | None = None,
) -> dict:
    """Process ``tasks`` in order, calling ``on_result`` after each; stop after the first failure with ``fail_fast``.

    Returns a description of the executor for summary.json.
    """
    prefetch = int(cfg.runtime.prefetch)
    if prefetch < 0:
        raise ValueError(f"runtime.prefetch must be >= 0, got {prefetch}")
    if not tasks:
        return {"runtime": "local", "workers": 0, "prefetch": prefetch}
    import torch

    worker = PanoramaWorker(cfg)
    worker.process_stream(tasks, on_result, prefetch=prefetch, stop=lambda r: fail_fast and r.status == FAILED)
    return {"runtime": "local", "workers": 1, "worker": worker.id, "prefetch": prefetch,
            "torch_threads": torch.get_num_threads()}
