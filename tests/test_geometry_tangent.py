"""Tangent faces: polyhedra, frames, ERP <-> face resampling, coverage, and agreement with py360convert."""

import math

import numpy as np
import pytest
import torch
import yaml

from modules.config import PROJECT_ROOT
from modules.geometry.polyhedra import cube, icosphere
from modules.geometry.projections import CubemapProjection, IcosahedronProjection
from modules.geometry.spherical import direction_to_lonlat, erp_directions, lonlat_to_direction
from modules.geometry.tangent import (
    TangentCameras,
    erp_face_samples,
    erp_to_faces,
    face_frame_from_axis,
    face_rays,
    faces_to_erp,
    pad_erp,
)


def smooth_image(height: int, dtype=torch.float64) -> torch.Tensor:
    """[1, 3, H, 2H] a smooth function of the direction (continuous over the whole sphere, poles included)."""
    d = erp_directions(height, 2 * height, dtype=dtype)
    return (0.5 + 0.5 * torch.stack((d[..., 0], d[..., 1] * d[..., 2], torch.sin(2 * d[..., 2])), 0))[None]


@pytest.mark.parametrize("level, faces", [(0, 20), (1, 80)])
def test_icosphere_counts_and_regularity(level, faces):
    v, f = icosphere(level)
    assert f.shape == (faces, 3)
    assert torch.allclose(v.norm(dim=-1), torch.ones(len(v), dtype=v.dtype))
    # outward orientation: normals point away from the centre
    a, b, c = v[f].unbind(1)
    assert ((torch.linalg.cross(b - a, c - a, dim=-1) * (a + b + c)).sum(-1) > 0).all()
    # Euler: V - E + F = 2
    edges = torch.unique(torch.sort(torch.cat((f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]])), 1).values, dim=0)
    assert len(v) - len(edges) + len(f) == 2


def test_icosahedron_has_a_vertex_at_each_pole_and_level0_angular_radius():
    v, f = icosphere(0)
    assert torch.allclose(v[0], torch.tensor([0.0, -1.0, 0.0], dtype=v.dtype))
    centre = torch.nn.functional.normalize(v[f].mean(1), dim=-1)
    radius = torch.rad2deg(torch.acos((centre[:, None, :] * v[f]).sum(-1).clamp(-1, 1))).amax(1)
    assert torch.allclose(radius, torch.full_like(radius, 37.3774), atol=1e-3)


@pytest.mark.parametrize("projection", [IcosahedronProjection(0, 32), IcosahedronProjection(1, 32), CubemapProjection(32)])
def test_frames_are_rotations_looking_at_face_centres(projection):
    cams = projection.cameras(dtype=torch.float64)
    R = cams.R_world_from_face
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    assert torch.allclose(R.transpose(1, 2) @ R, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(len(R), dtype=R.dtype))
    v, f = projection.polygons()
    centre = torch.nn.functional.normalize(v[f].mean(1), dim=-1)
    assert torch.allclose(R[:, :, 2], centre, atol=1e-12)
    # image "down" never points up: the y axis has a non-negative world-down component (except at the poles)
    off_pole = centre[:, 1].abs() < 0.999
    assert (R[off_pole, 1, 1] >= -1e-12).all()


def test_cube_faces_cover_each_axis():
    v, f = cube()
    centres = torch.nn.functional.normalize(v[f].mean(1), dim=-1)
    expected = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 0, -1], [-1, 0, 0], [0, -1, 0], [0, 1, 0]], dtype=v.dtype)
    assert torch.allclose(centres, expected, atol=1e-12)


