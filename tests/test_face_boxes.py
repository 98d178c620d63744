"""The box formulation of ERP <- face splatting (modules/geometry/face_boxes.py) against the sample table it replaces
in blending and sky detection: the same (pixel, face) pairs, the same sums to float rounding, the same blend."""

from __future__ import annotations

import pytest
import torch

from modules.fusion.blending import Blender
from modules.fusion.faces import AlignedFaces
from modules.geometry.cache import DiskCache
from modules.geometry.face_boxes import boxes_to_erp, cached_erp_face_boxes, erp_face_boxes, splat_boxes
from modules.geometry.projections import CubemapProjection, IcosahedronProjection
from modules.geometry.tangent import (TangentCameras, erp_face_samples, face_frame_from_axis, faces_to_erp,
                                      splat_faces)


def _random_cameras(n: int, size: int, seed: int) -> TangentCameras:
    g = torch.Generator().manual_seed(seed)
    axes = torch.randn(n, 3, generator=g)
    axes[0] = torch.tensor([0.0, -1.0, 0.0])  # one face looking straight up (holds a pole)
    tan = 0.3 + 1.7 * torch.rand(n, generator=g)
    return TangentCameras(face_frame_from_axis(axes), tan, size)


@pytest.mark.parametrize("cams", [
    IcosahedronProjection(0, 24, 1.7).cameras(),
    IcosahedronProjection(1, 16, 1.3).cameras(),
    CubemapProjection(20, 1.1).cameras(),
    _random_cameras(9, 20, 0),
], ids=["ico0", "ico1", "cubemap", "random"])
def test_boxes_splat_equals_the_sample_table(cams):
    H, W = 40, 80
    table = erp_face_samples(cams, H, W, 1.5)
    boxes = erp_face_boxes(cams, H, W, 1.5)
    # the same pairs: every pixel seen by the same number of faces, the same border-weight sums
    assert torch.equal(boxes.coverage(), table.coverage())
    w = torch.zeros(H * W).index_add_(0, table.erp_index, table.weight)
    assert torch.allclose(boxes.weight_sum, w, rtol=1e-5, atol=1e-6)
    assert int((boxes.weight > 0).sum()) == table.erp_index.numel()
    maps = torch.rand(cams.num_faces, 3, cams.size, cams.size, generator=torch.Generator().manual_seed(1))
    a, b = splat_faces(maps, table), splat_boxes(maps, boxes)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    mean_a, den_a = faces_to_erp(maps, table)
    mean_b, den_b = boxes_to_erp(maps, boxes)
    assert torch.allclose(mean_a, mean_b, atol=1e-5) and torch.allclose(den_a, den_b, atol=1e-5)
    # the maps given face by face through one reused buffer: the same sums, bit for bit
    buf = torch.empty(3, cams.size, cams.size)
    calls = []

    def face_maps(f: int) -> torch.Tensor:
        calls.append(f)
        return buf.copy_(maps[f])
    assert torch.equal(splat_boxes(face_maps, boxes), b)
    assert calls == sorted(set(calls)) and len(calls) <= cams.num_faces


@pytest.mark.parametrize("cams", [
    IcosahedronProjection(0, 24, 1.7).cameras(),
    CubemapProjection(20, 1.1).cameras(),
    _random_cameras(9, 20, 0),
], ids=["ico0", "cubemap", "random"])
def test_row_bands_hold_the_same_pixels_and_sums(cams):
    """Row bands (each with the columns of the face's cap on its rows, wrapping around the seam) against one box per
    face: the same (pixel, face) pairs and, with weight power 1 (no pow: its vectorised and scalar paths round
    differently), bit-identical splats, in fewer box pixels."""
    H, W = 40, 80
    maps = torch.rand(cams.num_faces, 2, cams.size, cams.size, generator=torch.Generator().manual_seed(3))
    for power in (1.0, 1.5):
        one = erp_face_boxes(cams, H, W, power, bands=1)
        banded = erp_face_boxes(cams, H, W, power, bands=6)
        assert banded.num_boxes > one.num_boxes and banded.weight.numel() < one.weight.numel()
        assert torch.equal(banded.box_face, torch.sort(banded.box_face).values)
        assert int((banded.weight > 0).sum()) == int((one.weight > 0).sum())
        assert torch.equal(banded.coverage(), one.coverage())
        same = torch.equal if power == 1.0 else lambda a, b: torch.allclose(a, b, rtol=1e-6, atol=1e-7)
        assert same(banded.weight_sum, one.weight_sum)
        assert same(splat_boxes(maps, banded), splat_boxes(maps, one))


