"""One panorama end to end inside a worker: read, run the pipeline, write the outputs atomically, report.

The same :class:`PanoramaWorker` runs in the local process and inside every Ray actor, so both paths produce the same
files. A worker builds its pipeline (and loads its models) once and reuses it for every panorama it is given.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from ..dataset.io import load_panorama
from ..errors import UserError
from ..export.outputs import write_panorama_outputs
from ..pipeline import build_pipeline
from .staging import staged_output

__all__ = ["PanoramaTask", "TaskResult", "PanoramaWorker", "worker_id", "failure_reason"]

log = logging.getLogger(__name__)

#: TaskResult.status values
OK, SKIPPED, FAILED, NOT_RUN = "ok", "skipped", "failed", "not run"


@dataclass(frozen=True)
class PanoramaTask:
    """What a worker needs to process one panorama (plain data: it travels to Ray workers).

    Attributes:
        index: position in the run's input list.
        image_path: absolute path of the input panorama.
        name: output name ("" for a single panorama written straight into ``output_dir``).
        output_dir: absolute path of the panorama's output folder.
        into_existing: True for a single panorama (files moved into the run folder), False for a folder of its own.
        fingerprint: see :mod:`modules.runtime.fingerprint`; stored in meta.json.
        input_fingerprint: the input part of it (stored in meta.json for inspection).
    """

    index: int
    image_path: str
    name: str
    output_dir: str
    into_existing: bool
    fingerprint: str
    input_fingerprint: dict = field(default_factory=dict)


@dataclass
class TaskResult:
    """Outcome of one panorama. ``status``: ok | skipped | failed | not run; ``seconds``: wall time of its last
    attempt (read + pipeline + writing); ``attempts``: how many workers it was given to; ``user_error``: the failure
    is a problem with the input or setup (a :class:`UserError`), not a bug or a crash."""

    index: int
    name: str
    image_path: str
    output_dir: str
    status: str
    reason: str | None = None
    seconds: float = 0.0
    attempts: int = 0
    worker: str | None = None
    user_error: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def failure_reason(exc: BaseException) -> str:
    """A user error's message as is (it names the file and the problem); anything else with its type."""
    if isinstance(exc, UserError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class PanoramaWorker:
    """Holds one pipeline (models loaded once) and processes panoramas with it.

    Args:
        cfg: the composed, resolved config (``runtime``, ``dataset.min_height`` and every stage group are read).
        predictor: an already loaded predictor to reuse (optional).
    """

    def __init__(self, cfg: DictConfig, predictor=None):
        self.cfg = cfg
        self.pipeline = build_pipeline(cfg, predictor)
        self.id = worker_id()

    def process(self, task: PanoramaTask) -> TaskResult:
        """Run one panorama. Errors become a failed result (never raised); interrupts propagate after cleanup."""
        start = time.perf_counter()
        result = TaskResult(task.index, task.name, task.image_path, task.output_dir, OK, attempts=1, worker=self.id)
        try:
            rgb = load_panorama(task.image_path, min_height=int(self.cfg.dataset.min_height))
            out = self.pipeline.run(rgb, task.image_path)
            extra = {
                "predictor": self.pipeline.predictor.describe(),
                "complete": True,
                "fingerprint": task.fingerprint,
                "batch": {"name": task.name, "input_fingerprint": task.input_fingerprint, "worker": self.id},
            }
            with staged_output(Path(task.output_dir), into_existing=task.into_existing) as staging:
                meta = write_panorama_outputs(staging, rgb, out, self.cfg, task.image_path, extra)
            t = meta["timings"]
            level = logging.INFO if task.into_existing else logging.DEBUG  # one line per panorama only for one
            log.log(level, "wrote %s (network %.2f s, other stages %.2f s)", task.output_dir, t["network"],
                    t["non_network_total"])
        except Exception as exc:  # one bad panorama must not stop the others
            result.status, result.reason, result.user_error = FAILED, failure_reason(exc), isinstance(exc, UserError)
            if isinstance(exc, UserError):
                log.warning("%s", result.reason)
            else:
                log.warning("%s failed", task.image_path, exc_info=True)
        result.seconds = time.perf_counter() - start
        return result
