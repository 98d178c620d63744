"""Batch runs in this process: broken inputs, resume, fingerprints, atomicity on errors and interrupts."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose, write_scene
from modules.modes import batch
from modules.runtime import remote
from modules.runtime import jobs as jobs_module
from modules.runtime import worker as worker_module

#: tiny and fast: every test panorama is 64 x 32
FAST = ["predictor=synthetic", "projection.face_size=32", "alignment.sample_height=32", "batch.progress=false", "runtime.device=cpu"]


def make_folder(root: Path, good: int = 2, broken: bool = True) -> Path:
    """root/scene<i>/rgb.png (+ distance.npy) and, with ``broken``, root/broken/{corrupt,wide,empty}.png."""
    for i in range(good):
        write_scene(root / f"scene{i}", seed=i, height=32)
    if broken:
        (root / "broken").mkdir(parents=True)
        good_png = (root / "scene0" / "rgb.png").read_bytes()
        (root / "broken" / "corrupt.png").write_bytes(good_png[: len(good_png) // 3])
        Image.fromarray(np.zeros((32, 96, 3), np.uint8)).save(root / "broken" / "wide.png")
        (root / "broken" / "empty.png").write_bytes(b"")
    return root


def run_batch(image_path, run_dir: Path, *overrides: str) -> tuple[int, dict]:
    cfg = compose([f"dataset.image_path={image_path}", f"paths.output_dir={run_dir}", *FAST, *overrides])
    code = batch.run(cfg)
    out = str(cfg.batch.output_dir)
    if remote.is_uri(out):  # summary.json next to the outputs at a URI (tests/test_remote_outputs.py)
        return code, json.loads(remote.read_bytes(remote.join(out, batch.SUMMARY_FILE)))
    return code, json.loads((Path(remote.local_path(out)) / batch.SUMMARY_FILE).read_text())


def statuses(summary: dict) -> dict[str, str]:
    return {p["name"]: p["status"] for p in summary["panoramas"]}


def visible_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def hidden_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".hydra")


@pytest.fixture(scope="module")
def tour(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("tour"))


@pytest.fixture(scope="module")
def first_run(tour, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    code, summary = run_batch(tour, out)
    return out, code, summary


def test_good_panoramas_finish_and_broken_ones_are_reported(first_run, capsys):
    out, code, summary = first_run
    assert code == 1
    assert statuses(summary) == {"scene0-rgb": "ok", "scene1-rgb": "ok",
                                 "corrupt": "failed", "wide": "failed", "empty": "failed"}
    reasons = {p["name"]: p["reason"] for p in summary["panoramas"]}
    assert "cannot be read as an image" in reasons["corrupt"] and "corrupt.png" in reasons["corrupt"]
    assert "twice as wide as high" in reasons["wide"]
    assert "empty" in reasons["empty"]
    assert summary["succeeded"] == 2 and summary["failed"] == 3 and summary["exit_code"] == 1
    assert all(p["seconds"] > 0 for p in summary["panoramas"] if p["status"] == "ok")
    assert visible_dirs(out) == ["scene0-rgb", "scene1-rgb"] and hidden_entries(out) == []
    meta = json.loads((out / "scene0-rgb" / "meta.json").read_text())
    assert meta["complete"] is True and len(meta["fingerprint"]) == 64
    assert meta["input"]["image_path"].endswith("scene0/rgb.png")
    for name in meta["outputs"]:
        assert (out / "scene0-rgb" / name).is_file()


def test_resume_does_no_work_and_a_changed_key_redoes_it(tour, first_run, tmp_path, monkeypatch):
    out, _, _ = first_run
    processed = []
    original = worker_module.PanoramaWorker.read
    monkeypatch.setattr(worker_module.PanoramaWorker, "read",
                        lambda self, task, data=None: processed.append(task.name) or original(self, task, data))
    before = (out / "scene0-rgb" / "meta.json").stat().st_mtime_ns
    # not result-affecting: threads, progress bar, where the summary goes
    code, summary = run_batch(tour, tmp_path / "run2", f"batch.output_dir={out}", "batch.skip_existing=true",
                              "runtime.num_threads=1")
    assert statuses(summary)["scene0-rgb"] == "skipped" and statuses(summary)["scene1-rgb"] == "skipped"
    assert sorted(processed) == ["corrupt", "empty", "wide"]  # failures are never reused
    assert code == 1 and (out / "scene0-rgb" / "meta.json").stat().st_mtime_ns == before

    processed.clear()
    code, summary = run_batch(tour / "scene0" / "rgb.png", tmp_path / "run3")  # fresh single run: not skipped
    assert processed == [""] and code == 0


def test_changed_result_key_redoes_the_work(tmp_path):
    tour = make_folder(tmp_path / "in", good=2, broken=False)
    out = tmp_path / "out"
    code, _ = run_batch(tour, out)
    assert code == 0
    old = json.loads((out / "scene1-rgb" / "meta.json").read_text())["fingerprint"]
    code, summary = run_batch(tour, out, "batch.skip_existing=true", "alignment.huber_k=2.0")
    assert code == 0 and set(statuses(summary).values()) == {"ok"}
    assert json.loads((out / "scene1-rgb" / "meta.json").read_text())["fingerprint"] != old
    code, summary = run_batch(tour, out, "batch.skip_existing=true", "alignment.huber_k=2.0")
    assert set(statuses(summary).values()) == {"skipped"}
    os.utime(tour / "scene1" / "rgb.png", ns=(1, 1))  # the input changed (stat fingerprint)
    code, summary = run_batch(tour, out, "batch.skip_existing=true", "alignment.huber_k=2.0")
    assert statuses(summary) == {"scene0-rgb": "skipped", "scene1-rgb": "ok"}


def test_resume_never_trusts_unmarked_or_staging_folders(tmp_path):
    tour = make_folder(tmp_path / "in", good=2, broken=False)
    out = tmp_path / "out"
    # what a killed non-atomic writer or a killed run would leave behind
    (out / "scene0-rgb").mkdir(parents=True)
    (out / "scene0-rgb" / "distance.npy").write_bytes(b"half a file")
    (out / ".scene1-rgb.partial-otherhost-123").mkdir()
    (out / ".scene1-rgb.partial-otherhost-123" / "meta.json").write_text('{"complete": true}')
    code, summary = run_batch(tour, out, "batch.skip_existing=true")
    assert code == 0 and set(statuses(summary).values()) == {"ok"}
    assert hidden_entries(out) == []
    assert np.load(out / "scene0-rgb" / "distance.npy").shape == (32, 64)


def test_models_are_loaded_once_per_process(tmp_path, monkeypatch):
    tour = make_folder(tmp_path / "in", good=3, broken=False)
    calls = []
    job = jobs_module.JOBS["predict"]
    monkeypatch.setitem(jobs_module.JOBS, "predict", dataclasses.replace(
        job, build=lambda cfg, p=None: calls.append(1) or job.build(cfg, p)))
    code, summary = run_batch(tour, tmp_path / "out")
    assert code == 0 and summary["succeeded"] == 3 and len(calls) == 1


def test_single_file_writes_into_the_run_folder(tmp_path):
    scene = write_scene(tmp_path / "in", seed=3, height=32)
    run = tmp_path / "run"
    code, summary = run_batch(scene, run)
    assert code == 0 and summary["panoramas"][0]["name"] == ""
    assert {"distance.npy", "meta.json", "summary.json"} <= {p.name for p in run.iterdir()}
    assert hidden_entries(run) == []
    code, summary = run_batch(scene, run, "batch.skip_existing=true")
    assert statuses(summary) == {"": "skipped"}
    # one unusable image named on its own is a user error (exit 2, as before batches existed); in a folder it is 1
    code, summary = run_batch(tmp_path / "in" / "distance.npy", tmp_path / "bad")
    assert code == 2 and "cannot be read as an image" in summary["panoramas"][0]["reason"]
    assert not (tmp_path / "bad" / "distance.npy").exists()


def test_error_while_writing_leaves_no_partial_output(tmp_path, monkeypatch):
    tour = make_folder(tmp_path / "in", good=3, broken=False)
    original = jobs_module.write_panorama_outputs

    def flaky(out_dir, rgb, result, cfg, image_path, extra=None, input_info=None):
        if "scene1" in image_path:
            np.save(out_dir / "distance.npy", np.zeros(3))
            raise OSError("disk full")
        return original(out_dir, rgb, result, cfg, image_path, extra, input_info)

    monkeypatch.setattr(jobs_module, "write_panorama_outputs", flaky)
    out = tmp_path / "out"
    code, summary = run_batch(tour, out)
    assert code == 1 and statuses(summary) == {"scene0-rgb": "ok", "scene1-rgb": "failed", "scene2-rgb": "ok"}
    assert "OSError: disk full" in summary["panoramas"][1]["reason"]
    assert visible_dirs(out) == ["scene0-rgb", "scene2-rgb"] and hidden_entries(out) == []


def test_fail_fast_stops_after_the_first_failure(tmp_path):
    tour = make_folder(tmp_path / "in", good=1, broken=True)
    code, summary = run_batch(tour, tmp_path / "out", "batch.fail_fast=true")
    assert code == 1
    assert statuses(summary) == {"corrupt": "failed", "empty": "not run", "wide": "not run", "rgb": "not run"}


@pytest.mark.parametrize("how, prefetch, expected_code", [("SIGINT", 0, 130), ("SIGTERM", 0, 143), ("SIGTERM", 1, 143)])
def test_interrupt_leaves_only_committed_panoramas_and_lists_them(tmp_path, monkeypatch, how, prefetch, expected_code):
    tour = make_folder(tmp_path / "in", good=3, broken=False)
    original = jobs_module.write_panorama_outputs

    def interrupted(out_dir, rgb, result, cfg, image_path, extra=None, input_info=None):
        if "scene1" in image_path:
            np.save(out_dir / "distance.npy", np.zeros(3))
            if how == "SIGINT":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # the batch mode turns it into an interrupt
        return original(out_dir, rgb, result, cfg, image_path, extra, input_info)

    monkeypatch.setattr(jobs_module, "write_panorama_outputs", interrupted)
    out = tmp_path / "out"
    handler_before = signal.getsignal(signal.SIGTERM)
    code, summary = run_batch(tour, out, f"runtime.prefetch={prefetch}")
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert code == expected_code and summary["interrupted"] == how
    if prefetch == 0:  # the signal lands in the thread that writes: scene1's staging folder is discarded
        assert statuses(summary) == {"scene0-rgb": "ok", "scene1-rgb": "not run", "scene2-rgb": "not run"}
    else:  # the signal lands in the main thread; the writer thread finishes scene1, which is on disk and listed ok
        assert statuses(summary) == {"scene0-rgb": "ok", "scene1-rgb": "ok", "scene2-rgb": "not run"}
    ok = sorted(p["name"] for p in summary["panoramas"] if p["status"] == "ok")
    assert visible_dirs(out) == ok and hidden_entries(out) == []
    assert all(json.loads((out / name / "meta.json").read_text())["complete"] for name in ok)


def test_no_inputs_is_a_user_error(tmp_path):
    from modules.errors import UserError

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="names no panorama"):
        run_batch(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(UserError, match="runtime.executor._target_='modules.runtime.slurm.run_slurm'"):
        run_batch(tmp_path / "empty", tmp_path / "out", "runtime.executor._target_=modules.runtime.slurm.run_slurm")


def test_progress_bar_shows_running_retried_and_done_per_node():
    fields = batch._status_text({"runtime": "ray", "running": 2, "retried": 1, "workers_ready": 2,
                                 "done_per_node": {"a1b2c3d4e5": 4, "f6e5d4c3b2": 3}})
    assert fields == {"running": 2, "retried": 1, "workers_ready": 2, "per_node": "a1b2c3:4 f6e5d4:3"}
    assert batch._status_text({"runtime": "local"}) == {}


def test_runtime_choice_builds_its_executor(compose_cfg):
    from modules.runtime import build_executor, executor_name
    from modules.runtime.local import run_local
    from modules.runtime.ray_executor import run_ray

    for choice, function in (("local", run_local), ("ray", run_ray)):
        rt = compose_cfg([f"runtime={choice}", "paths.output_dir=/tmp/unused"]).runtime
        assert build_executor(rt).func is function and executor_name(rt) == choice
