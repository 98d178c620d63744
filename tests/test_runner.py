"""The command line: `python core_exp_runner.py` writes every promised file, readable and consistent."""

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.config import PROJECT_ROOT
from modules.export.depth_files import read_distance_png
from modules.export.ply import read_ply

FAST = ["projection.face_size=64", "export.pointcloud.stride=1"]


@dataclass
class Completed:
    """What a CLI run gave: exit code and its output (as subprocess.CompletedProcess has them)."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(args, cwd: Path, in_process: bool = True, **env_extra) -> Completed:
    """Run the CLI; without weights on this machine the tests use the ground-truth-backed predictor by default.

    ``in_process`` (default): compose the config as the runner does (``hydra.run.dir=X`` -> ``paths.output_dir=X``)
    and call the runner's :func:`modules.cli.run_mode` here, with ``cwd`` as the working directory and the log
    captured; otherwise a real ``python core_exp_runner.py`` subprocess.
    """
    if not any(a.startswith("predictor=") for a in args):
        args = ["predictor=synthetic", *args]
    if not in_process:
        env = dict(os.environ, HYDRA_FULL_ERROR="0", **env_extra)
        proc = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "core_exp_runner.py"), *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
        )
        return Completed(proc.returncode, proc.stdout, proc.stderr)
    from modules.api import compose
    from modules.cli import run_mode

    out_dir = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
    if [a for a in args if a.startswith("hydra.") and not a.startswith("hydra.run.dir=")]:
        raise ValueError(f"in-process runs take no hydra.* overrides but hydra.run.dir: {args}")
    overrides = [a for a in args if not a.startswith("hydra.")]
    log_text, out_text, err_text = io.StringIO(), io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(log_text)
    handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    old_cwd, old_env, old_level = os.getcwd(), dict(os.environ), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        os.chdir(cwd)
        os.environ.update(env_extra)
        out = Path(out_dir[0]) if out_dir else Path(cwd) / "outputs" / "in_process"
        cfg = compose(overrides, output_dir=out)
        out.mkdir(parents=True, exist_ok=True)  # as Hydra makes its run folder
        with contextlib.redirect_stdout(out_text), contextlib.redirect_stderr(err_text):
            code = run_mode(cfg)
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
        root.removeHandler(handler)
        root.setLevel(old_level)
    return Completed(code, out_text.getvalue(), err_text.getvalue() + log_text.getvalue())


def assert_common_meta(out: Path, mode: str) -> dict:
    """Every mode's meta.json comes from export/outputs.write_meta: the common keys, each with its shape."""
    from modules.export.outputs import COMMON_META_KEYS

    meta = json.loads((out / "meta.json").read_text())
    assert set(COMMON_META_KEYS) <= set(meta), sorted(set(COMMON_META_KEYS) - set(meta))
    assert meta["config"]["mode"]["name"] == mode
    assert meta["outputs"][-1] == "meta.json" and all((out / name).is_file() for name in meta["outputs"])
    t = meta["timings"]
    assert set(t) == {"network", "non_network", "non_network_total"} and t["network"] >= 0
    assert t["non_network_total"] == pytest.approx(sum(t["non_network"].values()))
    assert set(meta["machine"]) == {"platform", "torch", "device"}
    assert isinstance(meta["input"], dict) and meta["input"]
    return meta


def test_predict_writes_all_outputs(tiny_scene, tmp_path):
    out = tmp_path / "run"
    proc = run_cli([f"dataset.image_path={tiny_scene}", f"hydra.run.dir={out}", *FAST], tmp_path, in_process=False)
    assert proc.returncode == 0, proc.stderr
    for name in ["distance.npy", "distance.png", "distance_preview.png", "confidence.npy", "pointcloud.ply", "meta.json",
                 "distance.exr", "points.exr", "normal.png", "normal.exr", "mask.png"]:
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.part*")), "temporary files left behind"
    distance = np.load(out / "distance.npy")
    assert distance.dtype == np.float32 and distance.shape == (64, 128)
    assert np.isfinite(distance).all() and (distance > 0).all()
    assert np.median(distance) == pytest.approx(1.0, rel=1e-3)  # relative output
    meta = assert_common_meta(out, "predict")
    assert meta["input"]["image_path"] == str(tiny_scene)
    assert meta["scale"]["units"] == "relative"
    assert set(meta["timings"]["non_network"]) >= {"projection", "alignment", "blending", "writing"}
    assert meta["timings"]["network"] >= 0
    assert meta["config"]["projection"]["face_size"] == 64
    # the 16-bit PNG decodes to the same distances within half its unit
    png = read_distance_png(out / "distance.png", meta["distance_png"]["unit"])
    assert np.abs(png - distance).max() <= 0.5 * meta["distance_png"]["unit"] + 1e-6 * distance.max()  # + float32 rounding
    assert Image.open(out / "distance_preview.png").mode == "RGB"
    conf = np.load(out / "confidence.npy")
    assert conf.shape == distance.shape and conf.min() >= 0 and conf.max() <= 1
    v = read_ply(out / "pointcloud.ply")["data"]["vertex"]
    assert len(v) == 64 * 128 and {"x", "y", "z", "red", "green", "blue"} <= set(v.dtype.names)
    # points lie at the written distances
    radius = np.sqrt(v["x"].astype(np.float64) ** 2 + v["y"] ** 2 + v["z"] ** 2)
    assert np.allclose(np.sort(radius), np.sort(distance.ravel()), rtol=1e-5)
    # and it matches the ground truth after one global scale
    gt = np.load(tiny_scene.with_name("distance.npy"))
    pred = distance * np.median(gt / distance)
    assert np.mean(np.abs(pred - gt) / gt) < 0.02


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n garbage"), "cannot be read as an image"),
        (lambda p: Image.new("RGB", (96, 32)).save(p), "twice as wide as high"),
    ],
)
def test_bad_input_fails_clearly_without_outputs(tmp_path, make, message):
    bad = tmp_path / "pano.png"
    make(bad)
    out = tmp_path / "run"
    proc = run_cli([f"dataset.image_path={bad}", f"hydra.run.dir={out}", *FAST], tmp_path)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr + proc.stdout and message in proc.stderr + proc.stdout
    assert not (out / "distance.npy").exists() and not (out / "meta.json").exists()


def test_default_run_offline_without_weights_says_what_is_missing(tmp_path):
    """The default (predictor=joint on example_data) with no weights anywhere: one clear error, exit 2, no outputs."""
    out = tmp_path / "run"
    proc = run_cli(["predictor=joint", f"paths.checkpoint_dir={tmp_path / 'empty'}", f"hydra.run.dir={out}"], tmp_path,
                   in_process=False, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    text = proc.stderr + proc.stdout
    assert proc.returncode == 2, text
    assert "weights for variant" in text and "tools.download_checkpoints" in text
    assert not (out / "distance.npy").exists()
