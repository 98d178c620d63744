"""The one run-directory reader: panorama runs (distance.npy) and single_view runs (depth.npy + intrinsics)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from modules.errors import UserError
from modules.export.run_dir import RunDirectoryError, load_run_distance, read_run
from modules.geometry.pinhole import depth_to_points, intrinsics_from_fov
from modules.modes.voxel import points_from_run


def single_view_run(tmp_path, with_intrinsics=True):
    run = tmp_path / "sv"
    run.mkdir()
    K = intrinsics_from_fov(16, 12, 60.0)
    depth = np.linspace(1.0, 3.0, 12 * 16, dtype=np.float32).reshape(12, 16)
    depth[0, 0] = np.nan
    np.save(run / "depth.npy", depth)
    Image.fromarray(np.full((24, 32, 3), (10, 20, 30), np.uint8)).save(tmp_path / "photo.png")  # twice the size
    meta = {"input": {"image_path": str(tmp_path / "photo.png")}}
    if with_intrinsics:
        meta["intrinsics"] = K.describe()
    (run / "meta.json").write_text(json.dumps(meta))
    return run, K, depth


def test_single_view_run_is_read_with_its_camera(tmp_path):
    run, K, depth = single_view_run(tmp_path)
    out = read_run(run)
    assert out.kind == "single_view" and out.num_invalid == 1 and torch.isnan(out.values[0, 0])
    assert (out.intrinsics.fx, out.intrinsics.cx) == pytest.approx((K.fx, K.cx))
    assert out.rgb.shape == (3, 12, 16)  # resized to the depth map
    assert torch.allclose(out.rgb[:, 5, 5], torch.tensor([10, 20, 30]) / 255.0, atol=1e-6)
    points, colours, _ = points_from_run(run, stride=1)
    expected = depth_to_points(torch.from_numpy(depth), K).reshape(-1, 3)[1:]  # the NaN pixel is dropped
    assert points.shape == (12 * 16 - 1, 3) and torch.allclose(points, expected)
    assert colours.shape == points.shape
    with pytest.raises(RunDirectoryError, match="distance.npy"):
        load_run_distance(run)  # render_dense needs a panorama
    with pytest.raises(ValueError, match="depth"):
        out.distance


def test_single_view_run_without_intrinsics_is_refused(tmp_path):
    run, _, _ = single_view_run(tmp_path, with_intrinsics=False)
    with pytest.raises(UserError, match="without intrinsics"):
        read_run(run)


def test_neither_map_names_both(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(RunDirectoryError, match="distance.npy or depth.npy"):
        read_run(tmp_path / "e")
