"""runtime=ray on a local Ray instance with 2 CPUs: same files as runtime=local, dead workers retried (bounded)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from modules.geo_predictors.synthetic import SyntheticPredictor
from test_batch import make_folder, run_batch, statuses

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


class CrashingPredictor(SyntheticPredictor):
    """The synthetic predictor, except that the worker process dies (``os._exit``) on the first ``crash_times[scene]``
    panoramas of folder ``scene``; attempts are counted with files in ``flag_dir`` (shared by all workers)."""

    def __init__(self, crash_times: dict, flag_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.crash_times = dict(crash_times)
        self.flag_dir = Path(flag_dir)

    def begin_panorama(self, image_path, erp_hw):
        scene = Path(image_path).parent.name
        crashes = len(list(self.flag_dir.glob(f"{scene}-*")))
        if crashes < self.crash_times.get(scene, 0):
            (self.flag_dir / f"{scene}-{crashes}").touch()
            os._exit(1)
        super().begin_panorama(image_path, erp_hw)


@pytest.fixture(scope="module")
def ray_cluster():
    # the workers import CrashingPredictor from this file (tests/ is not a package)
    tests_dir = str(Path(__file__).resolve().parent)
    pythonpath = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tour(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("tour"), good=3, broken=True)


def test_ray_outputs_are_identical_to_local(ray_cluster, tour, tmp_path):
    # one torch thread on both paths: the same arithmetic in the same order, so the files are byte-identical
    common = ["runtime.num_threads=1"]
    code_local, local = run_batch(tour, tmp_path / "local", *common)
    code_ray, remote = run_batch(tour, tmp_path / "ray", "runtime=ray", "runtime.device=cpu", *common)
    assert code_local == code_ray == 1
    assert statuses(local) == statuses(remote)
    assert remote["executor"]["runtime"] == "ray" and remote["executor"]["workers"] == 2
    assert {p["reason"] for p in local["panoramas"]} == {p["reason"] for p in remote["panoramas"]}
    workers = {p["worker"] for p in remote["panoramas"] if p["status"] == "ok"}
    assert all(w and w.split(":")[1] != str(os.getpid()) for w in workers)  # really ran in other processes
    for name, status in statuses(local).items():
        if status == "ok":
            for f in ("distance.npy", "confidence.npy", "distance.png"):
                assert (tmp_path / "local" / name / f).read_bytes() == (tmp_path / "ray" / name / f).read_bytes()


def test_dead_worker_is_retried_then_given_up(ray_cluster, tour, tmp_path):
    flags = tmp_path / "flags"
    flags.mkdir()
    code, summary = run_batch(
        tour, tmp_path / "out", "runtime=ray", "runtime.device=cpu", "runtime.max_retries=1",
        "predictor._target_=test_ray_batch.CrashingPredictor",
        "+predictor.crash_times={scene1: 1, scene2: 99}", f"+predictor.flag_dir={flags}",
    )
    by_name = {p["name"]: p for p in summary["panoramas"]}
    assert by_name["scene0-rgb"]["status"] == "ok" and by_name["scene0-rgb"]["attempts"] == 1
    assert by_name["scene1-rgb"]["status"] == "ok" and by_name["scene1-rgb"]["attempts"] == 2  # died once, retried
    assert by_name["scene2-rgb"]["status"] == "failed" and by_name["scene2-rgb"]["attempts"] == 2
    assert "worker died 2 times" in by_name["scene2-rgb"]["reason"]
    assert len(list(flags.iterdir())) == 3 and summary["executor"]["worker_deaths"] == 3
    assert code == 1
    out = tmp_path / "out"
    assert (out / "scene1-rgb" / "meta.json").exists() and not (out / "scene2-rgb").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert np.load(out / "scene1-rgb" / "distance.npy").shape == (32, 64)


def test_worker_plan_follows_the_cluster_and_the_config():
    from omegaconf import OmegaConf

    from modules.runtime.ray_executor import RayRuntimeError, _plan_workers

    def rt(**kw):
        base = {"num_workers": None, "num_cpus_per_worker": 1, "num_gpus_per_worker": None}
        return OmegaConf.create({**base, **kw})

    assert _plan_workers(rt(), {"CPU": 8.0}, 100) == (8, 1.0, 0.0)
    assert _plan_workers(rt(), {"CPU": 32.0, "GPU": 4.0}, 100) == (4, 1.0, 1.0)  # one actor per GPU
    assert _plan_workers(rt(num_gpus_per_worker=0.5), {"CPU": 32.0, "GPU": 2.0}, 100)[0] == 4
    assert _plan_workers(rt(), {"CPU": 8.0}, 3)[0] == 3  # never more actors than panoramas
    assert _plan_workers(rt(num_workers=2, num_cpus_per_worker=2), {"CPU": 8.0}, 100) == (2, 2.0, 0.0)
    with pytest.raises(RayRuntimeError, match="cannot hold one worker"):
        _plan_workers(rt(num_cpus_per_worker=4), {"CPU": 2.0}, 10)