def test_face_frame_at_the_pole_is_well_defined():
    R = face_frame_from_axis(torch.tensor([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64))
    assert torch.isfinite(R).all()
    assert torch.allclose(torch.linalg.det(R), torch.ones(2, dtype=R.dtype))


def test_face_rays_known_points():
    cams = TangentCameras(torch.eye(3, dtype=torch.float64)[None], torch.tensor([1.0], dtype=torch.float64), 4)
    rays = face_rays(cams)[0]
    # pixel (col 3, row 0) centre: xn = 0.75, yn = -0.75 -> ray (0.75, -0.75, 1) normalised
    assert torch.allclose(rays[0, 3], torch.nn.functional.normalize(torch.tensor([0.75, -0.75, 1.0], dtype=torch.float64), dim=0))
    assert torch.allclose(rays.norm(dim=-1), torch.ones(4, 4, dtype=torch.float64))


def test_pad_erp_wraps_longitude_and_crosses_poles():
    x = torch.arange(2 * 4 * 8, dtype=torch.float64).view(1, 2, 4, 8)
    p = pad_erp(x, 1)
    assert p.shape == (1, 2, 6, 10)
    assert torch.equal(p[..., 1:-1, 0], x[..., :, -1]) and torch.equal(p[..., 1:-1, -1], x[..., :, 0])
    # above the top row: the top row seen from the other side of the pole (180 degrees away)
    assert torch.equal(p[..., 0, 1:-1], torch.roll(x[..., 0, :], 4, dims=-1))


def test_erp_to_faces_matches_analytic_function_including_poles():
    """Sampling a smooth function of direction gives that function at the face rays (bilinear error only)."""
    H = 256
    cams = IcosahedronProjection(0, 64).cameras(dtype=torch.float64)
    faces = erp_to_faces(smooth_image(H), cams, antialias=False)[0]  # [F, 3, S, S]
    rays = face_rays(cams)
    expected = 0.5 + 0.5 * torch.stack((rays[..., 0], rays[..., 1] * rays[..., 2], torch.sin(2 * rays[..., 2])), 1)
    # bound: bilinear interpolation of a function with curvature ~1 on a grid of pi/256 rad: ~ (pi/256)^2
    assert (faces - expected).abs().max() < 2e-3


def test_round_trip_erp_faces_erp_on_smooth_image():
    H = 128
    img = smooth_image(H)
    cams = IcosahedronProjection(0, 128).cameras(dtype=torch.float64)
    faces = erp_to_faces(img, cams)[0]
    samples = erp_face_samples(cams, H, 2 * H)
    back, weight = faces_to_erp(faces, samples)
    assert (weight > 0).all()
    # stated bound: two bilinear resamplings of a smooth image at comparable resolution: < 0.5 % of its range
    assert (back - img[0]).abs().max() < 5e-3


def default_padding_factor() -> float:
    with open(PROJECT_ROOT / "configs" / "projection" / "icosahedron.yaml") as f:
        return float(yaml.safe_load(f)["padding_factor"])


def test_every_pixel_seen_by_at_least_two_faces_at_default_padding():
    cams = IcosahedronProjection(0, 64, default_padding_factor()).cameras()
    coverage = erp_face_samples(cams, 256, 512).coverage()
    assert coverage.min() >= 2


def test_without_padding_some_pixels_are_seen_once():
    coverage = erp_face_samples(IcosahedronProjection(0, 64, 1.0).cameras(), 128, 256).coverage()
    assert coverage.min() == 1  # faces exactly tile the sphere: the contrast to the default above


def test_sample_weights_fall_to_zero_at_face_borders():
    cams = IcosahedronProjection(0, 64).cameras(dtype=torch.float64)
    s = erp_face_samples(cams, 128, 256)
    edge = s.face_xy.abs().amax(1)
    assert (s.weight > 0).all() and (edge < 1).all()
    near_border = edge > 0.98
    assert near_border.any() and s.weight[near_border].max() < 0.03


def test_face_crop_matches_py360convert():
    py360convert = pytest.importorskip("py360convert")
    H = 256
    img = smooth_image(H)
    for lon_deg, lat_deg in [(30.0, 20.0), (-120.0, -35.0), (179.0, 0.0)]:
        ref = py360convert.e2p(
            img[0].permute(1, 2, 0).numpy(), fov_deg=(90, 90), u_deg=lon_deg, v_deg=lat_deg, out_hw=(64, 64)
        )
        axis = lonlat_to_direction(torch.tensor([math.radians(lon_deg)], dtype=torch.float64),
                                   torch.tensor([math.radians(lat_deg)], dtype=torch.float64))
        cams = TangentCameras(face_frame_from_axis(axis), torch.tensor([1.0], dtype=torch.float64), 64)
        ours = erp_to_faces(img, cams)[0, 0].permute(1, 2, 0).numpy()
        # stated bound: < 1 % of the image range (py360convert places pixel centres slightly differently)
        assert np.abs(ours - ref).max() < 1e-2
        assert np.abs(ours - ref).mean() < 3e-3


def test_longitude_seam_is_continuous_in_a_face_looking_backwards():
    """A face centred on lon = 180 deg straddles the ERP's left/right edges; a function of direction is smooth there."""
    H = 128
    axis = torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)
    cams = TangentCameras(face_frame_from_axis(axis), torch.tensor([0.5], dtype=torch.float64), 32)
    face = erp_to_faces(smooth_image(H), cams)[0, 0]
    jumps = (face[:, :, 1:] - face[:, :, :-1]).abs().max()
    assert jumps < 0.05  # a seam would jump by up to the image range


