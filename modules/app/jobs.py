"""Jobs, the queue that runs them one at a time (by default), and per-session folders with their clean-up.

A job is queued when its upload passed the checks; ``concurrency`` worker threads take jobs in submission order and
call the runner (:func:`run_pipeline_job`: :func:`modules.api.run` with ``mode=render_dense``, then the zip of all
outputs). A job that fails records its message and the worker goes on with the next: one bad job never stops the
server. Each browser session (a cookie) gets a folder ``<work_dir>/<session>/``; a session idle for longer than
``session_ttl_s`` with nothing queued or running is deleted, folder and jobs.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
import zipfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError

__all__ = ["Job", "JobQueue", "JobFailed", "QueueFull", "Sessions", "run_pipeline_job", "stage_tracker", "STAGE_LABELS",
           "QUEUED", "RUNNING", "DONE", "FAILED"]

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"

#: what the page shows while each stage runs
STAGE_LABELS = {
    "queued": "waiting for the jobs ahead",
    "projection": "loading the predictor, projecting the panorama onto tangent faces",
    "network": "network: predicting every face",
    "alignment": "alignment: solving per-face scale and shift",
    "blending": "blending the faces into the panorama",
    "refinement": "refinement: removing seams",
    "scale": "scale",
    "export": "export: mesh files, splats, distance and confidence files",
    "packing": "packing the zip of all files",
    "done": "done",
    "failed": "failed",
}
#: the stages of a render_dense run in order (the pipeline reports each one's end; export follows the pipeline)
STAGE_ORDER = ("projection", "network", "alignment", "blending", "refinement", "scale", "export")
#: share of the progress bar for the pipeline's stages; the rest is the export and the zip
PIPELINE_SHARE = 0.8


class JobFailed(UserError):
    """The run ended with a non-zero exit code; the message is the run's own error."""


def stage_tracker(job: "Job", progress: Callable[[str, float], None]) -> Callable[[str, float], None]:
    """Turn the pipeline's reports (``stage`` has ended, ``fraction`` of its stages done) into what runs now."""
    order = [s for s in STAGE_ORDER if s != "refinement" or job.options.get("refinement", "none") != "none"]

    def on_report(stage: str, fraction: float) -> None:
        if stage == "done":
            progress("packing", 0.97)
        elif stage in order:
            progress(order[min(order.index(stage) + 1, len(order) - 1)], PIPELINE_SHARE * fraction)

    return on_report


class QueueFull(Exception):
    """Too many jobs queued or running."""


@dataclass
class Job:
    """One run: where its input and outputs live, and how far it got."""

    id: str
    session: str
    folder: Path
    image_path: Path
    image_name: str
    overrides: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    ground_truth: bool = False
    state: str = QUEUED
    stage: str = "queued"
    fraction: float = 0.0
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    meta: dict = field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"

    @property
    def zip_path(self) -> Path:
        return self.folder / f"immersivedepth_{self.image_path.stem}.zip"

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    def output_files(self) -> list[Path]:
        if self.state != DONE or not self.out_dir.is_dir():
            return []
        return sorted(p for p in self.out_dir.iterdir() if p.is_file() and not p.name.startswith("."))


Runner = Callable[[Job, Callable[[str, float], None]], None]


def run_pipeline_job(job: Job, progress: Callable[[str, float], None]) -> None:
    """Run the job through the pipeline API (exactly what the command line runs), then zip its outputs."""
    from .. import api

    progress("projection", 0.0)
    result = api.run(mode="render_dense", image_path=job.image_path, output_dir=job.out_dir,
                     overrides=job.overrides, progress=stage_tracker(job, progress))
    if result.exit_code != 0:
        raise JobFailed(result.error or f"the run ended with exit code {result.exit_code}")
    job.meta = result.meta or {}
    write_zip(job.out_dir, job.zip_path)


