"""#12: the log-distance gradient merge (modules/fusion/log_gradient_merge.py) and the sky's far limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.fusion.blending import Blender
from modules.fusion.faces import AlignedFaces
from modules.fusion.log_gradient_merge import LogGradientMerge, merged_differences, face_log_distance, pyramid_heights
from modules.fusion.sky import SkyDetector
from modules.geometry.projections import IcosahedronProjection
from modules.geometry.tangent import erp_face_samples, erp_to_faces

H = 64


@pytest.fixture(scope="module")
def truth(room_scene):
    """A 128x64 room's distance and its 20 faces of 48 px with the exact inverse distance."""
    gt = torch.from_numpy(np.load(room_scene.with_name("distance.npy"))).double()
    gt = torch.nn.functional.avg_pool2d(gt[None, None], 4)[0, 0]  # 256 -> 64 rows
    cams = IcosahedronProjection(0, 48, 1.7).cameras(dtype=torch.float64)
    inv = erp_to_faces((1.0 / gt)[None, None], cams, antialias=False)[0, :, 0]
    return gt, cams, inv


def faces_with_scale(truth, sigma: float, seed: int = 0) -> AlignedFaces:
    _, cams, inv = truth
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(sigma * torch.randn(cams.num_faces, generator=g, dtype=torch.float64))
    inv = inv * scale[:, None, None]
    return AlignedFaces(inv, torch.ones_like(inv, dtype=torch.bool), torch.ones_like(inv), cams)


def abs_rel(d: torch.Tensor, gt: torch.Tensor) -> float:
    k = torch.median(gt / d)
    return float(((d * k - gt).abs() / gt).mean())


def test_pyramid_heights():
    assert pyramid_heights(512, 32) == [32, 64, 128, 256, 512]
    assert pyramid_heights(48, 32) == [48]
    assert pyramid_heights(100, 8) == [25, 50, 100]


def test_differences_of_one_smooth_face_are_exact():
    """One face's own differences on the ERP grid equal the differences of its field (no other face, no seam)."""
    cams = IcosahedronProjection(0, 64, 1.7).cameras(dtype=torch.float64)
    samples = erp_face_samples(cams, 32, 64)
    L = torch.zeros(20, 64, 64, dtype=torch.float64)
    q = torch.zeros_like(L)
    q[3] = 1.0
    x = torch.linspace(-1, 1, 64, dtype=torch.float64)
    L[3] = 0.3 * x[None, :] + 0.1 * x[:, None]  # linear in the face plane
    d = merged_differences(L, q, samples, robust_iterations=0)
    assert int(d["faces_x"].max()) == 1 and float(d["wx"].max()) > 0
    # the same field sampled at the ERP pixels, differenced there
    vals = torch.full((32 * 64,), float("nan"), dtype=torch.float64)
    # the face's pixel centres are at (2 i + 1) / 64 - 1 (grid_sample, align_corners=False); the outer half pixel clamps
    inside = (samples.face_index == 3) & (samples.face_xy.abs() < 63 / 64).all(1)
    xy = samples.face_xy[inside]
    vals[samples.erp_index[inside]] = (0.3 * xy[:, 0] + 0.1 * xy[:, 1]) * 64 / 63
    vals = vals.view(32, 64)
    ref = torch.roll(vals, -1, 1) - vals
    ok = (d["wx"] > 0) & torch.isfinite(ref)
    assert bool(ok.any())
    assert torch.allclose(d["gx"][ok], ref[ok], atol=2e-3)


def test_per_face_scale_errors_cancel_in_the_merge(truth):
    """Faces off by a random scale each (no alignment at all): the blend keeps the per-face errors, the merge of
    their log differences (scale-free) does not."""
    gt = truth[0]
    faces = faces_with_scale(truth, 0.2)
    blender = Blender()
    blend, conf = blender.blend(faces, H, 2 * H)
    merged, info = LogGradientMerge(height=H, coarsest_height=16, anchor_weight=0.01).apply(blender, faces, blend,
                                                                                                conf)
    assert info["applied"] and info["levels"] == [16, 32, 64]
    assert abs_rel(merged, gt) < 0.2 * abs_rel(blend, gt), (abs_rel(merged, gt), abs_rel(blend, gt))


