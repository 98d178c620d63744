"""One panorama end to end inside a worker: read, run the pipeline, write the outputs atomically, report.

The same :class:`PanoramaWorker` runs in the local process and inside every Ray actor, so both paths produce the same
files (byte for byte at the same torch thread count; meta.json records the count as ``torch_threads``). A worker
builds its pipeline (and loads its models) once and reuses it for every panorama it is given.

:meth:`PanoramaWorker.process_stream` overlaps the three stages of consecutive panoramas: a reader thread decodes up
to ``prefetch`` panoramas ahead and a writer thread writes the previous panorama's files while the pipeline runs on
the current one (the local executor uses it; ``runtime.prefetch: 0`` runs the stages one after the other).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from omegaconf import DictConfig

from ..dataset.io import InputError, read_image, read_panorama
from ..dataset.size_guard import check_size
from ..dataset.video import FrameLoader, parse_frame_path
from ..errors import UserError
from ..export.video import write_frame_raw
from .jobs import job_for
from .staging import staged_output

__all__ = ["PanoramaTask", "TaskResult", "PanoramaWorker", "worker_id", "failure_reason", "read_input", "write_outputs"]

log = logging.getLogger(__name__)

#: TaskResult.status values
OK, SKIPPED, FAILED, NOT_RUN = "ok", "skipped", "failed", "not run"


@dataclass(frozen=True)
class PanoramaTask:
    """What a worker needs to process one panorama (plain data: it travels to Ray workers).

    Attributes:
        index: position in the run's input list.
        image_path: absolute path of the input panorama, or a video frame ``<file>#frame=N``.
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
    #: "panorama" (mode=predict's files) or "video_frame" (a frame's raw result, :func:`write_frame_raw`)
    outputs: str = "panorama"


@dataclass
class TaskResult:
    """Outcome of one panorama. ``status``: ok | skipped | failed | not run; ``seconds``: time of its last attempt
    (read + pipeline + writing); ``attempts``: how many workers it was given to; ``user_error``: the failure is a
    problem with the input or setup (a :class:`UserError`), not a bug or a crash; ``worker`` / ``node``: who ran
    the last attempt (``host:pid``, the Ray node id)."""

    index: int
    name: str
    image_path: str
    output_dir: str
    status: str
    reason: str | None = None
    seconds: float = 0.0
    attempts: int = 0
    worker: str | None = None
    node: str | None = None
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


def read_input(task: PanoramaTask, data: bytes | None, cfg: DictConfig, frames: FrameLoader | None = None,
               job=None) -> tuple[torch.Tensor, dict | None]:
    """Decode a task's input: from ``data`` (its bytes, shipped by the driver) when given, else from its path (a
    panorama file, or a video frame ``<file>#frame=N`` decoded by ``frames``, which keeps the video open).
    Returns (rgb, what reading did: conversions and size guard; None for a video frame).

    A panorama file passes the size guard first (:func:`~modules.dataset.size_guard.check_size`, header only):
    refused when too large for the memory budget, downscaled while decoding to ``dataset.max_height``. ``job``: the
    mode's (:func:`~modules.runtime.jobs.job_for` of ``cfg`` when None): panoramas are 2:1, photos any aspect."""
    job = job or job_for(cfg)
    if data is None:
        if parse_frame_path(task.image_path)[1] is not None:  # a video frame "<file>#frame=N"
            return (frames or FrameLoader(min_height=int(cfg.dataset.min_height))).load(task.image_path), None
        return _read_file(cfg, task.image_path, job)
    with tempfile.TemporaryDirectory(prefix="immersivedepth-in-") as tmp:
        local = Path(tmp) / Path(task.image_path).name
        local.write_bytes(data)
        try:
            return _read_file(cfg, local, job)
        except InputError as exc:  # name the file the user gave, not the temporary copy
            raise type(exc)(task.image_path, exc.problem) from None


def _read_file(cfg: DictConfig, path, job) -> tuple[torch.Tensor, dict]:
    decision = check_size(cfg, path)
    if job.panorama:
        rgb, info = read_panorama(path, int(cfg.dataset.min_height), decision.target_height)
    else:  # a photo (mode=single_view): any aspect
        rgb, info = read_image(path, decision.target_height)
    return rgb, {"conversions": info["conversions"], "size_guard": decision.describe()}


