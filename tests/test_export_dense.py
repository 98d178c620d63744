"""render_dense library entry points: reading a run directory, exporting every asset, bad input."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from modules.config import options_from
from modules.export.dense import MeshOptions, export_dense_assets
from modules.export.run_dir import RunDirectoryError, load_run_distance
from modules.export.mesh_files import FileOptions
from modules.export.mesh_io import assimp_read, read_ply
from modules.export.splats import read_splats_ply, read_splats_web
from modules.geometry.erp_maps import InvalidDistanceError
from modules.geometry.spherical import erp_directions

H, W = 24, 48


def box_room_distance(H, W, lo=(-2.0, -1.5, -3.0), hi=(2.5, 1.2, 2.0)):
    """Distance from the origin to the inside of the axis-aligned box [lo, hi] (OpenCV axes, floor at y = hi[1])."""
    d = erp_directions(H, W, dtype=torch.float64)
    lo, hi = torch.tensor(lo, dtype=d.dtype), torch.tensor(hi, dtype=d.dtype)
    t = torch.where(d > 0, hi / d, torch.where(d < 0, lo / d, torch.full_like(d, math.inf)))
    return t.min(dim=-1).values.float()


def make_run(tmp_path, distance: np.ndarray, image_size=None, meta=True):
    run = tmp_path / "run"
    run.mkdir()
    np.save(run / "distance.npy", distance)
    if meta:
        img = tmp_path / "pano.png"
        h, w = image_size or distance.shape
        Image.fromarray(np.full((h, w, 3), (200, 100, 50), np.uint8)).save(img)
        (run / "meta.json").write_text(json.dumps({"input": {"image_path": str(img)}}))
    return run


def test_load_run_distance_reads_colours_and_marks_invalid(tmp_path):
    d = box_room_distance(H, W).numpy()
    d[2, 3], d[4, 5], d[6, 7] = np.nan, np.inf, -2.0
    run = make_run(tmp_path, d, image_size=(2 * H, 2 * W))  # the image is resized to the distance map
    loaded = load_run_distance(run)
    assert loaded.distance.shape == (H, W) and loaded.num_invalid == 3
    assert torch.isnan(loaded.distance[[2, 4, 6], [3, 5, 7]]).all()
    assert loaded.rgb.shape == (3, H, W)
    assert torch.allclose(loaded.rgb[:, 0, 0], torch.tensor([200, 100, 50]) / 255.0, atol=1e-6)
    assert loaded.meta["input"]["image_path"].endswith("pano.png") and loaded.confidence is None


def test_run_directory_errors(tmp_path):
    with pytest.raises(RunDirectoryError, match="does not exist"):
        load_run_distance(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirectoryError, match="distance.npy"):
        load_run_distance(tmp_path / "empty")
    for name, arr, msg in [
        ("cube", np.ones((2, 8, 16), np.float32), "2-D"),
        ("nan", np.full((8, 16), np.nan, np.float32), "no valid pixel"),
        ("neg", -np.ones((8, 16), np.float32), "no valid pixel"),
    ]:
        run = tmp_path / name
        run.mkdir()
        np.save(run / "distance.npy", arr)
        with pytest.raises(InvalidDistanceError, match=msg):
            load_run_distance(run)
    (tmp_path / "m").mkdir()
    missing_image = make_run(tmp_path / "m", box_room_distance(8, 16).numpy(), meta=False)
    (missing_image / "meta.json").write_text(json.dumps({"input": {"image_path": "gone.png"}}))
    assert load_run_distance(missing_image).rgb is None  # colours are optional: logged, not fatal


def test_export_all_assets_from_run(tmp_path):
    d = box_room_distance(H, W).numpy() * 0.5  # arbitrary network scale: floor 0.6 units below the camera
    d[10:12, 20:24] = np.nan
    run = make_run(tmp_path, d)
    np.save(run / "confidence.npy", np.full(d.shape, 0.5, np.float32))
    loaded = load_run_distance(run)
    out = tmp_path / "out"
    res = export_dense_assets(
        loaded.distance, loaded.rgb, out, loaded.confidence,
        scale={"camera_height": 1.2},
        splats={"enabled": True},
        point_cloud={"enabled": True, "sor_neighbors": 8},
        files={"verify": ["ply", "obj", "glb", "fbx"]},
    )
    assert res.scale.factor == pytest.approx(2.0, rel=0.01) and res.scale.info["units"] == "metres"
    expected = {"mesh_ply", "mesh_obj", "mesh_mtl", "mesh_texture", "mesh_glb", "mesh_fbx", "splats_ply",
                "splats_splat", "points_ply"}
    assert set(res.files) == expected and all(p.is_file() for p in res.files.values())
    n_valid = H * W - 8
    ply = read_ply(res.files["mesh_ply"])
    assert ply["elements"]["vertex"] == n_valid + 2 == res.stats["mesh_vertices"]
    v = ply["data"]["vertex"]
    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    assert np.isfinite(xyz).all() and abs(xyz[:, 1].min() + 1.2) < 1e-3  # metric, Y up: floor 1.2 m below
    for key in ("mesh_obj", "mesh_glb", "mesh_fbx"):
        info = assimp_read(res.files[key])
        assert info.num_faces == res.stats["mesh_faces"] and info.has_uvs and info.has_normals
        assert info.has_colours == (key != "mesh_glb")  # the GLB's colour is its texture only
        assert info.num_unique_positions == n_valid + 2
    assert set(res.stats["read_back"]) == {"mesh_ply", "mesh_obj", "mesh_glb", "mesh_fbx"}
    splats = read_splats_ply(res.files["splats_ply"])
    assert len(splats["x"]) == n_valid and "f_rest_0" not in splats  # SH degree 0 by default
    assert np.allclose(1 / (1 + np.exp(-splats["opacity"])), 0.95, atol=1e-5)  # opaque: confidence not used
    web = read_splats_web(res.files["splats_splat"])
    assert len(web["means"]) == n_valid and res.files["splats_splat"].stat().st_size == 32 * n_valid
    res2 = export_dense_assets(loaded.distance, loaded.rgb, tmp_path / "out2", loaded.confidence,
                               files={"formats": []}, splats={"enabled": True, "confidence_opacity": True,
                                                              "sh_degree": 3, "formats": ["ply"]})
    splats = read_splats_ply(res2.files["splats_ply"])
    assert np.allclose(1 / (1 + np.exp(-splats["opacity"])), 0.1 + 0.85 * 0.5, atol=1e-5)
    assert "f_rest_44" in splats and "splats_splat" not in res2.files
    assert read_ply(res.files["points_ply"])["elements"]["vertex"] == res.stats["points"] > 0
    assert not any(".part" in p.name for p in out.iterdir())


def test_export_options_and_bad_input(tmp_path):
    d = box_room_distance(16, 32)
    res = export_dense_assets(d, None, tmp_path / "a", files={"formats": ["ply", "glb"]},
                              mesh={"decimate_faces": 200})
    assert set(res.files) == {"mesh_ply", "mesh_glb"} and res.stats["mesh_faces"] <= 200
    assert res.stats["read_back"] == {}  # FBX is verified by default, and none was written
    assert res.scale.info["units"] == "relative"
    assert "red" not in read_ply(res.files["mesh_ply"])["properties"]["vertex"]
    with pytest.raises(ValueError, match="unknown option"):
        export_dense_assets(d, None, tmp_path / "b", mesh={"strid": 2})
    with pytest.raises(ValueError, match="unknown mesh format"):
        export_dense_assets(d, None, tmp_path / "b", files={"formats": ["stl"]})
    with pytest.raises(ValueError, match="splats need colours"):
        export_dense_assets(d, None, tmp_path / "b", files={"formats": ["ply"]}, splats={"enabled": True})
    with pytest.raises(InvalidDistanceError):
        export_dense_assets(torch.zeros(16, 32), None, tmp_path / "b")
    assert options_from(MeshOptions, None) == MeshOptions()
    assert options_from(MeshOptions, {"stride": 2}).stride == 2
    assert options_from(FileOptions, {"verify": None, "formats": ["glb"]}).verify == ()