def test_blend_equals_the_table_formulation():
    """Blender.blend (boxes) against the same blend computed from the sample table (the formulation before)."""
    cams = IcosahedronProjection(0, 32, 1.7).cameras()
    g = torch.Generator().manual_seed(2)
    inv = 0.5 + torch.rand(20, 32, 32, generator=g)
    valid = torch.rand(20, 32, 32, generator=g) > 0.05
    conf = torch.rand(20, 32, 32, generator=g)
    faces = AlignedFaces(inv, valid, conf, cams)
    blender = Blender(fill_iterations=0)
    distance, confidence = blender.blend(faces, 48, 96)
    table = erp_face_samples(cams, 48, 96)
    q = valid.float() * conf
    acc = splat_faces(torch.stack((q, q * inv, q * inv * inv), 1), table)
    inv_blend = acc[1] / acc[0].clamp_min(1e-30)
    ok = acc[0] > 1e-6
    assert torch.equal(ok.view(48, 96), distance > 0)
    assert torch.allclose(distance.view(-1)[ok], 1.0 / inv_blend[ok], rtol=1e-5)
    assert bool((confidence >= 0).all()) and bool((confidence <= 1).all())


def test_boxes_disk_round_trip(tmp_path):
    cams = IcosahedronProjection(0, 16, 1.2).cameras()
    disk = DiskCache(tmp_path)
    built = cached_erp_face_boxes(cams, 16, 32, 1.0, disk)
    loaded = cached_erp_face_boxes(cams, 16, 32, 1.0, disk)
    assert loaded is not built and len(list(tmp_path.glob("*.pt"))) == 1
    for name in ("bounds", "grid", "weight"):
        assert torch.equal(getattr(built, name), getattr(loaded, name))


def test_projection_lonlat_and_cos_equal_the_ray_formulation():
    """erp_to_faces' separable (lon, lat) of the face pixels and the closed-form cos equal the normalised rays'."""
    from modules.geometry.spherical import direction_to_lonlat
    from modules.geometry.tangent import face_cos_to_axis, face_lonlat, face_rays

    cams = _random_cameras(7, 24, 3).to(dtype=torch.float64)
    rays = face_rays(cams)
    lon, lat = direction_to_lonlat(rays)
    got = face_lonlat(cams)
    dlon = torch.remainder(got[..., 0] - lon + torch.pi, 2 * torch.pi) - torch.pi  # +-pi are one longitude
    assert dlon.abs().max() < 1e-12 and (got[..., 1] - lat).abs().max() < 1e-12
    cos = (rays * cams.axes[:, None, None, :]).sum(-1)
    assert torch.allclose(face_cos_to_axis(cams), cos, atol=1e-14)


def test_gather_bilinear_equals_grid_sample_in_float64():
    from modules.geometry.face_sampling import gather_bilinear
    from modules.geometry.tangent import sample_faces

    cams = IcosahedronProjection(0, 16, 1.7).cameras().to(dtype=torch.float64)
    samples = erp_face_samples(cams, 24, 48)
    maps = torch.rand(20, 2, 16, 16, generator=torch.Generator().manual_seed(4))
    got = gather_bilinear(maps, samples.face_index, samples.face_xy)
    assert got.dtype == torch.float64
    assert torch.allclose(got, sample_faces(maps.double(), samples), rtol=0, atol=1e-14)
