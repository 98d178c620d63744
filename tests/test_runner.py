"""The command line: `python core_exp_runner.py` writes every promised file, readable and consistent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData

from modules.config import PROJECT_ROOT
from modules.export.depth_files import read_distance_png

FAST = ["projection.face_size=64", "export.pointcloud.stride=1"]


def run_cli(args, cwd: Path, **env_extra):
    """Run the CLI; without weights on this machine the tests use the ground-truth-backed predictor by default."""
    if not any(a.startswith("predictor=") for a in args):
        args = ["predictor=synthetic", *args]
    env = dict(os.environ, HYDRA_FULL_ERROR="0", **env_extra)
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "core_exp_runner.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


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
    proc = run_cli([f"dataset.image_path={tiny_scene}", f"hydra.run.dir={out}", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ["distance.npy", "distance.png", "distance_preview.png", "confidence.npy", "pointcloud.ply", "meta.json"]:
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
    ply = PlyData.read(str(out / "pointcloud.ply"))
    v = ply["vertex"]
    assert len(v) == 64 * 128 and {"x", "y", "z", "red", "green", "blue"} <= set(v.data.dtype.names)
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
                   HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    text = proc.stderr + proc.stdout
    assert proc.returncode == 2, text
    assert "weights for variant" in text and "tools.download_checkpoints" in text
    assert not (out / "distance.npy").exists()
