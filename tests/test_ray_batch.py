"""runtime=ray on a real multi-node cluster in this machine (``ray.cluster_utils.Cluster``, as Ray's own tests do):
a head node without CPUs and two worker nodes of 1 CPU each, all on 127.0.0.1, shared by every test here.

Same files as runtime=local; worker deaths (crash, death while loading models, out-of-memory error, a lost node) and
stuck workers become bounded retries; more workers than fit start with those that fit. Every test has a hard timeout.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from modules.config import PROJECT_ROOT
from modules.geo_predictors.synthetic import SyntheticPredictor
from test_batch import make_folder, run_batch, statuses

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

RAY_BASE = ["runtime=ray", "runtime.device=cpu", "runtime.progress_interval_s=1"]
RAY = [*RAY_BASE, "runtime.num_threads=1"]
#: torch threads of the module's local reference run and of the Ray runs compared with it
RAY2 = [*RAY_BASE, "runtime.num_threads=2"]


def _flags(flag_dir: str, prefix: str) -> int:
    return len(list(Path(flag_dir).glob(f"{prefix}-*")))


def _flag(flag_dir: str, prefix: str) -> None:
    (Path(flag_dir) / f"{prefix}-{_flags(flag_dir, prefix)}").touch()


class FaultyPredictor(SyntheticPredictor):
    """The synthetic predictor with faults keyed by the input's folder name ("scene1"): for the first
    ``times[scene]`` tries of that panorama it does ``faults[scene]``: ``crash`` the worker process (``os._exit``),
    raise the error Ray raises when it kills a worker for lack of memory (``oom``), or hang (``hang``: sleep an hour).
    ``load_crashes``: the worker process dies this many times while loading (in the constructor). ``sleep``: seconds
    every panorama takes. ``gate``: every panorama says it started (a ``busy-<pid>-<scene>`` file) and waits for a
    ``release`` file. ``meet``: every panorama says it started and waits until panoramas have started in this many
    worker processes (the run uses that many workers at once, however long the others take to load). Both wait
    60 s at most. Tries are counted with files in ``flag_dir`` (shared by all workers)."""

    def __init__(self, flag_dir: str, faults: dict | None = None, times: dict | None = None, load_crashes: int = 0,
                 sleep: float = 0.0, gate: bool = False, meet: int = 0, **kwargs):
        if _flags(flag_dir, "load") < load_crashes:
            _flag(flag_dir, "load")
            os._exit(1)
        super().__init__(**kwargs)
        self.flag_dir, self.faults, self.times, self.sleep = flag_dir, dict(faults or {}), dict(times or {}), sleep
        self.gate, self.meet = gate, meet

    def begin_panorama(self, image_path, erp_hw):
        scene = Path(image_path).parent.name
        if _flags(self.flag_dir, scene) < self.times.get(scene, 0):
            _flag(self.flag_dir, scene)
            fault = self.faults[scene]
            if fault == "crash":
                os._exit(1)
            if fault == "oom":
                raise ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.")
            if fault == "hang":
                time.sleep(3600)
        if self.gate or self.meet:
            (Path(self.flag_dir) / f"busy-{os.getpid()}-{scene}").touch()
            deadline = time.monotonic() + 60
            while not self._may_go() and time.monotonic() < deadline:
                time.sleep(0.02)
        time.sleep(self.sleep)
        super().begin_panorama(image_path, erp_hw)

    def _may_go(self) -> bool:
        if self.gate:
            return (Path(self.flag_dir) / "release").exists()
        return len(busy_workers(Path(self.flag_dir))) >= self.meet


def busy_workers(flag_dir: Path) -> set[str]:
    """Pids of the worker processes that have started a panorama (``gate`` / ``meet``)."""
    return {p.name.split("-")[1] for p in flag_dir.glob("busy-*")}


def faulty(flag_dir: Path, **kwargs) -> list[str]:
    """Overrides selecting :class:`FaultyPredictor` with ``kwargs``."""
    flag_dir.mkdir(exist_ok=True)
    out = ["predictor._target_=test_ray_batch.FaultyPredictor", f"+predictor.flag_dir={flag_dir}"]
    for key, value in kwargs.items():
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        out.append(f"+predictor.{key}={value}")
    return out


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    from modules.runtime.ray_executor import loopback_ray_init

    # the workers import FaultyPredictor from this file (tests/ is not a package) and the project's modules
    tests_dir = str(Path(__file__).resolve().parent)
    pythonpath = os.pathsep.join(p for p in (tests_dir, str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                      "include_dashboard": False})
    workers = [c.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    loopback_ray_init(address=c.address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def tour(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("tour"), good=3, broken=True)


@pytest.fixture(scope="module")
def local_reference(tour, tmp_path_factory):
    """The tour run locally with 2 torch threads: the files every Ray run at 2 threads must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("local")
    code, summary = run_batch(tour, out, "runtime.num_threads=2")
    return out, code, summary


