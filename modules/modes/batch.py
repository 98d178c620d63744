"""Every mode that takes panoramas runs here (``mode=predict``, ``equirect``, ``render_dense``, ``voxel``, and the
predictions of ``mode=eval``, which lists its own inputs: :func:`run_batch`), on one
image or a folder, glob or list in ``dataset.image_path``; what each mode computes and writes per panorama is its job
(:mod:`modules.runtime.jobs`).

Flow: list the inputs (:mod:`modules.dataset.listing`) -> name each one's output folder -> fingerprint it
(:mod:`modules.runtime.fingerprint`) -> with ``batch.skip_existing`` leave out those whose finished outputs carry
the same fingerprint -> refuse those the size guard finds too large (:mod:`modules.dataset.size_guard`, header
only) -> run the rest on the executor ``runtime.executor._target_`` names (runtime=local: this process;
runtime=ray: a Ray cluster) with a progress bar -> summary.json next to the outputs (in ``batch.output_dir``, so a
resume into the same folder updates the same file), a table and the output folder on stdout, the exit code
(:mod:`modules.runtime.summary`).

Where outputs go (``batch.output_dir``, default the Hydra run folder ``paths.output_dir``):

* ``image_path`` is one image file: its files go straight into ``batch.output_dir`` (as mode=predict always did).
* a folder, glob or list: each panorama gets ``<batch.output_dir>/<name>/`` (names: :func:`output_names`).

Every panorama is written all-or-nothing (:mod:`modules.runtime.staging`). SIGINT and SIGTERM stop the run cleanly:
a panorama whose files were not committed yet is discarded; summary.json lists every panorama whose outputs are
complete on disk (with this run's fingerprint) as "ok", even one committed while the run was stopping, the rest as
"not run"; "interrupted" names the signal and the exit code is 130 / 143.
To resume a job, point ``batch.output_dir`` (or ``hydra.run.dir``) at the same folder and set
``batch.skip_existing=true``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..dataset.listing import InputListing, list_inputs, output_names
from ..dataset.size_guard import SizeError, check_settings, check_size
from ..device import configure_runtime
from ..errors import UserError
from ..export.depth_files import write_json
from ..runtime import build_executor, executor_name
from ..runtime.fingerprint import config_fingerprint_document, input_fingerprint, panorama_fingerprint
from ..runtime import remote
from ..runtime.staging import is_complete, marker_mtime, remove_stale_staging
from ..runtime.summary import build_summary, format_table
from ..runtime.worker import FAILED, NOT_RUN, OK, SKIPPED, PanoramaTask, TaskResult

__all__ = ["run", "run_batch", "make_tasks", "Terminated", "SUMMARY_FILE"]

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and staging cleanup runs."""


#: the last signal the batch's handler received ("SIGTERM"), cleared when a run starts: an interrupt raised inside
#: library code that re-raises it as a plain KeyboardInterrupt (a C extension waiting) is still reported as SIGTERM
_received: dict[str, str | None] = {"signal": None}


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    _received["signal"] = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _received["signal"] = "SIGTERM"
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def make_tasks(cfg: DictConfig, listing: InputListing, output_root: Path | str) -> list[PanoramaTask]:
    """One task per input: absolute paths, output folder (under a local path or a URI) and fingerprint."""
    fp = cfg.batch.fingerprint
    config_doc = config_fingerprint_document(cfg, fp.sections, fp.ignore_keys)
    if cfg.dataset.get("max_height") is not None:  # panoramas taller than it are processed downscaled
        config_doc = {**config_doc, "dataset": {"max_height": int(cfg.dataset.max_height)}}
    names = [""] if listing.single else output_names(listing.paths)
    tasks = []
    for i, (path, name) in enumerate(zip(listing.paths, names)):
        input_doc = input_fingerprint(path, str(fp.input))
        tasks.append(PanoramaTask(
            index=i,
            image_path=str(Path(path).absolute()),
            name=name,
            output_dir=str(output_root if listing.single else remote.join(str(output_root), name)),
            into_existing=listing.single,
            fingerprint=panorama_fingerprint(config_doc, input_doc),
            input_fingerprint=input_doc,
        ))
    return tasks


def _split_finished(tasks: list[PanoramaTask], skip_existing: bool) -> tuple[dict[int, TaskResult], list]:
    """(results of the tasks whose finished outputs can be reused, the tasks left to run)."""
    done, todo = {}, []
    for t in tasks:
        if skip_existing and is_complete(t.output_dir, t.fingerprint):
            done[t.index] = TaskResult(t.index, t.name, t.image_path, t.output_dir, SKIPPED)
        else:
            todo.append(t)
    if done:
        log.info("skipping %d of %d panoramas: finished outputs with the same fingerprint exist", len(done), len(tasks))
    return done, todo


def _refuse_oversized(cfg: DictConfig, todo: list[PanoramaTask]) -> tuple[dict[int, TaskResult], list]:
    """(failed results of the panoramas the size guard refuses, the rest): header reads only, before any worker
    loads a model, so a too-large panorama is refused in a second (the workers check again, e.g. on Ray nodes)."""
    refused, rest = {}, []
    for t in todo:
        try:
            check_size(cfg, t.image_path)
        except SizeError as exc:
            log.error("%s", exc)
            refused[t.index] = TaskResult(t.index, t.name, t.image_path, t.output_dir, FAILED, reason=str(exc),
                                          user_error=True)
            continue
        except UserError:  # unreadable, missing ...: the worker reports it as it reads
            pass
        rest.append(t)
    return refused, rest


