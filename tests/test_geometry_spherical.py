"""ERP pixel <-> (lon, lat) <-> direction: known points and inverses."""

import math

import pytest
import torch

from modules.geometry.spherical import (
    direction_to_erp_pixel,
    direction_to_lonlat,
    erp_directions,
    erp_pixel_solid_angle,
    erp_pixel_to_direction,
    erp_pixel_to_lonlat,
    lonlat_to_direction,
    lonlat_to_erp_pixel,
)

H, W = 100, 200

# (u, v) continuous pixel coordinates -> expected unit direction (OpenCV axes: x right, y down, z forward)
KNOWN = [
    ((W / 2 - 0.5, H / 2 - 0.5), (0.0, 0.0, 1.0)),  # image centre looks forward
    ((3 * W / 4 - 0.5, H / 2 - 0.5), (1.0, 0.0, 0.0)),  # lon +90: right
    ((W / 4 - 0.5, H / 2 - 0.5), (-1.0, 0.0, 0.0)),  # lon -90: left
    ((-0.5, H / 2 - 0.5), (0.0, 0.0, -1.0)),  # left edge, lon -180: backward
    ((W / 2 - 0.5, -0.5), (0.0, -1.0, 0.0)),  # top edge: up is -y
    ((W / 2 - 0.5, H - 0.5), (0.0, 1.0, 0.0)),  # bottom edge: down is +y
    ((W / 2 - 0.5, H / 4 - 0.5), (0.0, -math.sqrt(0.5), math.sqrt(0.5))),  # lat +45 forward
]


@pytest.mark.parametrize("uv, expected", KNOWN)
def test_known_points(uv, expected):
    d = erp_pixel_to_direction(torch.tensor(uv[0], dtype=torch.float64), torch.tensor(uv[1], dtype=torch.float64), H, W)
    assert torch.allclose(d, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_pixel_centre_convention():
    lon, lat = erp_pixel_to_lonlat(torch.tensor(0.0), torch.tensor(0.0), H, W)
    assert lon.item() == pytest.approx(-math.pi + math.pi / W)
    assert lat.item() == pytest.approx(math.pi / 2 - math.pi / (2 * H))


def test_direction_pixel_inverse():
    g = torch.Generator().manual_seed(0)
    u = torch.rand(1000, generator=g, dtype=torch.float64) * W - 0.5
    v = torch.rand(1000, generator=g, dtype=torch.float64) * H - 0.5
    u2, v2 = direction_to_erp_pixel(erp_pixel_to_direction(u, v, H, W), H, W)
    # longitude is periodic: compare modulo W
    du = torch.remainder(u2 - u + W / 2, W) - W / 2
    assert du.abs().max() < 1e-9
    assert (v2 - v).abs().max() < 1e-9


def test_lonlat_direction_inverse_and_unit_length():
    g = torch.Generator().manual_seed(1)
    d = torch.nn.functional.normalize(torch.randn(500, 3, generator=g, dtype=torch.float64), dim=-1)
    lon, lat = direction_to_lonlat(d)
    assert torch.allclose(lonlat_to_direction(lon, lat), d, atol=1e-12)
    assert torch.allclose(lonlat_to_erp_pixel(lon, lat, H, W)[0], direction_to_erp_pixel(d, H, W)[0])


def test_erp_directions_shape_dtype_device():
    d = erp_directions(8, 16, dtype=torch.float64)
    assert d.shape == (8, 16, 3) and d.dtype == torch.float64
    assert torch.allclose(d.norm(dim=-1), torch.ones(8, 16, dtype=torch.float64))


@pytest.mark.parametrize("height, stride", [(8, 1), (37, 3), (1024, 2)])
def test_erp_directions_with_a_stride_are_the_full_grid_subsampled(height, stride):
    """Bit for bit what [::stride, ::stride] of the full grid gives (the trigonometry from the same kernels)."""
    full = erp_directions(height, 2 * height)
    assert torch.equal(erp_directions(height, 2 * height, stride=stride), full[::stride, ::stride])


def test_solid_angles_cover_the_sphere():
    omega = erp_pixel_solid_angle(H, W, dtype=torch.float64)
    assert omega.shape == (H, 1)
    assert (omega * W).sum().item() == pytest.approx(4 * math.pi, rel=1e-12)