def same_files(a: Path, b: Path, names) -> bool:
    return all((a / n / f).read_bytes() == (b / n / f).read_bytes()
               for n in names for f in ("distance.npy", "confidence.npy", "distance.png"))


def ok_names(summary: dict) -> list[str]:
    return sorted(p["name"] for p in summary["panoramas"] if p["status"] == "ok")


def assert_clean(out: Path) -> None:
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".hydra"]


@pytest.mark.timeout(300)
def test_identical_to_local_at_equal_threads_starting_with_the_workers_that_fit(cluster, tour, local_reference,
                                                                                 tmp_path, caplog):
    # two torch threads on both paths (the same arithmetic in the same order): byte-identical files
    local_dir, code_local, local = local_reference
    # 5 workers on a cluster that holds 2: work starts with those that fit, the log says so. Every panorama waits
    # until both workers have started one (the first would otherwise finish the tour while the second loads), and
    # the synthetic predictor it extends computes the same maps
    with caplog.at_level(logging.INFO, logger="modules.runtime"):
        code_ray, remote = run_batch(tour, tmp_path / "ray", *RAY2, "runtime.num_workers=5",
                                     *faulty(tmp_path / "flags", meet=2))
    assert code_local == code_ray == 1
    assert statuses(local) == statuses(remote)
    assert {p["reason"] for p in local["panoramas"]} == {p["reason"] for p in remote["panoramas"]}
    ex = remote["executor"]
    assert ex["runtime"] == "ray" and ex["worker_deaths"] == 0 and ex["retries"] == 0
    assert ex["workers"] == ex["workers_at_start"] == 5 and ex["workers_placeable_at_start"] == 2
    assert ex["workers_added"] == 0  # runtime.num_workers set: the pool does not grow beyond it
    assert any("room for 2" in r.getMessage() for r in caplog.records)
    # progress across the cluster in the log: the last line has every panorama done, split over the two nodes
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Ray: ")]
    assert progress and progress[-1].startswith("Ray: 6/6 done")
    per_node = [int(entry.split()[-1]) for entry in progress[-1].split("done per node: ")[1].split(", ")]
    assert len(per_node) == 2 and sum(per_node) == 6
    # inputs went through the object store (a multi-node cluster), each ran on one of the two worker nodes
    assert ex["ship_inputs"] is True and ex["inputs_shipped"] == len(remote["panoramas"])
    assert len(ex["nodes"]) == 2 and sum(ex["done_per_node"].values()) == 6
    workers = {p["worker"] for p in remote["panoramas"] if p["status"] == "ok"}
    assert all(w and w.split(":")[1] != str(os.getpid()) for w in workers)  # really ran in other processes
    names = ok_names(local)
    assert names and same_files(local_dir, tmp_path / "ray", names)
    for name in names:
        meta = json.loads((tmp_path / "ray" / name / "meta.json").read_text())
        assert meta["torch_threads"] == 2 and meta["batch"]["input_shipped"] is True
        assert meta["batch"]["io_node"] is None  # no GPUs: the workers decode and write themselves
        assert json.loads((local_dir / name / "meta.json").read_text())["torch_threads"] == 2
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU") == 2  # every actor was removed, those that never fit too


