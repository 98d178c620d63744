"""Every mode that takes panoramas runs through the one batch runner (modules/modes/batch.py + modules/runtime/jobs.py):
folders, summary.json next to the outputs (batch.output_dir), completion marker, printed output folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_scene
from test_runner import run_cli

FAST = ["projection.face_size=64", "batch.progress=false"]
#: per mode: extra overrides, files each panorama's folder must hold
MODES = {
    "equirect": ([], ["distance.npy", "confidence.npy", "meta.json"]),
    "voxel": (["mode.resolution=16"], ["voxels.vox", "voxels.npy", "meta.json"]),
    "render_dense": (["export.dense.files.formats=[ply]"], ["mesh.ply", "distance.npy", "meta.json"]),
}


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    root = tmp_path_factory.mktemp("tour")
    for seed in (1, 2):
        write_scene(root / f"room{seed}", seed=seed, height=32)
    (root / "broken.png").write_bytes(b"")
    return root


@pytest.mark.parametrize("mode", sorted(MODES))
def test_mode_takes_a_folder_and_resumes_into_the_same_summary(mode, tour, tmp_path):
    extra, files = MODES[mode]
    out = tmp_path / "out"
    args = [f"mode={mode}", f"dataset.image_path={tour}", f"batch.output_dir={out}", *FAST, *extra]
    proc = run_cli([*args, f"hydra.run.dir={tmp_path / 'run1'}"], tmp_path)
    assert proc.returncode == 1, proc.stderr  # the empty file fails, the rooms finish
    assert f"outputs: {out}" in proc.stdout and "broken.png: file is empty" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())  # next to the outputs, not in the run folder
    assert not (tmp_path / "run1" / "summary.json").exists()
    status = {p["name"]: p["status"] for p in summary["panoramas"]}
    assert status == {"room1-rgb": "ok", "room2-rgb": "ok", "broken": "failed"}
    for name in ("room1-rgb", "room2-rgb"):
        meta = json.loads((out / name / "meta.json").read_text())
        assert meta["complete"] is True and len(meta["fingerprint"]) == 64 and meta["config"]["mode"]["name"] == mode
        assert all((out / name / f).is_file() for f in files)
    # a resume from another run folder skips the finished ones and rewrites the same summary.json
    proc = run_cli([*args, "batch.skip_existing=true", f"hydra.run.dir={tmp_path / 'run2'}"], tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == 2 and summary["failed"] == 1 and not (tmp_path / "run2" / "summary.json").exists()


def test_equirect_single_image_writes_summary_and_marker(tiny_scene, tmp_path):
    out = tmp_path / "eq"
    proc = run_cli(["mode=equirect", f"dataset.image_path={tiny_scene}", f"hydra.run.dir={out}", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"outputs: {out}" in proc.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] is True and meta["method"] == "equirect"
    assert json.loads((out / "summary.json").read_text())["succeeded"] == 1
    assert np.load(out / "distance.npy").shape == (64, 128)


def test_a_mode_changes_the_fingerprint(tiny_scene, tmp_path):
    """Outputs of mode=predict are not taken as finished outputs of mode=equirect in the same folder."""
    out = tmp_path / "same"
    assert run_cli([f"dataset.image_path={tiny_scene}", f"hydra.run.dir={out}", *FAST], tmp_path).returncode == 0
    predict = json.loads((out / "meta.json").read_text())["fingerprint"]
    proc = run_cli(["mode=equirect", f"dataset.image_path={tiny_scene}", f"hydra.run.dir={out}",
                    "batch.skip_existing=true", *FAST], tmp_path)
    assert proc.returncode == 0
    assert json.loads((out / "summary.json").read_text())["skipped"] == 0
    assert json.loads((out / "meta.json").read_text())["fingerprint"] != predict


def test_oversized_panorama_is_refused_in_every_panorama_mode(tiny_scene, tmp_path):
    for mode in ("equirect", "voxel", "render_dense"):
        proc = run_cli([f"mode={mode}", f"dataset.image_path={tiny_scene}", f"hydra.run.dir={tmp_path / mode}",
                        "dataset.max_memory_gb=0.01", *FAST], tmp_path)
        assert proc.returncode == 2
        assert "dataset.max_memory_gb=0.0" in proc.stdout + proc.stderr and str(tiny_scene) in proc.stdout


def test_single_view_takes_a_folder_of_photos(tmp_path):
    import math

    from PIL import Image

    from modules.dataset.synthetic_scene import make_room, render_perspective

    folder = tmp_path / "photos"
    W, H = 64, 48
    f = (W / 2) / math.tan(math.radians(30))
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    for seed in (3, 4):
        rgb, depth = render_perspective(make_room(seed), K, H, W)
        (folder / f"shot{seed}").mkdir(parents=True)
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).convert("L").save(folder / f"shot{seed}" / "photo.png")
        np.save(folder / f"shot{seed}" / "depth.npy", depth)
    out = tmp_path / "out"
    proc = run_cli(["mode=single_view", f"dataset.image_path={folder}", f"batch.output_dir={out}",
                    f"hydra.run.dir={tmp_path / 'run'}", "mode.camera.hfov_deg=60", "export.dense.files.formats=[ply]",
                    "batch.progress=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"outputs: {out}" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["succeeded"] == 2
    for seed in (3, 4):
        run = out / f"shot{seed}-photo"
        meta = json.loads((run / "meta.json").read_text())
        assert meta["complete"] is True and meta["intrinsics"]["source"] == "fov"
        assert meta["input"]["conversions"] == ["grayscale replicated to RGB"]  # recorded, as for panoramas
        depth = np.load(run / "depth.npy")
        gt = np.load(folder / f"shot{seed}" / "depth.npy")
        assert depth.shape == (H, W) and (run / "mesh.ply").is_file()
        assert np.corrcoef(depth.ravel(), gt.ravel())[0, 1] > 0.99  # the synthetic predictor's depth of this photo
