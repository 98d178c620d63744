"""Executor ``runtime=local``: every panorama in this process, one after the other, with one loaded pipeline."""

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
) -> dict:
    """Process ``tasks`` in order, calling ``on_result`` after each; stop after the first failure with ``fail_fast``.

    Returns a description of the executor for summary.json.
    """
    if not tasks:
        return {"runtime": "local", "workers": 0}
    worker = PanoramaWorker(cfg)
    for task in tasks:
        result = worker.process(task)
        on_result(result)
        if fail_fast and result.status == FAILED:
            break
    return {"runtime": "local", "workers": 1}
