"""mode=eval's predictions run through the batch runner (modules/modes/batch.py, the job modules/runtime/eval_job.py):
one folder per pair with a completion marker, the batch's summary.json in batch.output_dir, a resume with
batch.skip_existing predicts only what is missing and still reports every pair, a broken image fails its pair only."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from test_eval_inputs import FAST, flat_dataset
from test_runner import run_cli


def test_flat_eval_runs_through_the_batch_runner(tmp_path):
    data = flat_dataset(tmp_path / "flat", seeds=(4, 5))
    (data / "broken.png").write_bytes(b"")
    np.save(data / "broken_depth.npy", np.ones((8, 16), np.float32))
    preds, run = tmp_path / "preds", tmp_path / "run"
    args = ["mode=eval", f"mode.dataset={data}", f"batch.output_dir={preds}", "batch.progress=false", *FAST]
    proc = run_cli([*args, f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 1, proc.stderr  # the broken image fails its pair, the rooms are scored
    assert f"outputs: {preds}" in proc.stdout and f"outputs: {run}" in proc.stdout
    batch = json.loads((preds / "summary.json").read_text())  # the batch's, next to the predictions
    status = {p["name"]: p["status"] for p in batch["panoramas"]}
    assert status == {"room4": "ok", "room5": "ok", "broken": "failed"}
    for name in ("room4", "room5"):
        meta = json.loads((preds / name / "meta.json").read_text())  # the completion marker
        assert meta["complete"] is True and meta["eval"]["ground_truth"] == str(data / f"{name}_depth.npy")
        assert np.load(preds / name / "distance.npy").shape == (32, 64)
    report = json.loads((run / "summary.json").read_text())
    assert report["num_images"] == 3 and report["num_failed"] == 1 and report["metrics"]["abs_rel"] < 0.05
    assert report["batch"]["succeeded"] == 2 and report["batch"]["failed"] == 1
    rows = {r["image"]: r for r in csv.DictReader(open(run / "per_image.csv"))}
    assert str(data / "broken.png") in rows["broken"]["error"] and "file is empty" in rows["broken"]["error"]
    assert not rows["room4"].get("error") and not rows["room5"].get("error")

    # a resume into the same predictions folder: nothing is predicted again, the report covers every pair
    marker_times = {n: (preds / n / "meta.json").stat().st_mtime_ns for n in ("room4", "room5")}
    proc = run_cli([*args, "batch.skip_existing=true", f"hydra.run.dir={tmp_path / 'run2'}"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    batch = json.loads((preds / "summary.json").read_text())
    assert batch["skipped"] == 2 and batch["succeeded"] == 0 and batch["failed"] == 1
    assert {n: (preds / n / "meta.json").stat().st_mtime_ns for n in marker_times} == marker_times
    again = json.loads((tmp_path / "run2" / "summary.json").read_text())
    assert again["metrics"] == report["metrics"] and again["num_images"] == 3
    assert (tmp_path / "run2" / "per_image.csv").read_text() == (run / "per_image.csv").read_text()


def test_a_resumed_eval_predicts_only_the_missing_pairs(tmp_path, monkeypatch):
    """In process (run_cli), counting the pipeline runs: the first run predicts both pairs, a resume after one pair's outputs
    were removed predicts that one only, and the report is the same."""
    import shutil

    from modules.runtime.worker import PanoramaWorker

    data = flat_dataset(tmp_path / "flat", seeds=(4, 5))
    computed: list[str] = []
    compute = PanoramaWorker.compute
    monkeypatch.setattr(PanoramaWorker, "compute",
                        lambda self, task, rgb: computed.append(task.name) or compute(self, task, rgb))

    def run(folder):
        proc = run_cli(["mode=eval", f"mode.dataset={data}", f"hydra.run.dir={folder}", "batch.progress=false",
                        f"batch.output_dir={tmp_path / 'preds'}", "batch.skip_existing=true", *FAST], tmp_path)
        assert proc.returncode == 0, proc.stderr
        return json.loads((folder / "summary.json").read_text())

    first = run(tmp_path / "a")
    assert sorted(computed) == ["room4", "room5"]
    computed.clear()
    assert run(tmp_path / "b")["metrics"] == first["metrics"] and computed == []
    shutil.rmtree(tmp_path / "preds" / "room5")
    third = run(tmp_path / "c")
    assert computed == ["room5"] and third["batch"]["skipped"] == 1 and third["batch"]["succeeded"] == 1
    assert third["metrics"] == first["metrics"] and third["num_images"] == 2


@pytest.mark.slow  # ~15 s on 2 shared cores: a private Ray instance starts (the only way to show the job travels)
def test_eval_predictions_run_on_ray(tmp_path, monkeypatch):
    """The eval job is built from the config alone, so the Ray executor runs it like any other mode's; the report
    matches a local run's pair for pair (the synthetic predictor renders from the paired ground truth)."""
    pytest.importorskip("ray")
    from modules.config import PROJECT_ROOT

    # the private Ray instance's workers inherit the environment: they import this checkout's modules
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))
                                                     if p))
    data = flat_dataset(tmp_path / "flat", seeds=(4, 5))
    args = ["mode=eval", f"mode.dataset={data}", "batch.progress=false", "runtime.num_threads=1", *FAST]
    local = run_cli([*args, f"hydra.run.dir={tmp_path / 'local'}"], tmp_path)
    assert local.returncode == 0, local.stderr
    ray_run = run_cli([*args, f"hydra.run.dir={tmp_path / 'ray'}", "runtime=ray", "runtime.device=cpu",
                       "runtime.num_workers=1", "runtime.local_num_cpus=2", "runtime.progress_interval_s=1"], tmp_path,
                      in_process=False)  # a process of its own: Ray's state in this one stays untouched
    assert ray_run.returncode == 0, ray_run.stderr
    report = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert report["batch"]["executor"]["runtime"] == "ray" and report["batch"]["succeeded"] == 2
    expected = json.loads((tmp_path / "local" / "summary.json").read_text())
    assert report["metrics"]["abs_rel"] == pytest.approx(expected["metrics"]["abs_rel"], rel=1e-4)
    assert report["num_images"] == 2 and report["num_failed"] == 0