def write_outputs(cfg: DictConfig, job, task: PanoramaTask, rgb: torch.Tensor, out, extra: dict,
                  input_info: dict | None) -> dict:
    """Write one task's files all-or-nothing (:func:`~modules.runtime.staging.staged_output`) with the mode's
    ``job`` (:mod:`modules.runtime.jobs`); returns meta.json."""
    with staged_output(task.output_dir, into_existing=task.into_existing) as staging:
        if task.outputs == "video_frame":
            extra = dict(extra)
            meta = write_frame_raw(staging, out, task.image_path, rgb.shape[1], rgb.shape[2], extra.pop("predictor"),
                                   extra)
        else:
            meta = job.write(staging, rgb, out, cfg, task.image_path, extra, input_info)
    t = meta["timings"]
    level = logging.INFO if task.into_existing else logging.DEBUG  # one line per panorama only for one
    log.log(level, "wrote %s (network %.2f s, other stages %.2f s)", task.output_dir, t["network"],
            t["non_network_total"])
    return meta


class PanoramaWorker:
    """Holds one pipeline (models loaded once) and processes panoramas with it.

    Args:
        cfg: the composed, resolved config (``runtime``, ``dataset.min_height`` and every stage group are read).
        predictor: an already loaded predictor to reuse (optional).
        propagate: exception types that are not turned into a failed result but raised to the caller (the Ray
            executor passes out-of-memory errors: the panorama is retried on another worker).
    """

    def __init__(self, cfg: DictConfig, predictor=None, propagate: tuple[type[BaseException], ...] = ()):
        self.cfg = cfg
        self.job = job_for(cfg)
        self.pipeline = self.job.build(cfg, predictor)
        self.id = worker_id()
        self.propagate = tuple(propagate)
        self.frames = FrameLoader(min_height=int(cfg.dataset.min_height))
        #: task index -> what reading it did (conversions, size guard), from read() to write() (other threads)
        self._input_info: dict[int, dict] = {}

    # -- the three stages -------------------------------------------------------------------------------------

    def read(self, task: PanoramaTask, data: bytes | None = None, io=None) -> torch.Tensor:
        """Decode the input (:func:`read_input`), here or with ``io``; what reading did is kept for meta.json."""
        rgb, info = io.read(task, data) if io is not None else read_input(task, data, self.cfg, self.frames, self.job)
        if info is not None:
            self._input_info[task.index] = info
        return rgb

    def compute(self, task: PanoramaTask, rgb: torch.Tensor):
        return self.pipeline.run(rgb, task.image_path)

    def write(self, task: PanoramaTask, rgb: torch.Tensor, out, shipped: bool = False, io=None) -> dict:
        """Write the outputs all-or-nothing (:func:`write_outputs`), here or with ``io``; returns meta.json."""
        extra = {
            "predictor": self.pipeline.predictor.describe(),
            "complete": True,
            "fingerprint": task.fingerprint,
            "torch_threads": torch.get_num_threads(),
            "batch": {"name": task.name, "input_fingerprint": task.input_fingerprint, "worker": self.id,
                      "input_shipped": shipped, "io_node": io.node if io is not None else None},
        }
        input_info = self._input_info.pop(task.index, None)
        if io is not None:
            return io.write(task, rgb, out, extra, input_info)
        return write_outputs(self.cfg, self.job, task, rgb, out, extra, input_info)

    # -- one panorama, or a stream of them ----------------------------------------------------------------------

    def _new_result(self, task: PanoramaTask) -> TaskResult:
        return TaskResult(task.index, task.name, task.image_path, task.output_dir, OK, attempts=1, worker=self.id)

    def _fail(self, result: TaskResult, exc: Exception) -> TaskResult:
        self._input_info.pop(result.index, None)
        if self.propagate and isinstance(exc, self.propagate):
            raise exc
        result.status, result.reason, result.user_error = FAILED, failure_reason(exc), isinstance(exc, UserError)
        if isinstance(exc, UserError):
            log.warning("%s", result.reason)
        else:
            log.warning("%s failed", result.image_path, exc_info=exc)
        return result

    def process(self, task: PanoramaTask, data: bytes | None = None, turn=None, io=None) -> TaskResult:
        """Run one panorama. Errors become a failed result (never raised, except ``propagate``); interrupts
        propagate after cleanup. ``data``: the input's bytes when the driver shipped them. ``turn``: a context
        manager held around the pipeline only (a Ray actor runs several calls in threads: reading and writing
        overlap, the pipeline runs one panorama at a time, in order); it is entered even when reading failed.
        ``io``: decodes and encodes elsewhere (``read(task, data)`` -> (rgb, input info), ``write(task, rgb, out,
        extra, input_info)``, ``node``; the Ray executor's tasks on CPU-only nodes); None: here."""
        start = time.perf_counter()
        result = self._new_result(task)
        turn = turn if turn is not None else contextlib.nullcontext()
        try:
            try:
                rgb = self.read(task, data) if io is None else self.read(task, data, io)
            except Exception:
                with turn:  # give up this call's place in the order
                    pass
                raise
            with turn:
                out = self.compute(task, rgb)
            self.write(task, rgb, out, shipped=data is not None, io=io)
        except Exception as exc:  # one bad panorama must not stop the others
            self._fail(result, exc)
        result.seconds = time.perf_counter() - start
        return result

    def process_stream(self, tasks: Iterable[PanoramaTask], on_result: Callable[[TaskResult], None],
                       prefetch: int = 1, stop: Callable[[TaskResult], bool] = lambda r: False) -> None:
        """Process ``tasks`` in order, calling ``on_result`` once each panorama is written (or failed).

        With ``prefetch`` >= 1 a reader thread decodes up to ``prefetch`` panoramas ahead and a writer thread writes
        one panorama while the next is computed; 0 runs everything in this thread. ``stop(result)`` True ends the
        stream after that result (fail fast). On an interrupt the panorama being written is finished and reported
        (it is committed on disk), the one being computed is dropped, and the interrupt propagates.
        """
        if prefetch <= 0:
            for task in tasks:
                result = self.process(task)
                on_result(result)
                if stop(result):
                    return
            return
        tasks = iter(tasks)
        reads: deque[tuple[PanoramaTask, Future]] = deque()
        writing: tuple[TaskResult, Future, float] | None = None
        reader = ThreadPoolExecutor(1, thread_name_prefix="panorama-read")
        writer = ThreadPoolExecutor(1, thread_name_prefix="panorama-write")

        def timed(fn, *args):
            start = time.perf_counter()
            return fn(*args), time.perf_counter() - start

        def fill() -> None:
            while len(reads) < prefetch:
                task = next(tasks, None)
                if task is None:
                    return
                reads.append((task, reader.submit(timed, self.read, task)))

        def finish_write() -> bool:
            """Wait for the panorama being written, report it; True when the stream must stop."""
            nonlocal writing
            if writing is None:
                return False
            result, future, seconds = writing
            writing = None
            try:
                _, t_write = future.result()
                result.seconds = seconds + t_write
            except Exception as exc:
                self._fail(result, exc)
                result.seconds = seconds
            on_result(result)
            return stop(result)

        try:
            fill()
            while reads:
                task, future = reads.popleft()
                result = self._new_result(task)
                start = time.perf_counter()
                try:
                    rgb, t_read = future.result()
                    fill()
                    out = self.compute(task, rgb)
                    seconds = t_read + time.perf_counter() - start
                except Exception as exc:
                    fill()
                    self._fail(result, exc)
                    result.seconds = time.perf_counter() - start
                    if finish_write():
                        return
                    on_result(result)
                    if stop(result):
                        return
                    continue
                if finish_write():
                    return
                writing = (result, writer.submit(timed, self.write, task, rgb, out), seconds)
            finish_write()
        except BaseException:
            for _, future in reads:
                future.cancel()
            with contextlib.suppress(Exception):
                finish_write()  # committed (or failed) on disk: report it before the interrupt propagates
            raise
        finally:
            reader.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True, cancel_futures=True)
