"""Pinhole intrinsics (FOV, parameters, EXIF), back-projection, depth <-> distance."""

import math

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from modules.geometry.pinhole import (
    DEFAULT_HFOV_DEG,
    depth_to_distance,
    depth_to_points,
    distance_to_depth,
    intrinsics_from_exif,
    intrinsics_from_fov,
    intrinsics_from_params,
    pixel_rays,
    points_to_pixels,
)


def test_intrinsics_from_fov():
    K = intrinsics_from_fov(640, 480, 90.0)
    assert K.fx == pytest.approx(320.0) and K.fy == pytest.approx(320.0)
    assert (K.cx, K.cy) == (320.0, 240.0)
    assert K.hfov_deg == pytest.approx(90.0)
    assert K.vfov_deg == pytest.approx(math.degrees(2 * math.atan(240 / 320)))
    K2 = intrinsics_from_fov(640, 480, 90.0, vfov_deg=60.0)
    assert K2.fy == pytest.approx(240.0 / math.tan(math.radians(30.0)))
    with pytest.raises(ValueError, match="hfov_deg must be in"):
        intrinsics_from_fov(10, 10, 180.0)


def test_intrinsics_from_params_and_resize():
    K = intrinsics_from_params(100, 50, fx=80.0)
    assert (K.fx, K.fy, K.cx, K.cy) == (80.0, 80.0, 50.0, 25.0)
    cv = intrinsics_from_params(100, 50, fx=80.0, fy=82.0, cx=49.5, cy=24.5, opencv_pixel_centres=True)
    assert (cv.cx, cv.cy, cv.fy) == (50.0, 25.0, 82.0)
    half = cv.resized(50, 25)
    assert (half.fx, half.fy, half.cx, half.cy) == (40.0, 41.0, 25.0, 12.5)
    assert half.hfov_deg == pytest.approx(cv.hfov_deg)
    assert torch.equal(K.matrix(), torch.tensor([[80.0, 0, 50], [0, 80, 25], [0, 0, 1]]))
    with pytest.raises(ValueError, match="focal lengths must be positive"):
        intrinsics_from_params(10, 10, fx=0.0)


def test_rays_and_points_of_a_fronto_parallel_plane():
    K = intrinsics_from_fov(8, 6, 70.0)
    rays = pixel_rays(K)
    assert rays.shape == (6, 8, 3) and torch.all(rays[..., 2] == 1)
    # the image is symmetric about its centre: corner rays mirror each other
    assert torch.allclose(rays[0, 0, :2], -rays[-1, -1, :2])
    # the ray of pixel u reaches the image edge at u = -0.5: x / z = tan(hfov / 2) there
    assert float(rays[0, -1, 0] + 0.5 / K.fx) == pytest.approx(math.tan(math.radians(35.0)), rel=1e-6)
    depth = torch.full((6, 8), 2.5)
    points = depth_to_points(depth, K)
    assert points.shape == (6, 8, 3) and torch.allclose(points[..., 2], depth)
    uv, z = points_to_pixels(points, K)
    v, u = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    assert torch.allclose(uv, torch.stack((u, v), -1), atol=1e-5) and torch.allclose(z, depth)
    batched = depth_to_points(depth.expand(3, 6, 8), K)
    assert batched.shape == (3, 6, 8, 3)
    with pytest.raises(ValueError, match="does not match the intrinsics"):
        depth_to_points(torch.ones(5, 8), K)


def test_depth_distance_round_trip():
    K = intrinsics_from_fov(9, 7, 80.0)
    depth = torch.rand(7, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1.0
    distance = depth_to_distance(depth, K)
    assert torch.allclose(distance, depth_to_points(depth, K).norm(dim=-1))
    assert torch.all(distance >= depth)
    assert float(distance[3, 4]) == pytest.approx(float(depth[3, 4]))  # the centre pixel looks along +z
    assert torch.allclose(distance_to_depth(distance, K), depth)


def _jpeg_with_exif(path, size, tags):
    image = Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8))
    exif = Image.Exif()
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    for tag, value in tags.items():
        ifd[tag] = value
    image.save(path, exif=exif)
    return path


def test_exif_35mm_equivalent(tmp_path):
    path = _jpeg_with_exif(tmp_path / "a.jpg", (60, 40), {ExifTags.Base.FocalLengthIn35mmFilm: 24})
    K = intrinsics_from_exif(path)
    assert K.source == "exif_35mm" and (K.width, K.height) == (60, 40)
    # 3:2 image: the diagonal rule equals the width rule f_px = f35 / 36 mm * W
    assert K.fx == pytest.approx(24 / 36 * 60)
    assert K.hfov_deg == pytest.approx(math.degrees(2 * math.atan(18 / 24)))
    square = intrinsics_from_exif(path, width=100, height=100)
    assert square.fx == pytest.approx(24 * math.hypot(100, 100) / math.hypot(36, 24))


def test_exif_focal_plane_resolution(tmp_path):
    # 4 mm lens, 250 px per mm on the sensor (unit 4 = mm), captured at 80 px wide, the file resized to 40 px
    tags = {
        ExifTags.Base.FocalLength: 4.0,
        ExifTags.Base.FocalPlaneXResolution: 250.0,
        ExifTags.Base.FocalPlaneYResolution: 250.0,
        ExifTags.Base.FocalPlaneResolutionUnit: 4,
        ExifTags.Base.ExifImageWidth: 80,
        ExifTags.Base.ExifImageHeight: 60,
    }
    path = _jpeg_with_exif(tmp_path / "b.jpg", (40, 30), tags)
    K = intrinsics_from_exif(path)
    assert K.source == "exif_focal_plane"
    assert K.fx == pytest.approx(4.0 * 250.0 * 40 / 80) and K.fy == pytest.approx(4.0 * 250.0 * 30 / 60)


def test_exif_missing_uses_default_fov(tmp_path):
    path = tmp_path / "c.png"
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(path)
    K = intrinsics_from_exif(path)
    assert K.source == "default_fov" and K.hfov_deg == pytest.approx(DEFAULT_HFOV_DEG)
    assert intrinsics_from_exif(path, default_hfov_deg=75.0).hfov_deg == pytest.approx(75.0)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        intrinsics_from_exif(tmp_path / "nope.jpg")
