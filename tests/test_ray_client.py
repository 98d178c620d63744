"""runtime.address=ray://: a Ray head started with the ``ray start`` CLI on 127.0.0.1 (its Ray Client server on a
free loopback port), the batch run through Ray Client from another process. The head runs with ``--block`` in a
process group of its own and is stopped through that group (``ray stop`` would stop every Ray instance on the
machine, other people's too); nothing is left running.

Opt-in (``IMMERSIVEDEPTH_RAY_CLIENT_TEST=1``): it takes about 70 s on the 2-core development VM (a head, the Ray
Client server's per-client driver, a worker, each a fresh process importing torch), more than the suite's budget for
Ray; run it when touching ``runtime.address`` handling.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from modules.config import PROJECT_ROOT
from test_batch import make_folder, run_batch, statuses
from test_batch_cli import runner

pytest.importorskip("ray")
pytest.importorskip("grpc")  # what ray[client] adds

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("IMMERSIVEDEPTH_RAY_CLIENT_TEST") != "1",
                                                  reason="opt-in: IMMERSIVEDEPTH_RAY_CLIENT_TEST=1 (about 70 s)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def processes_of(marker: str) -> list[int]:
    """Pids of the processes whose command line names ``marker`` (this test's Ray temp folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.mark.timeout(240)
def test_ray_client_address_runs_the_batch_on_a_cli_started_head(tmp_path):
    tour = make_folder(tmp_path / "in", good=2, broken=False)
    code, local = run_batch(tour, tmp_path / "local", "runtime.num_threads=1")
    assert code == 0
    ray_tmp = tempfile.mkdtemp(prefix="idrc", dir="/tmp")  # short: Ray's socket paths live under it
    client_port = free_port()
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: the head keeps 127.0.0.1 (Ray otherwise swaps in the machine's outward
    # address); RAY_AUTH_MODE=token: the head uses token authentication (Ray 2.60's default for a new local instance,
    # the token in ~/.ray/auth_token, generated if missing) and the client must send the token, which it does only
    # when told so
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token",
               PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p))
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                             "--port", str(free_port()), "--ray-client-server-port", str(client_port), "--num-cpus",
                             "1", "--include-dashboard", "false", "--temp-dir", ray_tmp, "--disable-usage-stats"],
                            env=env, cwd=PROJECT_ROOT, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_port(client_port, time.monotonic() + 90), "the Ray Client server did not start"
        out = tmp_path / "run"
        proc = runner(f"dataset.image_path={tour}", f"hydra.run.dir={out}", "runtime=ray",
                      f"runtime.address=ray://127.0.0.1:{client_port}", "runtime.num_threads=1", env=env)
        text, _ = proc.communicate(timeout=150)
        assert proc.returncode == 0, text[-3000:]
    finally:
        with_group = head.poll() is None
        if with_group:
            os.killpg(head.pid, signal.SIGTERM)  # --block: the head stops its node's processes
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        deadline = time.monotonic() + 20
        while processes_of(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = processes_of(ray_tmp)
        for pid in left:  # processes of this head that outlived it (started by this test)
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not left, "Ray processes outlived the head"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"]["runtime"] == "ray" and summary["executor"]["address"].startswith("ray://127.0.0.1:")
    assert statuses(summary) == statuses(local) and set(statuses(summary).values()) == {"ok"}
    assert summary["executor"]["workers"] == 1 and summary["executor"]["worker_deaths"] == 0
    for name in statuses(local):
        for f in ("distance.npy", "confidence.npy", "distance.png"):
            assert (out / name / f).read_bytes() == (tmp_path / "local" / name / f).read_bytes()
        assert json.loads((out / name / "meta.json").read_text())["batch"]["worker"].split(":")[1] != str(proc.pid)
