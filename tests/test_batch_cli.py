"""The batch through ``core_exp_runner.py``: exit codes, a run killed mid-way, Hydra multirun sweeps."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_scene
from modules.config import PROJECT_ROOT
from test_batch import FAST, make_folder

pytestmark = pytest.mark.slow


def runner(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(PROJECT_ROOT / "core_exp_runner.py"), *args, *FAST],
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def complete(folder: Path) -> bool:
    try:
        return json.loads((folder / "meta.json").read_text()).get("complete") is True
    except (OSError, ValueError):
        return False


def test_cli_reports_broken_files_and_exits_non_zero(tmp_path):
    tour = make_folder(tmp_path / "in", good=1, broken=True)
    proc = runner(f"dataset.image_path={tour}", f"hydra.run.dir={tmp_path / 'run'}")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["succeeded"] == 1 and summary["failed"] == 3
    assert "file is empty" in out and "1 ok, 0 skipped, 3 failed" in out  # the printed table


def test_killed_run_leaves_nothing_a_resume_would_trust(tmp_path):
    tour = make_folder(tmp_path / "in", good=8, broken=False)
    out = tmp_path / "out"
    proc = runner(f"dataset.image_path={tour}", f"hydra.run.dir={out}")
    deadline = time.monotonic() + 120
    while not any(complete(d) for d in out.glob("*-rgb")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    finished = sorted(d.name for d in out.glob("*-rgb"))
    assert 1 <= len(finished) < 8, "the run was not killed mid-way"
    assert all(complete(out / name) for name in finished)  # every visible folder is finished

    resumed = runner(f"dataset.image_path={tour}", f"hydra.run.dir={out}", "batch.skip_existing=true")
    log, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, log
    summary = json.loads((out / "summary.json").read_text())
    by_name = {p["name"]: p["status"] for p in summary["panoramas"]}
    assert all(by_name[name] == "skipped" for name in finished)
    assert sum(s == "ok" for s in by_name.values()) == 8 - len(finished)
    assert all(complete(out / f"scene{i}-rgb") for i in range(8))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".hydra"]


def test_multirun_sweep_runs_every_job_and_exits_with_the_worst_code(tmp_path):
    good = write_scene(tmp_path / "good", seed=0, height=32)
    broken = make_folder(tmp_path / "broken", good=1, broken=True)
    sweep = tmp_path / "sweep"
    proc = runner("-m", "alignment.huber_k=1.345,2.0", f"dataset.image_path={good},{broken}",
                  f"hydra.sweep.dir={sweep}")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1, out
    codes = {}
    for job in sorted(sweep.iterdir()):
        if job.is_dir() and (job / "summary.json").exists():
            overrides = (job / ".hydra" / "overrides.yaml").read_text()
            summary = json.loads((job / "summary.json").read_text())
            codes[("huber_k=2.0" in overrides, "broken" in overrides)] = summary["exit_code"]
    assert codes == {(False, False): 0, (False, True): 1, (True, False): 0, (True, True): 1}
    assert (sweep / "0" / "distance.npy").exists()  # a single panorama writes into its job folder


@pytest.mark.timeout(240)
def test_sigterm_during_a_ray_run_exits_143_and_the_summary_matches_the_disk(tmp_path):
    """runtime.address=null starts a private Ray instance on 127.0.0.1; SIGTERM while the driver waits on the
    workers: exit 143, "SIGTERM" in summary.json, every panorama committed on disk listed ok, nothing half-written."""
    import os

    tour = make_folder(tmp_path / "in", good=8, broken=False)
    out = tmp_path / "out"
    tests_dir = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)}
    (tmp_path / "flags").mkdir()
    proc = runner(f"dataset.image_path={tour}", f"hydra.run.dir={out}", "runtime=ray", "runtime.local_num_cpus=2",
                  "runtime.num_threads=1", "predictor._target_=test_ray_batch.FaultyPredictor",
                  f"+predictor.flag_dir={tmp_path / 'flags'}", "+predictor.sleep=0.5", env=env)
    deadline = time.monotonic() + 150
    while not any(complete(d) for d in out.glob("*-rgb")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, log
    assert "private Ray instance on 127.0.0.1" in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == "SIGTERM" and summary["exit_code"] == 143
    assert summary["executor"]["runtime"] == "ray" and summary["executor"]["driver_node_ip"] == "127.0.0.1"
    on_disk = sorted(d.name for d in out.glob("*-rgb") if complete(d))
    listed_ok = sorted(p["name"] for p in summary["panoramas"] if p["status"] == "ok")
    assert 1 <= len(on_disk) < 8 and listed_ok == on_disk
    assert sorted(d.name for d in out.glob("*-rgb")) == on_disk  # no half-written folder under a final name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".hydra"]
