"""Metric scale: floor fit from the lower hemisphere, given factor, relative fallback, failures."""

import math

import pytest
import torch

from modules.fusion.scale import FloorNotFoundError, fit_floor_plane, metric_scale
from modules.geometry.spherical import erp_directions

H, W = 48, 96


def box_room_distance(H, W, lo=(-2.0, -1.5, -3.0), hi=(2.5, 1.2, 2.0)):
    """Distance from the origin to the inside of the axis-aligned box [lo, hi] (OpenCV axes, floor at y = hi[1])."""
    d = erp_directions(H, W, dtype=torch.float64)
    lo, hi = torch.tensor(lo, dtype=d.dtype), torch.tensor(hi, dtype=d.dtype)
    t = torch.where(d > 0, hi / d, torch.where(d < 0, lo / d, torch.full_like(d, math.inf)))
    return t.min(dim=-1).values.float()


def test_camera_height_recovers_metric_scale():
    unknown = 0.37  # the network's arbitrary scale
    d = box_room_distance(H, W) * unknown
    g = torch.Generator().manual_seed(0)
    d = d * (1 + 0.005 * torch.randn(H, W, generator=g))  # mild noise
    res = metric_scale(d, camera_height=1.5, generator=torch.Generator().manual_seed(1))
    # floor 1.2 units below the true camera; camera_height 1.5 m -> metres per true unit = 1.25
    assert res.factor == pytest.approx(1.5 / (1.2 * unknown), rel=0.01)
    assert res.info["units"] == "metres" and res.info["method"] == "camera_height"
    assert res.info["floor_inlier_fraction"] > 0.5 and res.info["floor_tilt_deg"] < 2.0


def test_floor_fit_ignores_furniture_and_is_deterministic():
    d = box_room_distance(H, W)
    dirs = erp_directions(H, W)
    # a low table (top 0.7 below the camera) under part of the view
    t = 0.7 / dirs[..., 1].clamp_min(1e-6)
    p = dirs * t[..., None]
    table = (dirs[..., 1] > 0) & (p[..., 0].abs() < 0.5) & (p[..., 2] > 0.3) & (p[..., 2] < 1.0) & (t < d)
    d = torch.where(table, t, d)
    assert int(table.sum()) > 10
    a = fit_floor_plane(d, generator=torch.Generator().manual_seed(5))
    b = fit_floor_plane(d, generator=torch.Generator().manual_seed(5))
    assert a.height == pytest.approx(1.2, rel=1e-3) and a.height == b.height
    assert torch.allclose(a.normal, torch.tensor([0.0, 1.0, 0.0]), atol=1e-3)


def test_given_factor_and_relative():
    d = box_room_distance(H, W)
    res = metric_scale(d, factor=2.5)
    assert res.factor == 2.5 and res.info["method"] == "factor"
    rel = metric_scale(d)
    assert (d * rel.factor).median() == pytest.approx(1.0, rel=1e-5)
    assert rel.info["units"] == "relative" and "not metric" in rel.info["note"]
    keep = metric_scale(d, relative="keep")
    assert keep.factor == 1.0 and keep.info["method"] == "keep"
    with pytest.raises(ValueError, match="relative"):
        metric_scale(d, relative="mean")


def test_bad_scale_input():
    d = box_room_distance(H, W)
    with pytest.raises(ValueError, match="not both"):
        metric_scale(d, camera_height=1.5, factor=2.0)
    with pytest.raises(ValueError, match="camera_height"):
        metric_scale(d, camera_height=-1.0)
    with pytest.raises(ValueError, match="factor"):
        metric_scale(d, factor=float("nan"))
    upper_only = d.clone()
    upper_only[H // 2 :] = float("nan")  # nothing seen below the horizon
    with pytest.raises(FloorNotFoundError, match="below the horizon"):
        metric_scale(upper_only, camera_height=1.5)
    sphere = torch.full((H, W), 2.0)  # no plane at all below the camera
    with pytest.raises(FloorNotFoundError):
        fit_floor_plane(sphere, inlier_tolerance=0.002, min_inlier_fraction=0.5)