def test_geometry_runs_in_float32_and_keeps_dtype():
    cams = IcosahedronProjection(0, 16).cameras(dtype=torch.float32)
    out = erp_to_faces(smooth_image(32, torch.float32), cams)
    assert out.dtype == torch.float32 and out.shape == (1, 20, 3, 16, 16)
    lon, lat = direction_to_lonlat(face_rays(cams))
    assert lon.dtype == torch.float32


def test_rotated_copies_move_face_borders_into_other_faces():
    base = IcosahedronProjection(0, 32)
    both = IcosahedronProjection(0, 32, rotations=2)
    cams = both.cameras(dtype=torch.float64)
    assert cams.num_faces == 40
    R = cams.R_world_from_face
    assert torch.allclose(R[:20], base.cameras(dtype=torch.float64).R_world_from_face)
    # the second copy is the first turned by the configured rotation, faces kept upright
    Rk = both.rotation(1)
    assert torch.allclose(R[20:, :, 2], R[:20, :, 2] @ Rk.T, atol=1e-12)
    assert (R[20:, 1, 1] >= -1e-12).all()
    # the pole is a vertex of copy 0 (where 5 faces meet, all near their corners); copy 1 sees it well inside a face
    pole = torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)
    cam = torch.einsum("fij,ni->fnj", R, pole)[:, 0]  # [F, 3] pole in each face's camera
    xn = (cam[:, :2].abs().amax(-1) / cam[:, 2] / cams.tan_half_fov).where(cam[:, 2] > 0, torch.tensor(9.0, dtype=torch.float64))
    assert xn[:20].min() > 0.3 and xn[20:].min() < 0.3


@pytest.mark.parametrize("projection", [IcosahedronProjection(0, 16), IcosahedronProjection(1, 16), CubemapProjection(16, 1.2)])
def test_face_samples_match_a_brute_force_search(projection):
    """The per-face row window is only a shortcut: the samples are exactly the pixels strictly inside each image."""
    cams = projection.cameras(dtype=torch.float64)
    H, W = 48, 96
    s = erp_face_samples(cams, H, W)
    d = erp_directions(H, W, dtype=torch.float64).reshape(-1, 3)
    cam = torch.einsum("pi,fij->fpj", d, cams.R_world_from_face)  # [F, P, 3]
    t = cams.tan_half_fov[:, None]
    inside = (cam[..., 2] > 0) & (cam[..., 0].abs() < t * cam[..., 2]) & (cam[..., 1].abs() < t * cam[..., 2])
    face, pixel = torch.nonzero(inside, as_tuple=True)
    assert torch.equal(s.face_index, face) and torch.equal(s.erp_index, pixel)