def _status_text(status: dict) -> dict:
    """Progress-bar fields from an executor's status: running / retried counts and done per node."""
    fields = {k: status[k] for k in ("running", "retried", "workers_ready") if status.get(k) is not None}
    nodes = status.get("done_per_node") or {}
    if len(nodes) > 1 or (nodes and status.get("runtime") == "ray"):
        fields["per_node"] = " ".join(f"{node[:6]}:{n}" for node, n in sorted(nodes.items()))
    return fields


def _execute(executor, cfg: DictConfig, todo: list[PanoramaTask], results: dict[int, TaskResult], total: int,
             progress: bool, fail_fast: bool) -> tuple[dict, str | None]:
    """Run ``todo`` with a progress bar, filling ``results``; returns (executor info, interrupting signal or None).

    The executor reports results (``on_result``) and, Ray only, its state (``on_status``: workers, nodes, deaths,
    retries, running, done per node) which goes on the bar; the last state is the executor info after an interrupt.
    """
    bar = tqdm(total=total, initial=len(results), unit="pano", desc="panoramas", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    failures = 0
    last_status: dict = {"runtime": executor_name(cfg.runtime)}

    def on_result(result: TaskResult) -> None:
        nonlocal failures
        results[result.index] = result
        failures += result.status == FAILED
        bar.set_postfix(failed=failures, **_status_text(last_status), refresh=False)
        bar.update(1)

    def on_status(status: dict) -> None:
        last_status.clear()
        last_status.update(status)
        bar.set_postfix(failed=failures, **_status_text(status))

    try:
        with _sigterm_as_interrupt():
            return executor(cfg, todo, on_result, fail_fast, on_status=on_status), None
    except KeyboardInterrupt as exc:
        interrupted = "SIGTERM" if isinstance(exc, Terminated) or _received["signal"] == "SIGTERM" else "SIGINT"
        log.error("interrupted (%s): unfinished outputs were discarded", interrupted)
        return dict(last_status), interrupted
    finally:
        bar.close()


def _committed_during_run(task: PanoramaTask, since: float) -> bool:
    """The panorama's outputs are complete on disk with this run's fingerprint and were committed after ``since``
    (wall clock): a worker finished it while the run was being stopped."""
    if not is_complete(task.output_dir, task.fingerprint):
        return False
    mtime = marker_mtime(task.output_dir)
    return mtime is not None and mtime >= since


def run(cfg: DictConfig) -> int:
    """Process every panorama ``dataset.image_path`` names; returns the exit code (see module docstring)."""
    return run_batch(cfg)["exit_code"]


def run_batch(cfg: DictConfig, inputs: InputListing | None = None,
              adjust: Callable[[list[PanoramaTask]], list[PanoramaTask]] | None = None) -> dict:
    """The batch run (module docstring); returns summary.json's content. ``inputs``: the panoramas to process
    (default: ``dataset.image_path`` listed); ``adjust``: changes the tasks before the resume check (mode=eval adds
    the paired ground truth to each fingerprint)."""
    configure_runtime(cfg)
    check_settings(cfg)  # a bad dataset.max_memory_gb / max_height stops the job here (exit 2), not per panorama
    b = cfg.batch
    executor = build_executor(cfg.runtime)
    run_dir = Path(str(cfg.paths.output_dir)).absolute()
    # a local path (file:// too), or a URI fsspec understands (modules/runtime/remote.py: the workers upload)
    output_root: Path | str = str(b.output_dir).rstrip("/")
    if remote.is_uri(output_root):
        remote.check(output_root)
    else:
        output_root = Path(remote.local_path(str(b.output_dir))).absolute()
    listing = inputs or list_inputs(str(cfg.dataset.image_path), b.extensions, b.list_suffixes, bool(b.recursive),
                                    exclude=[p for p in (output_root, run_dir) if isinstance(p, Path)])
    tasks = make_tasks(cfg, listing, output_root)
    if adjust is not None:
        tasks = adjust(tasks)
    remove_stale_staging(output_root)
    results, todo = _split_finished(tasks, bool(b.skip_existing))
    refused, todo = _refuse_oversized(cfg, todo)
    results.update(refused)
    if b.fail_fast and refused:
        todo = []
    # workers get the resolved config: Hydra's interpolations (${hydra:...}) cannot be resolved outside this process
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    start, started_at = time.perf_counter(), time.time() - 1.0  # mtime granularity
    info, interrupted = _execute(executor, resolved, todo, results, len(tasks), bool(b.progress), bool(b.fail_fast))
    wall = time.perf_counter() - start
    why = "interrupted" if interrupted else "stopped after a failure (fail_fast)"
    for t in tasks:
        if t.index in results:
            continue
        if _committed_during_run(t, started_at):  # the disk says it is done: list it so
            results[t.index] = TaskResult(t.index, t.name, t.image_path, t.output_dir, OK, attempts=1,
                                          reason=f"committed while the run was stopping ({why})")
        else:
            results[t.index] = TaskResult(t.index, t.name, t.image_path, t.output_dir, NOT_RUN, reason=why)
    ordered = [results[t.index] for t in tasks]
    summary = build_summary(ordered, info, wall, interrupted, listing.source, str(output_root), listing.single)
    if isinstance(output_root, Path):
        summary_path = output_root / SUMMARY_FILE
        write_json(summary_path, summary)
    else:  # at a URI: written in the run folder, then uploaded next to the outputs
        write_json(run_dir / SUMMARY_FILE, summary)
        summary_path = remote.join(output_root, SUMMARY_FILE)
        remote.upload(run_dir / SUMMARY_FILE, summary_path)
    print(format_table(ordered, int(b.table_max_rows)), flush=True)
    print(f"outputs: {output_root}" + (f" (run folder {run_dir})" if run_dir != output_root else ""), flush=True)
    log.info("summary: %s", summary_path)
    return summary