@pytest.mark.timeout(300)
def test_crash_out_of_memory_error_and_stuck_worker_are_bounded_retries(cluster, tour, local_reference, tmp_path):
    # scene0 hangs (an hour) on its first try; scene1's worker process dies once; scene2 raises Ray's
    # OutOfMemoryError on every try. One call in flight per worker (prefetch 0), so that no other panorama shares a
    # death (that accounting: the node-loss test)
    start = time.monotonic()
    code, summary = run_batch(tour, tmp_path / "out", *RAY2, "runtime.max_retries=2", "runtime.prefetch=0",
                              "runtime.task_timeout_s=10",  # a normal try takes < 1 s alone, several s on a loaded 2-core machine
                              *faulty(tmp_path / "flags", faults={"scene0": "hang", "scene1": "crash", "scene2": "oom"},
                                      times={"scene0": 1, "scene1": 1, "scene2": 99}))
    assert time.monotonic() - start < 100  # the hour-long sleep was cut short
    by_name = {p["name"]: p for p in summary["panoramas"]}
    assert by_name["scene0-rgb"]["status"] == "ok" and by_name["scene0-rgb"]["attempts"] == 2  # timed out once
    assert by_name["scene1-rgb"]["status"] == "ok" and by_name["scene1-rgb"]["attempts"] == 2  # died once, retried
    assert by_name["scene2-rgb"]["status"] == "failed" and by_name["scene2-rgb"]["attempts"] == 3
    reason = by_name["scene2-rgb"]["reason"]
    assert "OutOfMemoryError" in reason and "gave up after 3 tries" in reason
    assert statuses(summary)["wide"] == "failed"  # the broken inputs are still reported as such
    ex = summary["executor"]
    assert ex["worker_deaths"] == 4 and ex["timeouts"] == 1 and ex["retries"] == 4
    assert code == 1
    out = tmp_path / "out"
    assert not (out / "scene2-rgb").exists()
    assert_clean(out)
    assert same_files(local_reference[0], out, ["scene0-rgb", "scene1-rgb"])


