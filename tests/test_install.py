"""A non-editable ``pip install .`` into a fresh venv: the ``immersivedepth`` command and the Python API work from
another directory, with the configs inside the package; a core-only environment (extras hidden) runs mode=predict and
stops mode=render_dense with exit 2 naming the extra.

The venv sees this environment's packages through a .pth file (no downloads; ``--no-deps --no-build-isolation``),
so it tests the package's own files: what the wheel ships and how the installed code finds its configs.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from modules.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

FAST = ["projection.face_size=64", "predictor.corruption.warp_amplitude=0", "predictor.corruption.noise_std=0"]
# a core-only environment: the optional packages cannot be imported
HIDE_EXTRAS = """
import importlib.abc, sys
class _HideExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"open3d", "pygltflib", "pyvista", "vtk", "ray"}:
            raise ImportError(f"No module named {name!r} (hidden: core-only test)")
        return None
sys.meta_path.insert(0, _HideExtras())
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin dir) with the package installed from a copy of the source tree."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "core_exp_runner.py"):
        shutil.copy2(PROJECT_ROOT / name, src / name)
    for name in ("modules", "configs"):
        shutil.copytree(PROJECT_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "local"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    parent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_parent_env.pth").write_text("\n".join(sorted(parent)) + "\n")
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return py, venv / "bin", site


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HYDRA_FULL_ERROR="0", **extra)
    return env


def test_the_wheel_holds_the_package_and_its_configs(installed):
    py, bindir, site = installed
    assert (bindir / "immersivedepth").is_file()
    assert (site / "modules" / "configs" / "config.yaml").is_file()
    shipped = {p.relative_to(site / "modules" / "configs") for p in (site / "modules" / "configs").rglob("*.yaml")}
    source = {p.relative_to(PROJECT_ROOT / "configs") for p in (PROJECT_ROOT / "configs").rglob("*.yaml")
              if p.relative_to(PROJECT_ROOT / "configs").parts[0] != "local"}
    assert shipped == source
    assert (site / "modules" / "api.py").is_file() and not (site / "modules" / "configs" / "local").exists()


def test_console_command_and_api_from_another_directory(installed, tiny_scene, tmp_path):
    py, bindir, site = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run([str(bindir / "immersivedepth"), "predictor=synthetic", f"dataset.image_path={tiny_scene}",
                           "hydra.run.dir=run", *FAST], cwd=work, capture_output=True, text=True, env=_env(),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    meta = json.loads((work / "run" / "meta.json").read_text())
    assert meta["config"]["paths"]["root_dir"] == str(work)  # installed: the working directory, not site-packages
    assert (work / "run" / "immersivedepth.log").is_file()  # the same Hydra job name as core_exp_runner.py
    distance = np.load(work / "run" / "distance.npy")
    code = (
        "import sys, json, numpy as np\n"
        "import modules.api as api\n"
        "assert 'site-packages' in api.__file__, api.__file__\n"
        f"r = api.estimate_depth({str(tiny_scene)!r}, predictor='synthetic', "
        + ", ".join(f"**{{{k!r}: {v}}}" for k, v in (a.split("=") for a in FAST)) + ")\n"
        f"gt = np.load({str(tiny_scene.with_name('distance.npy'))!r})\n"
        "p = r.distance * np.median(gt / r.distance)\n"
        "print(json.dumps({'absrel': float(np.mean(np.abs(p - gt) / gt)), 'shape': list(r.distance.shape)}))\n"
    )
    proc = subprocess.run([str(py), "-c", code], cwd=work, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["absrel"] < 0.01 and out["shape"] == list(distance.shape)


def test_core_only_environment_runs_predict_and_names_the_missing_extra(installed, tiny_scene, tmp_path):
    py, bindir, site = installed
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_EXTRAS)
    env = _env(PYTHONPATH=str(hide))
    work = tmp_path / "core"
    work.mkdir()
    check = subprocess.run([str(py), "-c", "import open3d"], cwd=work, capture_output=True, text=True, env=env)
    assert check.returncode != 0  # the extras really are hidden
    ok = subprocess.run([str(bindir / "immersivedepth"), "predictor=synthetic", f"dataset.image_path={tiny_scene}",
                         "hydra.run.dir=run", *FAST], cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert (work / "run" / "pointcloud.ply").is_file() and (work / "run" / "distance.npy").is_file()
    bad = subprocess.run([str(bindir / "immersivedepth"), "mode=render_dense", "predictor=synthetic",
                          f"dataset.image_path={tiny_scene}", "hydra.run.dir=dense", *FAST], cwd=work,
                         capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2
    lines = [line for line in (bad.stdout + bad.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'immersivedepth[mesh]'" in lines[0], lines


def test_console_command_and_runner_script_are_the_same_command(installed, tmp_path):
    """The same config, help and exit code from ``immersivedepth`` and ``python core_exp_runner.py``."""
    py, bindir, site = installed
    args = ["--cfg", "job", "predictor=synthetic", "alignment=grid", "projection.face_size=96"]
    a = subprocess.run([str(bindir / "immersivedepth"), *args], cwd=tmp_path, capture_output=True, text=True,
                       env=_env(), timeout=600)
    b = subprocess.run([sys.executable, str(PROJECT_ROOT / "core_exp_runner.py"), *args], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and "face_size: 96" in a.stdout
    bad = ["mode=nope"]
    a = subprocess.run([str(bindir / "immersivedepth"), *bad], cwd=tmp_path, capture_output=True, text=True,
                       env=_env(), timeout=600)
    b = subprocess.run([sys.executable, str(PROJECT_ROOT / "core_exp_runner.py"), *bad], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert a.returncode == b.returncode != 0
    assert "nope" in a.stderr + a.stdout and "nope" in b.stderr + b.stdout
