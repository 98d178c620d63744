"""Point clouds: invalid pixels dropped, outlier removal, voxel downsampling, normals, PLY read-back."""

import numpy as np
import pytest
import torch

from modules.export.mesh_io import read_ply
from modules.dataset.synthetic_scene import make_room, render_erp
from modules.export.pointcloud import erp_outlier_mask, erp_points, process_point_cloud, write_point_cloud_ply

H, W = 24, 48


def test_erp_points_drop_invalid():
    d = torch.full((H, W), 2.0)
    d[0, :5] = float("nan")
    d[3, 3] = -1.0
    d[4, 4] = float("inf")
    pts, cols = erp_points(d, torch.rand(3, H, W))
    assert pts.shape == (H * W - 7, 3) and cols.shape == pts.shape
    assert torch.allclose(pts.norm(dim=1), torch.tensor(2.0))


def test_outliers_voxels_and_normals():
    g = torch.Generator().manual_seed(0)
    pts, cols = erp_points(torch.full((H, W), 2.0), torch.rand(3, H, W, generator=g))
    outliers = torch.tensor([[9.0, 9.0, 9.0], [-8.0, 7.0, 9.0], [0.0, 9.0, -9.0]])
    allp = torch.cat((pts, outliers))
    allc = torch.cat((cols, torch.zeros(3, 3)))
    p, c, n = process_point_cloud(allp, allc, sor_neighbors=10, sor_std_ratio=2.0, normals=True)
    assert float(p.norm(dim=1).max()) < 2.01  # the three far points are gone
    assert p.shape[0] >= pts.shape[0] * 0.95 and c.shape == p.shape and n.shape == p.shape
    assert torch.allclose(n.norm(dim=1), torch.tensor(1.0, dtype=n.dtype), atol=1e-4)
    radial = (n * p).sum(1) / p.norm(dim=1)
    assert float(radial.max()) < -0.9  # normals of a sphere seen from inside point at the camera
    p2, c2, n2 = process_point_cloud(pts, cols, sor_neighbors=None, voxel_size=0.5, normals=False)
    assert 0 < p2.shape[0] < pts.shape[0] / 3 and n2 is None and c2.shape == p2.shape
    keep, _, _ = process_point_cloud(pts, None, sor_neighbors=None, normals=False)
    assert torch.equal(keep, pts)
    with pytest.raises(ValueError, match="voxel_size"):
        process_point_cloud(pts, None, voxel_size=0.0)


def test_ply_with_normals_reads_back(tmp_path):
    pts, cols = erp_points(torch.full((H, W), 1.0), torch.rand(3, H, W))
    p, c, n = process_point_cloud(pts, cols, sor_neighbors=None)
    write_point_cloud_ply(tmp_path / "points.ply", p, c, n)
    info = read_ply(tmp_path / "points.ply")
    assert info["elements"] == {"vertex": p.shape[0]}
    assert info["properties"]["vertex"] == ["x", "y", "z", "nx", "ny", "nz", "red", "green", "blue"]
    v = info["data"]["vertex"]
    flip = np.array([1, -1, -1])  # glTF axes (Y up) by default
    assert np.allclose(np.stack([v["x"], v["y"], v["z"]], 1), p.numpy() * flip, atol=1e-6)
    assert np.allclose(np.stack([v["nx"], v["ny"], v["nz"]], 1), n.numpy() * flip, atol=1e-6)
    write_point_cloud_ply(tmp_path / "cv.ply", p, c, n, axes="opencv")
    v = read_ply(tmp_path / "cv.ply")["data"]["vertex"]
    assert np.allclose(np.stack([v["nx"], v["ny"], v["nz"]], 1), n.numpy(), atol=1e-6)
    write_point_cloud_ply(tmp_path / "plain.ply", p)  # the original two-argument call still works
    assert read_ply(tmp_path / "plain.ply")["properties"]["vertex"] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="empty"):
        write_point_cloud_ply(tmp_path / "empty.ply", p[:0])
    assert not (tmp_path / "empty.ply").exists()


@pytest.mark.parametrize("seed", [0, 3])
def test_outlier_removal_keeps_corners_and_edges(seed):
    """Synthetic room at 128x256 with exact truth; error model: 0.3 % Gaussian noise on every pixel, and 1 % of the
    pixels (uniformly at random) moved along their ray by 10-50 % of their distance, nearer or farther."""
    gt = torch.from_numpy(render_erp(make_room(seed), 128)[1]).double()
    g = torch.Generator().manual_seed(seed)
    d = gt * (1 + 0.003 * torch.randn(gt.shape, generator=g, dtype=gt.dtype))
    injected = torch.rand(gt.shape, generator=g, dtype=gt.dtype) < 0.01
    magnitude = 0.1 + 0.4 * torch.rand(gt.shape, generator=g, dtype=gt.dtype)
    sign = torch.where(torch.rand(gt.shape, generator=g, dtype=gt.dtype) < 0.5, -1.0, 1.0)
    d = torch.where(injected, gt * (1 + sign * magnitude), d)
    accurate = ((d - gt).abs() / gt < 0.01) & ~injected
    out = erp_outlier_mask(d)
    assert (accurate & ~out).sum() / accurate.sum() >= 0.995
    assert (injected & out).sum() / injected.sum() >= 0.95
    # corners and edges: the pixels whose 3x3 neighbourhood spans a crease or a depth edge are kept as well
    jump = torch.zeros_like(gt, dtype=torch.bool)
    for dv, du in ((0, 1), (1, 0)):
        r = (gt.roll(-du, 1).roll(-dv, 0) / gt - 1).abs()
        jump |= r > 0.02
    edges = jump & accurate
    assert edges.sum() > 100 and (edges & ~out).sum() / edges.sum() >= 0.995
    # invalid pixels are never outliers; bad input is an error
    d[0, :5] = float("nan")
    assert not erp_outlier_mask(d)[0, :5].any()
    with pytest.raises(ValueError, match="max_residual"):
        erp_outlier_mask(d, 0.0)