def test_exact_faces_stay_exact(truth):
    gt = truth[0]
    faces = faces_with_scale(truth, 0.0)
    blender = Blender()
    blend, conf = blender.blend(faces, H, 2 * H)
    merged, _ = LogGradientMerge(height=H, coarsest_height=16).apply(blender, faces, blend, conf)
    assert torch.isfinite(merged).all()
    assert abs_rel(merged, gt) < 1.5 * abs_rel(blend, gt) + 0.001, (abs_rel(merged, gt), abs_rel(blend, gt))


def test_face_log_distance_pools_valid_pixels_only():
    cams = IcosahedronProjection(0, 8, 1.7).cameras(dtype=torch.float64)
    inv = torch.ones(20, 8, 8, dtype=torch.float64)
    inv[0, :2, :2] = 0.5  # distance 2
    valid = torch.ones_like(inv, dtype=torch.bool)
    valid[0, 0, 0] = False
    inv[0, 0, 0] = -1.0  # invalid, must not count
    L, q = face_log_distance(AlignedFaces(inv, valid, torch.ones_like(inv), cams), 2)
    assert L.shape == (20, 4, 4)
    assert float(L[0, 0, 0]) == pytest.approx(np.log(2.0)) and float(q[0, 0, 0]) == pytest.approx(0.75)
    assert float(L[0, 1, 1]) == pytest.approx(0.0) and float(q[0, 1, 1]) == pytest.approx(1.0)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="anchor_weight"):
        LogGradientMerge(anchor_weight=0)
    with pytest.raises(ValueError, match="height"):
        LogGradientMerge(height=4)


def test_far_limit_turns_unresolved_far_pixels_into_sky():
    d = torch.ones(8, 16)
    d[0, :3] = 100.0  # beyond 50 x the median
    d[1, 0] = 20.0  # within
    sky = torch.zeros(8, 16, dtype=torch.bool)
    sky[7, 0] = True
    conf = torch.ones(8, 16)
    out, c, mask = SkyDetector(far_limit=50.0).finish(d, conf, sky)
    assert bool(mask[0, :3].all()) and bool(mask[7, 0]) and int(mask.sum()) == 4
    assert bool(torch.isinf(out[mask]).all()) and bool((c[mask] == 0).all()) and float(out[1, 0]) == 20.0
    out, _, mask = SkyDetector(far_limit=None).finish(d, conf, sky)
    assert int(mask.sum()) == 1
    with pytest.raises(ValueError, match="far_limit"):
        SkyDetector(far_limit=0.5)


def test_log_merge_runs_in_the_pipeline_with_sky(tmp_path, one_cpu_thread):
    """refinement=log_merge on a small street with the sky at the network floor: finite surfaces, sky kept."""
    from PIL import Image

    from conftest import compose
    from modules.dataset.io import load_panorama
    from modules.dataset.synthetic_scene import make_scene, render_erp
    from modules.pipeline import build_pipeline

    rgb, distance = render_erp(make_scene("outdoor", 1), 64)
    Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(tmp_path / "rgb.png")
    np.save(tmp_path / "distance.npy", distance)
    C = "predictor.corruption."
    pipeline = build_pipeline(compose(["predictor=synthetic", "projection.face_size=32", "refinement=log_merge",
                                       "refinement.height=64", "paths.output_dir=/tmp/unused",
                                       f"{C}infinity_distance=500"]))
    result = pipeline.run(load_panorama(tmp_path / "rgb.png"), str(tmp_path / "rgb.png"))
    d = result.distance
    assert not bool(torch.isnan(d).any()) and result.info["refinement"]["applied"]
    sky = torch.isinf(d)
    assert float((sky == torch.from_numpy(~np.isfinite(distance))).double().mean()) > 0.95
    gt = torch.from_numpy(distance).double()
    both = ~sky & torch.isfinite(gt)
    assert abs_rel(d.double()[both], gt[both]) < 0.1
