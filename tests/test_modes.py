"""The alternative modes end to end through the command line: equirect, single_view, voxel, eval, render_dense."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from modules.dataset.synthetic_scene import make_room, render_perspective
from modules.evaluation.metrics import METRIC_NAMES
from modules.export.voxel import read_vox
from test_runner import assert_common_meta, run_cli

FAST = ["projection.face_size=64"]
AFFINE_ONLY = ["predictor.corruption.warp_amplitude=0", "predictor.corruption.noise_std=0"]


def abs_rel_after_median(pred: np.ndarray, gt: np.ndarray) -> float:
    pred = pred * np.median(gt / pred)
    return float(np.mean(np.abs(pred - gt) / gt))


def test_equirect_mode_writes_the_predict_outputs(tiny_scene, tmp_path):
    out = tmp_path / "eq"
    proc = run_cli(["mode=equirect", f"dataset.image_path={tiny_scene}", f"hydra.run.dir={out}",
                    "predictor.corruption.scale_range=[1,1]", "predictor.corruption.shift_range=[0,0]"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    meta = assert_common_meta(out, "equirect")
    assert meta["method"] == "equirect" and meta["config"]["mode"]["pad_fraction"] > 0
    distance = np.load(out / "distance.npy")
    # the synthetic predictor without corruption gives 1 / distance on the ERP grid: exact up to the global scale
    gt = np.load(tiny_scene.with_name("distance.npy"))
    assert abs_rel_after_median(distance, gt) < 1e-5
    for name in ["distance.png", "distance_preview.png", "confidence.npy", "pointcloud.ply"]:
        assert (out / name).is_file()


@pytest.fixture(scope="module")
def perspective_scene(tmp_path_factory):
    """A 96x128 pinhole render of a room (60 deg horizontal FOV): rgb.png + depth.npy."""
    folder = tmp_path_factory.mktemp("persp")
    W, H, hfov = 128, 96, 60.0
    f = (W / 2) / math.tan(math.radians(hfov) / 2)
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    rgb, depth = render_perspective(make_room(3), K, H, W)
    Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / "rgb.png")
    np.save(folder / "depth.npy", depth)
    return folder, hfov


def test_single_view_recovers_the_geometry(perspective_scene, tmp_path):
    folder, hfov = perspective_scene
    out = tmp_path / "sv"
    proc = run_cli(["mode=single_view", f"dataset.image_path={folder / 'rgb.png'}", f"hydra.run.dir={out}",
                    f"mode.camera.hfov_deg={hfov}", "predictor.corruption.shift_range=[0,0]",
                    "export.dense.files.formats=[ply,glb]"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    depth = np.load(out / "depth.npy")
    gt = np.load(folder / "depth.npy")
    assert abs_rel_after_median(depth, gt) <= 0.01
    meta = assert_common_meta(out, "single_view")
    assert meta["intrinsics"]["source"] == "fov" and meta["intrinsics"]["fx"] == pytest.approx(64 / math.tan(math.radians(30)))
    assert meta["mesh"]["faces"] > 0 and (out / "mesh.ply").is_file() and (out / "mesh.glb").is_file()
    assert not (out / "mesh.fbx").exists()  # only the formats asked for


def test_single_view_refuses_camera_height(perspective_scene, tmp_path):
    folder, _ = perspective_scene
    proc = run_cli(["mode=single_view", f"dataset.image_path={folder / 'rgb.png'}", f"hydra.run.dir={tmp_path / 'x'}",
                    "scale.camera_height=1.5"], tmp_path)
    assert proc.returncode == 2 and "camera_height needs a panorama" in proc.stderr + proc.stdout


def test_voxel_mode_from_a_run_directory(tiny_scene, tmp_path):
    run = tmp_path / "run"
    assert run_cli([f"dataset.image_path={tiny_scene}", f"hydra.run.dir={run}", *FAST], tmp_path).returncode == 0
    out = tmp_path / "vox"
    proc = run_cli(["mode=voxel", f"mode.run_dir={run}", "mode.resolution=24", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    grid = np.load(out / "voxels.npy")
    vox = read_vox(out / "voxels.vox")
    assert max(grid.shape[:3]) == 24
    assert len(vox.xyz) == int((grid[..., 3] == 255).sum()) > 0
    # the camera stands inside the room: the voxel holding the origin is empty, walls are occupied
    meta = assert_common_meta(out, "voxel")["voxels"]
    origin_idx = np.floor(-np.array(meta["origin"]) / meta["voxel_size"]).astype(int)
    assert grid[tuple(origin_idx)][3] == 0


def test_eval_mode_scores_a_synthetic_set(tmp_path):
    from conftest import write_scene

    data = tmp_path / "data"
    for seed in (4, 5):
        write_scene(data / f"scene{seed}", seed, 64)
    out = tmp_path / "eval"
    proc = run_cli(["mode=eval", f"mode.dataset={data}", f"hydra.run.dir={out}", *FAST, *AFFINE_ONLY], tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert set(METRIC_NAMES) <= set(summary["metrics"])
    assert summary["num_images"] == 2 and summary["num_failed"] == 0
    # affine per-face errors are undone by the alignment: near-exact after median scaling
    assert summary["metrics"]["abs_rel"] < 0.01 and summary["metrics"]["delta1"] > 0.99
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["image"] for r in rows] == ["scene4", "scene5"]
    meta = assert_common_meta(out, "eval")
    assert meta["input"]["images"] == 2 and {"summary.json", "per_image.csv"} <= set(meta["outputs"])


def test_eval_mode_reports_an_unreadable_ground_truth(tmp_path):
    from conftest import write_scene

    data = tmp_path / "data"
    write_scene(data / "good", 6, 64)
    write_scene(data / "bad", 7, 64)
    (data / "bad" / "distance.npy").write_bytes(b"not a numpy file")
    out = tmp_path / "eval"
    proc = run_cli(["mode=eval", f"mode.dataset={data}", f"hydra.run.dir={out}", *FAST,
                    "predictor.gt_distance=" + str(data / "good" / "distance.npy")], tmp_path)
    assert proc.returncode == 1  # the good image is scored, the bad one reported
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 2 and summary["num_failed"] == 1


def test_render_dense_from_a_run_directory(tiny_scene, tmp_path):
    run = tmp_path / "run"
    assert run_cli([f"dataset.image_path={tiny_scene}", f"hydra.run.dir={run}", *FAST], tmp_path).returncode == 0
    out = tmp_path / "dense"
    proc = run_cli(["mode=render_dense", f"mode.run_dir={run}", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ["mesh.ply", "mesh.obj", "mesh.mtl", "mesh.glb", "mesh.fbx"]:
        assert (out / name).is_file(), name
    meta = assert_common_meta(out, "render_dense")
    assert meta["dense"]["read_back"]["mesh_fbx"]["faces"] == meta["dense"]["mesh_faces"] > 0
    assert meta["scale"]["method"] == "keep"


def test_render_dense_refuses_a_directory_without_distance(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli(["mode=render_dense", f"mode.run_dir={empty}", f"hydra.run.dir={tmp_path / 'o'}"], tmp_path)
    assert proc.returncode == 2 and "distance.npy" in proc.stderr + proc.stdout


def test_face_preprocessing_reaches_the_predictor(compose_cfg, tiny_scene, monkeypatch):
    """preprocess.* is off by default; enabled, the predictor sees the enhanced faces."""
    import torch

    from modules.dataset.io import load_panorama
    from modules.geo_predictors.synthetic import SyntheticPredictor
    from modules.pipeline import build_pipeline

    seen = []
    original = SyntheticPredictor.predict_with_confidence

    def spy(self, images, cameras=None):
        seen.append(images.clone())
        return original(self, images, cameras)

    monkeypatch.setattr(SyntheticPredictor, "predict_with_confidence", spy)
    rgb = load_panorama(tiny_scene)
    for extra in ([], ["preprocess.config.gaussian_blur.enabled=true", "preprocess.config.gaussian_blur.sigma=2.0"]):
        cfg = compose_cfg(["predictor=synthetic", "projection.face_size=32", "paths.output_dir=/tmp/unused", *extra])
        build_pipeline(cfg).run(rgb, str(tiny_scene))
    plain, blurred = seen
    assert plain.shape == blurred.shape
    # blurring lowers the faces' high-frequency energy
    def hf(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean()

    assert hf(blurred) < 0.8 * hf(plain)
    assert torch.allclose(plain.mean(), blurred.mean(), atol=0.02)


def test_single_view_writes_through_the_mesh_files_writer(perspective_scene, tmp_path, compose_cfg):
    """single_view honours every export.dense option render_dense does: obj_texture (planar UVs into the photo),
    verify, glb_camera_yfov_deg, point_cloud, splats (previews: see test_export_previews)."""
    from modules.export.mesh_io import read_ply
    from modules.export.splats import read_splats_ply
    from modules.modes import single_view

    folder, hfov = perspective_scene
    out = tmp_path / "sv"
    cfg = compose_cfg(["mode=single_view", "predictor=synthetic", f"dataset.image_path={folder / 'rgb.png'}",
                       f"paths.output_dir={out}", f"mode.camera.hfov_deg={hfov}",
                       "export.dense.files.formats=[ply,obj,glb]", "export.dense.files.verify=[ply,obj]",
                       "export.dense.files.glb_camera_yfov_deg=33.0", "export.dense.point_cloud.enabled=true",
                       "export.dense.point_cloud.sor_neighbors=null", "export.dense.point_cloud.normals=false",
                       "export.dense.splats.enabled=true", "export.dense.splats.stride=2"])
    assert single_view.run(cfg) == 0
    meta = assert_common_meta(out, "single_view")
    mesh = meta["mesh"]
    assert set(mesh["read_back"]) == {"mesh_ply", "mesh_obj"} and mesh["read_back"]["mesh_obj"]["faces"] == mesh["faces"]
    assert {"mesh_texture", "points_ply", "splats_ply"} <= set(mesh["files"])
    obj = (out / "mesh.obj").read_text().splitlines()
    vt = np.array([[float(x) for x in line.split()[1:]] for line in obj if line.startswith("vt ")])
    assert len(vt) == mesh["vertices"] and vt.min() > 0 and vt.max() < 1  # one planar UV per vertex, inside the photo
    assert "map_Kd mesh_texture.png" in (out / "mesh.mtl").read_text()
    glb = (out / "mesh.glb").read_bytes()
    doc = json.loads(glb[20:20 + int.from_bytes(glb[12:16], "little")])
    assert doc["cameras"][0]["perspective"]["yfov"] == pytest.approx(math.radians(33.0))
    assert read_ply(out / "points.ply")["elements"]["vertex"] == 96 * 128 == mesh["points"]
    assert len(read_splats_ply(out / "splats.ply")["x"]) == 48 * 64 == mesh["splats"]


def test_eval_pipeline_is_a_target(tmp_path, compose_cfg):
    """mode.pipeline picks what predicts (``_target_``); the one-pass baseline gets its own options (it used to read
    mode.pad_fraction, which mode=eval does not have)."""
    from conftest import write_scene

    from modules.modes import eval as eval_mode

    data = tmp_path / "data"
    write_scene(data / "scene8", 8, 32)
    for name, pipeline in [
        ("tangent", []),
        ("equirect", ["mode.pipeline._target_=modules.pipeline.build_equirect", "+mode.pipeline.pad_fraction=0.125",
                      "+mode.pipeline.fill_iterations=64"]),
    ]:
        out = tmp_path / name
        cfg = compose_cfg(["mode=eval", "predictor=synthetic", f"mode.dataset={data}", f"paths.output_dir={out}",
                           "projection.face_size=32", *AFFINE_ONLY, *pipeline])
        assert eval_mode.run(cfg) == 0
        meta = assert_common_meta(out, "eval")
        assert meta["eval"]["pipeline"] == f"modules.pipeline.build_{'pipeline' if name == 'tangent' else name}"
        assert json.loads((out / "summary.json").read_text())["num_images"] == 1