def write_zip(folder: Path, target: Path) -> Path:
    """Every file of ``folder`` in one zip (written beside, then renamed: never a partial zip under its name)."""
    tmp = target.with_name(target.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                z.write(p, arcname=p.name)
    tmp.replace(target)
    return target


class JobQueue:
    """First come, first served; ``concurrency`` jobs run at once, at most ``max_queue`` queued + running."""

    def __init__(self, runner: Runner = run_pipeline_job, concurrency: int = 1, max_queue: int = 16):
        self.runner = runner
        self.max_queue = int(max_queue)
        self._lock = threading.Condition()
        self._pending: deque[Job] = deque()
        self._running: list[Job] = []
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"immersivedepth-job-{i}", daemon=True)
                         for i in range(int(concurrency))]
        for t in self._threads:
            t.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            if len(self._pending) + len(self._running) >= self.max_queue:
                raise QueueFull(f"the server already has {self.max_queue} jobs queued or running; try again later")
            self._pending.append(job)
            self._lock.notify()

    def position(self, job: Job) -> int:
        """Jobs ahead of a queued job (running ones included); 0 once it runs."""
        with self._lock:
            if job.state != QUEUED:
                return 0
            try:
                return len(self._running) + list(self._pending).index(job)
            except ValueError:
                return 0

    def busy(self) -> bool:
        with self._lock:
            return bool(self._pending or self._running)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                job.state, job.started = RUNNING, time.time()
                self._running.append(job)
            self._run(job)
            with self._lock:
                self._running.remove(job)

    def _run(self, job: Job) -> None:
        def progress(stage: str, fraction: float) -> None:
            job.stage = stage
            job.fraction = max(job.fraction, min(1.0, float(fraction)))

        try:
            self.runner(job, progress)
        except Exception as exc:  # any failure ends this job only
            job.error = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            job.state, job.stage = FAILED, "failed"
            if not isinstance(exc, UserError):
                log.exception("job %s failed", job.id)
        else:
            job.state, job.stage, job.fraction = DONE, "done", 1.0
        finally:
            job.finished = time.time()

    def stop(self, timeout: float = 5.0) -> None:
        """Let the workers end after their current job (queued jobs are dropped)."""
        with self._lock:
            self._stopping = True
            self._pending.clear()
            self._lock.notify_all()
        for t in self._threads:
            t.join(timeout)


class Sessions:
    """Session id -> folder, jobs and last request time; expired sessions are deleted by :meth:`cleanup`."""

    def __init__(self, root: Path, ttl_s: float):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = float(ttl_s)
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._jobs: dict[str, dict[str, Job]] = {}

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(18)

    def touch(self, session: str) -> None:
        with self._lock:
            self._seen[session] = time.time()
            self._jobs.setdefault(session, {})

    def known(self, session: str | None) -> bool:
        with self._lock:
            return session is not None and session in self._seen

    def new_job_folder(self, session: str) -> tuple[str, Path]:
        job_id = secrets.token_hex(8)
        folder = self.root / session / job_id
        (folder / "input").mkdir(parents=True)
        return job_id, folder

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs.setdefault(job.session, {})[job.id] = job

    def jobs(self, session: str) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.get(session, {}).values(), key=lambda j: j.created)

    def job(self, session: str, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(session, {}).get(job_id)

    def cleanup(self, now: float | None = None) -> list[str]:
        """Delete sessions idle for more than ``ttl_s`` with no queued or running job; returns their ids."""
        now = time.time() if now is None else now
        with self._lock:
            expired = [s for s, t in self._seen.items()
                       if now - t > self.ttl_s and not any(j.active for j in self._jobs.get(s, {}).values())]
            for s in expired:
                self._seen.pop(s, None)
                self._jobs.pop(s, None)
        for s in expired:
            shutil.rmtree(self.root / s, ignore_errors=True)
        # folders of sessions this process does not know (e.g. from an earlier run in the same work_dir)
        for folder in self.root.iterdir() if self.root.is_dir() else []:
            if folder.is_dir() and not self.known(folder.name) and now - folder.stat().st_mtime > self.ttl_s:
                shutil.rmtree(folder, ignore_errors=True)
                expired.append(folder.name)
        if expired:
            log.info("removed %d expired session folder(s)", len(expired))
        return expired