@pytest.mark.timeout(300)
def test_pool_grows_when_a_node_joins_mid_batch(cluster, tmp_path):
    c, _ = cluster
    tour = make_folder(tmp_path / "in", good=5, broken=False)
    flags = tmp_path / "flags"
    done = {}

    def run():
        try:
            # num_workers null: the 2 workers the cluster holds, 2 calls each; the fifth panorama waits, and every
            # panorama waits until three workers have started one: only a worker on the new node can start it
            done["run"] = run_batch(tour, tmp_path / "out", *RAY, *faulty(flags, meet=3))
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            done["error"] = exc

    batch_thread = threading.Thread(target=run, daemon=True)  # Ray's Cluster adds nodes from the main thread only
    batch_thread.start()
    deadline = time.monotonic() + 120
    while len(busy_workers(flags)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    busy = len(busy_workers(flags))
    node = c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    try:
        batch_thread.join(timeout=150)
    finally:
        c.remove_node(node)
        c.wait_for_nodes()
    assert busy == 2, "the node joined before both workers were busy"
    assert "run" in done, done.get("error", "the batch did not finish")
    code, summary = done["run"]
    assert code == 0 and set(statuses(summary).values()) == {"ok"}
    ex = summary["executor"]
    assert ex["workers_at_start"] == 2 and ex["workers_added"] == 1 and ex["workers"] == 3
    assert len(busy_workers(flags)) == 3 and len(ex["done_per_node"]) == 3  # the new node's worker did work
    assert ex["worker_deaths"] == 0 and ex["retries"] == 0


@pytest.mark.timeout(300)
def test_gpu_worker_restarted_after_dying_while_loading_decodes_and_writes_on_the_cpu_only_nodes(
        cluster, tour, local_reference, tmp_path):
    c, workers = cluster
    # a node with one GPU as far as Ray's scheduler knows (Ray counts the GPUs it is told of; torch stays on the CPU)
    gpu_node = c.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1")
    try:
        # one worker per GPU: the run can only finish if its two deaths while loading are restarts, not the end
        code, summary = run_batch(tour, tmp_path / "out", *RAY2, "runtime.num_gpus_per_worker=1",
                                  *faulty(tmp_path / "flags", load_crashes=2))
    finally:
        c.remove_node(gpu_node)
        c.wait_for_nodes()
    ex = summary["executor"]
    assert ex["workers"] == 1 and ex["gpus_per_worker"] == 1.0
    assert [w["node"] for w in ex["worker_details"]] == [gpu_node.node_id]
    assert ex["worker_restarts"] == 1 and ex["workers_ready"] == 1 and ex["worker_deaths"] == 0
    assert len(list((tmp_path / "flags").glob("load-*"))) == 2
    cpu_nodes = sorted(w.node_id for w in workers)
    assert ex["io_nodes"] == cpu_nodes and ex["io_tasks_lost"] == 0
    # the same files and the same reasons for the broken inputs as runtime=local
    assert code == local_reference[1] == 1 and statuses(summary) == statuses(local_reference[2])
    assert ({p["reason"] for p in summary["panoramas"]} == {p["reason"] for p in local_reference[2]["panoramas"]})
    names = ok_names(summary)
    assert names and same_files(local_reference[0], tmp_path / "out", names)
    io_nodes = {json.loads((tmp_path / "out" / n / "meta.json").read_text())["batch"]["io_node"] for n in names}
    assert io_nodes == set(cpu_nodes)  # decoded and written on both CPU-only nodes, in turn, never on the GPU node
    assert_clean(tmp_path / "out")


@pytest.mark.timeout(300)
def test_losing_a_node_mid_batch_at_full_use_finishes_on_the_rest(cluster, tmp_path):
    c, workers = cluster
    tour = make_folder(tmp_path / "in", good=6, broken=False)
    out = tmp_path / "out"
    reference = tmp_path / "reference"
    code, _ = run_batch(tour, reference, "runtime.num_threads=1")
    assert code == 0
    flags = tmp_path / "flags"
    killed = {}

    def kill_a_node_when_both_workers_are_busy():
        deadline = time.monotonic() + 120
        while len(busy_workers(flags)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        killed["busy"] = sorted(p.name for p in flags.glob("busy-*"))
        c.remove_node(workers[0], allow_graceful=False)
        (flags / "release").touch()

    killer = threading.Thread(target=kill_a_node_when_both_workers_are_busy, daemon=True)
    killer.start()
    start = time.monotonic()
    try:
        # both 1-CPU nodes busy (num_workers null = what the cluster holds) when one of them is lost
        code, summary = run_batch(tour, out, *RAY, *faulty(flags, gate=True))
    finally:
        killer.join(timeout=130)
        (flags / "release").touch()
        workers[0] = c.add_node(num_cpus=1, node_ip_address="127.0.0.1")  # for any test after this one (Ray lists
        # the lost node as alive for some seconds: this test comes last of those that size the pool by the cluster)
    wall = time.monotonic() - start
    assert len(killed["busy"]) == 2, "the node was not killed at full use"
    assert code == 0 and set(statuses(summary).values()) == {"ok"}, summary
    assert wall < 120
    ex = summary["executor"]
    # one death; the panoramas in flight on the lost worker (1 + prefetch 1 queued) were retried once each
    attempts = sorted(p["attempts"] for p in summary["panoramas"])
    assert ex["worker_deaths"] == 1 and ex["workers_ready"] == 1 and ex["prefetch"] == 1
    assert attempts in ([1, 1, 1, 1, 1, 2], [1, 1, 1, 1, 2, 2]) and ex["retries"] == sum(attempts) - 6
    names = [f"scene{i}-rgb" for i in range(6)]
    assert ok_names(summary) == names
    assert same_files(reference, out, names)
    for name in names:
        assert json.loads((out / name / "meta.json").read_text())["complete"] is True
    assert_clean(out)
    assert np.load(out / "scene5-rgb" / "distance.npy").shape == (32, 64)


def test_worker_plan_follows_the_cluster_and_the_config():
    from omegaconf import OmegaConf

    from modules.runtime.ray_cluster import RayRuntimeError, plan_workers

    def rt(**kw):
        base = {"num_workers": None, "num_cpus_per_worker": 1, "num_gpus_per_worker": None}
        return OmegaConf.create({**base, **kw})

    assert plan_workers(rt(), {"CPU": 8.0}, 100) == (8, 1.0, 0.0)
    assert plan_workers(rt(), {"CPU": 32.0, "GPU": 4.0}, 100) == (4, 1.0, 1.0)  # one actor per GPU
    assert plan_workers(rt(num_gpus_per_worker=0.5), {"CPU": 32.0, "GPU": 2.0}, 100)[0] == 4
    assert plan_workers(rt(), {"CPU": 8.0}, 3)[0] == 3  # never more actors than panoramas
    assert plan_workers(rt(num_workers=2, num_cpus_per_worker=2), {"CPU": 8.0}, 100) == (2, 2.0, 0.0)
    assert plan_workers(rt(num_workers=16), {"CPU": 2.0}, 100)[0] == 16  # more than fit: started, they wait
    with pytest.raises(RayRuntimeError, match="cannot hold one worker"):
        plan_workers(rt(num_cpus_per_worker=4), {"CPU": 2.0}, 10)
